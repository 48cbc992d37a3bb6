//! Sync protocol version 2 (docs/protocol.md, "Version 2"): the same endpoint and the same batch per
//! visit, in fewer bytes.
//!
//! - The phone sends a visit's raw Automerge changes since the heads it last shared with the
//!   server, not a sync message: it already knows the server's heads, so no bloom filter, no
//!   `need`, no `have`. The server answers with the changes the phone lacks, worked out from the
//!   phone's heads; a visit the server has nothing new for is not in the answer at all.
//! - Heads the other side can work out are left out: a push's heads are those of its own changes
//!   unless it says otherwise, a pull's heads are the ones the phone sent unless it says otherwise.
//! - Ids, heads and the manifest digest are bytes; the envelope's keys are one letter.
//! - A body is framed by its first byte: [`PLAIN`] CBOR, or CBOR deflated with a preset
//!   dictionary ([`DICTIONARY`]) of the changes and envelopes a sync carries, so the document's
//!   field names and the envelope cost next to nothing. Version 1 bodies are CBOR maps, whose first
//!   byte is never one of these, so one endpoint serves both versions.

use super::{manifest_digest, serde_bytes_compat, VisitError, MAX_REQUEST_BYTES};
use crate::domain::{Millis, VisitId};
use crate::heads::Heads;
use automerge::{Change, ChangeHash};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// This version's number, as a phone reports it and as `unsupported_protocol` names it.
pub const VERSION: u32 = 2;
/// First byte of a version 2 body holding plain CBOR.
pub const PLAIN: u8 = 0x02;
/// First byte of a version 2 body holding CBOR deflated (raw, RFC 1951) with [`DICTIONARY`].
pub const DEFLATED: u8 = 0x12;
/// Bodies shorter than this go plain: below it deflate's framing costs about what it saves.
const DEFLATE_FROM: usize = 48;
/// Bytes of the manifest digest a phone sends: the first half of its SHA-256 (a disagreement
/// missed by chance would only delay the full manifest to the next change of the carer's scope).
pub const DIGEST_BYTES: usize = 16;

/// The preset dictionary: sample changes of each kind a visit document holds and sample envelopes,
/// written once by `cargo run -p caresync-core --example sync_dictionary`. Part of the protocol:
/// both sides must hold the same bytes, so changing it means a new protocol version (a test pins
/// its SHA-256).
pub static DICTIONARY: &[u8] = include_bytes!("v2_dictionary.bin");

/// A version 2 request: the phone's changes per visit, and what it knows of the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The phone's wall clock when it sent this (diagnostics; never trusted).
    #[serde(rename = "t")]
    pub device_time: Millis,
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    pub visits: Vec<Push>,
    /// The first [`DIGEST_BYTES`] of [`manifest_digest`] over the visits the phone holds and does
    /// not push; as in version 1, an agreeing digest keeps the manifest out of the answer.
    #[serde(
        rename = "d",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_bytes"
    )]
    pub manifest_digest: Option<Vec<u8>>,
}

/// One visit in a request: the changes the phone believes the server lacks, and its heads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    #[serde(rename = "i", with = "id_bytes")]
    pub visit_id: VisitId,
    /// Raw Automerge changes (each `Change::raw_bytes`), in an order their dependencies allow.
    #[serde(
        rename = "c",
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "byte_strings"
    )]
    pub changes: Vec<Vec<u8>>,
    /// The phone's heads, when they are not [`implied_heads`] of `changes` (a pull with no
    /// changes, a phone that merged while it wrote). Absent with no changes: the phone holds
    /// nothing of the visit.
    #[serde(
        rename = "h",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_heads"
    )]
    pub heads: Option<Heads>,
}

/// A version 2 answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The server's clock when it answered: the phone derives its clock offset from it.
    #[serde(rename = "t")]
    pub server_time: Millis,
    /// Visits the server has more to say about than "I hold what you sent".
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    pub visits: Vec<Pull>,
    #[serde(rename = "e", default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Refusal>,
    /// As in version 1, except that a visit pushed in the request is listed only when the
    /// manifest is complete (its heads are otherwise in [`Pull::heads`] or are the phone's own).
    #[serde(rename = "m", default, skip_serializing_if = "Vec::is_empty")]
    pub manifest: Vec<Entry>,
    #[serde(rename = "k", default, skip_serializing_if = "is_false")]
    pub manifest_complete: bool,
}

/// The server's word on a pushed visit: the changes the phone lacks and the server's heads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    #[serde(rename = "i", with = "id_bytes")]
    pub visit_id: VisitId,
    #[serde(
        rename = "c",
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "byte_strings"
    )]
    pub changes: Vec<Vec<u8>>,
    /// The server's heads after taking the push; absent when they are the heads the phone sent.
    #[serde(
        rename = "h",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_heads"
    )]
    pub heads: Option<Heads>,
}

/// A refused visit: the codes and meanings of version 1 ([`VisitError`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(rename = "i", with = "id_bytes")]
    pub visit_id: VisitId,
    #[serde(rename = "c")]
    pub code: String,
    #[serde(rename = "m")]
    pub message: String,
}

/// A visit in the carer's scope with the server's heads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "i", with = "id_bytes")]
    pub visit_id: VisitId,
    #[serde(rename = "h", with = "heads_bytes")]
    pub heads: Heads,
}

impl From<VisitError> for Refusal {
    fn from(e: VisitError) -> Self {
        Self {
            visit_id: e.visit_id,
            code: e.code,
            message: e.message,
        }
    }
}

impl From<Refusal> for VisitError {
    fn from(r: Refusal) -> Self {
        Self {
            visit_id: r.visit_id,
            code: r.code,
            message: r.message,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The heads a phone holding exactly these changes (and their ancestors) has: the changes no other
/// of them depends on. Sorted.
pub fn implied_heads(changes: &[Change]) -> Heads {
    let deps: HashSet<ChangeHash> = changes.iter().flat_map(|c| c.deps().iter().copied()).collect();
    Heads::new(changes.iter().map(Change::hash).filter(|h| !deps.contains(h)))
}

/// Read one raw change a peer sent. Automerge 0.12 panics on some crafted changes instead of
/// refusing them (an op counter beyond `u32` unwraps in `OpId::new`, found by the `sync_request`
/// fuzz target), so the parse runs under `catch_unwind` and such a change is an error like any
/// other unreadable one. Both sides read peers' changes here, never with `Change::from_bytes`.
pub fn parse_change(bytes: &[u8]) -> Result<Change, String> {
    let owned = bytes.to_vec();
    match std::panic::catch_unwind(move || Change::from_bytes(owned)) {
        Ok(Ok(change)) => Ok(change),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the change's operations cannot be read".into()),
    }
}

/// Apply changes a peer sent to `doc`. Automerge 0.12 also panics while applying some crafted
/// changes (an actor its op set cannot look up, `op_set2/change/batch.rs`; found by the
/// `sync_response` fuzz target), so the apply runs under `catch_unwind`. After an error `doc` may
/// hold part of the changes: the caller discards it (the server applies to a copy, the phone's
/// write is rolled back and its document reloaded).
pub fn apply_changes(doc: &mut automerge::AutoCommit, changes: Vec<Change>) -> Result<(), String> {
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.apply_changes(changes)));
    match applied {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("changes could not be applied: {e}")),
        Err(_) => Err("changes could not be applied: their operations are inconsistent".into()),
    }
}

/// The digest a version 2 request carries: the first [`DIGEST_BYTES`] of [`manifest_digest`].
pub fn short_digest<'a>(entries: impl IntoIterator<Item = (VisitId, &'a Heads)>) -> Vec<u8> {
    let full = manifest_digest(entries);
    let mut bytes = hex::decode(&full[..DIGEST_BYTES * 2]).unwrap_or_default();
    bytes.truncate(DIGEST_BYTES);
    bytes
}

/// Why a version 2 body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a version 2 body (first byte {0:#04x})")]
    NotVersion2(u8),
    #[error("empty body")]
    Empty,
    #[error("deflated body does not inflate: {0}")]
    Inflate(String),
    #[error("body inflates past {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("cbor: {0}")]
    Cbor(String),
}

/// Whether `body` is framed as version 2 (rather than a version 1 CBOR map).
pub fn is_version2(body: &[u8]) -> bool {
    matches!(body.first(), Some(&PLAIN) | Some(&DEFLATED))
}

/// Frame a message: deflated with the dictionary when that is shorter, plain otherwise.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let cbor = super::to_cbor(message);
    if cbor.len() >= DEFLATE_FROM {
        if let Some(deflated) = deflate(&cbor).filter(|d| d.len() < cbor.len()) {
            let mut body = Vec::with_capacity(deflated.len() + 1);
            body.push(DEFLATED);
            body.extend_from_slice(&deflated);
            return body;
        }
    }
    let mut body = Vec::with_capacity(cbor.len() + 1);
    body.push(PLAIN);
    body.extend_from_slice(&cbor);
    body
}

/// Read a framed message, inflating at most [`MAX_REQUEST_BYTES`].
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (&first, rest) = body.split_first().ok_or(FrameError::Empty)?;
    let inflated;
    let cbor = match first {
        PLAIN => rest,
        DEFLATED => {
            inflated = inflate(rest, MAX_REQUEST_BYTES)?;
            &inflated[..]
        }
        other => return Err(FrameError::NotVersion2(other)),
    };
    super::from_cbor(cbor).map_err(|e| FrameError::Cbor(e.0))
}

fn deflate(input: &[u8]) -> Option<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    let mut z = Compress::new(Compression::new(6), false);
    z.set_dictionary(DICTIONARY).ok()?;
    let mut out = Vec::with_capacity(input.len() + 64);
    loop {
        let consumed = z.total_in() as usize;
        match z.compress_vec(&input[consumed..], &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return Some(out),
            Ok(_) => out.reserve(out.capacity().max(64)),
            Err(_) => return None,
        }
    }
}

thread_local! {
    /// Each thread's inflater, reset for every body: making one allocates and zeroes its state
    /// and 32 KiB window, about 1 % of the server's time when every sync made its own.
    static INFLATER: std::cell::RefCell<Option<flate2::Decompress>> = const { std::cell::RefCell::new(None) };
}

fn inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, FrameError> {
    INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let z = match slot.as_mut() {
            Some(z) => {
                z.reset(false);
                z
            }
            None => slot.insert(flate2::Decompress::new(false)),
        };
        inflate_with(z, input, limit)
    })
}

fn inflate_with(z: &mut flate2::Decompress, input: &[u8], limit: usize) -> Result<Vec<u8>, FrameError> {
    use flate2::{FlushDecompress, Status};
    z.set_dictionary(DICTIONARY)
        .map_err(|e| FrameError::Inflate(e.to_string()))?;
    let mut out = Vec::with_capacity((input.len() * 4).clamp(256, limit));
    loop {
        let consumed = z.total_in() as usize;
        let before = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Finish)
            .map_err(|e| FrameError::Inflate(e.to_string()))?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        if out.len() >= limit {
            return Err(FrameError::TooLarge);
        }
        if out.len() == out.capacity() {
            out.reserve((out.capacity()).min(limit + 1 - out.len()).max(256));
        } else if (z.total_in(), z.total_out()) == before {
            return Err(FrameError::Inflate("truncated".into()));
        }
    }
}

/// A visit id as its 16 bytes.
mod id_bytes {
    use crate::domain::VisitId;
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &VisitId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(id.0.as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VisitId, D::Error> {
        let bytes = super::serde_bytes_compat::deserialize(d)?;
        uuid::Uuid::from_slice(&bytes)
            .map(VisitId)
            .map_err(|_| D::Error::custom("a visit id is 16 bytes"))
    }
}

/// Heads as one byte string of 32-byte hashes.
mod heads_bytes {
    use crate::heads::Heads;
    use automerge::ChangeHash;
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(heads: &Heads, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = heads.as_slice().iter().flat_map(|h| h.0).collect();
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Heads, D::Error> {
        let bytes = super::serde_bytes_compat::deserialize(d)?;
        if bytes.len() % 32 != 0 {
            return Err(D::Error::custom("heads are 32-byte hashes"));
        }
        Ok(Heads::new(bytes.chunks_exact(32).map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            ChangeHash(h)
        })))
    }
}

mod opt_heads {
    use crate::heads::Heads;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(heads: &Option<Heads>, s: S) -> Result<S::Ok, S::Error> {
        match heads {
            Some(h) => super::heads_bytes::serialize(h, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Heads>, D::Error> {
        super::heads_bytes::deserialize(d).map(Some)
    }
}

mod opt_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        super::serde_bytes_compat::deserialize(d).map(Some)
    }
}

/// A list of byte strings.
mod byte_strings {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(items.len()))?;
        for item in items {
            seq.serialize_element(&Bytes(item))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let items: Vec<Owned> = Vec::deserialize(d)?;
        Ok(items.into_iter().map(|o| o.0).collect())
    }

    struct Bytes<'a>(&'a [u8]);

    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct Owned(Vec<u8>);

    impl<'de> Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::serde_bytes_compat::deserialize(d).map(Owned)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn request() -> Request {
        Request {
            device_time: 1_790_000_000_000,
            visits: vec![
                Push {
                    visit_id: VisitId::new(),
                    changes: vec![vec![7; 300], vec![1, 2, 3]],
                    heads: None,
                },
                Push {
                    visit_id: VisitId::new(),
                    changes: vec![],
                    heads: Some(Heads::new([ChangeHash([9; 32]), ChangeHash([3; 32])])),
                },
            ],
            manifest_digest: Some(vec![5; DIGEST_BYTES]),
        }
    }

    #[test]
    fn requests_and_responses_round_trip_plain_and_deflated() -> Result<(), FrameError> {
        let req = request();
        let body = encode(&req);
        assert_eq!(body[0], DEFLATED, "a 300-byte run deflates");
        assert_eq!(decode::<Request>(&body)?, req);
        let resp = Response {
            server_time: 5,
            ..Default::default()
        };
        let body = encode(&resp);
        assert_eq!(body[0], PLAIN, "an empty answer stays plain");
        assert!(
            body.len() < 8,
            "an answer with nothing to say is a few bytes: {body:?}"
        );
        assert_eq!(decode::<Response>(&body)?, resp);
        let resp = Response {
            server_time: 5,
            visits: vec![Pull {
                visit_id: VisitId::new(),
                changes: vec![vec![1; 40]],
                heads: Some(Heads::new([ChangeHash([1; 32])])),
            }],
            errors: vec![Refusal {
                visit_id: VisitId::new(),
                code: "not_assigned".into(),
                message: "no".into(),
            }],
            manifest: vec![Entry {
                visit_id: VisitId::new(),
                heads: Heads::new([ChangeHash([2; 32]), ChangeHash([1; 32])]),
            }],
            manifest_complete: true,
        };
        assert_eq!(decode::<Response>(&encode(&resp))?, resp);
        Ok(())
    }

    #[test]
    fn version_1_bodies_are_told_apart_by_their_first_byte() {
        let v1 = super::super::to_cbor(&super::super::SyncRequest {
            protocol: 1,
            device_time: 0,
            visits: vec![],
            manifest_digest: None,
        });
        assert!(!is_version2(&v1));
        assert!(is_version2(&encode(&request())));
        assert!(matches!(decode::<Request>(&v1), Err(FrameError::NotVersion2(_))));
        assert_eq!(decode::<Request>(&[]), Err(FrameError::Empty));
    }

    #[test]
    fn hostile_bodies_are_refused_not_inflated_without_bound() {
        // A deflate bomb: 32 MiB of zeros deflates to a few KiB.
        let zeros = vec![0u8; 4 * MAX_REQUEST_BYTES];
        let mut body = vec![DEFLATED];
        body.extend(deflate(&zeros).expect("deflates"));
        assert!(body.len() < 64 * 1024);
        assert_eq!(decode::<Request>(&body), Err(FrameError::TooLarge));
        // Garbage, truncated streams and wrong shapes are errors, never panics.
        for bad in [
            vec![DEFLATED],
            vec![DEFLATED, 0xff, 0xff, 0xff],
            encode(&request())[..20].to_vec(),
            vec![PLAIN, 0xa1, 0x61, 0x76, 0x05],
            vec![PLAIN],
        ] {
            assert!(decode::<Request>(&bad).is_err(), "{bad:?}");
        }
        // The thread's inflater, left mid-stream by the bomb and the truncated streams, inflates
        // the next good body whole.
        let sent = request();
        let mut good = vec![DEFLATED];
        good.extend(deflate(&crate::protocol::to_cbor(&sent)).expect("deflates"));
        assert_eq!(decode::<Request>(&good).as_ref(), Ok(&sent));
        assert_eq!(decode::<Request>(&body), Err(FrameError::TooLarge));
        assert_eq!(decode::<Request>(&good).as_ref(), Ok(&sent));
        // A visit id that is not 16 bytes, and heads that are not whole hashes.
        let bad_id = [
            PLAIN, 0xa2, 0x61, 0x74, 0x00, 0x61, 0x76, 0x81, 0xa1, 0x61, 0x69, 0x43, 1, 2, 3,
        ];
        assert!(matches!(decode::<Request>(&bad_id), Err(FrameError::Cbor(_))));
    }

    #[test]
    fn implied_heads_are_the_changes_nothing_else_depends_on() {
        let mut doc = automerge::AutoCommit::new();
        use automerge::transaction::Transactable;
        doc.put(automerge::ROOT, "a", 1).expect("put");
        let first = doc.commit().expect("change");
        doc.put(automerge::ROOT, "b", 2).expect("put");
        let second = doc.commit().expect("change");
        let changes: Vec<Change> = doc.get_changes(&[]);
        assert_eq!(implied_heads(&changes), Heads::new([second]));
        assert_eq!(implied_heads(&changes[..1]), Heads::new([first]));
        assert_eq!(implied_heads(&[]), Heads::default());
    }

    /// What the dictionary is for: a clock-in pushed alone, and a note with a clock-out, with ids
    /// and actors the dictionary has never seen, come to less than two thirds of their CBOR (about 255 of 415 bytes, and 400 of 723).
    #[test]
    fn a_clock_event_request_deflates_to_a_fraction_of_its_cbor() -> Result<(), crate::DocumentError> {
        use crate::visit_document::*;
        use crate::*;
        let carer = PersonId::new();
        let mut doc = VisitDocument::create(
            VisitId::new(),
            &crate::test_kit::schedule(vec![carer], 1_790_000_000_000),
            &automerge::ActorId::random(),
        )?;
        let mut phone = doc.fork().with_actor(&automerge::ActorId::random());
        let event = |kind| ClockEvent {
            id: EventId::new(),
            kind,
            carer_id: carer,
            device_id: DeviceId::new(),
            device_time: 1_790_000_123_456,
            clock_offset_ms: Some(312),
            offset_measured_at: Some(1_789_999_000_000),
            method: ClockMethod::App,
            reason: None,
            location: None,
            tag_id: None,
        };
        let mut sizes = vec![];
        for with_note in [false, true] {
            let before = phone.heads();
            if with_note {
                phone.append_note(&Note {
                    id: NoteId::new(),
                    author_id: carer,
                    author_role: Role::Carer,
                    written_at: 1_790_000_200_000,
                    category: NoteCategory::General,
                    text: "Settled, lunch eaten.".into(),
                })?;
            }
            phone.append_event(&event(if with_note {
                ClockKind::ClockOut
            } else {
                ClockKind::ClockIn
            }))?;
            let request = Request {
                device_time: 1_790_000_123_456,
                visits: vec![Push {
                    visit_id: VisitId::new(),
                    changes: phone
                        .automerge()
                        .get_changes(&before)
                        .iter()
                        .map(|c| c.raw_bytes().to_vec())
                        .collect(),
                    heads: None,
                }],
                manifest_digest: Some(vec![0x5a; DIGEST_BYTES]),
            };
            let (cbor, body) = (crate::protocol::to_cbor(&request).len(), encode(&request).len());
            sizes.push((cbor, body));
        }
        eprintln!("clock-in, note + clock-out (cbor, framed): {sizes:?}");
        assert!(sizes.iter().all(|(cbor, body)| body * 3 < cbor * 2), "{sizes:?}");
        Ok(())
    }

    /// The `sync_request` fuzz target's find: a push whose change makes automerge 0.12 panic while
    /// reading it. Every change of the request is read without a panic, and that one is refused.
    #[test]
    fn a_change_automerge_panics_on_is_refused() -> Result<(), FrameError> {
        let body = include_bytes!("testdata/op_counter_overflow.bin");
        let request: Request = decode(body)?;
        let results: Vec<Result<Change, String>> = request
            .visits
            .iter()
            .flat_map(|p| p.changes.iter().map(|c| parse_change(c)))
            .collect();
        assert!(
            results.iter().any(Result::is_err),
            "the crafted change is refused"
        );
        assert!(results.iter().any(Result::is_ok), "the honest ones are read");
        Ok(())
    }

    /// The `sync_response` fuzz target's find: an answer whose changes make automerge 0.12 panic
    /// while applying them to the target's replica (the fuzz world's visit, saved beside the
    /// input). Each pull's changes are an error, never a panic.
    #[test]
    fn changes_automerge_panics_on_applying_are_refused() -> Result<(), FrameError> {
        let body = include_bytes!("testdata/unknown_actor_on_apply.bin");
        let response: Response = decode(body)?;
        let mut refused = 0;
        for pull in response.visits {
            let Ok(changes) = pull
                .changes
                .iter()
                .map(|c| parse_change(c))
                .collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            let mut replica = automerge::AutoCommit::load(include_bytes!("testdata/fuzz_world_visit.bin"))
                .expect("the fuzz world's visit loads");
            if apply_changes(&mut replica, changes).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0, "the crafted changes are refused");
        Ok(())
    }

    /// The dictionary is part of the protocol: a phone and a server holding different bytes could
    /// not read each other. Changing it takes a new protocol version, and then this pin.
    #[test]
    fn the_dictionary_is_the_one_version_2_was_released_with() {
        let digest = hex::encode(Sha256::digest(DICTIONARY));
        assert_eq!(
            digest,
            "986ab951a1f25d5f16f4ae585d0578cdd1c8cc8900ba9c166017884d8a17a2aa"
        );
    }
}
