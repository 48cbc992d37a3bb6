//! A fixed workload of phone writes for counting instructions with callgrind
//! (docs/performance.md, "Phone core"): N first clock-ins on fresh visits, or N notes each on a
//! visit already holding 50 notes. Count only inside the store call:
//!
//!     cargo build --release -p caresync-core --example phone_writes
//!     TMPDIR=/dev/shm valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!         --toggle-collect='*PhoneStore*clock_in*' target/release/examples/phone_writes clock_in 20
//!     TMPDIR=/dev/shm valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!         --toggle-collect='*PhoneStore*add_note*' target/release/examples/phone_writes note_on_50 20

use automerge::ActorId;
use caresync_core::*;
use std::sync::Arc;

const T0: Millis = 1_790_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "clock_in".into());
    let n: usize = args.next().unwrap_or_else(|| "10".into()).parse()?;
    let dir = tempfile::tempdir()?;
    let store = PhoneStore::open_with(
        &dir.path().join("phone.db"),
        Arc::new(ManualClock::new(T0)),
        chrono_tz::Europe::London,
    )?;
    let carer = PersonId::new();
    store.set_identity(&DeviceIdentity {
        device_id: DeviceId::new(),
        carer_id: carer,
        server_url: "http://127.0.0.1:9".into(),
        token: "t".into(),
    })?;
    let prior_notes = if op == "note_on_50" { 50 } else { 0 };
    let mut visits = Vec::new();
    for _ in 0..n {
        let schedule = Schedule {
            client_id: ClientId::new(),
            contract_id: ContractId::new(),
            carers: vec![carer],
            planned_start: T0,
            planned_end: T0 + 30 * MINUTE_MS,
            tasks: vec![Task {
                id: TaskId::new(),
                title: "Medication prompt".into(),
            }],
            status: VisitStatus::Scheduled,
            cancel_reason: None,
            chargeable: None,
        };
        let mut doc = VisitDocument::create(VisitId::new(), &schedule, &ActorId::random())?;
        for i in 0..prior_notes {
            doc.append_note(&Note {
                id: NoteId::new(),
                author_id: carer,
                author_role: Role::Carer,
                written_at: T0 + i as i64 * MINUTE_MS,
                category: NoteCategory::General,
                text: format!("Handover note {i}: settled, drinks left within reach, door locked."),
            })?;
        }
        visits.push(store.import_visit(&doc.save())?);
    }
    for visit in visits {
        if op == "note_on_50" {
            store.add_note(
                visit,
                NoteCategory::Wellbeing,
                "Tired today, stayed in bed longer.",
            )?;
        } else {
            store.clock_in(visit, &ClockRequest::app())?;
        }
    }
    println!("{n} × {op}");
    Ok(())
}
