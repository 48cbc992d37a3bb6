//! Sync messages crafted to hurt the server, as the fuzz targets found them (docs/security.md,
//! "Fuzzing"): each is refused for its visit alone, and the visit stays usable afterwards.

use automerge::sync::{BloomFilter, Have, Message, State as SyncState, SyncDoc};
use caresync_core::domain::*;
use caresync_core::sync_client::primed;
use caresync_core::visit_document::{ClockEvent, Task, VisitDocument};
use caresync_core::Schedule;
use caresync_server::services::visits::{Ingested, VisitService};
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::{Person, Principal, ServerStore};
use std::sync::Arc;

const NOW: Millis = 1_795_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    visits: VisitService,
    carer: Principal,
    visit: VisitId,
    /// The phone's replica and the heads it shares with the server.
    phone: VisitDocument,
    shared: Vec<automerge::ChangeHash>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ServerStore> =
        Arc::new(SqliteStore::open(&dir.path().join("server.db")).expect("open"));
    let person = Person {
        id: PersonId::new(),
        name: "Ann".into(),
        role: Role::Carer,
        team_id: None,
        active: true,
    };
    store.create_person(&person).expect("person");
    let visits = VisitService::new(store.clone(), 100);
    let visit = VisitId::new();
    let schedule = Schedule {
        client_id: ClientId::new(),
        contract_id: ContractId::new(),
        carers: vec![person.id],
        planned_start: NOW + HOUR_MS,
        planned_end: NOW + HOUR_MS + 30 * MINUTE_MS,
        tasks: vec![Task {
            id: TaskId::new(),
            title: "Breakfast".into(),
        }],
        status: VisitStatus::Scheduled,
        cancel_reason: None,
        chargeable: None,
    };
    visits
        .create(visit, &schedule, PersonId::new(), NOW)
        .expect("create");
    let bytes: Vec<u8> = store
        .visit_chunks(visit)
        .expect("chunks")
        .into_iter()
        .flat_map(|c| c.bytes)
        .collect();
    let mut phone = VisitDocument::load(&bytes).expect("load");
    let shared = phone.heads();
    Fixture {
        _dir: dir,
        visits,
        carer: Principal {
            person,
            device_id: Some(DeviceId::new()),
        },
        visit,
        phone,
        shared,
    }
}

/// The phone's message after a clock-in, as the core's sync client sends it.
fn clock_in_message(f: &mut Fixture) -> Message {
    f.phone
        .append_event(&ClockEvent {
            id: EventId::new(),
            kind: ClockKind::ClockIn,
            carer_id: f.carer.person.id,
            device_id: f.carer.device_id.expect("device"),
            device_time: NOW + HOUR_MS,
            clock_offset_ms: Some(0),
            offset_measured_at: Some(NOW),
            method: ClockMethod::App,
            reason: None,
            location: None,
            tag_id: None,
        })
        .expect("clock in");
    let mut state = SyncState::new();
    state.shared_heads = f.shared.clone();
    f.phone
        .automerge()
        .sync()
        .generate_sync_message(&mut primed(state))
        .expect("a message")
}

/// A `have` whose bloom filter declares an entry but no bits: answering it made automerge 0.12
/// divide by zero, panicking while the visit's cache lock was held, so every later request for
/// that visit failed until a restart.
#[test]
fn a_bloom_filter_without_bits_is_refused_and_the_visit_stays_usable() {
    let mut f = fixture();
    let mut hostile = clock_in_message(&mut f);
    hostile.have = vec![Have {
        last_sync: vec![],
        bloom: BloomFilter::try_from(&[1u8, 0, 7][..]).expect("filter"),
    }];
    match f
        .visits
        .ingest(&f.carer, f.visit, &hostile.encode(), NOW)
        .expect("ingest")
    {
        Ingested::Refused(e) => assert_eq!(e.code, "malformed_message"),
        Ingested::Accepted { .. } => panic!("a message with an unusable bloom filter was accepted"),
    }
    assert!(
        f.visits.read(f.visit).expect("readable").events.is_empty(),
        "nothing stored"
    );

    // The same phone's honest message is then accepted.
    let honest = clock_in_message(&mut f);
    match f
        .visits
        .ingest(&f.carer, f.visit, &honest.encode(), NOW)
        .expect("ingest")
    {
        Ingested::Accepted { new_changes, .. } => assert!(new_changes > 0),
        Ingested::Refused(e) => panic!("refused: {e:?}"),
    }
    assert_eq!(f.visits.read(f.visit).expect("readable").events.len(), 2);
}

/// A panic while a visit is being handled (a bug, or a message a library chokes on) used to
/// poison the visit's cache lock, so every later sync, read or edit of that visit failed until a
/// restart. The next caller now reloads the visit from the store, which holds only what was
/// committed.
#[test]
fn a_panic_while_handling_a_visit_does_not_lock_it_for_good() {
    let f = fixture();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = f.visits.edit(f.visit, NOW, |_, _| panic!("a bug while editing"));
    }));
    assert!(panicked.is_err());
    let visit = f
        .visits
        .read(f.visit)
        .expect("the visit is readable after the panic");
    assert!(visit.events.is_empty());
}
