//! Replicas of one visit, written concurrently by the people allowed to write them and merged in
//! any order, end identical: same heads, same visit, same rows on a phone (brief, section 3).
//!
//! Four replicas fork from the office's document: the office (schedule edits), two carers on a
//! double-up (clock events, notes, task outcomes) and a supervisor (notes). Random operations are
//! interleaved with random pairwise merges; at the end every replica receives everything in a
//! random order.

use automerge::ActorId;
use caresync_core::*;
use proptest::prelude::*;
use std::sync::Arc;

const T0: Millis = 1_790_000_000_000; // 2026-09-21 in BST
const OFFICE: usize = 0;
const CARER_A: usize = 1;
const CARER_B: usize = 2;
const SUPERVISOR: usize = 3;
const REPLICAS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    /// A carer's device records a clock event.
    Clock {
        carer_a: bool,
        kind: ClockKind,
        minute: i64,
    },
    /// A carer (replica 1 or 2) or the supervisor (3) writes a note.
    Note {
        replica: usize,
        category: NoteCategory,
        text: String,
    },
    Outcome {
        carer_a: bool,
        task: usize,
        result: TaskResult,
    },
    /// The office moves the visit.
    Reschedule {
        minutes: i64,
    },
    /// The office adds a task to the visit.
    AddTask,
    Cancel {
        chargeable: bool,
    },
    /// `to` receives everything `from` has.
    Merge {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let replica = 0..REPLICAS;
    prop_oneof![
        4 => (any::<bool>(), prop::sample::select(ClockKind::ALL), -30_i64..90)
            .prop_map(|(carer_a, kind, minute)| Op::Clock { carer_a, kind, minute }),
        3 => (prop::sample::select(vec![CARER_A, CARER_B, SUPERVISOR]), prop::sample::select(NoteCategory::ALL),
              "[a-zA-Z ,.é]{1,40}")
            .prop_map(|(replica, category, text)| Op::Note { replica, category, text }),
        2 => (any::<bool>(), 0_usize..3, prop::sample::select(TaskResult::ALL))
            .prop_map(|(carer_a, task, result)| Op::Outcome { carer_a, task, result }),
        2 => (-120_i64..120).prop_map(|minutes| Op::Reschedule { minutes }),
        1 => Just(Op::AddTask),
        1 => any::<bool>().prop_map(|chargeable| Op::Cancel { chargeable }),
        4 => (replica.clone(), replica).prop_map(|(from, to)| Op::Merge { from, to }),
    ]
}

struct Fixture {
    carers: [PersonId; 2],
    devices: [DeviceId; 2],
    supervisor: PersonId,
    replicas: Vec<VisitDocument>,
}

fn fixture() -> Result<Fixture, DocumentError> {
    let carers = [PersonId::new(), PersonId::new()];
    let schedule = Schedule {
        client_id: ClientId::new(),
        contract_id: ContractId::new(),
        carers: carers.to_vec(),
        planned_start: T0,
        planned_end: T0 + HOUR_MS,
        tasks: vec![
            Task {
                id: TaskId::new(),
                title: "Hoist transfer".into(),
            },
            Task {
                id: TaskId::new(),
                title: "Breakfast".into(),
            },
        ],
        status: VisitStatus::Scheduled,
        cancel_reason: None,
        chargeable: None,
    };
    let mut office = VisitDocument::create(VisitId::new(), &schedule, &ActorId::random())?;
    let mut replicas = vec![];
    for _ in 1..REPLICAS {
        replicas.push(office.fork().with_actor(&ActorId::random()));
    }
    replicas.insert(OFFICE, office);
    Ok(Fixture {
        carers,
        devices: [DeviceId::new(), DeviceId::new()],
        supervisor: PersonId::new(),
        replicas,
    })
}

/// What every replica must hold at the end: the ids of every entry written anywhere.
#[derive(Default)]
struct Written {
    events: Vec<EventId>,
    notes: Vec<NoteId>,
    outcomes: Vec<OutcomeId>,
}

fn apply(f: &mut Fixture, op: &Op, written: &mut Written) -> Result<(), DocumentError> {
    let carer_replica = |a: bool| if a { CARER_A } else { CARER_B };
    let carer_index = |a: bool| usize::from(!a);
    match op {
        Op::Clock {
            carer_a,
            kind,
            minute,
        } => {
            let i = carer_index(*carer_a);
            let event = ClockEvent {
                id: EventId::new(),
                kind: *kind,
                carer_id: f.carers[i],
                device_id: f.devices[i],
                device_time: T0 + minute * MINUTE_MS,
                clock_offset_ms: Some(1_000),
                offset_measured_at: Some(T0 - HOUR_MS),
                method: ClockMethod::Gps,
                reason: None,
                location: Some(Location {
                    lat: 53.48,
                    lon: -2.24,
                    accuracy_m: 9.0,
                }),
                tag_id: None,
            };
            f.replicas[carer_replica(*carer_a)].append_event(&event)?;
            written.events.push(event.id);
        }
        Op::Note {
            replica,
            category,
            text,
        } => {
            let (author_id, author_role) = match *replica {
                CARER_A => (f.carers[0], Role::Carer),
                CARER_B => (f.carers[1], Role::Carer),
                _ => (f.supervisor, Role::Supervisor),
            };
            let note = Note {
                id: NoteId::new(),
                author_id,
                author_role,
                written_at: T0 + written.notes.len() as i64 * MINUTE_MS,
                category: *category,
                text: text.clone(),
            };
            f.replicas[*replica].append_note(&note)?;
            written.notes.push(note.id);
        }
        Op::Outcome {
            carer_a,
            task,
            result,
        } => {
            let replica = &mut f.replicas[carer_replica(*carer_a)];
            // The carer records against the tasks their replica knows of.
            let tasks = replica.read()?.schedule.tasks;
            let task_id = tasks[task % tasks.len()].id;
            let outcome = TaskOutcome {
                id: OutcomeId::new(),
                task_id,
                carer_id: f.carers[carer_index(*carer_a)],
                result: *result,
                note: (*result == TaskResult::Refused).then(|| "Did not want it today".to_string()),
                recorded_at: T0 + written.outcomes.len() as i64 * MINUTE_MS,
            };
            replica.append_task_outcome(&outcome)?;
            written.outcomes.push(outcome.id);
        }
        Op::Reschedule { minutes } => {
            let office = &mut f.replicas[OFFICE];
            let mut s = office.read()?.schedule;
            s.planned_start += minutes * MINUTE_MS;
            s.planned_end += minutes * MINUTE_MS;
            office.update_schedule(&s)?;
        }
        Op::AddTask => {
            let office = &mut f.replicas[OFFICE];
            let mut s = office.read()?.schedule;
            s.tasks.push(Task {
                id: TaskId::new(),
                title: format!("Task {}", s.tasks.len() + 1),
            });
            office.update_schedule(&s)?;
        }
        Op::Cancel { chargeable } => {
            let office = &mut f.replicas[OFFICE];
            let mut s = office.read()?.schedule;
            s.status = VisitStatus::Cancelled;
            s.cancel_reason = Some("Admitted to hospital".into());
            s.chargeable = Some(*chargeable);
            office.update_schedule(&s)?;
        }
        Op::Merge { from, to } if from != to => {
            let mut source = f.replicas[*from].fork();
            f.replicas[*to].merge(&mut source)?;
        }
        Op::Merge { .. } => {}
    }
    Ok(())
}

/// The rows a phone derived from a visit, read straight from its SQLite file: the visit row
/// without its bytes, sync state and write time, and every clock event row.
fn derived_rows(path: &std::path::Path) -> rusqlite::Result<Vec<String>> {
    let conn = rusqlite::Connection::open(path)?;
    let mut rows = vec![];
    let mut stmt = conn.prepare(
        "SELECT visit_id, client_id, contract_id, planned_start, planned_end, status, my_state, pending_changes
         FROM visits ORDER BY visit_id",
    )?;
    let visits = stmt.query_map([], |r| {
        Ok(format!(
            "visit {} {} {} {} {} {} {} {}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, i64>(7)?
        ))
    })?;
    for v in visits {
        rows.push(v?);
    }
    let mut stmt = conn.prepare(
        "SELECT event_id, visit_id, kind, carer_id, device_time, trusted_time, method
         FROM clock_events ORDER BY event_id",
    )?;
    let events = stmt.query_map([], |r| {
        Ok(format!(
            "event {} {} {} {} {} {} {}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, String>(6)?
        ))
    })?;
    for e in events {
        rows.push(e?);
    }
    Ok(rows)
}

type CaseResult = Result<(), TestCaseError>;

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn check(ops: &[Op], order: &[usize]) -> CaseResult {
    let mut f = fixture().map_err(fail)?;
    let mut written = Written::default();
    for op in ops {
        apply(&mut f, op, &mut written).map_err(fail)?;
    }
    let office_schedule = f.replicas[OFFICE].read().map_err(fail)?.schedule;

    // Everyone receives everything: fold all into the first in `order`, then that into the rest.
    let (first, rest) = order.split_first().ok_or_else(|| fail("empty order"))?;
    for &i in rest {
        let mut source = f.replicas[i].fork();
        f.replicas[*first].merge(&mut source).map_err(fail)?;
    }
    for &i in rest {
        let mut source = f.replicas[*first].fork();
        f.replicas[i].merge(&mut source).map_err(fail)?;
    }

    let heads: Vec<_> = f.replicas.iter_mut().map(|r| r.heads()).collect();
    let visits = f
        .replicas
        .iter()
        .map(|r| r.read())
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    for i in 1..REPLICAS {
        prop_assert_eq!(&heads[i], &heads[0], "heads of replica {}", i);
        prop_assert_eq!(&visits[i], &visits[0], "visit read from replica {}", i);
    }

    // Nothing written anywhere was lost, nothing duplicated; the office's last word stands.
    let visit = &visits[0];
    let mut ids: Vec<_> = visit.events.iter().map(|e| e.id).collect();
    ids.sort();
    written.events.sort();
    prop_assert_eq!(ids, written.events);
    let mut ids: Vec<_> = visit.notes.iter().map(|n| n.id).collect();
    ids.sort();
    written.notes.sort();
    prop_assert_eq!(ids, written.notes);
    let mut ids: Vec<_> = visit.task_outcomes.iter().map(|o| o.id).collect();
    ids.sort();
    written.outcomes.sort();
    prop_assert_eq!(ids, written.outcomes);
    prop_assert_eq!(&visit.schedule, &office_schedule);

    // Each replica, loaded onto its own phone (carer A's), derives the same rows and views.
    let day = chrono::NaiveDate::from_ymd_opt(2026, 9, 21).ok_or_else(|| fail("date"))?;
    let dir = tempfile::tempdir().map_err(fail)?;
    let mut first_phone = None;
    for (i, replica) in f.replicas.iter_mut().enumerate() {
        let path = dir.path().join(format!("phone-{i}.db"));
        let clock = Arc::new(ManualClock::new(T0));
        let store = PhoneStore::open_with(&path, clock, chrono_tz::Europe::London).map_err(fail)?;
        store
            .set_identity(&DeviceIdentity {
                device_id: f.devices[0],
                carer_id: f.carers[0],
                server_url: "http://127.0.0.1:9".into(),
                token: "t".into(),
            })
            .map_err(fail)?;
        let id = store.import_visit(&replica.save()).map_err(fail)?;
        let detail = store.visit(id).map_err(fail)?;
        prop_assert_eq!(&detail.visit, visit);
        prop_assert_eq!(store.verify_derived_rows().map_err(fail)?, Vec::<String>::new());
        let seen = (
            detail,
            store.visits_on(day).map_err(fail)?,
            derived_rows(&path).map_err(fail)?,
        );
        match &first_phone {
            None => first_phone = Some(seen),
            Some(first) => prop_assert_eq!(&seen, first, "phone {} differs from phone 0", i),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_merge_order(
        ops in prop::collection::vec(op(), 0..30),
        order in Just((0..REPLICAS).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        check(&ops, &order)?;
    }
}
