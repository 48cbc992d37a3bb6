//! A document's heads: the hashes of the changes nothing else depends on yet. Two replicas with the
//! same heads hold the same document, so heads travel wherever "is this visit up to date?" is asked:
//! the phone's rows, the server's rows, the sync manifest and its digest.
//!
//! One type, always sorted, with one conversion per form heads take at the edges: Automerge's
//! `Vec<ChangeHash>`, lowercase hex text joined by commas (stored in SQLite columns and hashed into
//! the manifest digest), hex strings (JSON) and raw 32-byte arrays (the CBOR wire).

use automerge::ChangeHash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Sorted, de-duplicated change hashes.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Heads(Vec<ChangeHash>);

/// Text that is not comma-joined 64-character hex change hashes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a change hash: {0:?}")]
pub struct BadHeads(pub String);

impl Heads {
    pub fn new(hashes: impl IntoIterator<Item = ChangeHash>) -> Self {
        let mut hashes: Vec<ChangeHash> = hashes.into_iter().collect();
        // Byte order and lowercase-hex order agree, so the text form is sorted too.
        hashes.sort_unstable();
        hashes.dedup();
        Self(hashes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn as_slice(&self) -> &[ChangeHash] {
        &self.0
    }

    pub fn to_vec(&self) -> Vec<ChangeHash> {
        self.0.clone()
    }

    /// Lowercase hex, sorted, joined by commas; the empty string for no heads.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// The inverse of [`Heads::to_text`]; accepts the hashes in any order.
    pub fn parse_text(text: &str) -> Result<Self, BadHeads> {
        Self::from_hex(text.split(',').filter(|h| !h.is_empty()))
    }

    /// Hex strings, sorted (the JSON form).
    pub fn to_hex(&self) -> Vec<String> {
        self.0.iter().map(ChangeHash::to_string).collect()
    }

    pub fn from_hex<S: AsRef<str>>(hex: impl IntoIterator<Item = S>) -> Result<Self, BadHeads> {
        hex.into_iter()
            .map(|h| {
                let h = h.as_ref();
                h.parse::<ChangeHash>().map_err(|_| BadHeads(h.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Raw 32-byte hashes (the sync protocol's wire form).
    pub fn to_bytes(&self) -> Vec<[u8; 32]> {
        self.0.iter().map(|h| h.0).collect()
    }

    pub fn from_bytes(bytes: &[[u8; 32]]) -> Self {
        Self::new(bytes.iter().map(|b| ChangeHash(*b)))
    }
}

impl fmt::Display for Heads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{h}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Heads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Heads({self})")
    }
}

impl FromStr for Heads {
    type Err = BadHeads;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_text(s)
    }
}

impl From<Vec<ChangeHash>> for Heads {
    fn from(hashes: Vec<ChangeHash>) -> Self {
        Self::new(hashes)
    }
}

impl From<&[ChangeHash]> for Heads {
    fn from(hashes: &[ChangeHash]) -> Self {
        Self::new(hashes.iter().copied())
    }
}

impl From<Heads> for Vec<ChangeHash> {
    fn from(heads: Heads) -> Self {
        heads.0
    }
}

/// In binary formats (the CBOR wire) heads are a list of 32-byte arrays, exactly as
/// `Vec<[u8; 32]>` serializes, so a protocol type can hold `Heads` without changing a byte of its
/// encoding; in human-readable ones (JSON) a list of hex strings, as `Vec<String>` was.
impl Serialize for Heads {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.to_hex().serialize(serializer)
        } else {
            self.to_bytes().serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Heads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let hex = Vec::<String>::deserialize(deserializer)?;
            Self::from_hex(hex).map_err(serde::de::Error::custom)
        } else {
            Vec::<[u8; 32]>::deserialize(deserializer).map(|b| Self::from_bytes(&b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash(b: u8) -> ChangeHash {
        ChangeHash([b; 32])
    }

    #[test]
    fn text_is_sorted_hex_joined_by_commas() {
        let heads = Heads::new([hash(0xbb), hash(0x0a), hash(0xbb)]);
        assert_eq!(heads.len(), 2);
        assert_eq!(
            heads.to_text(),
            format!("{},{}", "0a".repeat(32), "bb".repeat(32))
        );
        assert_eq!(Heads::default().to_text(), "");
        assert_eq!(Heads::parse_text(""), Ok(Heads::default()));
    }

    #[test]
    fn bad_text_is_an_error() {
        assert!(Heads::parse_text("zz").is_err());
        assert!(Heads::parse_text(&"ab".repeat(31)).is_err());
        assert!(Heads::from_hex(["not hex"]).is_err());
    }

    proptest! {
        #[test]
        fn every_form_round_trips(raw in proptest::collection::vec(any::<[u8; 32]>(), 0..5)) {
            let heads = Heads::from_bytes(&raw);
            prop_assert_eq!(Heads::parse_text(&heads.to_text()).ok(), Some(heads.clone()));
            prop_assert_eq!(Heads::from_hex(heads.to_hex()).ok(), Some(heads.clone()));
            prop_assert_eq!(Heads::from(heads.to_vec()), heads.clone());
            prop_assert_eq!(Heads::from_bytes(&heads.to_bytes()), heads.clone());
            // The wire form is byte for byte that of a sorted `Vec<[u8; 32]>`.
            let (mut ours, mut plain) = (Vec::new(), Vec::new());
            ciborium::into_writer(&heads, &mut ours).map_err(|e| TestCaseError::fail(e.to_string()))?;
            ciborium::into_writer(&heads.to_bytes(), &mut plain).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(ours, plain);
            let json = serde_json::to_value(&heads).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&json, &serde_json::json!(heads.to_hex()));
            prop_assert_eq!(serde_json::from_value::<Heads>(json).ok(), Some(heads.clone()));
        }
    }
}
