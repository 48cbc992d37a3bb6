//! Today: every visit of the local day the viewer may see, with its live state, alerts first.

use super::format::{self, Names};
use super::scope::Scope;
use super::session::Viewer;
use super::{blocking, page, Chrome, WebResult};
use crate::http::{now, AppState};
use crate::services::reports;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use caresync_core::domain::*;
use caresync_core::metrics::{AlertKind, Attendance, Punctuality, VisitFigures};
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::HashSet;

#[derive(Deserialize, Default)]
pub struct TodayQuery {
    date: Option<String>,
    team: Option<String>,
    carer: Option<String>,
    client: Option<String>,
    state: Option<String>,
}

/// A filter's value, if one was chosen.
fn chosen(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub struct Option_ {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct BoardRow {
    pub id: String,
    pub time: String,
    pub client: String,
    pub carers: Vec<(String, String)>,
    pub team: String,
    pub contract: String,
    pub state: &'static str,
    pub state_label: String,
    pub tags: Vec<String>,
    pub clocked: String,
}

pub struct AlertRow {
    pub id: String,
    pub time: String,
    pub client: String,
    pub carers: String,
    pub kind: String,
    pub silent: bool,
}

#[derive(Template)]
#[template(path = "today.html")]
struct TodayPage {
    chrome: Chrome,
    day_label: String,
    date: String,
    prev: String,
    next: String,
    is_today: bool,
    rows: Vec<BoardRow>,
    alerts: Vec<AlertRow>,
    counts: Vec<(&'static str, &'static str, usize)>,
    teams: Vec<Option_>,
    carers: Vec<Option_>,
    clients: Vec<Option_>,
    states: Vec<Option_>,
    filtered: bool,
    updated: String,
    /// Alert records still open for this viewer (the Alerts page's list).
    open_records: usize,
}

/// The live state of a visit as the board shows it: a CSS class and words.
pub fn live_state(o: &VisitFigures, silent: bool) -> (&'static str, &'static str) {
    match o.figures.attendance {
        Attendance::Cancelled => ("cancelled", "Cancelled"),
        Attendance::Pending => ("upcoming", "Upcoming"),
        Attendance::Overdue if silent => ("silent", "Phone silent since due"),
        Attendance::Overdue => ("overdue", "Overdue"),
        Attendance::Missed if silent => ("silent", "Missed? Phone silent since due"),
        Attendance::Missed => ("missed", "Missed"),
        Attendance::Attended if o.figures.clock_out.is_some() => ("done", "Done"),
        Attendance::Attended if o.figures.no_clock_out => ("noclockout", "No clock-out"),
        Attendance::Attended => ("inprogress", "In progress"),
    }
}

/// Extra marks beside the state.
pub fn tags(o: &VisitFigures) -> Vec<String> {
    let mut t = Vec::new();
    if o.figures.punctuality == Some(Punctuality::Late) {
        let by = o.figures.start_offset_ms.unwrap_or_default();
        t.push(format!("Late by {}", format::minutes(by)));
    }
    if o.figures.short {
        t.push("Short".into());
    }
    if o.figures.overrun {
        t.push("Overran".into());
    }
    if o.partially_attended {
        t.push("Partly attended".into());
    }
    if o.flags.flagged > 0 {
        t.push("Time flagged".into());
    }
    t
}

const STATES: &[(&str, &str)] = &[
    ("upcoming", "Upcoming"),
    ("inprogress", "In progress"),
    ("done", "Done"),
    ("late", "Late"),
    ("overdue", "Overdue"),
    ("silent", "Phone silent since due"),
    ("missed", "Missed"),
    ("noclockout", "No clock-out"),
    ("short", "Short"),
    ("flagged", "Time flagged"),
    ("cancelled", "Cancelled"),
];

pub async fn page_handler(st: AppState, viewer: Viewer, q: TodayQuery) -> WebResult<Response> {
    blocking(move || {
        let now = now();
        let today = format::today(&st, now);
        let day = chosen(&q.date)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .unwrap_or(today);
        let (from, to) = caresync_core::store::local_day_bounds(st.tz, day);
        let names = Names::load(&st)?;
        let mut scope = Scope::new(&st, &viewer.who);
        let visible_carers = scope.carers()?;
        let span = reports::Span {
            from,
            to,
            as_of: now,
            tz: st.tz,
        };
        let mut visits = reports::visits(&*st.store, span)?;
        let alerts = reports::alerts(&*st.store, now, visible_carers.as_ref())?;
        let open_records = super::oversight::open_count(&st, &viewer)?;
        let silent: HashSet<VisitId> = alerts
            .iter()
            .filter(|a| a.phone_silent_since_due)
            .map(|a| a.visit_id)
            .collect();

        let team_filter = chosen(&q.team).filter(|_| viewer.is_office());
        let carer_filter = chosen(&q.carer);
        let client_filter = chosen(&q.client);
        let state_filter = chosen(&q.state);

        visits.sort_by_key(|o| (o.planned_start, o.client_id));
        let mut rows = Vec::new();
        let mut counts = [0usize; 6];
        let mut board_clients: Vec<(String, String)> = Vec::new();
        for o in &visits {
            let carers: Vec<PersonId> = o
                .carers
                .iter()
                .filter(|c| c.assigned)
                .map(|c| c.carer_id)
                .collect();
            if !scope.sees_visit(&carers)? {
                continue;
            }
            let (state, label) = live_state(o, silent.contains(&o.visit_id));
            let tags = tags(o);
            let client_name = names.client(o.client_id);
            if !board_clients.iter().any(|(id, _)| *id == o.client_id.to_string()) {
                board_clients.push((o.client_id.to_string(), client_name.clone()));
            }
            if team_filter.is_some_and(|t| {
                !carers.iter().any(|c| {
                    names
                        .people
                        .get(c)
                        .and_then(|p| p.team_id)
                        .is_some_and(|team| team.to_string() == t)
                })
            }) {
                continue;
            }
            if carer_filter.is_some_and(|f| !carers.iter().any(|c| c.to_string() == f)) {
                continue;
            }
            if client_filter.is_some_and(|f| o.client_id.to_string() != f) {
                continue;
            }
            let matches_state = |s: &str| match s {
                "late" => o.figures.punctuality == Some(Punctuality::Late),
                "short" => o.figures.short,
                "flagged" => o.flags.flagged > 0,
                "noclockout" => o.figures.no_clock_out,
                other => other == state,
            };
            if state_filter.is_some_and(|s| !matches_state(s)) {
                continue;
            }
            let slot = match state {
                "done" => 1,
                "inprogress" | "noclockout" => 2,
                "upcoming" => 3,
                "overdue" | "silent" if o.figures.attendance == Attendance::Overdue => 4,
                "missed" | "silent" => 5,
                _ => 0,
            };
            counts[slot] += 1;
            let clocked = match (o.figures.clock_in, o.figures.clock_out) {
                (Some(i), Some(out)) => format!("{}–{}", format::time(&st, i), format::time(&st, out)),
                (Some(i), None) => format!("in {}", format::time(&st, i)),
                _ => String::new(),
            };
            rows.push(BoardRow {
                id: o.visit_id.to_string(),
                time: format!(
                    "{}–{}",
                    format::time(&st, o.planned_start),
                    format::time(&st, o.planned_end)
                ),
                client: client_name,
                carers: carers.iter().map(|c| (c.to_string(), names.person(*c))).collect(),
                team: carers.first().map(|c| names.team_of(*c)).unwrap_or_default(),
                contract: names.contract(o.contract_id),
                state,
                state_label: label.to_string(),
                tags,
                clocked,
            });
        }
        counts[0] = rows.len();

        let alert_rows = alerts
            .iter()
            .map(|a| AlertRow {
                id: a.visit_id.to_string(),
                time: format::when(&st, a.planned_start, today),
                client: names.client(a.client_id),
                carers: a
                    .carers
                    .iter()
                    .map(|c| names.person(*c))
                    .collect::<Vec<_>>()
                    .join(" & "),
                kind: match a.kind {
                    AlertKind::Overdue => "Overdue: nobody has clocked in".into(),
                    AlertKind::Missed => "Missed: nobody clocked in".into(),
                    AlertKind::NoClockOut => "No clock-out".into(),
                    AlertKind::Short => "Short visit".into(),
                    AlertKind::TimeTrust => "Clock time flagged".into(),
                    AlertKind::Concern => "Concern noted".into(),
                    AlertKind::Safeguarding => "Safeguarding concern".into(),
                    AlertKind::TaskNotDone => "Task refused or not done".into(),
                },
                silent: a.phone_silent_since_due,
            })
            .collect();

        let opt = |value: String, label: String, current: Option<&str>| Option_ {
            selected: current == Some(value.as_str()),
            value,
            label,
        };
        let mut teams: Vec<Option_> = names
            .teams
            .iter()
            .map(|(id, n)| opt(id.to_string(), n.clone(), team_filter))
            .collect();
        teams.sort_by(|a, b| a.label.cmp(&b.label));
        let mut carers = Vec::new();
        for p in names.people.values().filter(|p| p.role == Role::Carer) {
            if scope.sees_carer(p.id)? {
                carers.push(opt(p.id.to_string(), p.name.clone(), carer_filter));
            }
        }
        carers.sort_by(|a, b| a.label.cmp(&b.label));
        board_clients.sort_by(|a, b| a.1.cmp(&b.1));
        let clients = board_clients
            .into_iter()
            .map(|(id, n)| opt(id, n, client_filter))
            .collect();
        let states = STATES
            .iter()
            .map(|(v, l)| opt(v.to_string(), l.to_string(), state_filter))
            .collect();
        page(&TodayPage {
            chrome: viewer.chrome(&st, "today"),
            day_label: format::long_date(day),
            date: day.to_string(),
            prev: (day - chrono::Duration::days(1)).to_string(),
            next: (day + chrono::Duration::days(1)).to_string(),
            is_today: day == today,
            rows,
            alerts: alert_rows,
            counts: vec![
                ("all", "Visits", counts[0]),
                ("done", "Done", counts[1]),
                ("inprogress", "In progress", counts[2]),
                ("upcoming", "Upcoming", counts[3]),
                ("overdue", "Overdue", counts[4]),
                ("missed", "Missed", counts[5]),
            ],
            teams,
            carers,
            clients,
            states,
            filtered: team_filter.is_some()
                || carer_filter.is_some()
                || client_filter.is_some()
                || state_filter.is_some(),
            updated: format::time_s(&st, now),
            open_records,
        })
    })
    .await
}

pub async fn board(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<TodayQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    page_handler(st, viewer, q.map(|Query(q)| q).unwrap_or_default()).await
}
