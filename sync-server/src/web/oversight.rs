//! Oversight pages: alerts as records (acknowledge, resolve, the closed history), the oversight
//! figures per team and month (with the KPI outlook for the office), and the reconciliation
//! escalations with the commissioner contacts log (office). Every change goes through the service
//! functions the API calls (`services::alerts`, `services::escalations`); every list is scoped by
//! the API's own check (`web::scope`).

use super::format::{self, Names};
use super::scope::Scope;
use super::session::Viewer;
use super::{blocking, page, Chrome, WebError, WebResult};
use crate::http::{now, AppState};
use crate::services::alerts::{self, LifecycleError, OversightRow};
use crate::services::escalations::{self, RaiseError};
use crate::store::alerts::{AlertQuery, AlertRecord, AlertState, ResolutionAction};
use crate::store::VisitRow;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use caresync_core::domain::*;
use caresync_core::metrics::projection::Outlook;
use caresync_core::metrics::AlertKind;
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;
use std::collections::HashMap;

/// How far back the closed history reaches.
const CLOSED_DAYS: i64 = 30;
/// At most this many closed alerts are listed (newest first).
const CLOSED_LIMIT: usize = 200;

impl From<LifecycleError> for WebError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Final(_) | LifecycleError::AlreadyAcknowledged => WebError::Conflict(format!(
                "Someone got there first: {e}. Go back to Alerts to see where it stands."
            )),
            LifecycleError::BadNote => WebError::BadRequest(format!(
                "A resolution needs a note of 1 to {MAX_NOTE_CHARS} characters."
            )),
            LifecycleError::Unknown(_) => WebError::NotFound,
            LifecycleError::Store(s) => s.into(),
        }
    }
}

impl From<RaiseError> for WebError {
    fn from(e: RaiseError) -> Self {
        match e {
            RaiseError::Unknown(_) => WebError::NotFound,
            RaiseError::AlreadyRaised(_) => {
                WebError::Conflict("This escalation was already raised with the commissioner.".into())
            }
            RaiseError::BadSummary => WebError::BadRequest(format!(
                "Say what the commissioner was told (1 to {MAX_NOTE_CHARS} characters)."
            )),
            RaiseError::Store(s) => s.into(),
        }
    }
}

// ---- alerts ------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct AlertsQuery {
    state: Option<String>,
    team: Option<String>,
    kind: Option<String>,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct AlertRow {
    pub id: String,
    pub visit_id: String,
    pub kind: &'static str,
    /// `urgent` (safeguarding, missed, overdue), else `normal`: the row's colour.
    pub weight: &'static str,
    pub client: String,
    pub carer: String,
    pub team: String,
    pub planned: String,
    pub raised: String,
    pub age: String,
    /// "by 10:15, in 5 min" or "overdue by 12 min" while unacknowledged.
    pub ack_due: String,
    pub ack_late: bool,
    pub acknowledged: String,
    pub escalated: String,
    pub state: &'static str,
    pub state_label: &'static str,
    /// Closed history: what happened, who, when.
    pub outcome: String,
    pub note: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    closed: bool,
    rows: Vec<AlertRow>,
    teams: Vec<Choice>,
    kinds: Vec<Choice>,
    actions: Vec<Choice>,
    filtered: bool,
    /// The filters as a query string, sent back by the forms so the page returns to them.
    back: String,
    empty: String,
    closed_days: i64,
}

/// A filter's value, if one was chosen.
fn chosen(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The alert if it exists and its visit is in the viewer's scope (the API's rule); else not found.
fn alert_in_scope(st: &AppState, viewer: &Viewer, id: &str) -> WebResult<AlertRecord> {
    let id: AlertId = id.parse().map_err(|_| WebError::NotFound)?;
    let alert = st.store.alert(id)?.ok_or(WebError::NotFound)?;
    if !Scope::new(st, &viewer.who).sees_alert_visit(alert.visit_id)? {
        return Err(WebError::NotFound);
    }
    Ok(alert)
}

/// Where a form returns to: the alerts page with the filters it was sent from. Only a query
/// string made of plain characters is kept, so the redirect cannot be pointed elsewhere.
fn back_to(back: &str) -> Response {
    let safe = back.len() <= 200
        && back
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '&' | '-' | '_'));
    let to = if safe && !back.is_empty() {
        format!("/alerts?{back}")
    } else {
        "/alerts".into()
    };
    Redirect::to(&to).into_response()
}

fn urgent(kind: AlertKind) -> bool {
    matches!(
        kind,
        AlertKind::Safeguarding | AlertKind::Missed | AlertKind::Overdue
    )
}

pub async fn alerts_page(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    blocking(move || {
        let now = now();
        let today = format::today(&st, now);
        let closed = chosen(&q.state) == Some("closed");
        let team_filter = chosen(&q.team).filter(|_| viewer.is_office());
        let kind_filter = chosen(&q.kind);
        let names = Names::load(&st)?;
        let mut scope = Scope::new(&st, &viewer.who);
        let mut alerts = st.store.alerts(&AlertQuery {
            open_only: !closed,
            raised_from: closed.then_some(now - CLOSED_DAYS * DAY_MS),
            ..AlertQuery::default()
        })?;
        alerts.retain(|a| a.state.is_open() != closed);
        if closed {
            // Newest outcome first.
            alerts.sort_by_key(|a| std::cmp::Reverse(a.resolved_at.or(a.closed_at).unwrap_or(a.raised_at)));
        } else {
            // Not yet acknowledged first, the earliest deadline (so the escalated) at the top;
            // then those acknowledged and waiting to be resolved, newest first.
            alerts.sort_by_key(|a| {
                (
                    a.acknowledged_at.is_some(),
                    if a.acknowledged_at.is_some() {
                        -a.raised_at
                    } else {
                        a.ack_due_at
                    },
                )
            });
        }
        let mut visits: HashMap<VisitId, Option<VisitRow>> = HashMap::new();
        let mut rows = Vec::new();
        for a in &alerts {
            if !scope.sees_alert_visit(a.visit_id)? {
                continue;
            }
            if team_filter.is_some_and(|t| a.team_id.map(|x| x.to_string()).as_deref() != Some(t)) {
                continue;
            }
            if kind_filter.is_some_and(|k| a.kind.as_str() != k) {
                continue;
            }
            if closed && rows.len() >= CLOSED_LIMIT {
                break;
            }
            let visit = match visits.get(&a.visit_id) {
                Some(v) => v.clone(),
                None => {
                    let v = st.store.visit_row(a.visit_id)?;
                    visits.insert(a.visit_id, v.clone());
                    v
                }
            };
            rows.push(row(&st, &names, a, visit.as_ref(), now, today));
        }

        let opt = |value: String, label: String, current: Option<&str>| Choice {
            selected: current == Some(value.as_str()),
            value,
            label,
        };
        let mut teams: Vec<Choice> = names
            .teams
            .iter()
            .map(|(id, n)| opt(id.to_string(), n.clone(), team_filter))
            .collect();
        teams.sort_by(|a, b| a.label.cmp(&b.label));
        let kinds = AlertKind::ALL
            .iter()
            .map(|k| opt(k.as_str().into(), format::alert_kind(*k).into(), kind_filter))
            .collect();
        let actions = ResolutionAction::ALL
            .iter()
            .map(|a| opt(a.as_str().into(), format::words(a.as_str()), None))
            .collect();
        let mut back = Vec::new();
        if closed {
            back.push("state=closed".to_string());
        }
        if let Some(t) = team_filter {
            back.push(format!("team={t}"));
        }
        if let Some(k) = kind_filter {
            back.push(format!("kind={k}"));
        }
        let filtered = team_filter.is_some() || kind_filter.is_some();
        let whose = if viewer.is_office() {
            "any team"
        } else {
            "your team"
        };
        let empty = match (closed, filtered) {
            (false, false) => {
                format!("No open alerts for {whose}: nothing is waiting to be acknowledged or resolved.")
            }
            (false, true) => "No open alerts match these filters.".into(),
            (true, false) => {
                format!("No alerts for {whose} were resolved or closed in the last {CLOSED_DAYS} days.")
            }
            (true, true) => format!("No closed alerts in the last {CLOSED_DAYS} days match these filters."),
        };
        page(&AlertsPage {
            chrome: viewer.chrome(&st, "alerts"),
            closed,
            rows,
            teams,
            kinds,
            actions,
            filtered,
            back: back.join("&"),
            empty,
            closed_days: CLOSED_DAYS,
        })
    })
    .await
}

fn row(
    st: &AppState,
    names: &Names,
    a: &AlertRecord,
    visit: Option<&VisitRow>,
    now: Millis,
    today: NaiveDate,
) -> AlertRow {
    let at = |t: Millis| format::when(st, t, today);
    let (ack_due, ack_late) = if a.acknowledged_at.is_none() && a.state.is_open() {
        if now > a.ack_due_at {
            (
                format!(
                    "acknowledgement overdue by {}",
                    format::duration(now - a.ack_due_at)
                ),
                true,
            )
        } else {
            (
                format!(
                    "acknowledge by {} (in {})",
                    at(a.ack_due_at),
                    format::duration(a.ack_due_at - now)
                ),
                false,
            )
        }
    } else {
        (String::new(), false)
    };
    let by_at = |by: Option<PersonId>, t: Option<Millis>| match (by, t) {
        (Some(p), Some(t)) => format!("{}, {}", names.person(p), at(t)),
        (None, Some(t)) => at(t),
        _ => String::new(),
    };
    let (state, state_label) = match a.state {
        AlertState::Raised => ("raised", "Not yet acknowledged"),
        AlertState::Acknowledged => ("acknowledged", "Acknowledged"),
        AlertState::Resolved => ("resolved", "Resolved"),
        AlertState::Closed => ("closed", "Closed by the server"),
    };
    let outcome = match a.state {
        AlertState::Resolved => format!(
            "{} by {}",
            a.action.map(|x| format::words(x.as_str())).unwrap_or_default(),
            by_at(a.resolved_by, a.resolved_at)
        ),
        AlertState::Closed => format!(
            "{}: {}",
            a.closed_at.map(at).unwrap_or_default(),
            a.close_reason
                .map(|r| r.explain())
                .unwrap_or("the cause went away")
        ),
        _ => String::new(),
    };
    AlertRow {
        id: a.alert_id.to_string(),
        visit_id: a.visit_id.to_string(),
        kind: format::alert_kind(a.kind),
        weight: if urgent(a.kind) { "urgent" } else { "normal" },
        client: visit.map_or_else(
            || "(visit no longer listed)".into(),
            |v| names.client(v.client_id),
        ),
        carer: names.person(a.carer_id),
        team: a
            .team_id
            .and_then(|t| names.teams.get(&t).cloned())
            .unwrap_or_default(),
        planned: visit.map_or_else(String::new, |v| {
            format!(
                "{}–{}",
                format::when(st, v.planned_start, today),
                format::time(st, v.planned_end)
            )
        }),
        raised: at(a.raised_at),
        age: format::duration(now - a.raised_at),
        ack_due,
        ack_late,
        acknowledged: by_at(a.acknowledged_by, a.acknowledged_at),
        escalated: a.escalated_at.map(at).unwrap_or_default(),
        state,
        state_label,
        outcome,
        note: a.note.clone().unwrap_or_default(),
    }
}

#[derive(Deserialize)]
pub struct AckForm {
    csrf: String,
    #[serde(default)]
    back: String,
}

pub async fn acknowledge(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<AckForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let alert = alert_in_scope(&st, &viewer, &id)?;
        alerts::acknowledge_by(st.store.as_ref(), alert.alert_id, viewer.who.person.id, now())?;
        Ok(back_to(&f.back))
    })
    .await
}

#[derive(Deserialize)]
pub struct ResolveForm {
    csrf: String,
    action: String,
    note: String,
    #[serde(default)]
    back: String,
}

pub async fn resolve(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<ResolveForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        // Scope before the form: a bad form must not tell another team's alert exists.
        let alert = alert_in_scope(&st, &viewer, &id)?;
        let action = ResolutionAction::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == f.action)
            .ok_or_else(|| WebError::BadRequest("Choose what was done from the list.".into()))?;
        alerts::resolve_by(
            st.store.as_ref(),
            alert.alert_id,
            viewer.who.person.id,
            now(),
            action,
            &f.note,
        )?;
        Ok(back_to(&f.back))
    })
    .await
}

// ---- figures -----------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct FiguresQuery {
    from: Option<String>,
    to: Option<String>,
}

pub struct FigureRow {
    pub team: String,
    pub month: String,
    pub raised: u64,
    pub by_kind: String,
    pub acknowledged: u64,
    /// `median / 90th percentile`
    pub ack_times: String,
    pub resolved: u64,
    pub resolve_times: String,
    pub closed_by_server: u64,
    pub escalated: String,
    pub esc_due: u64,
    pub esc_on_time: u64,
    pub esc_late: u64,
    pub esc_on_time_pct: String,
    pub esc_late_high: bool,
}

pub struct OutlookRow {
    pub contract: String,
    pub commissioner: String,
    pub month: String,
    pub attended: u64,
    pub remaining: u64,
    pub measures: Vec<MeasureCell>,
}

pub struct MeasureCell {
    pub name: &'static str,
    pub now: String,
    pub projected: String,
    pub max: String,
    pub outlook: &'static str,
    pub outlook_label: &'static str,
}

#[derive(Template)]
#[template(path = "oversight.html")]
struct FiguresPage {
    chrome: Chrome,
    from: String,
    to: String,
    period: String,
    query: String,
    rows: Vec<FigureRow>,
    outlook: Vec<OutlookRow>,
}

/// The months picked (`YYYY-MM`, inclusive), or last month and this one.
fn months(st: &AppState, q: &FiguresQuery) -> WebResult<(NaiveDate, NaiveDate)> {
    let this = format::today(st, now()).with_day(1).unwrap_or_default();
    let month = |v: &Option<String>| {
        chosen(v)
            .map(|s| NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d"))
            .transpose()
            .map_err(|_| WebError::BadRequest("Months are written 2026-11.".into()))
    };
    let to = month(&q.to)?.unwrap_or(this);
    let from = month(&q.from)?.unwrap_or_else(|| to - chrono::Months::new(1));
    if to < from {
        return Err(WebError::BadRequest(
            "The first month must be on or before the last.".into(),
        ));
    }
    if to > from + chrono::Months::new(24) {
        return Err(WebError::BadRequest("Pick at most two years at a time.".into()));
    }
    Ok((from, to))
}

/// The figures the viewer may see for the months picked: the API's figures, the API's scoping.
fn figure_rows(
    st: &AppState,
    viewer: &Viewer,
    from: NaiveDate,
    to: NaiveDate,
) -> WebResult<Vec<OversightRow>> {
    let team = Scope::new(st, &viewer.who).figures_team()?;
    let (start, end) = crate::services::reports::day_range(st.tz, from, to + chrono::Months::new(1))
        .map_err(WebError::BadRequest)?;
    Ok(alerts::figures(
        st.store.as_ref(),
        st.tz,
        start,
        end,
        team,
        now(),
    )?)
}

fn minutes(m: Option<f64>) -> String {
    m.map_or_else(
        || "–".into(),
        |m| format::duration((m * MINUTE_MS as f64).round() as Millis),
    )
}

/// `November 2026` (or `Nov 2026`, as `how` says) for `2026-11`.
fn month_label(month: &str, how: &str) -> String {
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map_or_else(|_| month.to_string(), |d| d.format(how).to_string())
}

/// `12 min / 1 h 5 min`: median, then 90th percentile; a dash when nothing was timed.
fn times(median: Option<f64>, p90: Option<f64>) -> String {
    if median.is_none() {
        return "–".into();
    }
    format!("{} / {}", minutes(median), minutes(p90))
}

pub async fn figures(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<FiguresQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    blocking(move || {
        let (from, to) = months(&st, &q)?;
        let names = Names::load(&st)?;
        let rows = figure_rows(&st, &viewer, from, to)?
            .into_iter()
            .map(|r| FigureRow {
                team: names.group(&r.team_id),
                month: month_label(&r.month, "%b %Y"),
                raised: r.raised,
                by_kind: AlertKind::ALL
                    .iter()
                    .filter_map(|k| {
                        let n = r.by_kind.get(k.as_str()).copied().unwrap_or(0);
                        (n > 0).then(|| format!("{} {n}", format::alert_kind(*k)))
                    })
                    .collect::<Vec<_>>()
                    .join(" · "),
                acknowledged: r.acknowledged,
                ack_times: times(r.ack_median_minutes, r.ack_p90_minutes),
                resolved: r.resolved,
                resolve_times: times(r.resolve_median_minutes, r.resolve_p90_minutes),
                closed_by_server: r.closed_by_server,
                escalated: format!("{} ({})", r.escalated, format::pct(r.escalated_pct)),
                esc_due: r.escalations_due,
                esc_on_time: r.escalations_on_time,
                esc_late: r.escalations_late,
                esc_on_time_pct: format::pct(r.escalations_on_time_pct),
                esc_late_high: r.escalations_late > 0,
            })
            .collect();
        let outlook = if viewer.is_office() {
            escalations::kpi_projections(st.store.as_ref(), st.tz, now())?
                .into_iter()
                .map(|c| {
                    let cell = |name, m: caresync_core::metrics::projection::MeasureProjection| {
                        let (outlook, outlook_label) = match m.outlook {
                            Outlook::Ok => ("done", "OK"),
                            Outlook::Warning => ("overdue", "Warning: tell the commissioner"),
                            Outlook::Breach => ("missed", "Breach"),
                        };
                        MeasureCell {
                            name,
                            now: format::pct(m.month_to_date_pct),
                            projected: format::pct(m.projected_pct),
                            max: format::pct(Some(m.max_pct)),
                            outlook,
                            outlook_label,
                        }
                    };
                    OutlookRow {
                        contract: names.contract(c.contract_id),
                        commissioner: c.commissioner.clone(),
                        month: month_label(&c.month, "%B %Y"),
                        attended: c.month_to_date.attended,
                        remaining: c.remaining,
                        measures: vec![
                            cell("Late", c.projection.late),
                            cell("Missed", c.projection.missed),
                        ],
                    }
                })
                .collect()
        } else {
            vec![]
        };
        let label = |d: NaiveDate| d.format("%B %Y").to_string();
        page(&FiguresPage {
            chrome: viewer.chrome(&st, "oversight"),
            from: from.format("%Y-%m").to_string(),
            to: to.format("%Y-%m").to_string(),
            period: if from == to {
                label(from)
            } else {
                format!("{} to {}", label(from), label(to))
            },
            query: format!("from={}&to={}", from.format("%Y-%m"), to.format("%Y-%m")),
            rows,
            outlook,
        })
    })
    .await
}

/// The figures on the page as CSV: the same rows, from the API's own CSV writer.
pub async fn figures_csv(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<FiguresQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    blocking(move || {
        let (from, to) = months(&st, &q)?;
        let rows = figure_rows(&st, &viewer, from, to)?;
        let name = format!(
            "attachment; filename=\"oversight-{}-to-{}.csv\"",
            from.format("%Y-%m"),
            to.format("%Y-%m")
        );
        Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, name),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            alerts::figures_csv(&rows),
        )
            .into_response())
    })
    .await
}

// ---- escalations and contacts (office) ---------------------------------------------------------

pub struct EscalationRow {
    pub id: String,
    pub client: String,
    pub contract: String,
    pub week: String,
    pub authorised: String,
    pub delivered: String,
    pub due: String,
    pub open: bool,
    pub standing: String,
    /// `done`, `missed` or `upcoming`: the badge's colour.
    pub standing_class: &'static str,
    pub raised: String,
}

pub struct ContactRow {
    pub on: String,
    pub contract: String,
    pub summary: String,
    pub by: String,
    pub escalation: String,
}

#[derive(Template)]
#[template(path = "escalations.html")]
struct EscalationsPage {
    chrome: Chrome,
    rows: Vec<EscalationRow>,
    open_count: usize,
    contacts: Vec<ContactRow>,
    contracts: Vec<Choice>,
    today: String,
}

pub async fn escalations_page(State(st): State<AppState>, viewer: Viewer) -> WebResult<Response> {
    viewer.require_office()?;
    blocking(move || {
        let now = now();
        let today = escalations::local_day(now, st.tz);
        let names = Names::load(&st)?;
        let mut views: Vec<_> = st
            .store
            .escalations()?
            .into_iter()
            .map(|e| escalations::view(e, today))
            .collect();
        // Open first, by due day; then raised, most recent first.
        views.sort_by(|a, b| {
            let (ea, eb) = (&a.escalation, &b.escalation);
            (a.status != "open").cmp(&(b.status != "open")).then_with(|| {
                if a.status == "open" {
                    ea.due_on.cmp(&eb.due_on)
                } else {
                    eb.raised_on.cmp(&ea.raised_on)
                }
            })
        });
        let day = |s: &str| {
            s.parse::<NaiveDate>()
                .map_or_else(|_| s.to_string(), |d| d.format("%a %-d %b %Y").to_string())
        };
        let described: HashMap<String, String> = views
            .iter()
            .map(|v| {
                (
                    v.escalation.escalation_id.clone(),
                    format!(
                        "{}, week of {}",
                        names.client(v.escalation.client_id),
                        day(&v.escalation.week_start)
                    ),
                )
            })
            .collect();
        let rows: Vec<EscalationRow> = views
            .iter()
            .map(|v| {
                let e = &v.escalation;
                let open = v.status == "open";
                let (standing, standing_class) = match (open, v.on_time) {
                    (true, Some(false)) => ("Open, past its due day".to_string(), "missed"),
                    (true, _) => ("Open, still in time".to_string(), "upcoming"),
                    (false, Some(true)) => ("Raised on time".to_string(), "done"),
                    (false, _) => ("Raised late".to_string(), "missed"),
                };
                EscalationRow {
                    id: e.escalation_id.clone(),
                    client: names.client(e.client_id),
                    contract: names.contract(e.contract_id),
                    week: day(&e.week_start),
                    authorised: format::duration(e.authorised_minutes * MINUTE_MS),
                    delivered: format::duration(e.delivered_minutes * MINUTE_MS),
                    due: day(&e.due_on),
                    open,
                    standing,
                    standing_class,
                    raised: match (&e.raised_on, e.raised_by) {
                        (Some(on), Some(by)) => format!("{} by {}", day(on), names.person(by)),
                        (Some(on), None) => day(on),
                        _ => String::new(),
                    },
                }
            })
            .collect();
        let mut contacts = st.store.commissioner_contacts()?;
        contacts.sort_by(|a, b| {
            b.contact_on
                .cmp(&a.contact_on)
                .then(b.recorded_at.cmp(&a.recorded_at))
        });
        let contacts = contacts
            .into_iter()
            .map(|c| ContactRow {
                on: day(&c.contact_on),
                contract: names.contract(c.contract_id),
                summary: c.summary,
                by: names.person(c.recorded_by),
                escalation: c
                    .escalation_id
                    .and_then(|id| described.get(&id).cloned())
                    .unwrap_or_default(),
            })
            .collect();
        let mut contracts: Vec<Choice> = names
            .contracts
            .values()
            .map(|c| Choice {
                value: c.id.to_string(),
                label: format!("{} ({})", c.name, c.commissioner),
                selected: false,
            })
            .collect();
        contracts.sort_by(|a, b| a.label.cmp(&b.label));
        page(&EscalationsPage {
            chrome: viewer.chrome(&st, "escalations"),
            open_count: rows.iter().filter(|r| r.open).count(),
            rows,
            contacts,
            contracts,
            today: today.to_string(),
        })
    })
    .await
}

#[derive(Deserialize)]
pub struct RaiseForm {
    csrf: String,
    summary: String,
}

pub async fn raise(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<RaiseForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_office()?;
    blocking(move || {
        escalations::raise(
            st.store.as_ref(),
            st.tz,
            &id,
            viewer.who.person.id,
            &f.summary,
            now(),
        )?;
        Ok(Redirect::to("/escalations").into_response())
    })
    .await
}

#[derive(Deserialize)]
pub struct ContactForm {
    csrf: String,
    contract: String,
    date: String,
    summary: String,
}

pub async fn add_contact(
    State(st): State<AppState>,
    viewer: Viewer,
    Form(f): Form<ContactForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_office()?;
    blocking(move || {
        let contract: ContractId = f
            .contract
            .parse()
            .map_err(|_| WebError::BadRequest("Choose the contract from the list.".into()))?;
        if st.store.contract(contract)?.is_none() {
            return Err(WebError::BadRequest("Choose the contract from the list.".into()));
        }
        let on = NaiveDate::parse_from_str(f.date.trim(), "%Y-%m-%d")
            .map_err(|_| WebError::BadRequest("Give the day of the contact.".into()))?;
        escalations::record_contact(
            st.store.as_ref(),
            contract,
            on,
            &f.summary,
            viewer.who.person.id,
            now(),
        )?;
        Ok(Redirect::to("/escalations#contacts").into_response())
    })
    .await
}

/// The open alerts the viewer may see, for Today's link to the Alerts page.
pub fn open_count(st: &AppState, viewer: &Viewer) -> WebResult<usize> {
    let mut scope = Scope::new(st, &viewer.who);
    let mut n = 0;
    for a in st.store.alerts(&AlertQuery {
        open_only: true,
        ..AlertQuery::default()
    })? {
        n += usize::from(scope.sees_alert_visit(a.visit_id)?);
    }
    Ok(n)
}
