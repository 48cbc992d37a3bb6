//! `serve --demo`: seed a realistic provider and play two weeks through the real sync path.
//!
//! The office side is seeded through the same services the office API uses. Every carer has a
//! phone built on the core (its own SQLite store, the real sync client over HTTP to this very
//! server), whose clock is set to the simulated moment of each tap. Some phones stay offline for
//! hours; one phone's clock is seven minutes fast; a few visits are missed; in the second week a
//! sickness cluster in one team makes the framework contract's calls run late.

use crate::http::AppState;
use crate::services::people;
use crate::store::{Client, Contract, Team};
use caresync_core::clock::{ClockOffset, ManualClock};
use caresync_core::domain::*;
use caresync_core::http_transport::HttpTransport;
use caresync_core::store::ClockRequest;
use caresync_core::sync_client::{self, SyncClient};
use caresync_core::visit_document::{Schedule, Task};
use caresync_core::PhoneStore;
use chrono::{Datelike, Duration, NaiveDate, TimeZone};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Days played, ending today.
pub const DEMO_DAYS: i64 = 14;

/// Days the demo plays: [`DEMO_DAYS`], or fewer when `CARESYNC_DEMO_DAYS` says so (a quicker
/// demo for browser tests on a debug build; the sickness cluster needs 8 or more).
pub fn demo_days() -> i64 {
    std::env::var("CARESYNC_DEMO_DAYS")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .map_or(DEMO_DAYS, |d| d.clamp(1, DEMO_DAYS))
}

pub struct DemoSummary {
    pub office_token: String,
    pub supervisor_tokens: Vec<(String, String)>,
    pub visits: usize,
    pub clock_events: usize,
    pub phones: usize,
    pub first_day: NaiveDate,
    /// Days played (see [`demo_days`]).
    pub days: i64,
}

struct DemoPhone {
    carer: PersonId,
    team: usize,
    store: Arc<PhoneStore>,
    clock: Arc<ManualClock>,
    client: SyncClient,
    /// Device clock error, for the phone with a wrong clock.
    skew_ms: i64,
    /// Syncs only at the end of the day (long stretches without signal).
    offline_all_day: bool,
}

impl DemoPhone {
    /// Tap at simulated time `at`: the device clock reads `at + skew`, and the offset the phone
    /// measured at its last sync says so.
    fn set_time(&self, at: Millis) -> Result<(), String> {
        self.clock.set(at + self.skew_ms);
        self.store
            .set_clock_offset(ClockOffset {
                offset_ms: -self.skew_ms,
                measured_at: at + self.skew_ms - HOUR_MS,
            })
            .map_err(|e| e.to_string())
    }

    fn sync(&self) -> Result<(), String> {
        let summary = self.client.sync_now().map_err(|e| e.to_string())?;
        if let Some(e) = summary.errors.first() {
            return Err(format!("demo phone sync refused {}: {}", e.visit_id, e.message));
        }
        Ok(())
    }
}

/// Seed and play. `url` is this server's own address.
pub fn run(state: &AppState, url: &str, phones_dir: &Path) -> Result<DemoSummary, String> {
    run_with(state, url, phones_dir, |_| {})
}

/// The demo's sign-in accounts, known before it starts playing.
pub struct DemoAccounts {
    pub office_token: String,
    /// Each supervisor's name and token.
    pub supervisor_tokens: Vec<(String, String)>,
}

/// [`run`], telling `accounts_ready` the sign-in accounts as soon as they exist, so the dashboard
/// can be opened while the demo plays.
pub fn run_with(
    state: &AppState,
    url: &str,
    phones_dir: &Path,
    accounts_ready: impl FnOnce(&DemoAccounts),
) -> Result<DemoSummary, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let store = state.store.as_ref();
    let now = caresync_core::clock::system_now();
    let tz = state.tz;
    let mut rng = StdRng::seed_from_u64(20261122);
    std::fs::create_dir_all(phones_dir).map_err(|e| err(&e))?;

    let (office, office_token) =
        people::create_person(store, "Demo office", Role::Office, None, now).map_err(|e| err(&e))?;
    let office_token = office_token.unwrap_or_default();

    let team_names = ["North team", "Riverside team", "Hillside team"];
    let teams: Vec<Team> = team_names
        .iter()
        .map(|n| Team {
            id: TeamId::new(),
            name: n.to_string(),
        })
        .collect();
    let mut supervisor_tokens = Vec::new();
    for team in &teams {
        store.create_team(team).map_err(|e| err(&e))?;
        let (sup, token) = people::create_person(
            store,
            &format!("Supervisor, {}", team.name),
            Role::Supervisor,
            Some(team.id),
            now,
        )
        .map_err(|e| err(&e))?;
        supervisor_tokens.push((sup.name, token.unwrap_or_default()));
    }
    let accounts = DemoAccounts {
        office_token,
        supervisor_tokens,
    };
    accounts_ready(&accounts);
    let DemoAccounts {
        office_token,
        supervisor_tokens,
    } = accounts;

    // Contracts: one council's framework contract with KPI targets, and spot packages bought by
    // the council and by the NHS integrated care board.
    let framework = Contract {
        id: ContractId::new(),
        name: "Northshire homecare framework 2026".into(),
        commissioner: "Northshire County Council".into(),
        model: CommissioningModel::Framework,
        rules: serde_json::json!({
            "kpi": { "max_late_pct": 10.0, "max_missed_pct": 2.0 },
            "billing": { "basis": "capped", "unit_min": 15, "rounding": "nearest" }
        }),
    };
    let council_spot = Contract {
        id: ContractId::new(),
        name: "Northshire spot purchases".into(),
        commissioner: "Northshire County Council".into(),
        model: CommissioningModel::Spot,
        rules: serde_json::json!({ "billing": { "basis": "actual", "unit_min": 5, "rounding": "up" } }),
    };
    let icb_spot = Contract {
        id: ContractId::new(),
        name: "Continuing healthcare packages".into(),
        commissioner: "Northshire and Vale ICB".into(),
        model: CommissioningModel::Spot,
        rules: serde_json::json!({ "billing": { "basis": "planned", "unit_min": 15, "rounding": "nearest" } }),
    };
    for c in [&framework, &council_spot, &icb_spot] {
        store.upsert_contract(c).map_err(|e| err(&e))?;
    }

    // 60 clients around a market town, each in a team's patch and on one contract.
    let mut clients = Vec::new();
    for i in 0..60 {
        let team = i % teams.len();
        let contract = match i % 5 {
            0..=2 => framework.id,
            3 => council_spot.id,
            _ => icb_spot.id,
        };
        let location = Location {
            lat: 52.05 + team as f64 * 0.02 + rng.random_range(-0.01..0.01),
            lon: -1.30 + rng.random_range(-0.02..0.02),
            accuracy_m: 10.0,
        };
        let client = Client {
            id: ClientId::new(),
            name: format!("Client {:02}", i + 1),
            location: Some(location),
            tag_ids: vec![format!("NFC-{:04}", 1000 + i)],
        };
        store.upsert_client(&client).map_err(|e| err(&e))?;
        clients.push((client, team, contract));
    }

    // 20 carers in the three teams, each with an enrolled phone.
    let mut phones: Vec<DemoPhone> = Vec::new();
    for i in 0..20 {
        let team = i % teams.len();
        let (carer, _) = people::create_person(
            store,
            &format!("Carer {:02}", i + 1),
            Role::Carer,
            Some(teams[team].id),
            now,
        )
        .map_err(|e| err(&e))?;
        let code = people::issue_enrolment_code(store, carer.id, now).map_err(|e| err(&e))?;
        let clock = Arc::new(ManualClock::new(now));
        let path = phones_dir.join(format!("phone-{:02}-{}.db", i + 1, carer.id));
        let phone_store = Arc::new(PhoneStore::open_with(&path, clock.clone(), tz).map_err(|e| err(&e))?);
        let transport = Arc::new(HttpTransport::new(url));
        sync_client::enrol(
            &phone_store,
            transport.as_ref(),
            url,
            &code.code,
            &format!("Carer {:02}'s phone", i + 1),
        )
        .map_err(|e| err(&e))?;
        phones.push(DemoPhone {
            carer: carer.id,
            team,
            client: SyncClient::new(phone_store.clone(), transport),
            store: phone_store,
            clock,
            skew_ms: if i == 4 { 7 * MINUTE_MS } else { 0 },
            offline_all_day: i % 6 == 1,
        });
    }
    let by_team: Vec<Vec<usize>> = (0..teams.len())
        .map(|t| {
            phones
                .iter()
                .enumerate()
                .filter(|(_, p)| p.team == t)
                .map(|(i, _)| i)
                .collect()
        })
        .collect();

    // Two weeks of calls: morning, lunch and evening; double-ups for every tenth client.
    let today = chrono::Utc
        .timestamp_millis_opt(now)
        .single()
        .map(|t| t.with_timezone(&tz).date_naive())
        .unwrap_or_default();
    let days = demo_days();
    let first_day = today - Duration::days(days - 1);
    let slots = [(8, 0, 45), (12, 30, 30), (18, 0, 30)];
    let mut planned: Vec<(VisitId, Schedule, usize)> = Vec::new();
    for d in 0..days {
        let day = first_day + Duration::days(d);
        for (ci, (client, team, contract)) in clients.iter().enumerate() {
            let calls = 1 + ci % 3;
            for &(h, m, minutes) in slots.iter().take(calls) {
                let Some(start) = local_time(tz, day, h, m) else {
                    continue;
                };
                let team_phones = &by_team[*team];
                // Continuity: a client's regular carer, with a second on weekends.
                let regular = team_phones[ci % team_phones.len()];
                let cover = team_phones[(ci + 1) % team_phones.len()];
                let lead = if day.weekday().number_from_monday() >= 6 {
                    cover
                } else {
                    regular
                };
                let mut carers = vec![phones[lead].carer];
                if ci % 10 == 0 {
                    let other = if lead == regular { cover } else { regular };
                    carers.push(phones[other].carer);
                }
                let schedule = Schedule {
                    client_id: client.id,
                    contract_id: *contract,
                    carers,
                    planned_start: start,
                    planned_end: start + minutes * MINUTE_MS,
                    tasks: vec![
                        Task {
                            id: TaskId::new(),
                            title: "Personal care".into(),
                        },
                        Task {
                            id: TaskId::new(),
                            title: "Medication prompt".into(),
                        },
                    ],
                    status: VisitStatus::Scheduled,
                    cancel_reason: None,
                    chargeable: None,
                };
                planned.push((VisitId::new(), schedule, *team));
            }
        }
    }
    for (id, schedule, _) in &planned {
        state
            .visits
            .create(*id, schedule, office.id, now)
            .map_err(|e| err(&e))?;
    }
    // A few cancellations (a hospital stay), half of them chargeable at short notice.
    let mut cancelled = std::collections::HashSet::new();
    for (n, (id, _, _)) in planned.iter().enumerate().filter(|(n, _)| n % 97 == 5) {
        cancelled.insert(*id);
        let label = caresync_core::visit_document::ChangeLabel {
            author_id: office.id,
            at: now,
            what: "cancelled".into(),
        };
        state
            .visits
            .edit(*id, now, |doc, current| {
                let mut s = current.schedule.clone();
                s.status = VisitStatus::Cancelled;
                s.cancel_reason = Some("Client admitted to hospital".into());
                s.chargeable = Some(n % 2 == 0);
                doc.update_schedule_by(&s, &label).map(|_| ()).map_err(|source| {
                    crate::services::visits::VisitServiceError::Document { visit: *id, source }
                })
            })
            .map_err(|e| err(&e))?;
    }

    // Play it: each phone pulls, then its carer works through the day.
    for p in &phones {
        p.set_time(now - days * DAY_MS)?;
        p.sync()?;
    }
    let sick_team = 1;
    let mut clock_events = 0;
    for d in 0..days {
        let day = first_day + Duration::days(d);
        let second_week = d >= 7;
        let (day_start, day_end) = caresync_core::store::local_day_bounds(tz, day);
        let mut todays: HashMap<usize, Vec<&(VisitId, Schedule, usize)>> = HashMap::new();
        for v in planned
            .iter()
            .filter(|(_, s, _)| s.planned_start >= day_start && s.planned_start < day_end)
        {
            for carer in &v.1.carers {
                if let Some(pi) = phones.iter().position(|p| p.carer == *carer) {
                    todays.entry(pi).or_default().push(v);
                }
            }
        }
        for (pi, visits) in todays {
            let phone = &phones[pi];
            for (visit_id, schedule, team) in visits {
                if schedule.planned_end + 30 * MINUTE_MS > now || cancelled.contains(visit_id) {
                    continue; // still to come today, or cancelled
                }
                let sick = second_week && *team == sick_team;
                if rng.random_bool(if sick { 0.05 } else { 0.004 }) {
                    continue; // missed: nobody came
                }
                let late_by = if sick && rng.random_bool(0.45) {
                    rng.random_range(16..50) * MINUTE_MS
                } else {
                    rng.random_range(-8..12) * MINUTE_MS
                };
                let arrive = schedule.planned_start + late_by;
                let planned_len = schedule.duration_ms();
                let stay = if rng.random_bool(0.08) {
                    planned_len * rng.random_range(50..74) / 100 // a cropped call
                } else {
                    planned_len * rng.random_range(85..115) / 100
                };
                let (method, reason) = if rng.random_bool(0.05) {
                    (ClockMethod::Manual, Some(ReasonCode::TagMissing))
                } else if rng.random_bool(0.5) {
                    (ClockMethod::Nfc, None)
                } else {
                    (ClockMethod::Gps, None)
                };
                let location = clients
                    .iter()
                    .find(|(c, _, _)| c.id == schedule.client_id)
                    .and_then(|(c, _, _)| c.location);
                let req = ClockRequest {
                    method,
                    location,
                    reason,
                    tag_id: None,
                };
                phone.set_time(arrive)?;
                phone.store.clock_in(*visit_id, &req).map_err(|e| err(&e))?;
                if schedule.carers[0] == phone.carer {
                    let text = if sick {
                        "Ran late: covering for a colleague off sick"
                    } else {
                        "Settled and comfortable"
                    };
                    phone
                        .store
                        .add_note(*visit_id, NoteCategory::General, text)
                        .map_err(|e| err(&e))?;
                    for task in &schedule.tasks {
                        phone
                            .store
                            .record_task_outcome(*visit_id, task.id, TaskResult::Done, None)
                            .map_err(|e| err(&e))?;
                    }
                }
                phone.set_time(arrive + stay)?;
                phone
                    .store
                    .clock_out(
                        *visit_id,
                        &ClockRequest {
                            method: ClockMethod::Gps,
                            ..req
                        },
                    )
                    .map_err(|e| err(&e))?;
                clock_events += 2;
                if !phone.offline_all_day {
                    phone.sync()?;
                }
            }
            if phone.offline_all_day {
                phone.set_time(day_end - HOUR_MS)?;
                phone.sync()?;
            }
        }
    }
    for p in &phones {
        p.set_time(now)?;
        p.sync()?;
    }
    Ok(DemoSummary {
        office_token,
        supervisor_tokens,
        visits: planned.len(),
        clock_events,
        phones: phones.len(),
        first_day,
        days,
    })
}

/// What `serve --demo` prints for people: the dashboard's address and a sign-in link for the
/// office and each supervisor. The token travels after `#`, which browsers never send, so it stays
/// out of the server's and any proxy's logs; the sign-in page's script puts it in the form.
pub fn sign_in_links(url: &str, accounts: &DemoAccounts) -> String {
    let mut out = format!("Dashboard: {url}/\n\nSign in (open a link, then press Sign in):\n");
    let mut line = |who: &str, token: &str| {
        out.push_str(&format!("  {who:<30} {url}/signin#token={token}\n"));
    };
    line("Demo office", &accounts.office_token);
    for (name, token) in &accounts.supervisor_tokens {
        line(name, token);
    }
    out
}

fn local_time(tz: chrono_tz::Tz, day: NaiveDate, h: u32, m: u32) -> Option<Millis> {
    tz.from_local_datetime(&day.and_hms_opt(h, m, 0)?)
        .earliest()
        .map(|t| t.timestamp_millis())
}
