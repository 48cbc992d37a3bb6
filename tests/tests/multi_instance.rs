//! Scale-out journeys: two server processes on one PostgreSQL database, phones syncing through
//! either, compared with a single embedded server fed the same operations; and the move of a
//! populated embedded store into PostgreSQL.

use caresync_core::clock::{ClockOffset, ManualClock};
use caresync_core::domain::*;
use caresync_core::http_transport::HttpTransport;
use caresync_core::sync_client::{self, SyncClient, Transport, TransportError};
use caresync_core::{ClockRequest, PhoneStore, VisitDocument};
use caresync_tests::pg::PgCluster;
use caresync_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A phone's way to the servers: each request goes to the server currently chosen, as a load
/// balancer might send it.
struct Balanced {
    servers: Vec<HttpTransport>,
    next: AtomicUsize,
}

impl Transport for Balanced {
    fn post(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let i = self.next.load(Ordering::SeqCst) % self.servers.len();
        self.servers[i].post(path, token, body)
    }
}

struct BalancedPhone {
    store: Arc<PhoneStore>,
    client: SyncClient,
    transport: Arc<Balanced>,
    clock: Arc<ManualClock>,
    carer: PersonId,
}

impl BalancedPhone {
    fn enrol(dir: &Path, urls: &[String], code: &str, via: usize) -> TestResult<Self> {
        let clock = Arc::new(ManualClock::new(now()));
        let path = dir.join(format!("phone-{}.db", uuid::Uuid::new_v4()));
        let store = Arc::new(PhoneStore::open_with(&path, clock.clone(), chrono_tz_london())?);
        let transport = Arc::new(Balanced {
            servers: urls.iter().map(|u| HttpTransport::new(u)).collect(),
            next: AtomicUsize::new(via),
        });
        let id = sync_client::enrol(&store, transport.as_ref(), &urls[via % urls.len()], code, "phone")?;
        let client = SyncClient::new(store.clone(), transport.clone());
        Ok(Self {
            store,
            client,
            transport,
            clock,
            carer: id.carer_id,
        })
    }

    /// The carer taps at `at` on a correct clock whose offset was measured an hour before.
    fn tap(&self, at: Millis) -> TestResult {
        self.clock.set(at);
        self.store.set_clock_offset(ClockOffset {
            offset_ms: 0,
            measured_at: at - HOUR_MS,
        })?;
        Ok(())
    }

    fn clock_in(&self, visit: VisitId, at: Millis) -> TestResult {
        self.tap(at)?;
        self.store.clock_in(visit, &ClockRequest::app())?;
        Ok(())
    }

    fn clock_out(&self, visit: VisitId, at: Millis) -> TestResult {
        self.tap(at)?;
        self.store.clock_out(visit, &ClockRequest::app())?;
        Ok(())
    }

    /// Sync through server `via` (modulo the number of servers).
    fn sync_via(&self, via: usize) -> TestResult {
        self.clock.set(now());
        self.transport.next.store(via, Ordering::SeqCst);
        let s = self.client.sync_now()?;
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        Ok(())
    }

    fn heads(&self, visit: VisitId) -> TestResult<Vec<String>> {
        let mut doc = VisitDocument::load(&self.store.visit_bytes(visit)?)?;
        let mut heads: Vec<String> = doc.heads().iter().map(|h| h.to_string()).collect();
        heads.sort();
        Ok(heads)
    }
}

/// One deployment under test: one or more server URLs sharing one store, and the office token.
struct Deployment {
    urls: Vec<String>,
    token: String,
}

impl Deployment {
    fn office(&self, via: usize) -> Office {
        Office::new(&self.urls[via % self.urls.len()], &self.token)
    }
}

#[derive(Debug)]
struct Visits(Vec<VisitId>);

impl PartialEq for Visits {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What a run of the scenario produced, comparable across deployments.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Not compared across deployments (ids differ); for looking visits up afterwards.
    visits: Visits,
    events_per_visit: Vec<usize>,
    notes_per_visit: Vec<usize>,
    report_counts: Vec<Vec<(String, i64)>>,
}

/// The integer columns of each report row: counts, not ids nor float rates.
fn counts(report: &Value) -> Vec<Vec<(String, i64)>> {
    report["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    let mut cols: Vec<(String, i64)> = row
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .filter_map(|(k, v)| v.as_i64().map(|n| (k.clone(), n)))
                                .collect()
                        })
                        .unwrap_or_default();
                    cols.sort();
                    cols
                })
                .collect()
        })
        .unwrap_or_default()
}

fn window(first: Millis) -> String {
    let day = |t: Millis| {
        chrono::DateTime::from_timestamp_millis(t)
            .unwrap_or_default()
            .with_timezone(&chrono_tz_london())
            .date_naive()
    };
    format!(
        "from={}&to={}",
        day(first) - chrono::Duration::days(1),
        day(now()) + chrono::Duration::days(1)
    )
}

fn punctuality(office: &Office, first: Millis) -> TestResult<Value> {
    let query = format!(
        "/api/v1/reports/punctuality?{}&group_by=all&period=month",
        window(first)
    );
    let (status, v) = office.call("GET", &query, None)?;
    if status != 200 {
        return Err(format!("{query}: {status} {v}").into());
    }
    Ok(v)
}

/// The same operations against any deployment; phones and office alternate between its servers,
/// and the two carers sync the shared visit through different servers at the same moment.
fn play(d: &Deployment, dir: &Path, p0: Millis) -> TestResult<Outcome> {
    let office = d.office(0);
    let client = office.create_client("Mrs K", None)?;
    let contract = d.office(1).create_contract(
        "Framework",
        "framework",
        json!({"kpi": {"max_late_pct": 10.0, "max_missed_pct": 2.0}}),
    )?;
    let ann_id = office.create_person("Ann", "carer")?;
    let bob_id = d.office(1).create_person("Bob", "carer")?;
    let ann = BalancedPhone::enrol(dir, &d.urls, &office.enrolment_code(ann_id)?, 0)?;
    let bob = BalancedPhone::enrol(dir, &d.urls, &d.office(1).enrolment_code(bob_id)?, 1)?;

    // Visits an hour apart, 30 minutes each, planned in the past.
    let at = |k: i64| p0 + k * HOUR_MS;
    let visit = |k: usize, carers: &[PersonId]| {
        d.office(k)
            .create_visit_for(client, contract, carers, at(k as i64), 30)
    };
    let on_time = visit(0, &[ann.carer])?;
    let late = visit(1, &[bob.carer])?;
    let double = visit(2, &[ann.carer, bob.carer])?;
    let missed = visit(3, &[ann.carer])?;
    let short = visit(4, &[bob.carer])?;
    let visits = [on_time, late, double, missed, short];

    ann.sync_via(0)?;
    bob.sync_via(1)?;
    ann.clock_in(on_time, at(0) + 5 * MINUTE_MS)?;
    ann.clock_out(on_time, at(0) + 35 * MINUTE_MS)?;
    bob.clock_in(late, at(1) + 20 * MINUTE_MS)?;
    bob.clock_out(late, at(1) + 50 * MINUTE_MS)?;
    ann.clock_in(double, at(2) + 2 * MINUTE_MS)?;
    bob.clock_in(double, at(2) + 25 * MINUTE_MS)?;
    ann.store
        .add_note(double, NoteCategory::Wellbeing, "Mrs K in good spirits")?;
    bob.store
        .add_note(double, NoteCategory::Medication, "Tablets taken")?;
    bob.clock_in(short, at(4))?;
    bob.clock_out(short, at(4) + 10 * MINUTE_MS)?;

    // The two carers push changes to the same visit through different servers at once.
    std::thread::scope(|s| -> TestResult {
        let a = s.spawn(|| ann.sync_via(0).map_err(|e| e.to_string()));
        let b = s.spawn(|| bob.sync_via(1).map_err(|e| e.to_string()));
        a.join().map_err(|_| "ann's sync panicked")??;
        b.join().map_err(|_| "bob's sync panicked")??;
        Ok(())
    })?;
    // More work on the shared visit, then syncs that swap servers: each server's cached copy of
    // the visit is now behind what the other accepted.
    ann.clock_out(double, at(2) + 32 * MINUTE_MS)?;
    bob.clock_out(double, at(2) + 31 * MINUTE_MS)?;
    std::thread::scope(|s| -> TestResult {
        let a = s.spawn(|| ann.sync_via(1).map_err(|e| e.to_string()));
        let b = s.spawn(|| bob.sync_via(0).map_err(|e| e.to_string()));
        a.join().map_err(|_| "ann's sync panicked")??;
        b.join().map_err(|_| "bob's sync panicked")??;
        Ok(())
    })?;
    // The office notes on the shared visit through one server while phones sync through both.
    let (status, v) = d.office(1).call(
        "POST",
        &format!("/api/v1/visits/{double}/notes"),
        Some(json!({"category": "general", "text": "Family called the office"})),
    )?;
    assert_eq!(status, 201, "office note: {v}");
    for round in 0..3 {
        ann.sync_via(round)?;
        bob.sync_via(round + 1)?;
    }

    // Converged: both phones and every server agree on the shared visit.
    let mut server_heads = vec![];
    for via in 0..d.urls.len() {
        let mut heads: Vec<String> = serde_json::from_value(d.office(via).visit(double)?["heads"].clone())?;
        heads.sort();
        server_heads.push(heads);
    }
    for heads in &server_heads {
        assert_eq!(heads, &ann.heads(double)?, "ann vs a server");
        assert_eq!(heads, &bob.heads(double)?, "bob vs a server");
    }

    let mut events_per_visit = vec![];
    let mut notes_per_visit = vec![];
    for (k, v) in visits.iter().enumerate() {
        let view = d.office(k).visit(*v)?;
        events_per_visit.push(view["events"].as_array().map_or(0, Vec::len));
        notes_per_visit.push(view["visit"]["notes"].as_array().map_or(0, Vec::len));
        // Every server shows the same visit.
        for via in 0..d.urls.len() {
            assert_eq!(d.office(via).visit(*v)?["visit"], view["visit"]);
        }
    }
    let mut reports = vec![];
    for via in 0..d.urls.len() {
        reports.push(counts(&punctuality(&d.office(via), p0)?));
    }
    for r in &reports[1..] {
        assert_eq!(r, &reports[0], "servers disagree on the report");
    }
    Ok(Outcome {
        visits: Visits(visits.to_vec()),
        events_per_visit,
        notes_per_visit,
        report_counts: reports.swap_remove(0),
    })
}

fn embedded(dir: &Path) -> TestResult<(Deployment, ServerProcess)> {
    let data = dir.join("embedded");
    let token = ServerProcess::bootstrap(&data)?;
    let server = ServerProcess::start(&data, "127.0.0.1:0")?;
    Ok((
        Deployment {
            urls: vec![server.url.clone()],
            token,
        },
        server,
    ))
}

#[test]
fn two_instances_on_postgres_lose_nothing_and_match_one_embedded_instance() -> TestResult {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir()?;
    let p0 = now() - 8 * HOUR_MS;

    let (single, _single_server) = embedded(dir.path())?;
    let expected = play(&single, dir.path(), p0)?;

    let url = cluster.create_database();
    let token = ServerProcess::bootstrap_with(&dir.path().join("a"), Some(&url))?;
    let a = ServerProcess::start_with(&dir.path().join("a"), "127.0.0.1:0", Some(&url))?;
    let b = ServerProcess::start_with(&dir.path().join("b"), "127.0.0.1:0", Some(&url))?;
    let scaled = Deployment {
        urls: vec![a.url.clone(), b.url.clone()],
        token,
    };
    let got = play(&scaled, dir.path(), p0)?;

    assert_eq!(got, expected);
    // The scenario's figures, so a regression in both deployments alike is caught too.
    assert_eq!(expected.events_per_visit, vec![2, 2, 4, 0, 2]);
    let total = |col: &str| -> i64 {
        expected
            .report_counts
            .iter()
            .flat_map(|row| row.iter().filter(|(k, _)| k == col).map(|(_, v)| *v))
            .sum()
    };
    assert_eq!(total("scheduled"), 5, "{:?}", expected.report_counts);
    assert_eq!(total("attended"), 4);
    assert_eq!(total("missed"), 1);
    assert_eq!(total("late"), 1);
    assert_eq!(total("short"), 1);
    Ok(())
}

#[test]
fn copy_to_postgres_moves_a_populated_store_and_the_report_is_unchanged() -> TestResult {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir()?;
    let p0 = now() - 8 * HOUR_MS;
    let (single, mut server) = embedded(dir.path())?;
    let before_outcome = play(&single, dir.path(), p0)?;
    let office = single.office(0);
    let before = punctuality(&office, p0)?;
    let people_before = office.call("GET", "/api/v1/people", None)?.1;
    let mut visits_before = vec![];
    for v in &before_outcome.visits.0 {
        visits_before.push(office.visit(*v)?);
    }
    server.terminate()?;

    let url = cluster.create_database();
    let printed = copy_to_postgres(&server.data_dir, &url)?;
    assert!(printed.contains("clock_events: 10 rows"), "{printed}");
    // Running it again is harmless.
    copy_to_postgres(&server.data_dir, &url)?;

    let moved = ServerProcess::start_with(&dir.path().join("moved"), "127.0.0.1:0", Some(&url))?;
    // The office token and the phones' device tokens moved with the store.
    let office = Office::new(&moved.url, &single.token);
    let after = punctuality(&office, p0)?;
    assert_eq!(after["rows"], before["rows"]);
    assert_eq!(counts(&after), before_outcome.report_counts);
    assert_eq!(office.call("GET", "/api/v1/people", None)?.1, people_before);
    // The documents moved whole: every visit reads the same, heads, events and notes included.
    for (v, before) in before_outcome.visits.0.iter().zip(&visits_before) {
        assert_eq!(&office.visit(*v)?, before, "visit {v}");
    }
    let (status, devices) = office.call("GET", "/api/v1/devices", None)?;
    assert_eq!(status, 200);
    assert_eq!(devices.as_array().map(Vec::len), Some(2));
    Ok(())
}

/// Two instances on one database, each sweeping every 100 ms and raising as visits are created
/// through it: every missed visit gets exactly one alert, raised once and escalated once (with no
/// time to acknowledge), whichever instance got there first.
#[test]
fn two_instances_raise_and_escalate_each_alert_exactly_once() -> TestResult {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir()?;
    let url = cluster.create_database();
    let token = ServerProcess::bootstrap_with(&dir.path().join("a"), Some(&url))?;
    let args = ["--alert-sweep-secs", "0.1", "--ack-within", "missed=0"];
    let a = ServerProcess::start_with_args(&dir.path().join("a"), "127.0.0.1:0", Some(&url), &args)?;
    let b = ServerProcess::start_with_args(&dir.path().join("b"), "127.0.0.1:0", Some(&url), &args)?;
    let offices = [Office::new(&a.url, &token), Office::new(&b.url, &token)];
    let carer = offices[0].create_person("Ann", "carer")?;
    let mut visits = Vec::new();
    for i in 0..12i64 {
        // Planned two hours ago or earlier, 30 minutes long: already missed.
        let office = &offices[(i % 2) as usize];
        visits.push(office.create_visit(&[carer], now() - 2 * HOUR_MS - i * MINUTE_MS)?);
    }
    let all = |office: &Office| -> TestResult<Vec<Value>> {
        let (status, v) = office.call("GET", "/api/v1/oversight/alerts?state=all", None)?;
        assert_eq!(status, 200, "{v}");
        Ok(v.as_array().ok_or("not a list")?.clone())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let escalated = all(&offices[0])?
            .iter()
            .filter(|a| !a["escalated_at"].is_null())
            .count();
        if escalated >= visits.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {escalated} escalated");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Let both instances run several more passes over the same visits.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let alerts = all(&offices[1])?;
    assert_eq!(alerts.len(), visits.len(), "{alerts:?}");
    for (i, visit) in visits.iter().enumerate() {
        let of_visit: Vec<&Value> = alerts.iter().filter(|a| a["visit_id"] == json!(visit)).collect();
        assert_eq!(of_visit.len(), 1, "{visit}: {of_visit:?}");
        assert_eq!(of_visit[0]["kind"], "missed");
        let id = of_visit[0]["alert_id"].as_str().ok_or("no id")?;
        let (status, v) = offices[i % 2].call("GET", &format!("/api/v1/oversight/alerts/{id}"), None)?;
        assert_eq!(status, 200, "{v}");
        let steps: Vec<&str> = v["history"]
            .as_array()
            .ok_or("no history")?
            .iter()
            .filter_map(|e| e["step"].as_str())
            .collect();
        assert_eq!(steps, vec!["raised", "escalated"], "{visit}");
    }
    Ok(())
}
