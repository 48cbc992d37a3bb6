//! The sync protocol's wire types (docs/protocol.md). CBOR bodies, one endpoint, batched per visit.

use crate::domain::{DeviceId, Millis, PersonId, VisitId};
use crate::heads::Heads;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest request body the server accepts.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Most visits in one request.
pub const MAX_VISITS_PER_REQUEST: usize = 500;
/// Largest sync message for one visit.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The sync endpoint's path.
pub const SYNC_PATH: &str = "/api/v1/sync";
/// Enrolment with a one-time code.
pub const ENROL_PATH: &str = "/api/v1/enrol";
/// Media type of sync bodies.
pub const CBOR: &str = "application/cbor";

/// One visit's Automerge sync message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitMessage {
    pub visit_id: VisitId,
    #[serde(with = "serde_bytes_compat")]
    pub message: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub protocol: u32,
    /// The phone's wall clock when it sent this (diagnostics; never trusted).
    pub device_time: Millis,
    pub visits: Vec<VisitMessage>,
    /// [`manifest_digest`] of the visits the phone holds, leaving out those in `visits`. When the
    /// server's own digest agrees, it answers with only the entries of the visits in `visits`.
    #[serde(default)]
    pub manifest_digest: Option<String>,
}

/// Why the server refused one visit's message. The rest of the batch is unaffected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitError {
    pub visit_id: VisitId,
    /// Stable code: `unknown_visit`, `not_assigned`, `forbidden_change`, `malformed_message`,
    /// `message_too_large`, `invalid_entry`.
    pub code: String,
    pub message: String,
}

/// A visit in the device's scope, with the server's heads so the phone can tell what is new.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub visit_id: VisitId,
    /// Automerge change hashes (32 bytes each on the wire).
    pub heads: Heads,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub protocol: u32,
    /// The server's clock when it answered: the phone derives its clock offset from it.
    pub server_time: Millis,
    pub visits: Vec<VisitMessage>,
    pub errors: Vec<VisitError>,
    /// Every visit in this device's scope (its carer's assigned visits in the window), or, when
    /// `manifest_complete` is false, only the visits the request carried messages for.
    pub manifest: Vec<ManifestEntry>,
    #[serde(default)]
    pub manifest_complete: bool,
}

/// A digest of (visit id, heads) pairs: sha256 over `id:heads\n` lines sorted by id, where heads
/// are the lowercase hex change hashes, sorted and joined by commas ([`Heads::to_text`]).
pub fn manifest_digest<'a>(entries: impl IntoIterator<Item = (VisitId, &'a Heads)>) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<(VisitId, &Heads)> = entries.into_iter().collect();
    lines.sort();
    let mut hasher = Sha256::new();
    for (id, heads) in lines {
        hasher.update(format!("{id}:{heads}\n").as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub code: String,
    pub device_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub device_id: DeviceId,
    pub carer_id: PersonId,
    pub token: String,
    pub server_time: Millis,
}

/// The body of every error response (JSON for the office API, CBOR for sync).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable machine-readable code, e.g. `unauthorized`, `forbidden`, `payload_too_large`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cbor: {0}")]
pub struct CborError(pub String);

pub fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for our plain data types.
    if let Err(e) = ciborium::into_writer(value, &mut out) {
        tracing::error!(error = %e, "cbor encoding failed");
    }
    out
}

pub fn from_cbor<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    ciborium::from_reader(bytes).map_err(|e| CborError(e.to_string()))
}

/// Encode `Vec<u8>` as a CBOR byte string rather than an array of integers.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        // `deserialize_byte_buf`, not `deserialize_bytes`: ciborium serves the latter only from a
        // 4 KiB scratch buffer and refuses any longer byte string ("invalid type: bytes").
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_travel_as_byte_strings() -> Result<(), CborError> {
        let req = SyncRequest {
            protocol: PROTOCOL_VERSION,
            device_time: 5,
            visits: vec![VisitMessage {
                visit_id: VisitId::new(),
                message: vec![1; 100],
            }],
            manifest_digest: None,
        };
        let bytes = to_cbor(&req);
        // 100 bytes of payload as a byte string, not 100 one-byte integers plus headers.
        assert!(bytes.len() < 200, "{}", bytes.len());
        assert_eq!(from_cbor::<SyncRequest>(&bytes)?, req);
        assert!(from_cbor::<SyncRequest>(&bytes[..bytes.len() - 3]).is_err());
        Ok(())
    }

    /// Every message size up to the stated limit decodes, in both directions (ciborium's
    /// `deserialize_bytes` stops at 4 KiB; issue 11).
    #[test]
    fn messages_of_every_size_up_to_the_limit_round_trip() -> Result<(), CborError> {
        for len in [
            0,
            1,
            4095,
            4096,
            4097,
            64 * 1024,
            1024 * 1024,
            MAX_MESSAGE_BYTES,
            MAX_MESSAGE_BYTES + 1,
        ] {
            let message: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let visit = VisitMessage {
                visit_id: VisitId::new(),
                message,
            };
            let req = SyncRequest {
                protocol: PROTOCOL_VERSION,
                device_time: 5,
                visits: vec![visit.clone()],
                manifest_digest: None,
            };
            assert_eq!(from_cbor::<SyncRequest>(&to_cbor(&req))?, req, "request of {len}");
            let resp = SyncResponse {
                protocol: PROTOCOL_VERSION,
                server_time: 7,
                visits: vec![visit],
                errors: vec![],
                manifest: vec![],
                manifest_complete: true,
            };
            assert_eq!(
                from_cbor::<SyncResponse>(&to_cbor(&resp))?,
                resp,
                "response of {len}"
            );
        }
        Ok(())
    }

    /// A CBOR byte string sent in chunks (indefinite length) decodes too.
    #[test]
    fn indefinite_length_byte_strings_decode() -> Result<(), CborError> {
        let id = VisitId::new();
        let plain = to_cbor(&VisitMessage {
            visit_id: id,
            message: vec![9; 10],
        });
        // Rewrite the 10-byte string (0x4a + bytes) as 0x5f, two chunks, 0xff.
        let at = plain.len() - 11;
        assert_eq!(plain[at], 0x4a);
        let mut chunked = plain[..at].to_vec();
        chunked.extend([0x5f, 0x43, 9, 9, 9, 0x47, 9, 9, 9, 9, 9, 9, 9, 0xff]);
        let decoded: VisitMessage = from_cbor(&chunked)?;
        assert_eq!(decoded.message, vec![9; 10]);
        Ok(())
    }
}
