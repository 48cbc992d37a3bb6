//! Oversight journeys against a real server: a carer's concern reaches their supervisor the
//! moment the phone syncs (and no other team's), is acknowledged and resolved with an action and
//! a note, and shows in the month's figures; a missed visit's alert escalates when nobody
//! acknowledges it and closes itself, saying why, when a late sync shows the carer was there.

use caresync_core::clock::SystemClock;
use caresync_core::domain::*;
use caresync_core::ClockRequest;
use caresync_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Agency {
    dir: tempfile::TempDir,
    server: ServerProcess,
    office: Office,
    /// Supervises North.
    sue: String,
    /// Supervises South.
    sam: String,
    sue_id: String,
    north: String,
}

impl Agency {
    fn start(extra: &[&str]) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("server");
        let token = ServerProcess::bootstrap(&data)?;
        let server = ServerProcess::start_with_args(&data, "127.0.0.1:0", None, extra)?;
        let office = Office::new(&server.url, &token);
        let (_, north) = office.call("POST", "/api/v1/teams", Some(json!({"name": "North"})))?;
        let (_, south) = office.call("POST", "/api/v1/teams", Some(json!({"name": "South"})))?;
        let supervisor = |name: &str, team: &Value| -> TestResult<(String, String)> {
            let (status, p) = office.call(
                "POST",
                "/api/v1/people",
                Some(json!({"name": name, "role": "supervisor", "team_id": team["id"]})),
            )?;
            assert_eq!(status, 201, "{p}");
            Ok((
                p["token"].as_str().ok_or("no token")?.to_string(),
                p["person"]["id"].as_str().ok_or("no id")?.to_string(),
            ))
        };
        let (sue, sue_id) = supervisor("Sue", &north)?;
        let (sam, _) = supervisor("Sam", &south)?;
        Ok(Self {
            dir,
            server,
            office,
            sue,
            sam,
            sue_id,
            north: north["id"].as_str().ok_or("no team id")?.to_string(),
        })
    }

    fn carer_in_north(&self, name: &str) -> TestResult<Phone> {
        let (status, p) = self.office.call(
            "POST",
            "/api/v1/people",
            Some(json!({"name": name, "role": "carer", "team_id": self.north})),
        )?;
        assert_eq!(status, 201, "{p}");
        let id: PersonId = p["person"]["id"].as_str().ok_or("no id")?.parse()?;
        let code = self.office.enrolment_code(id)?;
        Phone::enrol(self.dir.path(), &self.server.url, &code, Arc::new(SystemClock))
    }

    fn as_who(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> TestResult<(u16, Value)> {
        call_as(&self.server.url, token, method, path, body)
    }

    /// The alerts (all states) of a visit, as the office sees them.
    fn alerts_of(&self, visit: VisitId) -> TestResult<Vec<Value>> {
        let (status, v) = self
            .office
            .call("GET", "/api/v1/oversight/alerts?state=all", None)?;
        assert_eq!(status, 200, "{v}");
        Ok(v.as_array()
            .ok_or("not a list")?
            .iter()
            .filter(|a| a["visit_id"] == json!(visit))
            .cloned()
            .collect())
    }

    /// Wait (up to 15 s) until `pick` finds an alert of the visit.
    fn wait_for(&self, visit: VisitId, what: &str, pick: impl Fn(&Value) -> bool) -> TestResult<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let alerts = self.alerts_of(visit)?;
            if let Some(a) = alerts.iter().find(|a| pick(a)) {
                return Ok(a.clone());
            }
            if Instant::now() > deadline {
                return Err(format!("no alert {what}; have {alerts:?}").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn history(&self, alert: &Value) -> TestResult<Vec<Value>> {
        let id = alert["alert_id"].as_str().ok_or("no id")?;
        let (status, v) = self
            .office
            .call("GET", &format!("/api/v1/oversight/alerts/{id}"), None)?;
        assert_eq!(status, 200, "{v}");
        Ok(v["history"].as_array().ok_or("no history")?.clone())
    }
}

fn steps(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| e["step"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_concern_reaches_the_carers_supervisor_at_once_and_is_handled_on_the_record() -> TestResult {
    let agency = Agency::start(&[])?;
    let ann = agency.carer_in_north("Ann")?;
    let visit = agency.office.create_visit(&[ann.carer], now() + HOUR_MS)?;
    ann.sync()?;
    let task = ann.store.visit(visit)?.visit.schedule.tasks[0].id;
    ann.store.add_note(
        visit,
        NoteCategory::Safeguarding,
        "Bruise on the left arm; says she fell",
    )?;
    ann.store.add_note(visit, NoteCategory::General, "Made tea")?;
    ann.store.record_task_outcome(
        visit,
        task,
        TaskResult::Refused,
        Some("Would not take the tablets"),
    )?;
    ann.sync()?;

    // At once: no sweep has to run for a concern.
    let alerts = agency.alerts_of(visit)?;
    let mut kinds: Vec<&str> = alerts.iter().filter_map(|a| a["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["safeguarding", "task_not_done"], "{alerts:?}");
    for a in &alerts {
        assert_eq!(a["carer_id"], json!(ann.carer));
        assert_eq!(a["team_id"], json!(agency.north));
        assert_eq!(a["state"], "raised");
    }
    let safeguarding = alerts
        .iter()
        .find(|a| a["kind"] == "safeguarding")
        .ok_or("no safeguarding alert")?;
    let id = safeguarding["alert_id"].as_str().ok_or("no id")?;
    // 15 minutes to acknowledge a safeguarding concern by default.
    assert_eq!(
        safeguarding["ack_due_at"].as_i64().ok_or("no due")?
            - safeguarding["raised_at"].as_i64().ok_or("no raised")?,
        15 * MINUTE_MS
    );

    // Sue (North) sees both; Sam (South) sees none and cannot reach them by id.
    let (status, sue_list) = agency.as_who(&agency.sue, "GET", "/api/v1/oversight/alerts", None)?;
    assert_eq!(status, 200);
    assert_eq!(sue_list.as_array().map(Vec::len), Some(2), "{sue_list}");
    let (status, sam_list) = agency.as_who(&agency.sam, "GET", "/api/v1/oversight/alerts", None)?;
    assert_eq!((status, sam_list), (200, json!([])));
    for (method, path, body) in [
        ("GET", format!("/api/v1/oversight/alerts/{id}"), None),
        ("POST", format!("/api/v1/oversight/alerts/{id}/acknowledge"), None),
        (
            "POST",
            format!("/api/v1/oversight/alerts/{id}/resolve"),
            Some(json!({"action": "no_action_needed", "note": "not mine"})),
        ),
    ] {
        let (status, body) = agency.as_who(&agency.sam, method, &path, body)?;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }

    // Sue acknowledges; a second acknowledgement is refused.
    let (status, acked) = agency.as_who(
        &agency.sue,
        "POST",
        &format!("/api/v1/oversight/alerts/{id}/acknowledge"),
        None,
    )?;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], json!(agency.sue_id));
    assert_eq!(acked["escalated_at"], Value::Null, "acknowledged in time");
    let (status, again) = agency.as_who(
        &agency.sue,
        "POST",
        &format!("/api/v1/oversight/alerts/{id}/acknowledge"),
        None,
    )?;
    assert_eq!((status, again["code"].as_str()), (409, Some("alert_closed")));

    // Bad resolutions change nothing.
    let resolve = format!("/api/v1/oversight/alerts/{id}/resolve");
    let (status, _) = agency.as_who(
        &agency.sue,
        "POST",
        &resolve,
        Some(json!({"action": "shrugged", "note": "x"})),
    )?;
    assert!((400..500).contains(&status), "{status}");
    let (status, body) = agency.as_who(
        &agency.sue,
        "POST",
        &resolve,
        Some(json!({"action": "safeguarding_referral", "note": "  "})),
    )?;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid")));
    assert_eq!(
        steps(&agency.history(safeguarding)?),
        vec!["raised", "acknowledged"]
    );

    let (status, done) = agency.as_who(
        &agency.sue,
        "POST",
        &resolve,
        Some(
            json!({"action": "safeguarding_referral", "note": "Referred to the council's safeguarding team"}),
        ),
    )?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "resolved");
    assert_eq!(done["action"], "safeguarding_referral");
    let history = agency.history(safeguarding)?;
    assert_eq!(steps(&history), vec!["raised", "acknowledged", "resolved"]);
    assert_eq!(history[2]["by"], json!(agency.sue_id));
    // Final: no more changes.
    let (status, _) = agency.as_who(
        &agency.sue,
        "POST",
        &format!("/api/v1/oversight/alerts/{id}/acknowledge"),
        None,
    )?;
    assert_eq!(status, 409);

    // Syncing again raises nothing new.
    ann.sync()?;
    assert_eq!(agency.alerts_of(visit)?.len(), 2);

    // The month's figures: Sue's team only for Sue, nothing for Sam.
    let today = chrono::Utc::now().date_naive();
    let span = format!(
        "from={}&to={}",
        today.pred_opt().unwrap_or(today),
        today.succ_opt().unwrap_or(today)
    );
    let (status, rows) = agency.as_who(
        &agency.sue,
        "GET",
        &format!("/api/v1/oversight/figures?{span}"),
        None,
    )?;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().ok_or("not a list")?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["team"], "North");
    assert_eq!(row["raised"], 2);
    assert_eq!(row["by_kind"]["safeguarding"], 1);
    assert_eq!(row["by_kind"]["task_not_done"], 1);
    assert_eq!(row["by_kind"]["missed"], 0);
    assert_eq!(row["acknowledged"], 1);
    assert_eq!(row["resolved"], 1);
    assert_eq!(row["escalated"], 0);
    assert_eq!(row["escalated_pct"], 0.0);
    let (status, rows) = agency.as_who(
        &agency.sam,
        "GET",
        &format!("/api/v1/oversight/figures?{span}"),
        None,
    )?;
    assert_eq!((status, rows), (200, json!([])));
    let resp = http()
        .get(format!(
            "{}/api/v1/oversight/figures.csv?{span}",
            agency.server.url
        ))
        .header("authorization", format!("Bearer {}", agency.office.token))
        .call()?;
    assert_eq!(resp.status().as_u16(), 200);
    let csv = resp.into_body().read_to_string()?;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("team,month,raised,overdue,missed"), "{csv}");
    assert!(lines[1].starts_with("North,"), "{csv}");
    // Care-note text is in the record for the people allowed to read it, never in figures.
    assert!(!csv.contains("Bruise"));
    Ok(())
}

#[test]
fn a_missed_visit_escalates_unacknowledged_and_closes_itself_when_a_late_sync_shows_attendance() -> TestResult
{
    // Sweep often, and give a missed visit one second to be acknowledged.
    let agency = Agency::start(&["--alert-sweep-secs", "0.2", "--ack-within", "missed=0.0167"])?;
    let ann = agency.carer_in_north("Ann")?;
    // Planned two hours ago for 30 minutes: missed since an hour ago (E + 30 min).
    let visit = agency.office.create_visit(&[ann.carer], now() - 2 * HOUR_MS)?;
    let missed = agency.wait_for(visit, "missed", |a| a["kind"] == "missed")?;
    assert_eq!(missed["carer_id"], json!(ann.carer));
    assert_eq!(missed["team_id"], json!(agency.north));
    // Nobody acknowledges: the sweep escalates it to the office, once.
    let escalated = agency.wait_for(visit, "escalated", |a| {
        a["kind"] == "missed" && !a["escalated_at"].is_null()
    })?;
    assert!(escalated["escalated_at"].as_i64() > escalated["ack_due_at"].as_i64());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(steps(&agency.history(&missed)?), vec!["raised", "escalated"]);

    // The carer was there after all; the phone syncs late.
    ann.sync()?;
    ann.store.clock_in(visit, &ClockRequest::app())?;
    ann.sync()?;
    let closed = agency.wait_for(visit, "missed closed", |a| {
        a["kind"] == "missed" && a["state"] == "closed"
    })?;
    assert_eq!(closed["close_reason"], "attended");
    let history = agency.history(&closed)?;
    assert_eq!(steps(&history), vec!["raised", "escalated", "closed"]);
    assert!(
        history[2]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("synced late"),
        "{history:?}"
    );
    // The visit is attended with no clock-out past E + 30 min: that is its own alert now, and
    // the missed one is not raised again by later sweeps.
    agency.wait_for(visit, "no clock-out", |a| {
        a["kind"] == "no_clock_out" && a["state"] == "raised"
    })?;
    std::thread::sleep(Duration::from_millis(600));
    let missed_alerts = agency
        .alerts_of(visit)?
        .into_iter()
        .filter(|a| a["kind"] == "missed")
        .count();
    assert_eq!(missed_alerts, 1);
    // Clocking out closes the no-clock-out alert, saying so.
    ann.store.clock_out(visit, &ClockRequest::app())?;
    ann.sync()?;
    let closed = agency.wait_for(visit, "no clock-out closed", |a| {
        a["kind"] == "no_clock_out" && a["state"] == "closed"
    })?;
    assert_eq!(closed["close_reason"], "clocked_out");
    Ok(())
}

#[test]
fn a_reconciliation_mismatch_opens_an_escalation_raised_once_with_the_commissioner() -> TestResult {
    let agency = Agency::start(&[
        "--alert-sweep-secs",
        "0.2",
        "--bank-holidays",
        "2026-12-25,2026-12-28",
    ])?;
    let ann = agency.carer_in_north("Ann")?;
    // Eight days ago: in one of the last two complete weeks, authorised 30 minutes, delivered 0.
    agency.office.create_visit(&[ann.carer], now() - 8 * DAY_MS)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let escalation = loop {
        let (status, v) = agency.office.call("GET", "/api/v1/oversight/escalations", None)?;
        assert_eq!(status, 200, "{v}");
        if let Some(e) = v.as_array().and_then(|a| a.first()).cloned() {
            break e;
        }
        assert!(Instant::now() < deadline, "no escalation opened");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (
            escalation["authorised_minutes"].as_i64(),
            escalation["delivered_minutes"].as_i64()
        ),
        (Some(30), Some(0))
    );
    assert_eq!(escalation["status"], "open");
    let week_start: chrono::NaiveDate = escalation["week_start"].as_str().ok_or("no week")?.parse()?;
    let due: chrono::NaiveDate = escalation["due_on"].as_str().ok_or("no due")?.parse()?;
    // Five working days after the week's Sunday, skipping the configured bank holidays.
    assert_eq!(
        due,
        caresync_core::metrics::working_days::reconciliation_due(
            week_start,
            &[
                chrono::NaiveDate::from_ymd_opt(2026, 12, 25).ok_or("date")?,
                chrono::NaiveDate::from_ymd_opt(2026, 12, 28).ok_or("date")?
            ]
            .into()
        )
    );
    // A supervisor may not see or raise escalations.
    let (status, _) = agency.as_who(&agency.sue, "GET", "/api/v1/oversight/escalations", None)?;
    assert_eq!(status, 403);

    let id = escalation["escalation_id"].as_str().ok_or("no id")?;
    let (status, body) = agency.office.call(
        "POST",
        "/api/v1/oversight/escalations/raise",
        Some(json!({"escalation_id": id, "summary": " "})),
    )?;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid")));
    let (status, raised) = agency.office.call(
        "POST",
        "/api/v1/oversight/escalations/raise",
        Some(json!({"escalation_id": id, "summary": "Told the commissioner: one visit not delivered, week of the 16th"})),
    )?;
    assert_eq!(status, 200, "{raised}");
    assert_eq!(raised["status"], "raised");
    let today = chrono::Utc::now().with_timezone(&chrono_tz_london()).date_naive();
    assert_eq!(raised["raised_on"], json!(today.to_string()));
    assert_eq!(raised["on_time"], json!(today <= due));
    let (status, again) = agency.office.call(
        "POST",
        "/api/v1/oversight/escalations/raise",
        Some(json!({"escalation_id": id, "summary": "again"})),
    )?;
    assert_eq!((status, again["code"].as_str()), (409, Some("already_raised")));
    // Later sweeps do not open it again.
    std::thread::sleep(Duration::from_millis(600));
    let (_, all) = agency.office.call("GET", "/api/v1/oversight/escalations", None)?;
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");

    // The contact is on record, and contacts can be recorded on their own.
    let contract = raised["contract_id"].clone();
    let (status, c) = agency.office.call(
        "POST",
        "/api/v1/oversight/commissioner-contacts",
        Some(json!({"contract_id": contract, "date": today.to_string(), "summary": "Late calls rising: sickness in North"})),
    )?;
    assert_eq!(status, 201, "{c}");
    let (status, bad) = agency.office.call(
        "POST",
        "/api/v1/oversight/commissioner-contacts",
        Some(json!({"contract_id": uuid::Uuid::new_v4(), "date": today.to_string(), "summary": "x"})),
    )?;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid")));
    let (_, contacts) = agency
        .office
        .call("GET", "/api/v1/oversight/commissioner-contacts", None)?;
    let contacts = contacts.as_array().ok_or("not a list")?;
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    assert!(contacts.iter().any(|c| c["escalation_id"] == json!(id)));
    Ok(())
}

#[test]
fn the_kpi_projection_counts_the_month_so_far_and_the_visits_still_scheduled() -> TestResult {
    let agency = Agency::start(&[])?;
    let ann = agency.carer_in_north("Ann")?;
    let client = agency.office.create_client("Mrs K", None)?;
    let framework = agency.office.create_contract(
        "Framework 2026",
        "framework",
        json!({"kpi": {"max_late_pct": 10, "max_missed_pct": 2}}),
    )?;
    agency.office.create_contract("Spot", "spot", json!({}))?;
    let t = now();
    // Missed a minute ago (E + 30 min), and one still to come.
    let missed_at = t - 61 * MINUTE_MS;
    agency
        .office
        .create_visit_for(client, framework, &[ann.carer], missed_at, 30)?;
    agency
        .office
        .create_visit_for(client, framework, &[ann.carer], t + 10 * MINUTE_MS, 30)?;
    let (status, rows) = agency
        .office
        .call("GET", "/api/v1/oversight/kpi-projection", None)?;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().ok_or("not a list")?;
    assert_eq!(rows.len(), 1, "only the contract with KPI targets: {rows:?}");
    let row = &rows[0];
    assert_eq!(row["contract_id"], json!(framework));
    // Hand-computed, allowing for a month boundary within the last hour.
    let month = |at: Millis| {
        chrono::DateTime::from_timestamp_millis(at)
            .map(|d| d.with_timezone(&chrono_tz_london()).format("%Y-%m").to_string())
            .unwrap_or_default()
    };
    let this_month = month(now());
    assert_eq!(row["month"], json!(this_month));
    let missed = u64::from(month(missed_at) == this_month);
    let remaining = u64::from(month(t + 10 * MINUTE_MS) == this_month);
    assert_eq!(row["month_to_date"]["missed"], json!(missed));
    assert_eq!(row["remaining"], json!(remaining));
    if missed == 1 {
        // 1 missed of 1: 100 % against a 2 % maximum.
        assert_eq!(row["missed"]["month_to_date_pct"], 100.0);
        assert_eq!(row["missed"]["outlook"], "breach");
    }
    let (status, _) = agency.as_who(&agency.sue, "GET", "/api/v1/oversight/kpi-projection", None)?;
    assert_eq!(status, 403);
    Ok(())
}

/// Escalations raised on time, per team and month, counted by hand. Weeks (Monday) and their due
/// days, 5 working days after the Sunday: 2 Nov → Fri 13 Nov; 9 Nov → Fri 20 Nov; 23 Nov →
/// Fri 4 Dec. An escalation belongs to the teams whose carers had that client's visits under
/// that contract in that week.
///
/// | client | week | carers (teams) | raised | on 25 Nov |
/// |---|---|---|---|---|
/// | C1 | 2 Nov | Ann (North) | 13 Nov | on time |
/// | C2 | 2 Nov | Ann + Bob (North, South) | 16 Nov | late |
/// | C3 | 9 Nov | Bob (South) | not yet | late (open past 20 Nov) |
/// | C4 | 23 Nov | Ann (North) | not yet | due in December, still in time |
///
/// So November: North 2 due, 1 on time, 1 late (50.0 %); South 2 due, 0 on time, 2 late
/// (0.0 %). December: North 1 due, none judged yet (no percentage).
#[test]
fn escalations_raised_on_time_per_team_and_month_by_hand() -> TestResult {
    use caresync_core::visit_document::Schedule;
    use caresync_server::services::{alerts, escalations, people};
    use caresync_server::store::alerts::Escalation;
    use caresync_server::store::sqlite::SqliteStore;
    use caresync_server::store::{Client, Contract, Team};
    use chrono::{NaiveDate, TimeZone};

    let dir = tempfile::tempdir()?;
    let state = caresync_server::AppState::new(Arc::new(SqliteStore::open(&dir.path().join("s.db"))?));
    let store = state.store.as_ref();
    let tz = chrono_tz::Europe::London;
    let at = |d: &str, hour: u32| -> TestResult<Millis> {
        let day: NaiveDate = d.parse()?;
        let t = tz
            .from_local_datetime(&day.and_hms_opt(hour, 0, 0).ok_or("time")?)
            .single()
            .ok_or("ambiguous")?;
        Ok(t.timestamp_millis())
    };
    let t0 = at("2026-11-01", 9)?;
    let (office, _) = people::create_person(store, "Olive", Role::Office, None, t0)?;
    let north = Team {
        id: TeamId::new(),
        name: "North".into(),
    };
    let south = Team {
        id: TeamId::new(),
        name: "South".into(),
    };
    store.create_team(&north)?;
    store.create_team(&south)?;
    let (ann, _) = people::create_person(store, "Ann", Role::Carer, Some(north.id), t0)?;
    let (bob, _) = people::create_person(store, "Bob", Role::Carer, Some(south.id), t0)?;
    let contract = Contract {
        id: ContractId::new(),
        name: "Shire spot".into(),
        commissioner: "Shire Council".into(),
        model: CommissioningModel::Spot,
        rules: json!({}),
    };
    store.upsert_contract(&contract)?;
    let mut ids = Vec::new();
    for (name, monday, carers, due) in [
        ("C1", "2026-11-02", vec![ann.id], "2026-11-13"),
        ("C2", "2026-11-02", vec![ann.id, bob.id], "2026-11-13"),
        ("C3", "2026-11-09", vec![bob.id], "2026-11-20"),
        ("C4", "2026-11-23", vec![ann.id], "2026-12-04"),
    ] {
        let client = Client {
            id: ClientId::new(),
            name: name.into(),
            location: None,
            tag_ids: vec![],
        };
        store.upsert_client(&client)?;
        // A Wednesday visit in that week.
        let wednesday = (monday.parse::<NaiveDate>()? + chrono::Duration::days(2)).to_string();
        let start = at(&wednesday, 10)?;
        let schedule = Schedule {
            client_id: client.id,
            contract_id: contract.id,
            carers,
            planned_start: start,
            planned_end: start + 30 * MINUTE_MS,
            tasks: vec![],
            status: VisitStatus::Scheduled,
            cancel_reason: None,
            chargeable: None,
        };
        state.visits.create(VisitId::new(), &schedule, office.id, t0)?;
        let e = Escalation {
            escalation_id: uuid::Uuid::new_v4().to_string(),
            contract_id: contract.id,
            client_id: client.id,
            week_start: monday.into(),
            authorised_minutes: 30,
            delivered_minutes: 0,
            opened_at: t0,
            due_on: due.into(),
            raised_at: None,
            raised_on: None,
            raised_by: None,
            contact_id: None,
        };
        assert!(store.open_escalation(&e)?);
        ids.push(e.escalation_id);
    }
    escalations::raise(
        store,
        tz,
        &ids[0],
        office.id,
        "Told the council",
        at("2026-11-13", 16)?,
    )?;
    escalations::raise(
        store,
        tz,
        &ids[1],
        office.id,
        "Told the council",
        at("2026-11-16", 9)?,
    )?;

    let (from, to) = (at("2026-11-01", 0)?, at("2027-01-01", 0)?);
    let now = at("2026-11-25", 12)?;
    let rows = alerts::figures(store, tz, from, to, None, now)?;
    // (team, month, due, on time, late, on time %, alerts raised)
    type Row = (String, String, u64, u64, u64, Option<f64>, u64);
    let got: Vec<Row> = rows
        .iter()
        .map(|r| {
            (
                r.team.clone(),
                r.month.clone(),
                r.escalations_due,
                r.escalations_on_time,
                r.escalations_late,
                r.escalations_on_time_pct,
                r.raised,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("North".into(), "2026-11".into(), 2, 1, 1, Some(50.0), 0),
            ("North".into(), "2026-12".into(), 1, 0, 0, None, 0),
            ("South".into(), "2026-11".into(), 2, 0, 2, Some(0.0), 0),
        ]
    );
    // A supervisor's figures (their team only) carry their team's escalations only.
    let south_only = alerts::figures(store, tz, from, to, Some(south.id), now)?;
    assert_eq!(south_only.len(), 1);
    assert_eq!(south_only[0].team, "South");
    // The CSV carries the same figures in the four columns before the team's id.
    let csv = alerts::figures_csv(&rows);
    let head = csv.lines().next().ok_or("no header")?;
    assert!(head
        .ends_with("escalations_due,escalations_on_time,escalations_late,escalations_on_time_pct,team_id"));
    assert!(
        csv.lines()
            .any(|l| l.starts_with("North,2026-11,") && l.contains(",2,1,1,50.0,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("South,2026-11,") && l.contains(",2,0,2,0.0,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("North,2026-12,") && l.contains(",1,0,0,,")),
        "{csv}"
    );
    // The escalations list agrees about each one.
    let today = escalations::local_day(now, tz);
    let on_time: Vec<Option<bool>> = store
        .escalations()?
        .into_iter()
        .filter(|e| ids.contains(&e.escalation_id))
        .map(|e| {
            let i = ids.iter().position(|x| *x == e.escalation_id);
            (i, escalations::view(e, today).on_time)
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    assert_eq!(on_time, vec![Some(true), Some(false), Some(false), None]);
    Ok(())
}
