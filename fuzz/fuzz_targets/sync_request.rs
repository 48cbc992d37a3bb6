//! The server's reading of a sync request, up to the per-visit messages: the CBOR body, its checks
//! (protocol, batch size, duplicates), and each visit's size check and Automerge message decoding,
//! as `http::sync` and `VisitService::ingest` do before any document is touched.
#![no_main]

use caresync_core::protocol::{decode_sync_message, from_cbor, to_cbor, SyncRequest, MAX_MESSAGE_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(request) = caresync_server::http::decode_request(body) else {
        return;
    };
    for visit in &request.visits {
        if visit.message.len() <= MAX_MESSAGE_BYTES {
            let _ = decode_sync_message(&visit.message);
        }
    }
    // What the server accepted it can write back the same.
    let again = from_cbor::<SyncRequest>(&to_cbor(&request)).expect("a decoded request re-encodes");
    assert_eq!(again, request);
});
