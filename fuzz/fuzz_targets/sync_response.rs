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
        if copy.automerge().apply_changes(changes).is_ok() {
            let _ = copy.read();
        }
    }
    for entry in &response.manifest {
        let _: Vec<String> = entry.heads.to_hex();
    }
}

/// As in `sync_request`: the panic `v2::parse_change` catches (automerge 0.12's `OpId::new`) is
/// not a crash; any other panic is.
fn allow_automerge_known_panic() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let known = info
                .location()
                .is_some_and(|l| l.file().contains("automerge") && l.file().ends_with("types.rs"));
            if !known {
                eprintln!("{info}");
                std::process::abort();
            }
        }));
    });
}

fuzz_target!(|body: &[u8]| {
    allow_automerge_known_panic();
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
