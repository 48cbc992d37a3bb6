//! The server's reading of a sync request, up to the per-visit messages: the body in either
//! protocol (version 2's frame and inflation included), its checks (protocol, batch size,
//! duplicates), and each visit's size check and decoding (an Automerge sync message, or version 2's
//! raw changes), as `http::sync` and `VisitService` do before any document is touched.
#![no_main]

use caresync_core::protocol::{decode_sync_message, from_cbor, to_cbor, v2, SyncRequest, MAX_MESSAGE_BYTES};
use libfuzzer_sys::fuzz_target;

/// libFuzzer's own panic hook aborts on every panic, even one a boundary catches. The core reads
/// and applies peers' changes under `catch_unwind` (`v2::parse_change`, `v2::apply_changes`),
/// because automerge 0.12 panics on some crafted ones; those panics are refusals, not crashes.
/// This hook only prints: a panic nothing catches still aborts (libfuzzer-sys catches what
/// unwinds out of the target and aborts).
fn allow_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}"))));
}

fuzz_target!(|body: &[u8]| {
    allow_caught_panics();
    if v2::is_version2(body) {
        let Ok(request) = caresync_server::http::decode_request_v2(body) else {
            return;
        };
        for push in &request.visits {
            if push.changes.iter().map(Vec::len).sum::<usize>() <= MAX_MESSAGE_BYTES {
                let changes: Vec<_> = push
                    .changes
                    .iter()
                    .filter_map(|c| v2::parse_change(c).ok())
                    .collect();
                let _ = v2::implied_heads(&changes);
            }
        }
        let again: v2::Request = v2::decode(&v2::encode(&request)).expect("a decoded request re-encodes");
        assert_eq!(again, request);
        return;
    }
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
