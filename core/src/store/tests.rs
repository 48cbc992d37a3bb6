use super::*;
use crate::clock::{ClockOffset, ManualClock};
use crate::heads::Heads;
use automerge::sync::State as SyncState;
use automerge::ActorId;
use chrono::NaiveDate;

const T0: Millis = 1_790_000_000_000; // 2026-09-21, a Monday in BST

struct Phone {
    _dir: tempfile::TempDir,
    store: PhoneStore,
    clock: Arc<ManualClock>,
    carer: PersonId,
    path: std::path::PathBuf,
}

fn phone() -> Phone {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("phone.db");
    let clock = Arc::new(ManualClock::new(T0));
    let store = PhoneStore::open_with(&path, clock.clone(), chrono_tz::Europe::London).expect("open");
    let carer = PersonId::new();
    store
        .set_identity(&DeviceIdentity {
            device_id: DeviceId::new(),
            carer_id: carer,
            server_url: "http://127.0.0.1:9".into(),
            token: "t".into(),
        })
        .expect("identity");
    Phone {
        _dir: dir,
        store,
        clock,
        carer,
        path,
    }
}

use crate::test_kit::schedule;

fn give(phone: &Phone, sched: &Schedule) -> VisitId {
    let id = VisitId::new();
    let mut doc = VisitDocument::create(id, sched, &ActorId::random()).expect("create");
    phone.store.import_visit(&doc.save()).expect("import")
}

/// Every table's rows, for "the store is unchanged" checks.
fn snapshot(p: &Phone) -> Vec<String> {
    let conn = p.store.lock().expect("lock");
    let mut out = Vec::new();
    for table in ["visits", "clock_events", "device", "clock"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
            .expect("prepare");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut s = String::new();
                for i in 0..n {
                    s.push_str(&format!("{:?}|", r.get_ref(i)?));
                }
                Ok(s)
            })
            .expect("query");
        out.extend(rows.map(|r| r.expect("row")));
    }
    out
}

fn assert_unchanged<T: std::fmt::Debug>(
    p: &Phone,
    op: impl FnOnce() -> Result<T>,
    expect: fn(&StoreError) -> bool,
) {
    let before = snapshot(p);
    match op() {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => assert!(expect(&e), "unexpected error: {e}"),
    }
    assert_eq!(before, snapshot(p), "the store changed");
}

#[test]
fn a_carers_visit_from_upcoming_to_done() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer], T0 + HOUR_MS));
    assert_eq!(p.store.visit(visit)?.state, CarerVisitState::Upcoming);

    p.store.set_clock_offset(ClockOffset {
        offset_ms: -4_000,
        measured_at: T0,
    })?;
    p.clock.set(T0 + HOUR_MS + 2 * MINUTE_MS);
    let loc = Location {
        lat: 51.45,
        lon: -2.58,
        accuracy_m: 12.0,
    };
    let ev = p.store.clock_in(
        visit,
        &ClockRequest {
            location: Some(loc),
            ..ClockRequest::app()
        },
    )?;
    assert_eq!(ev.device_time, T0 + HOUR_MS + 2 * MINUTE_MS);
    assert_eq!(ev.clock_offset_ms, Some(-4_000));
    assert_eq!(ev.trusted_time(), T0 + HOUR_MS + 2 * MINUTE_MS - 4_000);
    assert_eq!(p.store.visit(visit)?.state, CarerVisitState::InProgress);

    let note = p
        .store
        .add_note(visit, NoteCategory::Wellbeing, "Cheerful, ate all of breakfast.")?;
    let task = p.store.visit(visit)?.visit.schedule.tasks[0].id;
    p.store.record_task_outcome(visit, task, TaskResult::Done, None)?;
    p.clock.advance(28 * MINUTE_MS);
    p.store.clock_out(visit, &ClockRequest::app())?;

    let detail = p.store.visit(visit)?;
    assert_eq!(detail.state, CarerVisitState::Done);
    assert_eq!(detail.visit.events.len(), 2);
    assert_eq!(detail.visit.notes, vec![note]);
    assert_eq!(
        detail.visit.latest_outcome(task).map(|o| o.result),
        Some(TaskResult::Done)
    );
    // Four local changes, none acknowledged by a server.
    assert_eq!(detail.pending_changes, 4);
    assert_eq!(
        p.store.outbox()?,
        vec![OutboxEntry {
            visit_id: visit,
            pending_changes: 4
        }]
    );
    assert_eq!(p.store.pending_count()?, 4);
    Ok(())
}

#[test]
fn the_days_list_uses_the_local_day() -> Result<()> {
    let p = phone();
    // 2026-10-25 is the night the UK clocks go back: 00:30 BST is 23:30 UTC the day before.
    let day = NaiveDate::from_ymd_opt(2026, 10, 25).ok_or(StoreError::NotEnrolled)?;
    let (from, to) = local_day_bounds(chrono_tz::Europe::London, day);
    assert_eq!(to - from, 25 * HOUR_MS);
    let half_past_midnight = from + 30 * MINUTE_MS;
    let on_day = give(&p, &schedule(vec![p.carer], half_past_midnight));
    let _before = give(&p, &schedule(vec![p.carer], from - MINUTE_MS));
    let late_evening = give(&p, &schedule(vec![p.carer], to - MINUTE_MS));
    let _after = give(&p, &schedule(vec![p.carer], to));
    let listed: Vec<VisitId> = p.store.visits_on(day)?.into_iter().map(|v| v.visit_id).collect();
    assert_eq!(listed, vec![on_day, late_evening]);
    Ok(())
}

#[test]
fn bad_clocks_are_refused_and_change_nothing() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer], T0));
    assert_unchanged(
        &p,
        || p.store.clock_out(visit, &ClockRequest::app()),
        |e| matches!(e, StoreError::NotClockedIn(_)),
    );
    assert_unchanged(
        &p,
        || {
            p.store.clock_in(
                visit,
                &ClockRequest {
                    method: ClockMethod::Manual,
                    ..ClockRequest::app()
                },
            )
        },
        |e| matches!(e, StoreError::ManualNeedsReason),
    );
    assert_unchanged(
        &p,
        || {
            p.store.clock_in(
                visit,
                &ClockRequest {
                    location: Some(Location {
                        lat: 91.0,
                        lon: 0.0,
                        accuracy_m: 1.0,
                    }),
                    ..ClockRequest::app()
                },
            )
        },
        |e| matches!(e, StoreError::InvalidLocation),
    );
    assert_unchanged(
        &p,
        || p.store.clock_in(VisitId::new(), &ClockRequest::app()),
        |e| matches!(e, StoreError::UnknownVisit(_)),
    );

    p.store
        .clock_in(visit, &ClockRequest::manual(ReasonCode::PhoneUnavailable))?;
    assert_unchanged(
        &p,
        || p.store.clock_in(visit, &ClockRequest::app()),
        |e| matches!(e, StoreError::AlreadyClockedIn(_)),
    );
    p.store.clock_out(visit, &ClockRequest::app())?;
    assert_unchanged(
        &p,
        || p.store.clock_out(visit, &ClockRequest::app()),
        |e| matches!(e, StoreError::AlreadyClockedOut(_)),
    );

    let someone_elses = give(&p, &schedule(vec![PersonId::new()], T0));
    assert_unchanged(
        &p,
        || p.store.clock_in(someone_elses, &ClockRequest::app()),
        |e| matches!(e, StoreError::NotAssigned(_)),
    );
    assert_unchanged(
        &p,
        || p.store.add_note(someone_elses, NoteCategory::General, "hi"),
        |e| matches!(e, StoreError::NotAssigned(_)),
    );

    let mut cancelled = schedule(vec![p.carer], T0);
    cancelled.status = VisitStatus::Cancelled;
    cancelled.cancel_reason = Some("in hospital".into());
    let cancelled = give(&p, &cancelled);
    assert_unchanged(
        &p,
        || p.store.clock_in(cancelled, &ClockRequest::app()),
        |e| matches!(e, StoreError::VisitCancelled(_)),
    );
    Ok(())
}

#[test]
fn bad_notes_and_outcomes_are_refused() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer], T0));
    assert_unchanged(
        &p,
        || p.store.add_note(visit, NoteCategory::General, "  \n "),
        |e| matches!(e, StoreError::EmptyNote),
    );
    let long = "x".repeat(MAX_NOTE_CHARS + 1);
    assert_unchanged(
        &p,
        || p.store.add_note(visit, NoteCategory::General, &long),
        |e| matches!(e, StoreError::NoteTooLong(10_001)),
    );
    // Exactly at the limit is fine, and counts characters, not bytes.
    p.store
        .add_note(visit, NoteCategory::General, &"é".repeat(MAX_NOTE_CHARS))?;
    assert_unchanged(
        &p,
        || {
            p.store
                .record_task_outcome(visit, TaskId::new(), TaskResult::Done, None)
        },
        |e| matches!(e, StoreError::UnknownTask { .. }),
    );
    assert_unchanged(
        &p,
        || p.store.add_note(VisitId::new(), NoteCategory::General, "hi"),
        |e| matches!(e, StoreError::UnknownVisit(_)),
    );
    Ok(())
}

#[test]
fn an_unenrolled_phone_cannot_write() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|_| StoreError::NotEnrolled)?;
    let store = PhoneStore::open(&dir.path().join("p.db"))?;
    let id = VisitId::new();
    let mut doc = VisitDocument::create(id, &schedule(vec![PersonId::new()], T0), &ActorId::random())
        .map_err(|source| StoreError::Document { visit: id, source })?;
    // Import needs no identity for reading, but sync_visit does; writes surely do.
    assert!(matches!(
        store.import_visit(&doc.save()),
        Err(StoreError::NotEnrolled)
    ));
    assert!(matches!(
        store.clock_in(id, &ClockRequest::app()),
        Err(StoreError::NotEnrolled | StoreError::UnknownVisit(_))
    ));
    Ok(())
}

#[test]
fn a_corrupt_blob_is_an_error_not_a_panic() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer], T0));
    p.store.lock()?.execute(
        "UPDATE visits SET doc = x'00010203' WHERE visit_id = ?1",
        [visit.to_string()],
    )?;
    assert_unchanged(
        &p,
        || p.store.clock_in(visit, &ClockRequest::app()),
        |e| matches!(e, StoreError::Document { .. }),
    );
    assert!(matches!(p.store.visit(visit), Err(StoreError::Document { .. })));
    Ok(())
}

#[test]
fn offsets_older_than_a_day_are_not_used() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer], T0 + 2 * DAY_MS));
    p.store.set_clock_offset(ClockOffset {
        offset_ms: 30_000,
        measured_at: T0,
    })?;
    p.clock.set(T0 + DAY_MS + 1);
    let ev = p.store.clock_in(visit, &ClockRequest::app())?;
    assert_eq!(ev.clock_offset_ms, None);
    Ok(())
}

#[test]
fn retention_never_purges_unsynced_visits() -> Result<()> {
    let p = phone();
    let old_synced = give(&p, &schedule(vec![p.carer], T0 - 10 * DAY_MS));
    let old_unsynced = give(&p, &schedule(vec![p.carer], T0 - 10 * DAY_MS));
    let recent = give(&p, &schedule(vec![p.carer], T0 - DAY_MS));
    p.store.clock_in(old_unsynced, &ClockRequest::app())?;
    assert_eq!(p.store.purge_older_than(7 * DAY_MS)?, 1);
    let mut left = p.store.visit_ids()?;
    left.sort();
    let mut expect = vec![old_unsynced, recent];
    expect.sort();
    assert_eq!(left, expect);
    assert!(matches!(
        p.store.visit(old_synced),
        Err(StoreError::UnknownVisit(_))
    ));
    // The clock event rows went with the purged visit only.
    assert_eq!(p.store.verify_derived_rows()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn reopening_keeps_everything() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer], T0));
    p.store.clock_in(visit, &ClockRequest::app())?;
    let path = p.path.clone();
    let Phone { _dir, store, .. } = p;
    drop(store);
    let again = PhoneStore::open(&path)?;
    assert_eq!(again.visit(visit)?.visit.events.len(), 1);
    assert_eq!(again.pending_count()?, 1);
    Ok(())
}

/// Issue 11, defect 10: a refused visit is parked: kept, listed with the reason, not pending, not
/// sent, never purged nor dropped as out of scope, still writable, and sent again on request.
#[test]
fn refused_changes_are_parked_kept_and_listed() -> Result<()> {
    let p = phone();
    let refused = give(&p, &schedule(vec![p.carer], T0 - 10 * DAY_MS));
    let honest = give(&p, &schedule(vec![p.carer], T0 - 10 * DAY_MS));
    p.store.clock_in(refused, &ClockRequest::app())?;
    p.store.clock_in(honest, &ClockRequest::app())?;
    assert_eq!(p.store.pending_count()?, 2);

    assert!(!p
        .store
        .record_refusal(VisitId::new(), "unknown_visit", "no such visit")?);
    p.clock.set(T0 + MINUTE_MS);
    assert!(p
        .store
        .record_refusal(refused, "forbidden_change", "not yours to write")?);
    let heads = {
        let mut doc =
            VisitDocument::load(&p.store.visit_bytes(refused)?).map_err(|source| StoreError::Document {
                visit: refused,
                source,
            })?;
        Heads::from(doc.heads())
    };
    let listed = vec![RefusedChanges {
        visit_id: refused,
        code: "forbidden_change".into(),
        message: "not yours to write".into(),
        refused_at: T0 + MINUTE_MS,
        heads,
        // This phone never synced the visit: its schedule is unacknowledged too.
        changes: 2,
    }];
    assert_eq!(p.store.refused_changes()?, listed);
    // A second refusal (of a pull, say) keeps the first one's reason.
    assert!(p.store.record_refusal(refused, "not_assigned", "later")?);
    assert_eq!(p.store.refused_changes()?, listed);

    // Not waiting to be sent: neither pending nor in the outbox.
    assert_eq!(p.store.pending_count()?, 1);
    let outbox: Vec<VisitId> = p.store.outbox()?.iter().map(|e| e.visit_id).collect();
    assert_eq!(outbox, vec![honest]);
    // Its row still says what the server lacks, for the day's list.
    assert_eq!(p.store.visit(refused)?.pending_changes, 1);

    // Never purged, never dropped as out of scope, even once nothing else holds it.
    assert_eq!(p.store.purge_ended_before(T0)?, 0);
    assert_eq!(p.store.remove_out_of_scope(&Default::default())?, 0);
    assert!(p.store.visit(refused).is_ok());
    // The foreign key backs that up.
    assert!(p
        .store
        .lock()?
        .execute("DELETE FROM visits WHERE visit_id = ?1", [refused.to_string()])
        .is_err());

    // The carer can still write to it; the new change waits with the refused one.
    p.store
        .add_note(refused, NoteCategory::Handover, "Left a message for the office")?;
    assert_eq!(p.store.pending_count()?, 1);
    assert_eq!(p.store.refused_changes()?.len(), 1);

    // Kept across a restart.
    let path = p.path.clone();
    let clock = p.clock.clone();
    let Phone { _dir, store, .. } = p;
    drop(store);
    let store = PhoneStore::open_with(&path, clock, chrono_tz::Europe::London)?;
    assert_eq!(store.refused_changes()?, listed);

    // Sent again only when asked.
    assert!(store.retry_refused(refused)?);
    assert!(!store.retry_refused(refused)?);
    assert!(store.refused_changes()?.is_empty());
    assert_eq!(store.pending_count()?, 3);
    Ok(())
}

/// A parked visit pulls with a message made from what the server acknowledged: it carries none
/// of the phone's changes, while an ordinary message would carry them all.
#[test]
fn a_pull_message_carries_none_of_the_phones_changes() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer], T0));
    let acknowledged = {
        let mut doc = VisitDocument::load(&p.store.visit_bytes(visit)?)
            .map_err(|source| StoreError::Document { visit, source })?;
        doc.heads()
    };
    p.store.clock_in(visit, &ClockRequest::app())?;
    let state = || {
        let mut s = SyncState::new();
        s.shared_heads = acknowledged.clone();
        crate::sync_client::primed(s)
    };
    let pull = p
        .store
        .generate_pull_message(visit, &mut state())?
        .ok_or(StoreError::Poisoned)?;
    assert_eq!(pull.changes.len(), 0);
    assert_eq!(pull.heads, acknowledged);
    let push = p
        .store
        .generate_message(visit, &mut state())?
        .ok_or(StoreError::Poisoned)?;
    assert_eq!(push.changes.len(), 1);
    Ok(())
}

/// A carer's writes update the rows in place (one more pending change, the new event's row, the
/// carer's state); they must equal the rows derived afresh from the document, as a merge writes
/// them.
#[test]
fn rows_updated_in_place_equal_rows_derived_afresh() -> Result<()> {
    let p = phone();
    let visit = give(&p, &schedule(vec![p.carer, PersonId::new()], T0 + HOUR_MS));
    let task = p.store.visit(visit)?.visit.schedule.tasks[0].id;
    p.store.clock_in(visit, &ClockRequest::app())?;
    p.store
        .add_note(visit, NoteCategory::General, "Settled, tea made")?;
    p.store.record_task_outcome(visit, task, TaskResult::Done, None)?;
    p.store.clock_out(visit, &ClockRequest::app())?;
    // The document's bytes differ (appended changes, then compacted by the merge); everything
    // else, heads included, must not.
    let rows = |p: &Phone| -> Vec<String> {
        snapshot(p)
            .into_iter()
            .map(|row| {
                row.split('|')
                    .filter(|c| !c.starts_with("Blob"))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    };
    let in_place = rows(&p);
    let document = p.store.visit(visit)?.visit;
    assert_eq!(
        p.store.visit(visit)?.pending_changes,
        4,
        "four writes of this phone's"
    );
    // A merge of nothing new re-derives every row from the document.
    p.store.import_visit(&p.store.visit_bytes(visit)?)?;
    assert_eq!(rows(&p), in_place);
    assert_eq!(p.store.visit(visit)?.visit, document);
    assert!(p.store.verify_derived_rows()?.is_empty());
    Ok(())
}

/// More visits written in turn than the store keeps parsed: every write still lands on the stored
/// document (cached or loaded from its appended bytes), and nothing is lost.
#[test]
fn writes_in_turn_to_more_visits_than_are_cached() -> Result<()> {
    let p = phone();
    let visits: Vec<VisitId> = (0..20)
        .map(|i| give(&p, &schedule(vec![p.carer], T0 + i * HOUR_MS)))
        .collect();
    for round in 0..3 {
        for visit in &visits {
            p.store
                .add_note(*visit, NoteCategory::General, &format!("round {round}"))?;
        }
    }
    for visit in &visits {
        let detail = p.store.visit(*visit)?;
        let texts: Vec<&str> = detail.visit.notes.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(texts, ["round 0", "round 1", "round 2"]);
        assert_eq!(detail.pending_changes, 3);
    }
    assert!(p.store.verify_derived_rows()?.is_empty());
    Ok(())
}
