//! Office figures over a generated month of 1,000,000 visits (`CARESYNC_BENCH_VISITS` to change),
//! March 2026 with the clocks changing on the 29th: a provider of about 2,000 carers and 20,000
//! clients.
//!
//! The month is written once and kept in `target/bench-data/` (delete it to regenerate). By
//! default only the people, clients and contracts go through the store; each visit is judged by
//! `VisitFacts::judge`, as the commit path judges it, and its fact rows are written in bulk, then
//! the slot sums and the per-client sums by the migration steps that sum existing facts (the
//! reports read nothing else). With
//! `CARESYNC_BENCH_COMMIT_PATH=1` every visit goes through `commit_visit` instead (about ten
//! times slower to generate).
//!
//! Run: `cargo bench -p caresync-server --bench reports`
//!
//! `CARESYNC_BENCH_PG_URL` (an empty PostgreSQL database) adds the same reports on PostgreSQL.
//! With `CARESYNC_BENCH_BACKFILL=1` (and a commit-path month) the facts are dropped first, so
//! opening the store times the backfill migration.

use caresync_core::domain::*;
use caresync_core::metrics::*;
use caresync_server::services::reports;
use caresync_server::store::facts;
use caresync_server::store::postgres::PostgresStore;
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::*;
use chrono::{NaiveDate, TimeZone};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// `CARESYNC_BENCH_VISITS` overrides the size (on a busy machine, a smaller month; every figure
/// below scales with the visits of the period).
fn visits() -> usize {
    std::env::var("CARESYNC_BENCH_VISITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const CARERS: usize = 2_000;
const TEAMS: usize = 100;
const CLIENTS: usize = 20_000;
const DAYS: u32 = 31;
/// Bump when the generated data changes, so an old file is not reused.
const DATA_VERSION: u32 = 5;

/// `CARESYNC_BENCH_COMMIT_PATH=1`: write every visit through `commit_visit` (visits, events,
/// amendments and facts, as the sync path does; about 1.2 ms a visit on a loaded machine).
/// Otherwise only the reference rows go through the store and each visit is judged by the
/// metrics (`VisitFacts::judge`, as the commit path does) and its fact rows written in bulk:
/// the reports read nothing else.
fn commit_path() -> bool {
    std::env::var_os("CARESYNC_BENCH_COMMIT_PATH").is_some()
}

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
    target.join("bench-data").join(format!(
        "reports-{}-{}-v{DATA_VERSION}.db",
        visits(),
        if commit_path() { "commits" } else { "facts" }
    ))
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
    eprintln!("generating {} visits into {} (once)...", visits(), path.display());
    let started = Instant::now();
    let store = SqliteStore::open(&path).expect("open bench store");
    if commit_path() {
        generate(&store, &mut |c, _| store.commit_visit(c)).expect("generate");
        drop(store);
    } else {
        // The facts in one transaction of one connection of our own: rows of a period together,
        // as the day-by-day commits leave them.
        let mut conn = rusqlite::Connection::open(&path).expect("open for facts");
        let tx = conn.transaction().expect("transaction");
        {
            let mut visit = tx
                .prepare(&facts::sqlite(&facts::insert_visit_sql()))
                .expect("prepare");
            let mut carer = tx
                .prepare(&facts::sqlite(&facts::insert_carer_sql()))
                .expect("prepare");
            generate(&store, &mut |c, (rules, home)| {
                let judged = VisitFacts::judge(
                    &facts::record_from_rows(&c.visit, &c.new_events, &c.new_amendments),
                    rules,
                    &facts::inputs(Some(home), &c.new_events),
                );
                let params = facts::Version::of(&judged).row(c.visit.updated_at);
                let fact_id: i64 = visit
                    .query_row(rusqlite::params_from_iter(bind(params)), |r| r.get(0))
                    .expect("insert visit facts");
                for (rank, one) in judged.carers.iter().enumerate() {
                    carer
                        .execute(rusqlite::params_from_iter(bind(facts::carer_params(
                            fact_id, rank, one,
                        ))))
                        .expect("insert carer facts");
                }
                Ok(())
            })
            .expect("generate");
        }
        // The slot sums the commit path would have kept, by the migration that sums existing
        // facts (its `CREATE TABLE IF NOT EXISTS` does nothing here).
        tx.execute_batch(concat!(
            "DELETE FROM visit_fact_sums;",
            include_str!("../migrations/sqlite/0007_visit_fact_sums.sql")
        ))
        .expect("sum the facts");
        // And the per-client sums, by the step of the migration that sums existing facts.
        caresync_server::store::sqlite::fill_client_sums(&tx).expect("sum the facts per client");
        tx.commit().expect("commit facts");
        drop(store);
    }
    std::fs::write(&done, b"").expect("mark complete");
    eprintln!("generated in {:.0} s", started.elapsed().as_secs_f64());
    path
}

fn bind(params: Vec<facts::Param>) -> Vec<rusqlite::types::Value> {
    params
        .into_iter()
        .map(|p| match p {
            facts::Param::Int(Some(v)) => rusqlite::types::Value::Integer(v),
            facts::Param::Int(None) => rusqlite::types::Value::Null,
            facts::Param::Text(t) => rusqlite::types::Value::Text(t),
        })
        .collect()
}

/// Each visit's rows, with its contract's rules and client's location, to `emit`.
type Emit<'a> = dyn FnMut(&VisitCommit, (&ContractRules, Location)) -> Result<()> + 'a;

fn generate(store: &dyn ServerStore, emit: &mut Emit<'_>) -> Result<()> {
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
        contracts.push((contract.id, rules));
    }
    let devices: Vec<DeviceId> = (0..CARERS).map(|_| DeviceId(id(&mut rng))).collect();
    let (first, _) = month();
    for n in 0..visits() {
        if n % 100_000 == 0 {
            eprintln!("  {n} visits");
        }
        // Day by day, as an office loads rotas and phones' events arrive: rows of one period sit
        // together in the file. (Interleaving the days instead made the month's report 1.5x
        // slower; see docs/performance.md.)
        let day = first + chrono::Days::new((n * DAYS as usize / visits()) as u64);
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
                    flags: Default::default(),
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
        let (contract_id, rules) = &contracts[rng.random_range(0..contracts.len())];
        let commit = VisitCommit {
            visit: VisitRow {
                visit_id,
                client_id: client,
                contract_id: *contract_id,
                carers: assigned,
                planned_start: start,
                planned_end: end,
                status: if cancelled {
                    VisitStatus::Cancelled
                } else {
                    VisitStatus::Scheduled
                },
                chargeable: cancelled.then(|| rng.random_bool(0.5)),
                heads: random_heads(&mut rng),
                updated_at: end,
            },
            chunk: None,
            new_events: events,
            new_amendments: amendments,
            sync_state: None,
        };
        emit(&commit, (rules, home))?;
    }
    Ok(())
}

fn random_heads(rng: &mut StdRng) -> caresync_core::Heads {
    let mut hash = [0u8; 32];
    rng.fill(&mut hash);
    caresync_core::Heads::from_bytes(&[hash])
}

/// With `CARESYNC_BENCH_BACKFILL=1`: drop the facts and step the schema back, so the next open
/// runs the facts migration (the backfill) over the whole database, timed.
fn reset_facts(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open for reset");
    conn.execute_batch(
        "DROP TABLE IF EXISTS visit_fact_sums; DROP TABLE IF EXISTS carer_visit_facts; DROP TABLE IF EXISTS visit_facts;
         DROP TABLE IF EXISTS contract_rules; DROP TABLE IF EXISTS reconciliation_sums;
         DROP TABLE IF EXISTS continuity_sums; DROP TABLE IF EXISTS continuity_carer_sums;
         PRAGMA user_version = 4;",
    )
    .expect("reset facts");
}

/// 1,500 visits planned today (a provider's day), in a store of their own, for the live alerts.
fn todays_store(dir: &std::path::Path, now: Millis) -> Arc<dyn ServerStore> {
    let store = SqliteStore::open(&dir.join("today.db")).expect("open");
    let mut rng = StdRng::seed_from_u64(11);
    let contract = ContractId(id(&mut rng));
    let carers: Vec<PersonId> = (0..120).map(|_| PersonId(id(&mut rng))).collect();
    let day_start = now - now.rem_euclid(DAY_MS);
    for n in 0..1_500 {
        let start = day_start + 7 * HOUR_MS + rng.random_range(0..15 * 60) * MINUTE_MS;
        let carer = carers[n % carers.len()];
        let visit_id = VisitId(id(&mut rng));
        let mut events = Vec::new();
        if start + 10 * MINUTE_MS < now && rng.random_bool(0.9) {
            let at = start + rng.random_range(-10..25) * MINUTE_MS;
            events.push(EventRow {
                event_id: EventId(id(&mut rng)),
                visit_id,
                carer_id: carer,
                device_id: DeviceId(id(&mut rng)),
                kind: ClockKind::ClockIn,
                device_time: at,
                clock_offset_ms: Some(40),
                offset_measured_at: Some(at - HOUR_MS),
                trusted_time: at + 40,
                received_at: at + MINUTE_MS,
                method: ClockMethod::Nfc,
                reason: None,
                location: None,
                flags: Default::default(),
            });
        }
        store
            .commit_visit(&VisitCommit {
                visit: VisitRow {
                    visit_id,
                    client_id: ClientId(id(&mut rng)),
                    contract_id: contract,
                    carers: vec![carer],
                    planned_start: start,
                    planned_end: start + 30 * MINUTE_MS,
                    status: VisitStatus::Scheduled,
                    chargeable: None,
                    heads: random_heads(&mut rng),
                    updated_at: day_start,
                },
                chunk: None,
                new_events: events,
                new_amendments: vec![],
                sync_state: None,
            })
            .expect("commit");
    }
    Arc::new(store)
}

fn benches(c: &mut Criterion) {
    let path = ensure_database();
    if std::env::var_os("CARESYNC_BENCH_BACKFILL").is_some() {
        reset_facts(&path);
    }
    let t = Instant::now();
    let store: Arc<dyn ServerStore> = Arc::new(SqliteStore::open(&path).expect("open"));
    eprintln!("opened in {:.2?} (including any schema migration)", t.elapsed());
    let (from, to) = month();
    let (start, end) = reports::day_range(tz(), from, to).expect("range");
    let span = reports::Span {
        from: start,
        to: end,
        as_of: end + 30 * DAY_MS,
        tz: tz(),
    };
    let t = Instant::now();
    let report =
        reports::punctuality(store.as_ref(), span, GroupBy::Contract, PeriodKind::Month).expect("report");
    eprintln!("one monthly report by contract: {:.2?}", t.elapsed());
    let scheduled: u64 = report.rows.iter().map(|r| r.scheduled).sum();
    assert_eq!(
        scheduled,
        visits() as u64,
        "the month holds every generated visit"
    );

    // The same range shifted by 1 ms no longer falls on the sums' quarter hours, so the report
    // sums every fact row (the path before the sums); no visit starts at midnight, so the
    // figures are the same.
    let from_rows = reports::Span {
        from: start + 1,
        to: end + 1,
        ..span
    };
    let t = Instant::now();
    let by_rows = reports::punctuality(store.as_ref(), from_rows, GroupBy::Contract, PeriodKind::Month)
        .expect("report");
    eprintln!("the same from the rows: {:.2?}", t.elapsed());
    assert_eq!(
        format!("{:?}", by_rows.rows),
        format!("{:?}", report.rows),
        "the sums give the rows' figures"
    );

    same_from_sums_and_rows(store.as_ref(), span);
    month_reports(c, "report_1m_visits", store.as_ref(), span);

    // The same database, a one-day report: cost follows the visits in the period, not the table.
    let day = NaiveDate::from_ymd_opt(2026, 3, 16).expect("date");
    let (day_start, day_end) = reports::day_range(tz(), day, day.succ_opt().expect("date")).expect("range");
    let one_day = reports::Span {
        from: day_start,
        to: day_end,
        ..span
    };
    let mut g = c.benchmark_group("report_one_day_of_1m");
    g.sample_size(20);
    g.bench_function("daily_punctuality_by_carer", |b| {
        b.iter(|| {
            reports::punctuality(store.as_ref(), one_day, GroupBy::Carer, PeriodKind::Day).expect("report")
        })
    });
    g.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let now = caresync_core::clock::system_now();
    let today = todays_store(dir.path(), now);
    let mut g = c.benchmark_group("alerts");
    g.sample_size(50);
    g.bench_function("todays_alerts_1500_visits", |b| {
        b.iter(|| reports::alerts(today.as_ref(), now, None).expect("alerts"))
    });
    g.finish();
    if let Some(url) = std::env::var_os("CARESYNC_BENCH_PG_URL") {
        let pg = postgres_store(&url.to_string_lossy());
        let t = Instant::now();
        let theirs =
            reports::punctuality(pg.as_ref(), span, GroupBy::Contract, PeriodKind::Month).expect("report");
        eprintln!("PostgreSQL, one monthly report by contract: {:.2?}", t.elapsed());
        assert_eq!(
            format!("{:?}", theirs.rows),
            format!("{:?}", report.rows),
            "PostgreSQL gives the embedded store's figures"
        );
        same_from_sums_and_rows(pg.as_ref(), span);
        month_reports(c, "report_1m_visits_postgres", pg.as_ref(), span);
    }
}

/// With `CARESYNC_BENCH_PG_URL` (an empty database, or one this bench filled with the same
/// number of visits): the same month in PostgreSQL, its facts written in bulk as above.
fn postgres_store(url: &str) -> Arc<dyn ServerStore> {
    let t = Instant::now();
    let store = PostgresStore::open(url).expect("open PostgreSQL");
    eprintln!(
        "PostgreSQL opened in {:.2?} (including any schema migration)",
        t.elapsed()
    );
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
    let have: i64 = client
        .query_one("SELECT COUNT(*) FROM visit_facts", &[])
        .expect("count")
        .get(0);
    if have != visits() as i64 {
        assert_eq!(
            have, 0,
            "CARESYNC_BENCH_PG_URL holds another bench's data: use an empty database"
        );
        eprintln!("generating {} visits into PostgreSQL (once)...", visits());
        let started = Instant::now();
        let mut tx = client.transaction().expect("transaction");
        let visit = tx.prepare(&facts::insert_visit_sql()).expect("prepare");
        let carer = tx.prepare(&facts::insert_carer_sql()).expect("prepare");
        generate(&store, &mut |c, (rules, home)| {
            let judged = VisitFacts::judge(
                &facts::record_from_rows(&c.visit, &c.new_events, &c.new_amendments),
                rules,
                &facts::inputs(Some(home), &c.new_events),
            );
            let params = facts::Version::of(&judged).row(c.visit.updated_at);
            let fact_id: i64 = tx
                .query_one(&visit, &pg_bind(&params))
                .expect("insert visit facts")
                .get(0);
            for (rank, one) in judged.carers.iter().enumerate() {
                tx.execute(&carer, &pg_bind(&facts::carer_params(fact_id, rank, one)))
                    .expect("insert carer facts");
            }
            Ok(())
        })
        .expect("generate");
        tx.batch_execute(concat!(
            "DELETE FROM visit_fact_sums;",
            include_str!("../migrations/postgres/0006_visit_fact_sums.sql")
        ))
        .expect("sum the facts");
        caresync_server::store::postgres::fill_client_sums(&mut tx).expect("sum the facts per client");
        tx.commit().expect("commit facts");
        client.batch_execute("VACUUM ANALYZE").expect("analyze");
        eprintln!("generated in {:.0} s", started.elapsed().as_secs_f64());
    }
    // The sums are read by index-only scans, which need the visibility map (quick when the
    // tables are already vacuumed).
    client
        .batch_execute("VACUUM ANALYZE reconciliation_sums, continuity_sums, continuity_carer_sums")
        .expect("vacuum the sums");
    Arc::new(store)
}

fn pg_bind(params: &[facts::Param]) -> Vec<&(dyn ::postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            facts::Param::Int(v) => v as &(dyn ::postgres::types::ToSql + Sync),
            facts::Param::Text(t) => t as &(dyn ::postgres::types::ToSql + Sync),
        })
        .collect()
}

/// The reconciliation and continuity from the per-client sums equal those summed from every fact
/// row (the range shifted by 1 ms is off midnight, so it reads the rows; no visit starts at
/// midnight, so the figures are the same).
fn same_from_sums_and_rows(store: &dyn ServerStore, span: reports::Span) {
    let from_rows = reports::Span {
        from: span.from + 1,
        to: span.to + 1,
        ..span
    };
    let t = Instant::now();
    let sums = reports::reconciliation(store, span).expect("reconciliation");
    eprintln!(
        "reconciliation from the sums: {:.2?} ({} rows)",
        t.elapsed(),
        sums.len()
    );
    let t = Instant::now();
    let rows = reports::reconciliation(store, from_rows).expect("reconciliation");
    eprintln!("reconciliation from the rows: {:.2?}", t.elapsed());
    assert_eq!(sums, rows, "the sums give the rows' reconciliation");
    let t = Instant::now();
    let sums = reports::continuity(store, span).expect("continuity");
    eprintln!(
        "continuity from the sums: {:.2?} ({} rows)",
        t.elapsed(),
        sums.len()
    );
    let t = Instant::now();
    let rows = reports::continuity(store, from_rows).expect("continuity");
    eprintln!("continuity from the rows: {:.2?}", t.elapsed());
    assert_eq!(sums, rows, "the sums give the rows' continuity");
    // Where the time goes: the store's read, then the metrics' rows.
    let query = facts::SnapshotQuery {
        from: span.from,
        to: span.to,
        as_of: span.as_of,
        offsets: caresync_core::metrics::facts::utc_offsets(span.from, span.to, AgencyTimeZone(span.tz)),
        reconciliation: true,
        continuity: true,
        ..facts::SnapshotQuery::default()
    };
    let tz = AgencyTimeZone(span.tz);
    // One report: the store's read of `q`, then the metrics' rows; `count` gives (rows read,
    // rows answered).
    let time =
        |name: &str, q: facts::SnapshotQuery, count: &dyn Fn(&facts::ReportSnapshot) -> (usize, usize)| {
            let t = Instant::now();
            let read = store.report_snapshot(&q).expect("read");
            let read_ms = t.elapsed();
            let t = Instant::now();
            let (rows_read, rows) = count(&read);
            eprintln!(
                "{name}: read {read_ms:.2?} ({rows_read} rows), metrics {:.2?} ({rows} rows)",
                t.elapsed()
            );
        };
    for _ in 0..3 {
        let reconciliation = facts::SnapshotQuery {
            continuity: false,
            ..query.clone()
        };
        time("reconciliation", reconciliation, &|r| {
            (
                r.reconciliation.len(),
                reconciliation_from_days(&r.reconciliation, tz).len(),
            )
        });
        let continuity = facts::SnapshotQuery {
            reconciliation: false,
            ..query.clone()
        };
        time("continuity", continuity, &|r| {
            (r.continuity.len(), continuity_from_weeks(&r.continuity, tz).len())
        });
    }
}

/// The month's office reports on one store, as one Criterion group.
fn month_reports(c: &mut Criterion, group: &str, store: &dyn ServerStore, span: reports::Span) {
    let (start, _) = (span.from, span.to);
    let from_rows = reports::Span {
        from: span.from + 1,
        to: span.to + 1,
        ..span
    };
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2));
    g.bench_function("monthly_punctuality_by_contract", |b| {
        b.iter(|| reports::punctuality(store, span, GroupBy::Contract, PeriodKind::Month).expect("report"))
    });
    g.bench_function("monthly_punctuality_by_contract_from_rows", |b| {
        b.iter(|| {
            reports::punctuality(store, from_rows, GroupBy::Contract, PeriodKind::Month).expect("report")
        })
    });
    g.bench_function("monthly_punctuality_by_carer_week", |b| {
        b.iter(|| reports::punctuality(store, span, GroupBy::Carer, PeriodKind::Week).expect("report"))
    });
    g.bench_function("weekly_reconciliation_month", |b| {
        b.iter(|| reports::reconciliation(store, span).expect("reconciliation"))
    });
    g.bench_function("weekly_reconciliation_month_from_rows", |b| {
        b.iter(|| reports::reconciliation(store, from_rows).expect("reconciliation"))
    });
    g.bench_function("continuity_month", |b| {
        b.iter(|| reports::continuity(store, span).expect("continuity"))
    });
    g.bench_function("continuity_month_from_rows", |b| {
        b.iter(|| reports::continuity(store, from_rows).expect("continuity"))
    });
    g.bench_function("monthly_punctuality_as_of_mid_month", |b| {
        let mid = reports::Span {
            as_of: start + 15 * DAY_MS,
            ..span
        };
        b.iter(|| reports::punctuality(store, mid, GroupBy::Contract, PeriodKind::Month).expect("report"))
    });
    g.finish();
}

criterion_group!(reports_benches, benches);
criterion_main!(reports_benches);
