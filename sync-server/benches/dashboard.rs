//! Server time to render dashboard pages, over real HTTP on loopback: Today for a provider of 200
//! carers with 1,500 visits a day (as the office, which sees all, and as one team's supervisor),
//! and Punctuality for a month (page with its charts, and its CSV).
//!
//! The month (ending today, so Today's alerts have the last 24 hours to judge) is written through
//! the store's commit path as projected rows, like `benches/reports.rs`, into a fresh temporary
//! database on each run (about 46,500 visits).
//!
//! Run: `cargo bench -p caresync-server --bench dashboard`

use caresync_core::domain::*;
use caresync_core::metrics::{ContractRules, KpiTargets};
use caresync_server::auth::hash_secret;
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::*;
use caresync_server::{router, AppState};
use chrono::{NaiveDate, TimeZone};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CARERS: usize = 200;
const TEAMS: usize = 10;
const CLIENTS: usize = 1_000;
const VISITS_PER_DAY: usize = 1_500;
const DAYS: i64 = 31;

fn tz() -> chrono_tz::Tz {
    chrono_tz::Europe::London
}

fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&tz()).date_naive()
}

fn local_ms(day: NaiveDate, minute_of_day: u32) -> Millis {
    let naive = day
        .and_hms_opt(minute_of_day / 60, minute_of_day % 60, 0)
        .expect("valid time");
    tz().from_local_datetime(&naive)
        .earliest()
        .expect("local time exists")
        .timestamp_millis()
}

/// Writes the month; returns the office's and the first team supervisor's person ids.
fn generate(store: &SqliteStore) -> Result<(PersonId, PersonId)> {
    let mut rng = StdRng::seed_from_u64(11);
    let now = caresync_core::clock::system_now();
    let teams: Vec<TeamId> = (0..TEAMS).map(|_| TeamId::new()).collect();
    for (k, t) in teams.iter().enumerate() {
        store.create_team(&Team {
            id: *t,
            name: format!("Team {k}"),
        })?;
    }
    let office = Person {
        id: PersonId::new(),
        name: "Office".into(),
        role: Role::Office,
        team_id: None,
        active: true,
    };
    store.create_person(&office)?;
    let supervisor = Person {
        id: PersonId::new(),
        name: "Supervisor".into(),
        role: Role::Supervisor,
        team_id: Some(teams[0]),
        active: true,
    };
    store.create_person(&supervisor)?;
    let carers: Vec<PersonId> = (0..CARERS).map(|_| PersonId::new()).collect();
    for (k, c) in carers.iter().enumerate() {
        store.create_person(&Person {
            id: *c,
            name: format!("Carer {k}"),
            role: Role::Carer,
            team_id: Some(teams[k % TEAMS]),
            active: true,
        })?;
    }
    let clients: Vec<ClientId> = (0..CLIENTS).map(|_| ClientId::new()).collect();
    for (k, c) in clients.iter().enumerate() {
        store.upsert_client(&Client {
            id: *c,
            name: format!("Client {k}"),
            location: None,
            tag_ids: vec![],
        })?;
    }
    let mut contracts = Vec::new();
    for (k, model) in [CommissioningModel::Framework, CommissioningModel::Spot]
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
        let id = ContractId::new();
        store.upsert_contract(&Contract {
            id,
            name: format!("Contract {k}"),
            commissioner: "County Council".into(),
            model,
            rules: serde_json::to_value(&rules).expect("rules"),
        })?;
        contracts.push(id);
    }
    let first = today() - chrono::Duration::days(DAYS - 1);
    for d in 0..DAYS {
        let day = first + chrono::Duration::days(d);
        for _ in 0..VISITS_PER_DAY {
            let start = local_ms(day, 7 * 60 + rng.random_range(0..15 * 60));
            let minutes = [30, 45, 60][rng.random_range(0..3)];
            let end = start + minutes * MINUTE_MS;
            let carer = carers[rng.random_range(0..CARERS)];
            let visit_id = VisitId::new();
            let mut events = Vec::new();
            // Visits still to come have no events; 2% of the past ones are missed.
            if end < now && !rng.random_bool(0.02) {
                let clock_in = start + rng.random_range(-10..25) * MINUTE_MS;
                for (kind, at) in [
                    (ClockKind::ClockIn, clock_in),
                    (ClockKind::ClockOut, clock_in + minutes * MINUTE_MS),
                ] {
                    events.push(EventRow {
                        event_id: EventId::new(),
                        visit_id,
                        carer_id: carer,
                        device_id: DeviceId::new(),
                        kind,
                        device_time: at,
                        clock_offset_ms: Some(0),
                        offset_measured_at: Some(at - HOUR_MS),
                        trusted_time: at,
                        received_at: at + 60_000,
                        method: ClockMethod::Nfc,
                        reason: None,
                        location: None,
                        flags: Default::default(),
                    });
                }
            }
            store.commit_visit(&VisitCommit {
                visit: VisitRow {
                    visit_id,
                    client_id: clients[rng.random_range(0..CLIENTS)],
                    contract_id: contracts[rng.random_range(0..contracts.len())],
                    carers: vec![carer],
                    planned_start: start,
                    planned_end: end,
                    status: VisitStatus::Scheduled,
                    chargeable: None,
                    heads: Default::default(),
                    updated_at: end,
                },
                chunk: None,
                new_events: events,
                new_amendments: vec![],
                sync_state: None,
            })?;
        }
    }
    Ok((office.id, supervisor.id))
}

/// GET a page with a session cookie; the status and the body's length.
async fn get(addr: SocketAddr, path: &str, session: &str) -> (u16, usize) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: caresync_session={session}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let status = String::from_utf8_lossy(&raw[..12.min(raw.len())])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw.len())
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("server.db")).expect("store");
    let started = std::time::Instant::now();
    let (office, supervisor) = generate(&store).expect("generate");
    eprintln!(
        "generated {} visits in {:.1} s",
        VISITS_PER_DAY as i64 * DAYS,
        started.elapsed().as_secs_f64()
    );
    let now = caresync_core::clock::system_now();
    for (id, person) in [("office-session", office), ("supervisor-session", supervisor)] {
        store
            .create_web_session(
                &WebSession {
                    id_hash: hash_secret(id),
                    person_id: person,
                    created_at: now,
                    expires_at: now + DAY_MS,
                },
                now,
            )
            .expect("session");
    }
    let state = AppState::new(Arc::new(store));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        addr
    });
    let to = today();
    let from = to - chrono::Duration::days(DAYS - 1);
    let pages = [
        (
            "today as office (1,500 visits)",
            "/".to_string(),
            "office-session",
        ),
        (
            "today as a team's supervisor",
            "/".to_string(),
            "supervisor-session",
        ),
        (
            "punctuality page, month by contract and week",
            format!("/punctuality?from={from}&to={to}&group=contract&period=week"),
            "office-session",
        ),
        (
            "punctuality CSV, month by carer and day",
            format!("/punctuality.csv?from={from}&to={to}&group=carer&period=day"),
            "office-session",
        ),
    ];
    let mut group = c.benchmark_group("dashboard");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, path, session) in &pages {
        let (status, bytes) = rt.block_on(get(addr, path, session));
        assert_eq!(status, 200, "{name}");
        eprintln!("{name}: {bytes} bytes");
        group.bench_function(*name, |b| b.iter(|| rt.block_on(get(addr, path, session))));
    }
    group.finish();
}

criterion_group!(dashboard, benches);
criterion_main!(dashboard);
