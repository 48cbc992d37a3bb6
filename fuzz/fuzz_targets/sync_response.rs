//! The phone's reading of the server's reply, as the core's sync client does it, in either protocol:
//! the CBOR body (version 2: its frame, inflated),
//! the protocol check, the clock offset from the server's time, each visit's Automerge message
//! decoded and received into a replica of a real visit document, which the app then reads.
#![no_main]

use automerge::sync::{State as SyncState, SyncDoc};
use caresync_core::clock::ClockOffset;
use caresync_core::protocol::{decode_sync_message, from_cbor, v2, SyncResponse, PROTOCOL_VERSION};
use caresync_core::visit_document::VisitDocument;
use caresync_fuzz::{World, NOW};
use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};

static REPLICA: OnceLock<Mutex<VisitDocument>> = OnceLock::new();

/// A version 2 answer, as the sync client takes it: each pull's changes applied to a replica of a
/// real visit document, which the app then reads.
fn version_2(body: &[u8]) {
    let Ok(response) = v2::decode::<v2::Response>(body) else {
        return;
    };
    let offset = ClockOffset::measure(NOW, NOW + 250, response.server_time);
    assert_eq!(offset.offset_ms, response.server_time.saturating_sub(NOW + 125));
    let replica = REPLICA.get_or_init(|| Mutex::new(World::new().phone_replica()));
    let mut replica = replica.lock().unwrap_or_else(|e| e.into_inner());
    for pull in response.visits {
        let Ok(changes) = pull
            .changes
            .iter()
            .map(|c| v2::parse_change(c))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let mut copy = replica.fork();
        if v2::apply_changes(copy.automerge(), changes).is_ok() {
            let _ = copy.read();
        }
    }
    for entry in &response.manifest {
        let _: Vec<String> = entry.heads.to_hex();
    }
}

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
        return version_2(body);
    }
    let Ok(response) = from_cbor::<SyncResponse>(body) else {
        return;
    };
    if response.protocol != PROTOCOL_VERSION {
        return;
    }
    let offset = ClockOffset::measure(NOW, NOW + 250, response.server_time);
    assert_eq!(offset.measured_at, NOW + 250);
    // Server minus the round trip's midpoint: a wild server time saturates, it never wraps.
    assert_eq!(offset.offset_ms, response.server_time.saturating_sub(NOW + 125));
    let replica = REPLICA.get_or_init(|| Mutex::new(World::new().phone_replica()));
    let mut replica = replica.lock().unwrap_or_else(|e| e.into_inner());
    for reply in response.visits {
        let Ok(message) = decode_sync_message(&reply.message) else {
            continue;
        };
        let mut copy = replica.fork();
        let mut state = SyncState::new();
        if copy
            .automerge()
            .sync()
            .receive_sync_message(&mut state, message)
            .is_ok()
        {
            let _ = copy.read();
            let _ = copy.automerge().sync().generate_sync_message(&mut state);
        }
    }
    for entry in &response.manifest {
        let _: Vec<String> = entry.heads.to_hex();
    }
});
