//! A phone still holding a schema-v1 file upgrades to the current schema without losing a visit,
//! and ends with exactly the schema a fresh install has.

use automerge::ActorId;
use caresync_core::sqlite::{self, schema_fingerprint, Durability};
use caresync_core::store::MIGRATIONS;
use caresync_core::*;
use rusqlite::params;
use std::path::Path;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const T0: Millis = 1_790_000_000_000; // 2026-09-21 in BST

fn user_version(path: &Path) -> rusqlite::Result<i64> {
    rusqlite::Connection::open(path)?.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn fingerprint(path: &Path) -> rusqlite::Result<Vec<(String, String, String)>> {
    schema_fingerprint(&rusqlite::Connection::open(path)?)
}

struct V1Phone {
    carer: PersonId,
    visit: VisitId,
    event: ClockEvent,
}

/// Write a v1 file as a v1 build would have left it: an enrolled phone, a visit the carer had
/// clocked in to (document plus derived rows), and nothing saying what the server has seen.
fn build_v1(path: &Path) -> Result<V1Phone, Box<dyn std::error::Error>> {
    let conn = sqlite::open(path, &MIGRATIONS[..1], Durability::Full)?;
    assert_eq!(user_version(path)?, 1);
    let (carer, device, actor) = (PersonId::new(), DeviceId::new(), ActorId::random());
    conn.execute(
        "INSERT INTO device (id, device_id, carer_id, actor, server_url, token) VALUES (1, ?1, ?2, ?3, ?4, ?5)",
        params![device.to_string(), carer.to_string(), actor.to_bytes(), "http://127.0.0.1:9", "t"],
    )?;
    let visit = VisitId::new();
    let schedule = Schedule {
        client_id: ClientId::new(),
        contract_id: ContractId::new(),
        carers: vec![carer],
        planned_start: T0,
        planned_end: T0 + 45 * MINUTE_MS,
        tasks: vec![Task {
            id: TaskId::new(),
            title: "Medication prompt".into(),
        }],
        status: VisitStatus::Scheduled,
        cancel_reason: None,
        chargeable: None,
    };
    let mut doc = VisitDocument::create(visit, &schedule, &ActorId::random())?.with_actor(&actor);
    let event = ClockEvent {
        id: EventId::new(),
        kind: ClockKind::ClockIn,
        carer_id: carer,
        device_id: device,
        device_time: T0 + 3 * MINUTE_MS,
        clock_offset_ms: Some(-2_000),
        offset_measured_at: Some(T0),
        method: ClockMethod::Nfc,
        reason: None,
        location: None,
        tag_id: Some("tag-17".into()),
    };
    doc.append_event(&event)?;
    conn.execute(
        "INSERT INTO visits (visit_id, doc, client_id, contract_id, planned_start, planned_end, status, my_state,
                             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'scheduled', 'in_progress', ?7)",
        params![
            visit.to_string(),
            doc.save(),
            schedule.client_id.to_string(),
            schedule.contract_id.to_string(),
            schedule.planned_start,
            schedule.planned_end,
            T0 + 3 * MINUTE_MS
        ],
    )?;
    conn.execute(
        "INSERT INTO clock_events (event_id, visit_id, kind, carer_id, device_time, trusted_time, method)
         VALUES (?1, ?2, 'clock_in', ?3, ?4, ?5, 'nfc')",
        params![
            event.id.to_string(),
            visit.to_string(),
            carer.to_string(),
            event.device_time,
            event.trusted_time()
        ],
    )?;
    Ok(V1Phone { carer, visit, event })
}

#[test]
fn a_v1_file_migrates_to_the_fresh_schema_and_keeps_its_visit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let old = dir.path().join("old.db");
    let v1 = build_v1(&old)?;
    let v1_schema = fingerprint(&old)?;

    let store = PhoneStore::open(&old)?;
    assert_eq!(user_version(&old)?, MIGRATIONS.len() as i64);
    assert_eq!(user_version(&old)?, 3);

    let fresh = dir.path().join("fresh.db");
    drop(PhoneStore::open(&fresh)?);
    let migrated_schema = fingerprint(&old)?;
    assert_eq!(migrated_schema, fingerprint(&fresh)?);
    // The comparison has teeth: v2 really changed the schema.
    assert_ne!(migrated_schema, v1_schema);

    // The visit survived, readable through the store, with its derived rows intact.
    let detail = store.visit(v1.visit)?;
    assert_eq!(detail.visit.events, vec![v1.event.clone()]);
    assert_eq!(detail.state, CarerVisitState::InProgress);
    assert_eq!(store.identity()?.map(|i| i.carer_id), Some(v1.carer));
    assert_eq!(store.verify_derived_rows()?, Vec::<String>::new());
    let day = chrono::NaiveDate::from_ymd_opt(2026, 9, 21).ok_or("date")?;
    let listed: Vec<VisitId> = store.visits_on(day)?.iter().map(|s| s.visit_id).collect();
    assert_eq!(listed, vec![v1.visit]);

    // A v1 file cannot say what the server has seen, so the visit counts as unsynced...
    assert_eq!(detail.pending_changes, 1);
    assert_eq!(
        store.outbox()?,
        vec![OutboxEntry {
            visit_id: v1.visit,
            pending_changes: 1
        }]
    );
    // ...and retention, however aggressive, keeps it.
    assert_eq!(store.purge_ended_before(T0 + 365 * DAY_MS)?, 0);
    assert!(store.visit(v1.visit).is_ok());

    // The migrated phone goes on working: the carer clocks out.
    store.clock_out(v1.visit, &ClockRequest::app())?;
    assert_eq!(store.visit(v1.visit)?.state, CarerVisitState::Done);
    assert_eq!(store.verify_derived_rows()?, Vec::<String>::new());
    drop(store);

    // Opening again does not re-run a migration (a second v2 would fail on ALTER TABLE ADD COLUMN).
    let again = PhoneStore::open(&old)?;
    assert_eq!(user_version(&old)?, 3);
    assert_eq!(again.visit(v1.visit)?.visit.events.len(), 2);
    Ok(())
}

/// v3 (refused changes, issue 11) over a v2 file: the same schema as a fresh file, nothing
/// refused, and the unsynced clock-in still waiting to be sent.
#[test]
fn a_v2_file_gains_the_refusals_table_and_keeps_its_outbox() -> TestResult {
    let dir = tempfile::tempdir()?;
    let old = dir.path().join("old.db");
    let v1 = build_v1(&old)?;
    drop(sqlite::open(&old, &MIGRATIONS[..2], Durability::Full)?);
    assert_eq!(user_version(&old)?, 2);
    let v2_schema = fingerprint(&old)?;
    assert!(!v2_schema.iter().any(|(_, name, _)| name == "refusals"));

    let store = PhoneStore::open(&old)?;
    assert_eq!(user_version(&old)?, 3);
    let fresh = dir.path().join("fresh.db");
    drop(PhoneStore::open(&fresh)?);
    let migrated = fingerprint(&old)?;
    assert_eq!(migrated, fingerprint(&fresh)?);
    assert!(
        migrated.iter().any(|(_, name, _)| name == "refusals"),
        "{migrated:?}"
    );

    assert!(store.refused_changes()?.is_empty());
    assert_eq!(store.pending_count()?, 1);
    assert_eq!(
        store.outbox()?,
        vec![OutboxEntry {
            visit_id: v1.visit,
            pending_changes: 1
        }]
    );
    assert_eq!(store.purge_ended_before(T0 + 365 * DAY_MS)?, 0);
    assert_eq!(store.visit(v1.visit)?.visit.events, vec![v1.event]);
    Ok(())
}

#[test]
fn a_fresh_store_is_at_the_latest_version_with_nothing_pending() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("phone.db");
    let store = PhoneStore::open(&path)?;
    assert_eq!(user_version(&path)?, MIGRATIONS.len() as i64);
    assert_eq!(store.pending_count()?, 0);
    assert!(store.outbox()?.is_empty());
    Ok(())
}
