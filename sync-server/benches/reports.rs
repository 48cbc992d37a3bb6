//! Office figures over a generated database of 1,000,000 visits, all in one month (March 2026,
//! with the clocks changing on the 29th): a provider of about 2,000 carers and 20,000 clients.
//!
//! The database is written once through the store's own commit path (the same rows the sync
//! path writes) and kept in `target/bench-data/` (about 1.2 GB; delete it to regenerate).
//!
//! Run: `cargo bench -p caresync-server --bench reports`
//!
//! The benches split a report into its phases so docs/performance.md can say where time goes:
//! reading the projected rows, judging each visit, and grouping.

use caresync_core::domain::*;
use caresync_core::metrics::*;
use caresync_server::services::reports;
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::*;
use caresync_server::AppState;
use chrono::{NaiveDate, TimeZone};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const VISITS: usize = 1_000_000;
const CARERS: usize = 2_000;
const TEAMS: usize = 100;
const CLIENTS: usize = 20_000;
const DAYS: u32 = 31;
/// Bump when the generated data changes, so an old file is not reused.
const DATA_VERSION: u32 = 2;

fn tz() -> chrono_tz::Tz {
    chrono_tz::Europe::London
}

fn local_ms(day: NaiveDate, minute_of_day: u32) -> Millis {
    let naive = day
        .and_hms_opt(minute_of_day / 60, minute_of_day % 60, 0)
        .expect("valid time");
    // 01:00–02:00 does not exist on the 29th; visits start from 07:00 so this is never ambiguous.
    tz().from_local_datetime(&naive)
        .earliest()
        .expect("local time exists")
        .timestamp_millis()
}

fn month() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(2026, 3, 1).expect("date"),
        NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"),
    )
}

fn data_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("bench-data")
        .join(format!("reports-{VISITS}-v{DATA_VERSION}.db"))
}

fn id(rng: &mut StdRng) -> Uuid {
    Uuid::from_u128(rng.random())
}

/// Write the database unless a complete one is already there.
fn ensure_database() -> PathBuf {
    let path = data_path();
    let done = path.with_extension("complete");
    if done.exists() {
        return path;
    }
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create bench-data");
    for stale in [
        path.clone(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    eprintln!("generating {VISITS} visits into {} (once)...", path.display());
    let started = Instant::now();
    let store = SqliteStore::open(&path).expect("open bench store");
    generate(&store).expect("generate");
    drop(store);
    std::fs::write(&done, b"").expect("mark complete");
    eprintln!("generated in {:.0} s", started.elapsed().as_secs_f64());
    path
}

fn generate(store: &SqliteStore) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let teams: Vec<TeamId> = (0..TEAMS).map(|_| TeamId(id(&mut rng))).collect();
    for (k, t) in teams.iter().enumerate() {
        store.create_team(&Team {
            id: *t,
            name: format!("Team {k}"),
        })?;
    }
    let carers: Vec<PersonId> = (0..CARERS).map(|_| PersonId(id(&mut rng))).collect();
    for (k, c) in carers.iter().enumerate() {
        store.create_person(&Person {
            id: *c,
            name: format!("Carer {k}"),
            role: Role::Carer,
            team_id: Some(teams[k % TEAMS]),
            active: true,
        })?;
    }
    let clients: Vec<(ClientId, Location)> = (0..CLIENTS)
        .map(|_| {
            let at = Location {
                lat: 51.3 + rng.random::<f64>() * 0.4,
                lon: -0.4 + rng.random::<f64>() * 0.6,
                accuracy_m: 0.0,
            };
            (ClientId(id(&mut rng)), at)
        })
        .collect();
    for (k, (c, at)) in clients.iter().enumerate() {
        store.upsert_client(&Client {
            id: *c,
            name: format!("Client {k}"),
            location: Some(*at),
            tag_ids: vec![],
        })?;
    }
    // One framework contract with KPI targets and three spot contracts, two commissioners.
    let mut contracts = Vec::new();
    for (k, (commissioner, model)) in [
        ("North County Council", CommissioningModel::Framework),
        ("North County Council", CommissioningModel::Spot),
        ("Riverside ICB", CommissioningModel::Spot),
        ("Riverside ICB", CommissioningModel::Spot),
    ]
    .into_iter()
    .enumerate()
    {
        let rules = ContractRules {
            kpi: (model == CommissioningModel::Framework).then_some(KpiTargets {
                max_late_pct: 10.0,
                max_missed_pct: 1.0,
            }),
            ..ContractRules::default()
        };
        let contract = Contract {
            id: ContractId(id(&mut rng)),
            name: format!("Contract {k}"),
            commissioner: commissioner.into(),
            model,
            rules: serde_json::to_value(&rules).expect("rules"),
        };
        store.upsert_contract(&contract)?;
        contracts.push(contract.id);
    }
    let devices: Vec<DeviceId> = (0..CARERS).map(|_| DeviceId(id(&mut rng))).collect();
    let (first, _) = month();
    for n in 0..VISITS {
        if n % 100_000 == 0 {
            eprintln!("  {n} visits");
        }
        // Day by day, as an office loads rotas and phones' events arrive: rows of one period sit
        // together in the file. (Interleaving the days instead made the month's report 1.5x
        // slower; see docs/performance.md.)
        let day = first + chrono::Days::new((n * DAYS as usize / VISITS) as u64);
        let start = local_ms(day, 7 * 60 + rng.random_range(0..15 * 60));
        let minutes = [30, 45, 60][rng.random_range(0..3)];
        let end = start + minutes * MINUTE_MS;
        let (client, home) = clients[rng.random_range(0..CLIENTS)];
        let lead = rng.random_range(0..CARERS);
        let double_up = rng.random_bool(0.02);
        let mut assigned = vec![carers[lead]];
        if double_up {
            assigned.push(carers[(lead + 1) % CARERS]);
        }
        let cancelled = rng.random_bool(0.01);
        let visit_id = VisitId(id(&mut rng));
        let mut events = Vec::new();
        let mut amendments = Vec::new();
        if !cancelled {
            for (slot, carer) in assigned.iter().enumerate() {
                // 2% of carers miss the visit; the rest clock in from 10 minutes early to 25 late.
                if rng.random_bool(0.02) {
                    continue;
                }
                let lateness = rng.random_range(-10..25) * MINUTE_MS + rng.random_range(0..60_000);
                let clock_in = start + lateness;
                let stayed = (minutes * MINUTE_MS) * rng.random_range(60..120) / 100;
                let manual = rng.random_bool(0.05);
                let located = !manual && rng.random_bool(0.8);
                let device = devices[(lead + slot) % CARERS];
                let event = |kind: ClockKind, at: Millis, rng: &mut StdRng| EventRow {
                    event_id: EventId(id(rng)),
                    visit_id,
                    carer_id: *carer,
                    device_id: device,
                    kind,
                    device_time: at - 40,
                    clock_offset_ms: Some(40),
                    offset_measured_at: Some(at - HOUR_MS),
                    trusted_time: at,
                    received_at: at + rng.random_range(1_000..4 * HOUR_MS),
                    method: if manual {
                        ClockMethod::Manual
                    } else {
                        ClockMethod::Nfc
                    },
                    reason: manual.then_some(ReasonCode::PhoneUnavailable),
                    location: located.then_some(Location {
                        lat: home.lat + 0.0005,
                        lon: home.lon,
                        accuracy_m: 12.0,
                    }),
                    flags: String::new(),
                };
                events.push(event(ClockKind::ClockIn, clock_in, &mut rng));
                if rng.random_bool(0.97) {
                    events.push(event(ClockKind::ClockOut, clock_in + stayed, &mut rng));
                }
                if rng.random_bool(0.005) {
                    amendments.push(AmendmentRow {
                        amendment_id: AmendmentId(id(&mut rng)),
                        visit_id,
                        author_id: carers[0],
                        carer_id: *carer,
                        time: AmendedTime::ClockIn,
                        corrected_time: start,
                        reason: ReasonCode::AuthorisedByOffice,
                        written_at: end + DAY_MS,
                    });
                }
            }
        }
        store.commit_visit(&VisitCommit {
            visit: VisitRow {
                visit_id,
                client_id: client,
                contract_id: contracts[rng.random_range(0..contracts.len())],
                carers: assigned,
                planned_start: start,
                planned_end: end,
                status: if cancelled {
                    VisitStatus::Cancelled
                } else {
                    VisitStatus::Scheduled
                },
                chargeable: cancelled.then(|| rng.random_bool(0.5)),
                heads: caresync_core::Heads::from_hex([hex_head(&mut rng)]).expect("a hex head"),
                updated_at: end,
            },
            chunk: None,
            new_events: events,
            new_amendments: amendments,
            sync_state: None,
        })?;
    }
    Ok(())
}

fn hex_head(rng: &mut StdRng) -> String {
    format!("{:032x}{:032x}", rng.random::<u128>(), rng.random::<u128>())
}

fn benches(c: &mut Criterion) {
    let path = ensure_database();
    let t = Instant::now();
    let store: Arc<dyn ServerStore> = Arc::new(SqliteStore::open(&path).expect("open"));
    eprintln!("opened in {:.2?} (including any schema migration)", t.elapsed());
    let state = AppState::new(store.clone());
    let (from, to) = month();
    let (start, end) = reports::day_range(&state, from, to).expect("range");
    let as_of = end + 30 * DAY_MS;
    // One pass of each phase, timed, so a run shows where a report's time goes.
    let t = Instant::now();
    let visits = store.visits_planned_between(start, end).expect("visits").len();
    let read_visits = t.elapsed();
    let t = Instant::now();
    let events = store.events_planned_between(start, end).expect("events").len();
    let read_events = t.elapsed();
    let t = Instant::now();
    let amendments = store
        .amendments_planned_between(start, end)
        .expect("amendments")
        .len();
    let read_amendments = t.elapsed();
    let t = Instant::now();
    let judged = reports::judge(&state, start, end, as_of).expect("judge");
    let judge_all = t.elapsed();
    let t = Instant::now();
    let report = reports::punctuality(&judged, GroupBy::Contract, PeriodKind::Month, tz());
    let group = t.elapsed();
    eprintln!(
        "one pass: read {visits} visits {read_visits:.2?}, {events} events {read_events:.2?}, \
         {amendments} amendments {read_amendments:.2?}; judge (reads included) {judge_all:.2?}; \
         group into {} rows {group:.2?}",
        report.rows.len()
    );
    assert_eq!(
        judged.outcomes.len(),
        VISITS,
        "the month holds every generated visit"
    );

    let mut g = c.benchmark_group("report_1m_visits");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(60))
        .warm_up_time(Duration::from_secs(5));
    g.bench_function("monthly_punctuality_by_contract", |b| {
        b.iter(|| {
            let judged = reports::judge(&state, start, end, as_of).expect("judge");
            reports::punctuality(&judged, GroupBy::Contract, PeriodKind::Month, tz())
        })
    });
    g.bench_function("weekly_reconciliation_month", |b| {
        b.iter(|| {
            let judged = reports::judge(&state, start, end, as_of).expect("judge");
            weekly_reconciliation(&judged.outcomes, AgencyTimeZone(tz()))
        })
    });
    g.bench_function("phase_read_rows", |b| {
        b.iter(|| {
            let v = store.visits_planned_between(start, end).expect("visits");
            let e = store.events_planned_between(start, end).expect("events");
            let a = store.amendments_planned_between(start, end).expect("amendments");
            (v.len(), e.len(), a.len())
        })
    });
    g.bench_function("phase_judge_and_read", |b| {
        b.iter(|| {
            reports::judge(&state, start, end, as_of)
                .expect("judge")
                .outcomes
                .len()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("report_grouping_1m_outcomes");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("punctuality_by_contract_month", |b| {
        b.iter(|| reports::punctuality(black_box(&judged), GroupBy::Contract, PeriodKind::Month, tz()))
    });
    g.bench_function("punctuality_by_carer_week", |b| {
        b.iter(|| reports::punctuality(black_box(&judged), GroupBy::Carer, PeriodKind::Week, tz()))
    });
    g.bench_function("weekly_reconciliation", |b| {
        b.iter(|| weekly_reconciliation(black_box(&judged.outcomes), AgencyTimeZone(tz())))
    });
    g.finish();

    // The same database, a one-day report: cost follows the visits in the period, not the table.
    let day = NaiveDate::from_ymd_opt(2026, 3, 16).expect("date");
    let (day_start, day_end) = reports::day_range(&state, day, day.succ_opt().expect("date")).expect("range");
    let mut g = c.benchmark_group("report_one_day_of_1m");
    g.sample_size(20);
    g.bench_function("daily_punctuality_by_carer", |b| {
        b.iter(|| {
            let judged = reports::judge(&state, day_start, day_end, as_of).expect("judge");
            reports::punctuality(&judged, GroupBy::Carer, PeriodKind::Day, tz())
        })
    });
    g.finish();
}

criterion_group!(reports_benches, benches);
criterion_main!(reports_benches);
