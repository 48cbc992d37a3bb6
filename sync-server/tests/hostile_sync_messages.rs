//! Sync messages crafted to hurt the server, as the fuzz targets found them (docs/security.md,
//! "Fuzzing"): each is refused for its visit alone, and the visit stays usable afterwards.

use automerge::sync::{BloomFilter, Have, Message, State as SyncState, SyncDoc};
use caresync_core::domain::*;
use caresync_core::sync_client::primed;
use caresync_core::visit_document::{ClockEvent, VisitDocument};
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
    let schedule = caresync_core::test_kit::schedule(vec![person.id], NOW + HOUR_MS);
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

/// The phone's message after `edit` wrote raw Automerge operations on its replica.
fn raw_message(f: &mut Fixture, edit: impl FnOnce(&mut automerge::AutoCommit)) -> Vec<u8> {
    edit(f.phone.automerge());
    f.phone.automerge().commit();
    let mut state = SyncState::new();
    state.shared_heads = f.shared.clone();
    f.phone
        .automerge()
        .sync()
        .generate_sync_message(&mut primed(state))
        .expect("a message")
        .encode()
}

/// New list entries that do not read as the schema says (found by the commit_path fuzz target:
/// an event map without an `id`; an event whose `location` is a list) made `ingest` fail as a
/// whole, so the phone's entire sync got a 500 and its other visits never synced. Each is now
/// that visit's `invalid_entry`, and nothing is stored.
#[test]
fn entries_that_do_not_read_as_the_schema_are_refused_for_their_visit_alone() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ROOT};
    /// Breaks a visit document, given the carer's and the device's ids.
    type Breakage = fn(&mut automerge::AutoCommit, &str, &str);
    let cases: [(&str, Breakage); 2] = [
        ("an event without an id", |doc, _, _| {
            let (_, events) = doc.get(ROOT, "events").expect("get").expect("events");
            let entry = doc.insert_object(&events, 0, ObjType::Map).expect("insert");
            doc.put(&entry, "kind", "clock_in").expect("put");
        }),
        ("an event whose location is a list", |doc, carer, device| {
            let (_, events) = doc.get(ROOT, "events").expect("get").expect("events");
            let entry = doc.insert_object(&events, 0, ObjType::Map).expect("insert");
            for (k, v) in [
                ("id", EventId::new().to_string()),
                ("kind", "clock_in".into()),
                ("carer_id", carer.into()),
                ("device_id", device.into()),
                ("method", "app".into()),
            ] {
                doc.put(&entry, k, v).expect("put");
            }
            doc.put(&entry, "device_time", NOW).expect("put");
            doc.put_object(&entry, "location", ObjType::List).expect("list");
        }),
    ];
    for (what, edit) in cases {
        let mut f = fixture();
        let (carer, device) = (
            f.carer.person.id.to_string(),
            f.carer.device_id.expect("device").to_string(),
        );
        let message = raw_message(&mut f, |doc| edit(doc, &carer, &device));
        match f.visits.ingest(&f.carer, f.visit, &message, NOW) {
            Ok(Ingested::Refused(e)) => assert_eq!(e.code, "invalid_entry", "{what}"),
            Ok(Ingested::Accepted { .. }) => panic!("{what}: accepted"),
            Err(e) => panic!("{what}: the whole sync failed: {e}"),
        }
        let visit = f.visits.read(f.visit).expect("readable");
        assert!(visit.events.is_empty(), "{what}: nothing stored");
    }
}

/// automerge 0.12 panics reading (`get`) a text character that carries an increment, and on a
/// local `put` by index into such text (both found by the commit_path fuzz target, in its
/// simulated phone). A phone can send exactly that: a note whose text is a text object with an
/// incremented counter among its characters. The server reads text whole (`text()`), never by `get`, so it must
/// neither panic nor fail the sync; the visit stays readable either way.
#[test]
fn a_note_whose_text_has_an_incremented_character_does_not_panic_the_server() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ROOT};
    let mut f = fixture();
    let carer = f.carer.person.id.to_string();
    let mut incremented = false;
    let message = raw_message(&mut f, |doc| {
        let (_, notes) = doc.get(ROOT, "notes").expect("get").expect("notes");
        let entry = doc.insert_object(&notes, 0, ObjType::Map).expect("insert");
        for (k, v) in [
            ("id", NoteId::new().to_string()),
            ("author_id", carer.clone()),
            ("author_role", "carer".into()),
            ("category", "general".into()),
        ] {
            doc.put(&entry, k, v).expect("put");
        }
        doc.put(&entry, "written_at", NOW).expect("put");
        let text = doc.put_object(&entry, "text", ObjType::Text).expect("text");
        doc.splice_text(&text, 0, 0, "Ate well").expect("splice");
        // A counter inserted among the characters, then incremented (as the fuzzer did).
        doc.insert(&text, 0, automerge::ScalarValue::counter(1))
            .expect("insert");
        incremented = doc.increment(&text, 0, 1).is_ok();
        // The library bug itself, so whoever upgrades automerge learns when it is gone.
        let get_panics = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = doc.get(&text, 0);
        }))
        .is_err();
        assert!(
            get_panics,
            "automerge no longer panics on get of an incremented character"
        );
    });
    assert!(incremented, "automerge let the phone increment a character");
    match f.visits.ingest(&f.carer, f.visit, &message, NOW) {
        Ok(Ingested::Accepted { .. } | Ingested::Refused(_)) => {}
        Err(e) => panic!("the whole sync failed: {e}"),
    }
    f.visits.read(f.visit).expect("the visit stays readable");
}
