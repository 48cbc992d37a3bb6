//! A carer's day: their visits and the gaps between them on one line, then the list.

use super::format::{self, Names};
use super::scope::Scope;
use super::session::Viewer;
use super::today::{live_state, tags};
use super::{blocking, page, Chrome, WebError, WebResult};
use crate::http::{now, AppState};
use crate::services::reports;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use caresync_core::domain::*;
use chrono::NaiveDate;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct DayQuery {
    date: Option<String>,
}

pub struct Block {
    pub id: String,
    pub left: String,
    pub width: String,
    /// Overlapping visits (a double-booking) are drawn in lanes one above another.
    pub top: String,
    pub label: String,
    pub state: &'static str,
}

pub struct Line {
    pub id: String,
    pub time: String,
    pub client: String,
    pub state: &'static str,
    pub state_label: String,
    pub tags: Vec<String>,
    pub clocked: String,
    pub gap_before: String,
}

#[derive(Template)]
#[template(path = "carer.html")]
struct CarerPage {
    chrome: Chrome,
    id: String,
    name: String,
    team: String,
    day_label: String,
    prev: String,
    next: String,
    blocks: Vec<Block>,
    line_height: String,
    hours: Vec<(String, String)>,
    lines: Vec<Line>,
}

/// The day line runs from 06:00 to 23:00 local.
const LINE_FROM_H: i64 = 6;
const LINE_TO_H: i64 = 23;

pub async fn page_route(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    q: Result<Query<DayQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    blocking(move || {
        let now = now();
        let carer: PersonId = id.parse().map_err(|_| WebError::NotFound)?;
        let person = st.store.person(carer)?.ok_or(WebError::NotFound)?;
        if person.role != Role::Carer || !Scope::new(&st, &viewer.who).sees_carer(carer)? {
            return Err(WebError::NotFound);
        }
        let day = q
            .date
            .as_deref()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .unwrap_or_else(|| format::today(&st, now));
        let (from, to) = caresync_core::store::local_day_bounds(st.tz, day);
        let names = Names::load(&st)?;
        let span = reports::Span {
            from,
            to,
            as_of: now,
            tz: st.tz,
        };
        let visits = reports::visits(&*st.store, span)?;
        let alerts = reports::alerts(&*st.store, now, None)?;
        let mut mine: Vec<_> = visits
            .iter()
            .filter(|o| o.carers.iter().any(|c| c.carer_id == carer && c.assigned))
            .collect();
        mine.sort_by_key(|o| o.planned_start);
        let line_start = from + LINE_FROM_H * HOUR_MS;
        let span = ((LINE_TO_H - LINE_FROM_H) * HOUR_MS) as f64;
        let at = |t: Millis| ((t - line_start) as f64 / span * 100.0).clamp(0.0, 100.0);
        let mut blocks = Vec::new();
        let mut lines = Vec::new();
        let mut last_end: Option<Millis> = None;
        // Each lane's latest end: a block takes the first lane that is free by its start.
        let mut lanes: Vec<Millis> = Vec::new();
        for o in mine {
            let silent = alerts
                .iter()
                .any(|a| a.visit_id == o.visit_id && a.phone_silent_since_due);
            let (state, label) = live_state(o, silent);
            // This carer's own times (a double-up judges each carer on their own clock-in).
            let own = o.carers.iter().find(|c| c.carer_id == carer).map(|c| &c.figures);
            let (start, end) = match own.and_then(|f| f.clock_in.zip(f.clock_out)) {
                Some((i, out)) => (i, out),
                None => (o.planned_start, o.planned_end),
            };
            let lane = match lanes.iter().position(|end| *end <= start) {
                Some(free) => {
                    lanes[free] = end;
                    free
                }
                None => {
                    lanes.push(end);
                    lanes.len() - 1
                }
            };
            blocks.push(Block {
                top: format!("{:.1}", 0.5 + lane as f64 * 2.3),
                id: o.visit_id.to_string(),
                left: format!("{:.2}", at(start)),
                width: format!("{:.2}", (at(end) - at(start)).max(0.6)),
                label: names.client(o.client_id),
                state,
            });
            let gap_before = match last_end {
                Some(prev) if o.planned_start > prev => {
                    format!("{} gap before", format::minutes(o.planned_start - prev))
                }
                Some(prev) if o.planned_start < prev => "Overlaps the visit before".into(),
                _ => String::new(),
            };
            last_end = Some(last_end.map_or(o.planned_end, |p| p.max(o.planned_end)));
            lines.push(Line {
                id: o.visit_id.to_string(),
                time: format!(
                    "{}–{}",
                    format::time(&st, o.planned_start),
                    format::time(&st, o.planned_end)
                ),
                client: names.client(o.client_id),
                state,
                state_label: label.to_string(),
                tags: tags(o),
                clocked: match own.map(|f| (f.clock_in, f.clock_out)) {
                    Some((Some(i), Some(out))) => {
                        format!("{}–{}", format::time(&st, i), format::time(&st, out))
                    }
                    Some((Some(i), None)) => format!("in {}", format::time(&st, i)),
                    _ => String::new(),
                },
                gap_before,
            });
        }
        let hours = (LINE_FROM_H..=LINE_TO_H)
            .step_by(2)
            .map(|h| {
                (
                    format!(
                        "{:.2}",
                        (h - LINE_FROM_H) as f64 / (LINE_TO_H - LINE_FROM_H) as f64 * 100.0
                    ),
                    format!("{h:02}:00"),
                )
            })
            .collect();
        page(&CarerPage {
            chrome: viewer.chrome(&st, "today"),
            id: carer.to_string(),
            name: person.name.clone(),
            team: names.team_of(carer),
            day_label: format::long_date(day),
            prev: (day - chrono::Duration::days(1)).to_string(),
            next: (day + chrono::Duration::days(1)).to_string(),
            line_height: format!("{:.1}", 2.0 + lanes.len().max(1) as f64 * 2.3),
            blocks,
            hours,
            lines,
        })
    })
    .await
}
