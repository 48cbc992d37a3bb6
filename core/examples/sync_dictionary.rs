//! Writes the preset dictionary of sync protocol version 2 (`core/src/protocol/v2_dictionary.bin`):
//! one sample of each change a visit document carries and of each envelope, so that deflating a
//! real body finds the document's field names, enum values and the envelope's shape in it and
//! spends its bits on what is new (ids, hashes, times, text).
//!
//!     cargo run -p caresync-core --example sync_dictionary -- core/src/protocol/v2_dictionary.bin
//!
//! The dictionary is part of the protocol: once released, it is never written again for version 2
//! (a test pins its SHA-256). Deflate finds nearer matches cheaper, so the commonest samples
//! (a clock event, a request around it) come last.

use automerge::{ActorId, ChangeHash};
use caresync_core::protocol::v2;
use caresync_core::*;

const T0: Millis = 1_790_000_000_000;

fn changes_since(doc: &mut VisitDocument, before: &[ChangeHash]) -> Vec<Vec<u8>> {
    doc.automerge()
        .get_changes(before)
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "core/src/protocol/v2_dictionary.bin".into());
    let (carer, office, device) = (PersonId::new(), PersonId::new(), DeviceId::new());
    let mut schedule = test_kit::schedule(vec![carer], T0);
    schedule.tasks.push(test_kit::task("Medication prompt"));
    let visit_id = VisitId::new();
    let mut doc = VisitDocument::create(visit_id, &schedule, &ActorId::random())?;
    let mut dict: Vec<u8> = Vec::new();
    // The office's creation and a reschedule: pulled once per visit.
    dict.extend(changes_since(&mut doc, &[]).concat());
    let before = doc.heads();
    schedule.planned_start += 15 * MINUTE_MS;
    schedule.planned_end += 15 * MINUTE_MS;
    doc.update_schedule(&schedule)?;
    dict.extend(changes_since(&mut doc, &before).concat());
    // An amendment by the office, and a task outcome from the phone.
    let before = doc.heads();
    doc.append_amendment(&Amendment {
        id: AmendmentId::new(),
        author_id: office,
        author_role: Role::Supervisor,
        carer_id: carer,
        time: AmendedTime::ClockIn,
        corrected_time: T0,
        reason: ReasonCode::ForgotToClock,
        comment: None,
        written_at: T0 + 60 * MINUTE_MS,
    })?;
    dict.extend(changes_since(&mut doc, &before).concat());
    let mut phone = doc.fork().with_actor(&ActorId::random());
    let before = phone.heads();
    phone.append_task_outcome(&TaskOutcome {
        id: OutcomeId::new(),
        task_id: schedule.tasks[0].id,
        carer_id: carer,
        result: TaskResult::Done,
        note: None,
        recorded_at: T0 + 20 * MINUTE_MS,
    })?;
    dict.extend(changes_since(&mut phone, &before).concat());
    // An answer with a pull and a manifest.
    let heads = Heads::from(phone.heads());
    dict.extend(caresync_core::protocol::to_cbor(&v2::Response {
        server_time: T0,
        visits: vec![v2::Pull {
            visit_id,
            changes: vec![],
            heads: Some(heads.clone()),
        }],
        errors: vec![],
        manifest: vec![v2::Entry { visit_id, heads }],
        manifest_complete: true,
    }));
    // A note, a clock-out with a location and offsets, and a request around a clock-in.
    let event = |kind, location| ClockEvent {
        id: EventId::new(),
        kind,
        carer_id: carer,
        device_id: device,
        device_time: T0 + 25 * MINUTE_MS,
        clock_offset_ms: Some(-1_250),
        offset_measured_at: Some(T0 - 30 * MINUTE_MS),
        method: ClockMethod::App,
        reason: None,
        location,
        tag_id: None,
    };
    let before = phone.heads();
    phone.append_note(&Note {
        id: NoteId::new(),
        author_id: carer,
        author_role: Role::Carer,
        written_at: T0 + 24 * MINUTE_MS,
        category: NoteCategory::General,
        text: "All well, tea made.".into(),
    })?;
    phone.append_event(&event(
        ClockKind::ClockOut,
        Some(Location {
            lat: 51.501,
            lon: -0.142,
            accuracy_m: 12.0,
        }),
    ))?;
    dict.extend(changes_since(&mut phone, &before).concat());
    let before = phone.heads();
    phone.append_event(&event(ClockKind::ClockIn, None))?;
    dict.extend(caresync_core::protocol::to_cbor(&v2::Request {
        device_time: T0,
        visits: vec![v2::Push {
            visit_id,
            changes: changes_since(&mut phone, &before),
            heads: None,
        }],
        manifest_digest: Some(vec![0; v2::DIGEST_BYTES]),
    }));
    std::fs::write(&out, &dict)?;
    println!("{} bytes written to {out}", dict.len());
    Ok(())
}
