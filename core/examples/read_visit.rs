//! Reads a typical visit document N times: a fixed workload for counting instructions with
//! callgrind (docs/performance.md, "Phone core"). Run twice, with N and N + 100, and divide the
//! difference by 100 for the instructions of one `read()`.
//!
//!     cargo build --release -p caresync-core --example read_visit
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/read_visit 101

use automerge::ActorId;
use caresync_core::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reads: usize = std::env::args().nth(1).unwrap_or_else(|| "1".into()).parse()?;
    let carer = PersonId::new();
    let t0: Millis = 1_790_000_000_000;
    let schedule = Schedule {
        client_id: ClientId::new(),
        contract_id: ContractId::new(),
        carers: vec![carer],
        planned_start: t0,
        planned_end: t0 + 30 * MINUTE_MS,
        tasks: vec![
            Task {
                id: TaskId::new(),
                title: "Medication prompt".into(),
            },
            Task {
                id: TaskId::new(),
                title: "Prepare breakfast".into(),
            },
        ],
        status: VisitStatus::Scheduled,
        cancel_reason: None,
        chargeable: None,
    };
    let mut doc = VisitDocument::create(VisitId::new(), &schedule, &ActorId::random())?;
    let mut phone = doc.fork().with_actor(&ActorId::random());
    for (kind, at) in [
        (ClockKind::ClockIn, t0 + 2 * MINUTE_MS),
        (ClockKind::ClockOut, t0 + 31 * MINUTE_MS),
    ] {
        phone.append_event(&ClockEvent {
            id: EventId::new(),
            kind,
            carer_id: carer,
            device_id: DeviceId::new(),
            device_time: at,
            clock_offset_ms: Some(-1_250),
            offset_measured_at: Some(t0 - HOUR_MS),
            method: ClockMethod::Nfc,
            reason: None,
            location: Some(Location {
                lat: 51.4545,
                lon: -2.5879,
                accuracy_m: 11.0,
            }),
            tag_id: Some("04:A2:19:7C:33:80".into()),
        })?;
    }
    for (category, text) in [
        (
            NoteCategory::Medication,
            "Morning tablets taken with water, no problems swallowing.",
        ),
        (
            NoteCategory::Wellbeing,
            "In good spirits, talked about her grandson's visit at the weekend. Ate all of breakfast.",
        ),
    ] {
        phone.append_note(&Note {
            id: NoteId::new(),
            author_id: carer,
            author_role: Role::Carer,
            written_at: t0 + 20 * MINUTE_MS,
            category,
            text: text.into(),
        })?;
    }
    doc.merge(&mut phone)?;
    let loaded = VisitDocument::load_unchecked(&doc.save())?;
    let mut notes = 0;
    for _ in 0..reads {
        notes += std::hint::black_box(loaded.read()?).notes.len();
    }
    println!("{reads} reads, {notes} notes");
    Ok(())
}
