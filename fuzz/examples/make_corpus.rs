//! Writes the checked-in seed corpus (fuzz/corpus/<target>/): real phone and server messages made
//! by the core, so the fuzzer starts from what phones actually send.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example make_corpus`

use automerge::sync::{State as SyncState, SyncDoc};
use caresync_core::domain::*;
use caresync_core::protocol::*;
use caresync_core::visit_document::{Amendment, ClockEvent, Note, TaskOutcome, VisitDocument};
use caresync_fuzz::{message_with_raw_changes, phone_message, World, NOW};
use std::path::Path;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn event(w: &World, kind: ClockKind, method: ClockMethod, n: u128) -> ClockEvent {
    ClockEvent {
        id: EventId(uuid::Uuid::from_u128(0xe000 + n)),
        kind,
        carer_id: w.carer,
        device_id: w.device,
        device_time: NOW + HOUR_MS + n as i64 * MINUTE_MS,
        clock_offset_ms: Some(350),
        offset_measured_at: Some(NOW),
        method,
        reason: (method == ClockMethod::Manual).then_some(ReasonCode::ALL[0]),
        location: Some(Location {
            lat: 51.5,
            lon: -0.12,
            accuracy_m: 9.0,
        }),
        tag_id: (method == ClockMethod::Nfc).then(|| "NFC-1001".into()),
    }
}

fn note(w: &World, text: &str, n: u128) -> Note {
    Note {
        id: NoteId(uuid::Uuid::from_u128(0xa000 + n)),
        author_id: w.carer,
        author_role: Role::Carer,
        written_at: NOW + HOUR_MS,
        category: NoteCategory::ALL[n as usize % NoteCategory::ALL.len()],
        text: text.into(),
    }
}

/// Phone replicas after what a carer does on a visit, and some things a phone must not do.
fn phone_edits(w: &World) -> Vec<(&'static str, VisitDocument)> {
    let edit = |f: &dyn Fn(&mut VisitDocument)| {
        let mut phone = w.phone_replica();
        f(&mut phone);
        phone
    };
    vec![
        ("nothing", w.phone_replica()),
        (
            "clock_in",
            edit(&|p| drop(p.append_event(&event(w, ClockKind::ClockIn, ClockMethod::Nfc, 1)))),
        ),
        (
            "visit_day",
            edit(&|p| {
                let _ = p.append_event(&event(w, ClockKind::ClockIn, ClockMethod::Gps, 1));
                let _ = p.append_task_outcome(&TaskOutcome {
                    id: OutcomeId(uuid::Uuid::from_u128(0xb001)),
                    task_id: w.task,
                    carer_id: w.carer,
                    result: TaskResult::ALL[0],
                    note: Some("Taken with water".into()),
                    recorded_at: NOW + HOUR_MS,
                });
                let _ = p.append_note(&note(w, "Lunch eaten, in good spirits.", 1));
                let _ = p.append_event(&event(w, ClockKind::ClockOut, ClockMethod::Gps, 30));
            }),
        ),
        (
            "manual_clock",
            edit(&|p| drop(p.append_event(&event(w, ClockKind::ClockIn, ClockMethod::Manual, 2)))),
        ),
        (
            "long_note",
            edit(&|p| drop(p.append_note(&note(w, &"é".repeat(6000), 2)))),
        ),
        (
            "amendment",
            edit(&|p| {
                let _ = p.append_amendment(&Amendment {
                    id: AmendmentId(uuid::Uuid::from_u128(0xc001)),
                    author_id: w.carer,
                    author_role: Role::Carer,
                    carer_id: w.carer,
                    time: AmendedTime::ALL[0],
                    corrected_time: NOW,
                    reason: ReasonCode::ALL[0],
                    comment: None,
                    written_at: NOW,
                });
            }),
        ),
        (
            "reschedule",
            edit(&|p| {
                let mut s = w.schedule.clone();
                s.planned_end += HOUR_MS;
                let _ = p.update_schedule(&s);
            }),
        ),
        (
            "other_carer_event",
            edit(&|p| {
                let mut e = event(w, ClockKind::ClockIn, ClockMethod::App, 3);
                e.carer_id = w.other_carer;
                let _ = p.append_event(&e);
            }),
        ),
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let w = World::new();
    let shared = w.phone_replica().heads();
    let mut messages = vec![];
    for (name, mut phone) in phone_edits(&w) {
        let Some(message) = phone_message(&mut phone, shared.clone()) else {
            continue;
        };
        // commit_path: mode 0 (raw message), mode 2 and 0x80|0 for the reassigned visit.
        write(
            &root.join("commit_path"),
            &format!("msg_{name}"),
            &[&[0u8][..], &message].concat(),
        );
        write(
            &root.join("commit_path"),
            &format!("msg_reassigned_{name}"),
            &[&[0x80u8][..], &message].concat(),
        );
        // mode 1: the raw change bytes of the phone's last change.
        if let Some(change) = phone.automerge().get_last_local_change() {
            let raw = change.raw_bytes().to_vec();
            write(
                &root.join("commit_path"),
                &format!("raw_{name}"),
                &[&[1u8][..], &raw].concat(),
            );
            let _ = message_with_raw_changes(&mut w.phone_replica(), &raw);
        }
        messages.push((name, message));
    }
    // Edit programs (see caresync_fuzz::run_program): clock in, note, outcome; raw puts.
    for (name, program) in [
        (
            "prog_clock_in_out",
            vec![
                2u8, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 1, 1,
            ],
        ),
        (
            "prog_note",
            vec![2, 1, 0, b'h', 5, b'h', b'e', b'l', b'l', b'o', 1, 0, 1, 0, 0],
        ),
        ("prog_outcome", vec![2, 2, 1, 0, 0, 0, 1, 0, 1, 0]),
        (
            "prog_put_event_field",
            vec![2, 0, 0, 0, 1, 1, 1, 1, 1, 11, 5, 2, 29, 0, 1, 0, 0, 0, 4, 1],
        ),
        (
            "prog_insert_entry",
            vec![2, 6, 1, 29, 0, 0, 0, 5, 0, 1, 1, 4, 2, 5, 3, 17],
        ),
        ("prog_delete", vec![3, 7, 0, 0, 2, 7, 1, 29, 0]),
        ("prog_reassigned", vec![0x82, 0, 0, 1, 0, 0, 0, 2, 0, 1, 2, 3]),
    ] {
        write(&root.join("commit_path"), name, &program);
    }
    // sync_request: batches as the sync client sends them.
    let visit = |n: u128| VisitId(uuid::Uuid::from_u128(0xd000 + n));
    let request = |visits: Vec<VisitMessage>, digest: Option<String>| SyncRequest {
        protocol: PROTOCOL_VERSION,
        device_time: NOW,
        visits,
        manifest_digest: digest,
    };
    write(
        &root.join("sync_request"),
        "empty",
        &to_cbor(&request(vec![], None)),
    );
    write(
        &root.join("sync_request"),
        "digest",
        &to_cbor(&request(
            vec![],
            Some(manifest_digest([(
                visit(1),
                &caresync_core::Heads::from_bytes(&[[0xab; 32], [0xcd; 32]]),
            )])),
        )),
    );
    for (k, (name, message)) in messages.iter().enumerate() {
        let one = VisitMessage {
            visit_id: visit(k as u128),
            message: message.clone(),
        };
        write(
            &root.join("sync_request"),
            name,
            &to_cbor(&request(vec![one], None)),
        );
    }
    let batch: Vec<VisitMessage> = messages
        .iter()
        .take(3)
        .enumerate()
        .map(|(k, (_, m))| VisitMessage {
            visit_id: visit(k as u128),
            message: m.clone(),
        })
        .collect();
    write(
        &root.join("sync_request"),
        "batch",
        &to_cbor(&request(batch, None)),
    );
    // Version 2 requests: each edit's raw changes since the shared heads, alone and as a batch.
    let mut pushes = vec![];
    for (k, (name, mut phone)) in phone_edits(&w).into_iter().enumerate() {
        let changes: Vec<Vec<u8>> = phone
            .automerge()
            .get_changes(&shared)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let push = v2::Push {
            visit_id: visit(k as u128),
            changes,
            heads: None,
        };
        let one = v2::Request {
            device_time: NOW,
            visits: vec![push.clone()],
            manifest_digest: Some(vec![0x5a; v2::DIGEST_BYTES]),
        };
        write(&root.join("sync_request"), &format!("v2_{name}"), &v2::encode(&one));
        pushes.push(push);
    }
    pushes.push(v2::Push {
        visit_id: visit(99),
        changes: vec![],
        heads: Some(caresync_core::Heads::from(shared.clone())),
    });
    let batch = v2::Request {
        device_time: NOW,
        visits: pushes,
        manifest_digest: None,
    };
    write(&root.join("sync_request"), "v2_batch", &v2::encode(&batch));
    write(
        &root.join("sync_request"),
        "v2_batch_plain",
        &[&[v2::PLAIN][..], &to_cbor(&batch)].concat(),
    );
    // sync_response: the server's replies to a phone that holds the visit, and to one that does not.
    let mut server_doc = VisitDocument::load(&w.created).expect("load");
    let _ = server_doc.automerge().load_incremental(&w.reassignment);
    for (_, mut phone) in phone_edits(&w).into_iter().take(3) {
        let _ = server_doc.merge(&mut phone);
    }
    let mut replies = vec![];
    for (name, shared) in [("fresh_phone", vec![]), ("phone_behind", shared.clone())] {
        let mut state = SyncState::new();
        state.shared_heads = shared;
        let mut state = caresync_core::sync_client::primed(state);
        if let Some(m) = server_doc.automerge().sync().generate_sync_message(&mut state) {
            replies.push((name, m.encode()));
        }
    }
    let heads: Vec<[u8; 32]> = server_doc.heads().iter().map(|h| h.0).collect();
    for (name, message) in &replies {
        let response = SyncResponse {
            protocol: PROTOCOL_VERSION,
            server_time: NOW + 1234,
            visits: vec![VisitMessage {
                visit_id: visit(1),
                message: message.clone(),
            }],
            errors: vec![VisitError {
                visit_id: visit(2),
                code: "forbidden_change".into(),
                message: "a carer's phone may not write the schedule".into(),
            }],
            manifest: vec![ManifestEntry {
                visit_id: visit(1),
                heads: caresync_core::Heads::from_bytes(&heads),
            }],
            manifest_complete: true,
        };
        write(&root.join("sync_response"), name, &to_cbor(&response));
    }
    let empty = SyncResponse {
        protocol: PROTOCOL_VERSION,
        server_time: NOW,
        visits: vec![],
        errors: vec![],
        manifest: vec![],
        manifest_complete: false,
    };
    write(&root.join("sync_response"), "empty", &to_cbor(&empty));
    // Version 2 answers: what a fresh phone and a phone behind lack, a refusal, a whole manifest.
    let server_heads = caresync_core::Heads::from(server_doc.heads());
    for (name, since) in [("v2_fresh_phone", vec![]), ("v2_phone_behind", shared.clone())] {
        let changes: Vec<Vec<u8>> = server_doc
            .automerge()
            .get_changes(&since)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let response = v2::Response {
            server_time: NOW + 1234,
            visits: vec![v2::Pull {
                visit_id: visit(1),
                changes,
                heads: Some(server_heads.clone()),
            }],
            errors: vec![v2::Refusal {
                visit_id: visit(2),
                code: "forbidden_change".into(),
                message: "a carer's phone may not write the schedule".into(),
            }],
            manifest: vec![v2::Entry {
                visit_id: visit(1),
                heads: server_heads.clone(),
            }],
            manifest_complete: true,
        };
        write(&root.join("sync_response"), name, &v2::encode(&response));
    }
    write(
        &root.join("sync_response"),
        "v2_empty",
        &v2::encode(&v2::Response {
            server_time: NOW,
            ..Default::default()
        }),
    );
    println!("seed corpus written under {}", root.display());
}
