//! Phone-core figures for docs/performance.md: a durable clock-in, a note on a visit with a long
//! history, opening a store holding 10,000 visits, listing one day of it, and the size of a typical
//! visit document.
//!
//! Run: `cargo bench -p caresync-core --bench store -- --warm-up-time 1 --measurement-time 5`

use automerge::ActorId;
use caresync_core::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const T0: Millis = 1_790_000_000_000; // 2026-09-21 00:13 BST
/// 10,000 visits at 20 a day: 500 days, a year and a half of one carer's rota.
const VISITS: usize = 10_000;
const VISITS_PER_DAY: usize = 20;

fn schedule(carer: PersonId, start: Millis) -> Schedule {
    Schedule {
        client_id: ClientId::new(),
        contract_id: ContractId::new(),
        carers: vec![carer],
        planned_start: start,
        planned_end: start + 30 * MINUTE_MS,
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
    }
}

fn enrolled_store(path: &Path) -> (PhoneStore, PersonId) {
    let store = PhoneStore::open_with(path, Arc::new(ManualClock::new(T0)), chrono_tz::Europe::London)
        .expect("open the bench store");
    let carer = PersonId::new();
    store
        .set_identity(&DeviceIdentity {
            device_id: DeviceId::new(),
            carer_id: carer,
            server_url: "http://127.0.0.1:9".into(),
            token: "t".into(),
        })
        .expect("enrol");
    (store, carer)
}

fn give(store: &PhoneStore, carer: PersonId, start: Millis) -> VisitId {
    let mut doc =
        VisitDocument::create(VisitId::new(), &schedule(carer, start), &ActorId::random()).expect("create");
    store.import_visit(&doc.save()).expect("import")
}

/// A visit as it looks once done: schedule, clock-in and clock-out, two notes.
fn typical_document(carer: PersonId) -> VisitDocument {
    let device = DeviceId::new();
    let mut doc =
        VisitDocument::create(VisitId::new(), &schedule(carer, T0), &ActorId::random()).expect("create");
    let mut phone = doc.fork().with_actor(&ActorId::random());
    for (kind, at) in [
        (ClockKind::ClockIn, T0 + 2 * MINUTE_MS),
        (ClockKind::ClockOut, T0 + 31 * MINUTE_MS),
    ] {
        phone
            .append_event(&ClockEvent {
                id: EventId::new(),
                kind,
                carer_id: carer,
                device_id: device,
                device_time: at,
                clock_offset_ms: Some(-1_250),
                offset_measured_at: Some(T0 - HOUR_MS),
                method: ClockMethod::Nfc,
                reason: None,
                location: Some(Location {
                    lat: 51.4545,
                    lon: -2.5879,
                    accuracy_m: 11.0,
                }),
                tag_id: Some("04:A2:19:7C:33:80".into()),
            })
            .expect("event");
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
        phone
            .append_note(&Note {
                id: NoteId::new(),
                author_id: carer,
                author_role: Role::Carer,
                written_at: T0 + 20 * MINUTE_MS,
                category,
                text: text.into(),
            })
            .expect("note");
    }
    doc.merge(&mut phone).expect("merge");
    doc
}

fn clock_in(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, carer) = enrolled_store(&dir.path().join("phone.db"));
    // Each iteration clocks in to a visit imported (untimed) just before it, as a phone writes to
    // a visit its last sync brought.
    c.bench_function("phone/clock_in_durable", |b| {
        b.iter_batched(
            || give(&store, carer, T0),
            |visit| store.clock_in(visit, &ClockRequest::app()).expect("clock in"),
            BatchSize::PerIteration,
        )
    });
}

/// A note on a visit that already holds 50 notes: a write should not cost more with the visit's
/// history (issue 15: within 1.5x of a first clock-in).
fn note_on_long_visit(c: &mut Criterion) {
    const PRIOR_NOTES: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, carer) = enrolled_store(&dir.path().join("phone.db"));
    let long_visit = || {
        let mut doc =
            VisitDocument::create(VisitId::new(), &schedule(carer, T0), &ActorId::random()).expect("create");
        for i in 0..PRIOR_NOTES {
            doc.append_note(&Note {
                id: NoteId::new(),
                author_id: carer,
                author_role: Role::Carer,
                written_at: T0 + i as i64 * MINUTE_MS,
                category: NoteCategory::General,
                text: format!("Handover note {i}: settled, drinks left within reach, door locked."),
            })
            .expect("note");
        }
        doc
    };
    eprintln!(
        "visit document with {PRIOR_NOTES} notes: {} bytes saved",
        long_visit().save().len()
    );
    let mut group = c.benchmark_group("phone");
    group.sample_size(30);
    group.bench_function("add_note_visit_with_50_notes", |b| {
        b.iter_batched(
            || store.import_visit(&long_visit().save()).expect("import"),
            |visit| {
                store
                    .add_note(
                        visit,
                        NoteCategory::Wellbeing,
                        "Tired today, stayed in bed longer.",
                    )
                    .expect("note")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn ten_thousand_visits(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("phone.db");
    let started = Instant::now();
    {
        let (store, carer) = enrolled_store(&path);
        for i in 0..VISITS {
            let day = (i / VISITS_PER_DAY) as i64;
            let slot = (i % VISITS_PER_DAY) as i64;
            give(
                &store,
                carer,
                T0 + day * DAY_MS + HOUR_MS * 6 + slot * 40 * MINUTE_MS,
            );
        }
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built a store of {VISITS} visits in {:.1?}: {bytes} bytes on disk, {} bytes per visit",
        started.elapsed(),
        bytes / VISITS as u64
    );

    c.bench_function("phone/open_10k_visits", |b| {
        b.iter(|| black_box(PhoneStore::open(&path).expect("open")))
    });

    let store = PhoneStore::open_with(&path, Arc::new(ManualClock::new(T0)), chrono_tz::Europe::London)
        .expect("open");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("date");
    let listed = store.visits_on(day).expect("list").len();
    assert_eq!(listed, VISITS_PER_DAY, "the listed day should be a full one");
    c.bench_function("phone/visits_on_day_of_10k", |b| {
        b.iter(|| black_box(store.visits_on(black_box(day)).expect("list")))
    });
}

fn document_size(c: &mut Criterion) {
    let mut doc = typical_document(PersonId::new());
    let saved = doc.save();
    eprintln!(
        "typical visit document (schedule with 2 tasks, 2 clock events, 2 notes): {} bytes saved",
        saved.len()
    );
    c.bench_function("phone/load_and_read_typical_document", |b| {
        b.iter(|| {
            VisitDocument::load(black_box(&saved))
                .expect("load")
                .read()
                .expect("read")
        })
    });
}

criterion_group!(
    benches,
    clock_in,
    note_on_long_visit,
    ten_thousand_visits,
    document_size
);
criterion_main!(benches);
