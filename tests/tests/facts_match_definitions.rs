//! The fast path equals the definitions. Random providers (schedules, reschedules, reassignments,
//! cancellations, moves to another contract, double-ups, late syncs, amendments, skewed clocks,
//! rule changes, visits on a clock-change weekend) go through the one commit path; at random
//! instants the reports are computed by `caresync_core::metrics` over the documents as they stood
//! then. Afterwards every report is asked of the store's facts `as_of` each of those instants and
//! must come out the same: every grouping and period, KPI, reconciliation, continuity, alerts and
//! each visit's figures. Reconciliation and continuity are also asked over a second range that
//! cuts a week, so both the per-client sums' whole weeks and their days are compared (after the
//! last change; before it the reports sum the fact rows).

use automerge::sync::{Message, State as SyncState, SyncDoc};
use automerge::ActorId;
use caresync_core::domain::*;
use caresync_core::metrics::*;
use caresync_core::visit_document::{Amendment, ChangeLabel, ClockEvent, Visit, VisitDocument};
use caresync_core::Schedule;
use caresync_server::services::reports::{self, Span};
use caresync_server::services::visits::{Ingested, VisitService, VisitServiceError};
use caresync_server::store::postgres::PostgresStore;
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::*;
use caresync_tests::pg::PgCluster;
use chrono::NaiveDate;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

const TZ: chrono_tz::Tz = chrono_tz::Europe::London;
/// Saturday 24 October 2026, 06:00 UTC: the clocks go back on the Sunday.
const BASE: Millis = 1_792_821_600_000;

#[derive(Clone, Debug)]
enum Op {
    Reschedule {
        visit: usize,
        shift_min: i64,
    },
    Reassign {
        visit: usize,
        carers: Vec<usize>,
    },
    Cancel {
        visit: usize,
        chargeable: bool,
    },
    MoveContract {
        visit: usize,
        contract: usize,
    },
    ClockIn {
        visit: usize,
        who: usize,
        late_min: i64,
        skew: usize,
        method: usize,
    },
    ClockOut {
        visit: usize,
        who: usize,
        stay_min: i64,
        skew: usize,
    },
    Amend {
        visit: usize,
        who: usize,
        clock_in: bool,
        at_min: i64,
    },
    Rules {
        contract: usize,
        late_after_min: u32,
        basis: usize,
    },
}

/// (start offset from BASE in minutes, length in minutes, carers, contract, client)
type PlannedVisit = (i64, i64, Vec<usize>, usize, usize);

#[derive(Clone, Debug)]
struct Plan {
    visits: Vec<PlannedVisit>,
    /// Each step: minutes after the last, the operation, and whether to take a checkpoint after
    /// it (at a random fraction of the gap to the next step).
    steps: Vec<(i64, Op, Option<u8>)>,
}

const CARERS: usize = 3;
const CONTRACTS: usize = 2;
const CLIENTS: usize = 3;

fn carers() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (0..CARERS).prop_map(|c| vec![c]),
        (0..CARERS, 1..CARERS).prop_map(|(a, d)| vec![a, (a + d) % CARERS]),
    ]
}

fn op(visits: usize) -> impl Strategy<Value = Op> {
    let v = 0..visits;
    prop_oneof![
        (v.clone(), -300i64..300).prop_map(|(visit, shift_min)| Op::Reschedule { visit, shift_min }),
        (v.clone(), carers()).prop_map(|(visit, carers)| Op::Reassign { visit, carers }),
        (v.clone(), any::<bool>()).prop_map(|(visit, chargeable)| Op::Cancel { visit, chargeable }),
        (v.clone(), 0..CONTRACTS).prop_map(|(visit, contract)| Op::MoveContract { visit, contract }),
        (v.clone(), 0..2usize, -40i64..60, 0..4usize, 0..3usize).prop_map(
            |(visit, who, late_min, skew, method)| Op::ClockIn {
                visit,
                who,
                late_min,
                skew,
                method
            }
        ),
        (v.clone(), 0..2usize, 5i64..120, 0..4usize).prop_map(|(visit, who, stay_min, skew)| Op::ClockOut {
            visit,
            who,
            stay_min,
            skew
        }),
        (v.clone(), 0..2usize, any::<bool>(), -30i64..90).prop_map(|(visit, who, clock_in, at_min)| {
            Op::Amend {
                visit,
                who,
                clock_in,
                at_min,
            }
        }),
        (0..CONTRACTS, 5u32..30, 0..3usize).prop_map(|(contract, late_after_min, basis)| Op::Rules {
            contract,
            late_after_min,
            basis
        }),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    let visit = (-2000i64..4000, 15i64..90, carers(), 0..CONTRACTS, 0..CLIENTS);
    prop::collection::vec(visit, 1..7).prop_flat_map(|visits| {
        let n = visits.len();
        let step = (1i64..400, op(n), prop::option::weighted(0.4, any::<u8>()));
        prop::collection::vec(step, 1..28).prop_map(move |steps| Plan {
            visits: visits.clone(),
            steps,
        })
    })
}

/// Everything the definitions say at one instant, computed then.
struct Expected {
    as_of: Millis,
    punctuality: Vec<PunctualityReport>,
    reconciliation: Vec<ReconciliationRow>,
    continuity: Vec<ContinuityRow>,
    /// The same over [`World::narrow`].
    narrow: (Vec<ReconciliationRow>, Vec<ContinuityRow>),
    alerts: Vec<(VisitId, AlertKind)>,
    figures: Vec<(VisitId, VisitOutcome)>,
}

const GROUPINGS: [GroupBy; 7] = [
    GroupBy::All,
    GroupBy::Contract,
    GroupBy::CommissioningModel,
    GroupBy::Commissioner,
    GroupBy::Carer,
    GroupBy::Client,
    GroupBy::Team,
];
const PERIODS: [PeriodKind; 3] = [PeriodKind::Day, PeriodKind::Week, PeriodKind::Month];

struct World {
    store: Arc<dyn ServerStore>,
    service: VisitService,
    office: PersonId,
    carers: Vec<(Principal, DeviceId)>,
    contracts: Vec<Contract>,
    clients: Vec<Client>,
    visits: Vec<VisitId>,
    teams: HashMap<PersonId, TeamId>,
    range: (Millis, Millis),
    /// Saturday 24 October to Monday 2 November: the days of a partial week (with the clock
    /// change) and a whole week, and visits outside it (the per-client sums' edge cases).
    narrow: (Millis, Millis),
}

fn rules_json(late_after_min: u32, basis: usize, kpi: bool) -> serde_json::Value {
    let basis = ["actual", "planned", "capped"][basis % 3];
    let mut r = serde_json::json!({
        "late_after_min": late_after_min,
        "billing": { "basis": basis, "unit_min": 15, "rounding": "up" },
    });
    if kpi {
        r["kpi"] = serde_json::json!({ "max_late_pct": 10.0, "max_missed_pct": 5.0 });
    }
    r
}

impl World {
    fn new(store: Arc<dyn ServerStore>, plan: &Plan) -> Self {
        let service = VisitService::new(store.clone(), 64);
        let office = PersonId::new();
        store
            .create_person(&Person {
                id: office,
                name: "Office".into(),
                role: Role::Office,
                team_id: None,
                active: true,
            })
            .expect("office");
        let team = TeamId::new();
        let mut teams = HashMap::new();
        let mut carers = Vec::new();
        for n in 0..CARERS {
            let person = Person {
                id: PersonId::new(),
                name: format!("Carer {n}"),
                role: Role::Carer,
                team_id: (n != 2).then_some(team),
                active: true,
            };
            store.create_person(&person).expect("carer");
            if let Some(t) = person.team_id {
                teams.insert(person.id, t);
            }
            let device = DeviceId::new();
            carers.push((
                Principal {
                    person,
                    device_id: Some(device),
                },
                device,
            ));
        }
        let contracts: Vec<Contract> = (0..CONTRACTS)
            .map(|n| Contract {
                id: ContractId::new(),
                name: format!("Contract {n}"),
                commissioner: format!("Council {n}"),
                model: if n == 0 {
                    CommissioningModel::Framework
                } else {
                    CommissioningModel::Spot
                },
                rules: rules_json(15, n, n == 0),
            })
            .collect();
        for c in &contracts {
            store.upsert_contract_at(c, BASE - 10 * DAY_MS).expect("contract");
        }
        let home = Location {
            lat: 53.4,
            lon: -2.2,
            accuracy_m: 10.0,
        };
        let clients: Vec<Client> = (0..CLIENTS)
            .map(|n| Client {
                id: ClientId::new(),
                name: format!("Client {n}"),
                location: (n != 1).then_some(home),
                tag_ids: vec![],
            })
            .collect();
        for c in &clients {
            store.upsert_client(c).expect("client");
        }
        let from = NaiveDate::from_ymd_opt(2026, 10, 14).expect("date");
        let to = NaiveDate::from_ymd_opt(2026, 11, 8).expect("date");
        let mut world = World {
            store,
            service,
            office,
            carers,
            contracts,
            clients,
            visits: vec![],
            teams,
            range: reports::day_range(TZ, from, to).expect("range"),
            narrow: reports::day_range(
                TZ,
                NaiveDate::from_ymd_opt(2026, 10, 24).expect("date"),
                NaiveDate::from_ymd_opt(2026, 11, 2).expect("date"),
            )
            .expect("range"),
        };
        let created = BASE - 5 * DAY_MS;
        for (n, (start, len, carers, contract, client)) in plan.visits.iter().enumerate() {
            let id = VisitId::new();
            let start = BASE + start * MINUTE_MS;
            let schedule = Schedule {
                client_id: world.clients[*client].id,
                contract_id: world.contracts[*contract].id,
                carers: carers.iter().map(|c| world.carers[*c].0.person.id).collect(),
                planned_start: start,
                planned_end: start + len * MINUTE_MS,
                tasks: vec![],
                status: VisitStatus::Scheduled,
                cancel_reason: None,
                chargeable: None,
            };
            world
                .service
                .create(id, &schedule, office, created + n as i64)
                .expect("create");
            world.visits.push(id);
        }
        world
    }

    fn carer_index(&self, id: PersonId) -> usize {
        self.carers
            .iter()
            .position(|(p, _)| p.person.id == id)
            .unwrap_or(0)
    }

    fn edit_schedule(&self, visit: VisitId, now: Millis, what: &str, change: impl FnOnce(&mut Schedule)) {
        let label = ChangeLabel {
            author_id: self.office,
            at: now,
            what: what.into(),
        };
        self.service
            .edit(visit, now, |doc, current| {
                let mut s = current.schedule.clone();
                change(&mut s);
                doc.update_schedule_by(&s, &label)
                    .map(|_| ())
                    .map_err(|e| VisitServiceError::Invalid(e.to_string()))
            })
            .expect("edit");
    }

    /// A phone's event, synced at `now` through the one commit path.
    fn sync_event(&self, visit: VisitId, carer: usize, event: ClockEvent, now: Millis) {
        let chunks = self.store.visit_chunks(visit).expect("chunks");
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.bytes).collect();
        let mut phone = VisitDocument::load(&bytes)
            .expect("load")
            .with_actor(&ActorId::random());
        phone.append_event(&event).expect("append");
        let mut state = SyncState::new();
        let (principal, _) = &self.carers[carer];
        for _ in 0..8 {
            let Some(msg) = phone.automerge().sync().generate_sync_message(&mut state) else {
                break;
            };
            match self
                .service
                .ingest(principal, visit, &msg.encode(), now)
                .expect("ingest")
            {
                Ingested::Accepted {
                    reply: Some(reply), ..
                } => {
                    let reply = Message::decode(&reply).expect("decode");
                    phone
                        .automerge()
                        .sync()
                        .receive_sync_message(&mut state, reply)
                        .expect("receive");
                }
                Ingested::Accepted { reply: None, .. } => {}
                // The write rules may refuse: nothing is kept, and the definitions below read
                // the same documents.
                Ingested::Refused(_) => break,
            }
        }
    }

    fn apply(&mut self, op: &Op, now: Millis) {
        match op {
            Op::Reschedule { visit, shift_min } => {
                self.edit_schedule(self.visits[*visit], now, "rescheduled", |s| {
                    s.planned_start += shift_min * MINUTE_MS;
                    s.planned_end += shift_min * MINUTE_MS;
                })
            }
            Op::Reassign { visit, carers } => {
                let ids: Vec<PersonId> = carers.iter().map(|c| self.carers[*c].0.person.id).collect();
                self.edit_schedule(self.visits[*visit], now, "reassigned", |s| s.carers = ids)
            }
            Op::Cancel { visit, chargeable } => {
                self.edit_schedule(self.visits[*visit], now, "cancelled", |s| {
                    s.status = VisitStatus::Cancelled;
                    s.cancel_reason = Some("client in hospital".into());
                    s.chargeable = Some(*chargeable);
                })
            }
            Op::MoveContract { visit, contract } => {
                let id = self.contracts[*contract].id;
                self.edit_schedule(self.visits[*visit], now, "moved to another contract", |s| {
                    s.contract_id = id
                })
            }
            Op::ClockIn {
                visit,
                who,
                late_min,
                skew,
                method,
            } => {
                let v = self.service.read(self.visits[*visit]).expect("read");
                let carer = v.schedule.carers[*who % v.schedule.carers.len()];
                let c = self.carer_index(carer);
                let at = v.schedule.planned_start + late_min * MINUTE_MS;
                let mut e = event(&self.carers[c], ClockKind::ClockIn, at, *skew);
                e.method = [ClockMethod::App, ClockMethod::Nfc, ClockMethod::Manual][*method];
                if e.method == ClockMethod::Manual {
                    e.reason = Some(ReasonCode::PhoneUnavailable);
                }
                // Near the client's home (within 200 m) or 1 km off, or no fix at all.
                e.location = (*method != 1).then_some(Location {
                    lat: 53.4 + if *skew == 1 { 0.01 } else { 0.0 },
                    lon: -2.2,
                    accuracy_m: 10.0,
                });
                self.sync_event(self.visits[*visit], c, e, now)
            }
            Op::ClockOut {
                visit,
                who,
                stay_min,
                skew,
            } => {
                let v = self.service.read(self.visits[*visit]).expect("read");
                let carer = v.schedule.carers[*who % v.schedule.carers.len()];
                let c = self.carer_index(carer);
                let at = v.schedule.planned_start + stay_min * MINUTE_MS;
                let e = event(&self.carers[c], ClockKind::ClockOut, at, *skew);
                self.sync_event(self.visits[*visit], c, e, now)
            }
            Op::Amend {
                visit,
                who,
                clock_in,
                at_min,
            } => {
                let id = self.visits[*visit];
                let v = self.service.read(id).expect("read");
                let carer = v.schedule.carers[*who % v.schedule.carers.len()];
                let amendment = Amendment {
                    id: AmendmentId::new(),
                    author_id: self.office,
                    author_role: Role::Office,
                    carer_id: carer,
                    time: if *clock_in {
                        AmendedTime::ClockIn
                    } else {
                        AmendedTime::ClockOut
                    },
                    corrected_time: v.schedule.planned_start + at_min * MINUTE_MS,
                    reason: ReasonCode::ForgotToClock,
                    comment: None,
                    written_at: now,
                };
                self.service
                    .edit(id, now, |doc, _| {
                        doc.append_amendment(&amendment)
                            .map(|_| ())
                            .map_err(|e| VisitServiceError::Invalid(e.to_string()))
                    })
                    .expect("amend");
            }
            Op::Rules {
                contract,
                late_after_min,
                basis,
            } => {
                let c = &mut self.contracts[*contract];
                c.rules = rules_json(*late_after_min, *basis, *contract == 0);
                self.store.upsert_contract_at(c, now).expect("rules");
            }
        }
    }

    /// For each visit: P + late threshold and E + missed threshold, and 1 ms after each.
    fn boundaries(&self) -> Vec<Millis> {
        let mut out = Vec::new();
        for id in &self.visits {
            let v = self.service.read(*id).expect("read");
            let rules: ContractRules = self
                .contracts
                .iter()
                .find(|c| c.id == v.schedule.contract_id)
                .and_then(|c| serde_json::from_value(c.rules.clone()).ok())
                .unwrap_or_default();
            let late = v.schedule.planned_start + rules.late_after_ms();
            let missed = v.schedule.planned_end + rules.missed_after_end_ms();
            out.extend([late, late + 1, missed, missed + 1]);
        }
        out
    }

    /// The definitions over the documents as they stand now, judged at `as_of`.
    fn expected(&self, as_of: Millis) -> Expected {
        let context = ReportContext {
            contracts: self
                .contracts
                .iter()
                .map(|c| {
                    (
                        c.id,
                        ContractInfo {
                            contract_id: c.id,
                            commissioner: c.commissioner.clone(),
                            model: c.model,
                            rules: serde_json::from_value(c.rules.clone()).expect("rules"),
                        },
                    )
                })
                .collect(),
            teams: self.teams.clone(),
        };
        let mut outcomes = Vec::new();
        let mut narrow = Vec::new();
        let mut figures = Vec::new();
        for id in &self.visits {
            let visit: Visit = self.service.read(*id).expect("read");
            let location = self
                .clients
                .iter()
                .find(|c| c.id == visit.schedule.client_id)
                .and_then(|c| c.location);
            let received: HashMap<EventId, Millis> = self
                .store
                .events_for_visit(*id)
                .expect("events")
                .into_iter()
                .map(|e| (e.event_id, e.received_at))
                .collect();
            let inputs = VisitInputs {
                client_location: location,
                received_at: received,
            };
            let o = context.outcome(&visit, &inputs, as_of);
            figures.push((*id, o.clone()));
            if (self.narrow.0..self.narrow.1).contains(&o.planned_start) {
                narrow.push(o.clone());
            }
            if (self.range.0..self.range.1).contains(&o.planned_start) {
                outcomes.push(o);
            }
        }
        let tz = AgencyTimeZone(TZ);
        let mut punctuality = Vec::new();
        for group_by in GROUPINGS {
            for period in PERIODS {
                let query = ReportQuery {
                    group_by,
                    period,
                    time_zone: tz,
                };
                punctuality.push(PunctualityReport::build(&outcomes, &context, query));
            }
        }
        let mut alerts = Vec::new();
        for o in outcomes
            .iter()
            .filter(|o| (as_of - DAY_MS..as_of + 1).contains(&o.planned_start))
        {
            // The alert kinds, straight from the outcome's figures.
            match o.figures.attendance {
                Attendance::Overdue => alerts.push((o.visit_id, AlertKind::Overdue)),
                Attendance::Missed => alerts.push((o.visit_id, AlertKind::Missed)),
                _ => {}
            }
            if o.figures.no_clock_out {
                alerts.push((o.visit_id, AlertKind::NoClockOut));
            }
            if o.figures.short {
                alerts.push((o.visit_id, AlertKind::Short));
            }
            if o.flagged_events() > 0 {
                alerts.push((o.visit_id, AlertKind::TimeTrust));
            }
        }
        alerts.sort();
        Expected {
            as_of,
            punctuality,
            reconciliation: weekly_reconciliation(&outcomes, tz),
            continuity: continuity(&outcomes, tz),
            narrow: (weekly_reconciliation(&narrow, tz), continuity(&narrow, tz)),
            alerts,
            figures,
        }
    }

    /// Every report from the facts, `as_of` the expectation's instant, must equal it.
    fn check(&self, e: &Expected) -> Result<(), TestCaseError> {
        let span = Span {
            from: self.range.0,
            to: self.range.1,
            as_of: e.as_of,
            tz: TZ,
        };
        let store = self.store.as_ref();
        let mut n = 0;
        for group_by in GROUPINGS {
            for period in PERIODS {
                let fast = reports::punctuality(store, span, group_by, period).expect("report");
                prop_assert_eq!(
                    &fast,
                    &e.punctuality[n],
                    "{:?} by {:?} as of {}",
                    group_by,
                    period,
                    e.as_of
                );
                n += 1;
            }
        }
        let fast = reports::reconciliation(store, span).expect("reconciliation");
        prop_assert_eq!(&fast, &e.reconciliation, "reconciliation as of {}", e.as_of);
        let fast = reports::continuity(store, span).expect("continuity");
        prop_assert_eq!(&fast, &e.continuity, "continuity as of {}", e.as_of);
        let narrow = Span {
            from: self.narrow.0,
            to: self.narrow.1,
            ..span
        };
        let fast = reports::reconciliation(store, narrow).expect("reconciliation");
        prop_assert_eq!(
            &fast,
            &e.narrow.0,
            "reconciliation of the narrow range as of {}",
            e.as_of
        );
        let fast = reports::continuity(store, narrow).expect("continuity");
        prop_assert_eq!(
            &fast,
            &e.narrow.1,
            "continuity of the narrow range as of {}",
            e.as_of
        );
        let mut fast: Vec<(VisitId, AlertKind)> = reports::alerts(store, e.as_of, None)
            .expect("alerts")
            .into_iter()
            .map(|a| (a.visit_id, a.kind))
            .collect();
        fast.sort();
        prop_assert_eq!(&fast, &e.alerts, "alerts as of {}", e.as_of);
        for (id, o) in &e.figures {
            let f = reports::visit_figures(store, *id, e.as_of, Millis::MAX).expect("figures");
            prop_assert_eq!(&f.figures, &o.figures, "visit {} as of {}", id, e.as_of);
            prop_assert_eq!(f.billable_minutes, o.billable_minutes);
            prop_assert_eq!(f.contract_id, o.contract_id);
            prop_assert_eq!(f.planned_start, o.planned_start);
            let carers: Vec<(PersonId, bool, Figures)> = f
                .carers
                .iter()
                .map(|c| (c.carer_id, c.assigned, c.figures.clone()))
                .collect();
            let expected: Vec<(PersonId, bool, Figures)> = o
                .carers
                .iter()
                .map(|c| (c.carer_id, c.assigned, c.figures.clone()))
                .collect();
            prop_assert_eq!(carers, expected);
        }
        Ok(())
    }
}

/// A phone's event recorded at trusted time `at`, with one of four clocks.
fn event(carer: &(Principal, DeviceId), kind: ClockKind, at: Millis, skew: usize) -> ClockEvent {
    // (offset, age of the offset): fresh and small, 5 min fast, 3 min slow and stale, unknown.
    let (offset, age) = [
        (Some(1_500), 60_000),
        (Some(-5 * MINUTE_MS), 60_000),
        (Some(3 * MINUTE_MS), 30 * HOUR_MS),
        (None, 0),
    ][skew % 4];
    let device_time = at - offset.unwrap_or(0);
    ClockEvent {
        id: EventId::new(),
        kind,
        carer_id: carer.0.person.id,
        device_id: carer.1,
        device_time,
        clock_offset_ms: offset,
        offset_measured_at: offset.map(|_| device_time - age),
        method: ClockMethod::App,
        reason: None,
        location: None,
        tag_id: None,
    }
}

fn run(store: Arc<dyn ServerStore>, plan: &Plan) -> Result<(), TestCaseError> {
    let mut world = World::new(store, plan);
    let mut now = BASE - 3 * DAY_MS;
    // One look before anything happens, in the past of every later change (the first step comes
    // at least a minute later; a change committed at T already stands at T).
    let mut expected = vec![world.expected(now)];
    for (n, (gap, op, checkpoint)) in plan.steps.iter().enumerate() {
        now += gap * MINUTE_MS;
        world.apply(op, now);
        let next = now + plan.steps.get(n + 1).map_or(600, |s| s.0) * MINUTE_MS;
        if let Some(fraction) = checkpoint {
            expected.push(world.expected(now + (next - now) * i64::from(*fraction) / 256));
        }
        // The instants a state changes (overdue, missed, no clock-out) and the millisecond after,
        // while the documents stand as they are.
        for at in world
            .boundaries()
            .into_iter()
            .filter(|at| (now..next).contains(at))
        {
            expected.push(world.expected(at));
        }
    }
    expected.push(world.expected(now));
    expected.push(world.expected(now + 2 * DAY_MS));
    for e in &expected {
        world.check(e)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_facts_equal_the_definitions(plan in plan()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn ServerStore> =
            Arc::new(SqliteStore::open(&dir.path().join("server.db")).expect("open"));
        run(store, &plan)?;
    }
}

#[test]
fn postgres_facts_equal_the_definitions() {
    let cluster = PgCluster::start();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        ..ProptestConfig::default()
    });
    runner
        .run(&plan(), |plan| {
            let store: Arc<dyn ServerStore> =
                Arc::new(PostgresStore::open(&cluster.create_database()).expect("open"));
            run(store, &plan)
        })
        .expect("postgres facts equal the definitions");
}
