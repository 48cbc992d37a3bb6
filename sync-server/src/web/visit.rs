//! One visit: its schedule and history, the timeline, and the actions the viewer's role allows.
//! Every action is a plain form with a CSRF token and goes through the visit service's commit
//! path, like the API's.

use super::format::{self, Names};
use super::scope::Scope;
use super::session::Viewer;
use super::today::{live_state, tags};
use super::{blocking, page, Chrome, WebError, WebResult};
use crate::http::{now, AppState};
use crate::services::reports;
use crate::services::visits::VisitServiceError;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use caresync_core::domain::*;
use caresync_core::visit_document::{Amendment, ChangeLabel, Note, Schedule, Visit, VisitDocument};
use serde::Deserialize;

pub struct Entry {
    pub time: String,
    pub kind: &'static str,
    pub title: String,
    pub details: Vec<String>,
    pub flags: Vec<String>,
    pub text: String,
}

pub struct Choice {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "visit.html")]
struct VisitPage {
    chrome: Chrome,
    id: String,
    client: String,
    contract: String,
    when: String,
    carers: Vec<(String, String)>,
    tasks: Vec<String>,
    state: &'static str,
    state_label: String,
    tags: Vec<String>,
    /// Arrived, left, stayed (after amendments), as people read them.
    actual: Vec<(String, String)>,
    amended: bool,
    cancelled: bool,
    cancel_reason: String,
    entries: Vec<Entry>,
    amend_carers: Vec<Choice>,
    reasons: Vec<Choice>,
    categories: Vec<Choice>,
    all_carers: Vec<Choice>,
    default_time: String,
    start_input: String,
    end_input: String,
}

fn parse_visit(id: &str) -> WebResult<VisitId> {
    id.parse().map_err(|_| WebError::NotFound)
}

/// The visit, if it exists and the viewer may see it; otherwise not found (the same answer
/// either way, so another team's visits do not even show as existing).
fn visit_in_scope(st: &AppState, viewer: &Viewer, id: VisitId) -> WebResult<Visit> {
    let visit = st.visits.read(id)?;
    if !Scope::new(st, &viewer.who).sees_visit(&visit.schedule.carers)? {
        return Err(WebError::NotFound);
    }
    Ok(visit)
}

fn timeline(st: &AppState, names: &Names, visit: &Visit) -> WebResult<Vec<(Millis, Entry)>> {
    let id = visit.visit_id;
    let day = format::day_of(st, visit.schedule.planned_start);
    let home = names
        .clients
        .get(&visit.schedule.client_id)
        .and_then(|c| c.location);
    let mut out = Vec::new();
    for change in st.visits.schedule_history(id)? {
        let s = &change.schedule;
        out.push((
            change.label.at,
            Entry {
                time: format::when(st, change.label.at, day),
                kind: "schedule",
                title: format!("Schedule {}", change.label.what),
                details: vec![
                    format!(
                        "{} – {}",
                        format::date_time(st, s.planned_start),
                        format::time(st, s.planned_end)
                    ),
                    s.carers
                        .iter()
                        .map(|c| names.person(*c))
                        .collect::<Vec<_>>()
                        .join(" & "),
                ],
                flags: vec![],
                text: format!("by {}", names.person(change.label.author_id)),
            },
        ));
    }
    for e in st.store.events_for_visit(id)? {
        let mut details = vec![
            format!("{} · {}", format::method(e.method), names.person(e.carer_id)),
            format!("synced {}", format::when(st, e.received_at, day)),
        ];
        if let Some(r) = e.reason {
            details.push(format!("reason: {}", format::words(r.as_str())));
        }
        match (e.location, home) {
            (Some(at), Some(home)) => {
                details.push(format!("{:.0} m from the client's home", at.distance_m(&home)))
            }
            (None, _) => details.push("no location".into()),
            _ => {}
        }
        if e.device_time != e.trusted_time {
            details.push(format!("phone's clock said {}", format::time(st, e.device_time)));
        }
        out.push((
            e.trusted_time,
            Entry {
                time: format::when(st, e.trusted_time, day),
                kind: "clock",
                title: match e.kind {
                    ClockKind::ClockIn => "Clocked in".into(),
                    ClockKind::ClockOut => "Clocked out".into(),
                },
                details,
                flags: e.flags.iter().map(|f| format::words(f.as_str())).collect(),
                text: String::new(),
            },
        ));
    }
    for n in &visit.notes {
        out.push((
            n.written_at,
            Entry {
                time: format::when(st, n.written_at, day),
                kind: if matches!(n.category, NoteCategory::Concern | NoteCategory::Safeguarding) {
                    "concern"
                } else {
                    "note"
                },
                title: format!("{} note", format::words(n.category.as_str())),
                details: vec![format!("by {}", names.person(n.author_id))],
                flags: vec![],
                text: n.text.clone(),
            },
        ));
    }
    for t in &visit.task_outcomes {
        let task = visit
            .schedule
            .tasks
            .iter()
            .find(|x| x.id == t.task_id)
            .map_or_else(|| "A task".to_string(), |x| x.title.clone());
        out.push((
            t.recorded_at,
            Entry {
                time: format::when(st, t.recorded_at, day),
                kind: "task",
                title: format!("{task}: {}", format::words(t.result.as_str()).to_lowercase()),
                details: vec![format!("by {}", names.person(t.carer_id))],
                flags: vec![],
                text: t.note.clone().unwrap_or_default(),
            },
        ));
    }
    for a in &visit.amendments {
        out.push((
            a.written_at,
            Entry {
                time: format::when(st, a.written_at, day),
                kind: "amendment",
                title: format!(
                    "{} of {} corrected to {}",
                    match a.time {
                        AmendedTime::ClockIn => "Clock-in",
                        AmendedTime::ClockOut => "Clock-out",
                    },
                    names.person(a.carer_id),
                    format::when(st, a.corrected_time, day)
                ),
                details: vec![
                    format!("reason: {}", format::words(a.reason.as_str())),
                    format!("by {} ({})", names.person(a.author_id), a.author_role.as_str()),
                ],
                flags: vec![],
                text: a.comment.clone().unwrap_or_default(),
            },
        ));
    }
    out.sort_by_key(|(at, _)| *at);
    Ok(out)
}

fn actual(st: &AppState, o: &caresync_core::metrics::VisitFigures) -> Vec<(String, String)> {
    let f = &o.figures;
    let mut out = Vec::new();
    if let Some(i) = f.clock_in {
        let offset = f.start_offset_ms.unwrap_or_default();
        let how = match offset / MINUTE_MS {
            0 => "on the dot".to_string(),
            m if m > 0 => format!("{} late", format::minutes(offset)),
            _ => format!("{} early", format::minutes(-offset)),
        };
        out.push(("Arrived".into(), format!("{} ({how})", format::time(st, i))));
    }
    if let Some(out_at) = f.clock_out {
        out.push(("Left".into(), format::time(st, out_at)));
    }
    if let Some(d) = f.duration_ms {
        out.push((
            "Stayed".into(),
            format!(
                "{} of {} planned",
                format::minutes(d),
                format::minutes(o.planned_end - o.planned_start)
            ),
        ));
    }
    if let Some(v) = f.location_verified {
        out.push((
            "Location".into(),
            if v {
                "verified at the client's home"
            } else {
                "not at the client's home"
            }
            .into(),
        ));
    }
    out
}

fn choices<T: Copy>(all: &[T], as_str: impl Fn(T) -> &'static str) -> Vec<Choice> {
    all.iter()
        .map(|v| Choice {
            value: as_str(*v).to_string(),
            label: format::words(as_str(*v)),
        })
        .collect()
}

pub async fn page_(st: AppState, viewer: Viewer, id: String) -> WebResult<Response> {
    blocking(move || {
        let now = now();
        let visit_id = parse_visit(&id)?;
        let visit = visit_in_scope(&st, &viewer, visit_id)?;
        let names = Names::load(&st)?;
        let s = &visit.schedule;
        let figures = match reports::visit_figures(&*st.store, visit_id, now, now) {
            Ok(f) => Some(f),
            Err(reports::FiguresError::Unknown(_)) => None,
            Err(e) => return Err(WebError::Internal(e.to_string())),
        };
        let alerts = reports::alerts(&*st.store, now, None)?;
        let silent = alerts
            .iter()
            .any(|a| a.visit_id == visit_id && a.phone_silent_since_due);
        let outcome = figures.as_ref();
        let (state, state_label) = outcome.map_or(("upcoming", "Upcoming"), |o| live_state(o, silent));
        let mut amend_carers: Vec<Choice> = s
            .carers
            .iter()
            .map(|c| Choice {
                value: c.to_string(),
                label: names.person(*c),
            })
            .collect();
        for e in &visit.events {
            if !s.carers.contains(&e.carer_id)
                && !amend_carers.iter().any(|c| c.value == e.carer_id.to_string())
            {
                amend_carers.push(Choice {
                    value: e.carer_id.to_string(),
                    label: names.person(e.carer_id),
                });
            }
        }
        let mut all_carers: Vec<Choice> = names
            .people
            .values()
            .filter(|p| p.role == Role::Carer && p.active)
            .map(|p| Choice {
                value: p.id.to_string(),
                label: format!("{} ({})", p.name, names.team_of(p.id)),
            })
            .collect();
        all_carers.sort_by(|a, b| a.label.cmp(&b.label));
        page(&VisitPage {
            chrome: viewer.chrome(&st, "today"),
            id: visit_id.to_string(),
            client: names.client(s.client_id),
            contract: names.contract(s.contract_id),
            when: format!(
                "{} – {}",
                format::date_time(&st, s.planned_start),
                format::time(&st, s.planned_end)
            ),
            carers: s
                .carers
                .iter()
                .map(|c| (c.to_string(), names.person(*c)))
                .collect(),
            tasks: s.tasks.iter().map(|t| t.title.clone()).collect(),
            state,
            state_label: state_label.to_string(),
            tags: outcome.map(tags).unwrap_or_default(),
            actual: outcome.map(|o| actual(&st, o)).unwrap_or_default(),
            amended: !visit.amendments.is_empty(),
            cancelled: s.status == VisitStatus::Cancelled,
            cancel_reason: s.cancel_reason.clone().unwrap_or_default(),
            entries: timeline(&st, &names, &visit)?
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
            amend_carers,
            reasons: choices(ReasonCode::ALL, ReasonCode::as_str),
            categories: choices(NoteCategory::ALL, NoteCategory::as_str),
            all_carers,
            default_time: format::local_input(&st, s.planned_start),
            start_input: format::local_input(&st, s.planned_start),
            end_input: format::local_input(&st, s.planned_end),
        })
    })
    .await
}

pub async fn page_route(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> WebResult<Response> {
    page_(st, viewer, id).await
}

fn back(id: VisitId) -> Response {
    Redirect::to(&format!("/visits/{id}#timeline")).into_response()
}

fn document_error(
    visit: VisitId,
) -> impl Fn(caresync_core::visit_document::DocumentError) -> VisitServiceError {
    move |source| VisitServiceError::Document { visit, source }
}

#[derive(Deserialize)]
pub struct AmendForm {
    csrf: String,
    carer: String,
    time: String,
    corrected: String,
    reason: String,
    #[serde(default)]
    comment: String,
}

pub async fn amend(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<AmendForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let visit_id = parse_visit(&id)?;
        let current = visit_in_scope(&st, &viewer, visit_id)?;
        let bad = |m: &str| WebError::BadRequest(m.to_string());
        let carer: PersonId = f
            .carer
            .parse()
            .map_err(|_| bad("Choose whose time to correct."))?;
        if !current.schedule.carers.contains(&carer) && current.events_of(carer).next().is_none() {
            return Err(bad("That carer is not on this visit."));
        }
        let time: AmendedTime = f.time.parse().map_err(|_| bad("Choose clock-in or clock-out."))?;
        let reason: ReasonCode = f.reason.parse().map_err(|_| bad("Choose a reason."))?;
        let corrected = format::parse_local_input(&st, &f.corrected)
            .ok_or_else(|| bad("Give the corrected date and time."))?;
        if f.comment.chars().count() > MAX_NOTE_CHARS {
            return Err(bad("The comment is too long."));
        }
        let at = now();
        let amendment = Amendment {
            id: AmendmentId::new(),
            author_id: viewer.who.person.id,
            author_role: viewer.who.person.role,
            carer_id: carer,
            time,
            corrected_time: corrected,
            reason,
            comment: Some(f.comment).filter(|c| !c.trim().is_empty()),
            written_at: at,
        };
        st.visits.edit(visit_id, at, |doc, _| {
            doc.append_amendment(&amendment)
                .map(|_| ())
                .map_err(document_error(visit_id))
        })?;
        Ok(back(visit_id))
    })
    .await
}

#[derive(Deserialize)]
pub struct NoteForm {
    csrf: String,
    category: String,
    text: String,
}

pub async fn note(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let visit_id = parse_visit(&id)?;
        visit_in_scope(&st, &viewer, visit_id)?;
        let category: NoteCategory = f
            .category
            .parse()
            .map_err(|_| WebError::BadRequest("Choose a category.".into()))?;
        if f.text.trim().is_empty() || f.text.chars().count() > MAX_NOTE_CHARS {
            return Err(WebError::BadRequest(format!(
                "A note has 1 to {MAX_NOTE_CHARS} characters."
            )));
        }
        let at = now();
        let note = Note {
            id: NoteId::new(),
            author_id: viewer.who.person.id,
            author_role: viewer.who.person.role,
            written_at: at,
            category,
            text: f.text,
        };
        st.visits.edit(visit_id, at, |doc, _| {
            doc.append_note(&note)
                .map(|_| ())
                .map_err(document_error(visit_id))
        })?;
        Ok(back(visit_id))
    })
    .await
}

/// An office change to the schedule, labelled with who and what, through the commit path.
fn edit_schedule(
    st: &AppState,
    viewer: &Viewer,
    visit_id: VisitId,
    what: &str,
    change: impl FnOnce(&mut Schedule) -> Result<(), String>,
) -> WebResult<Response> {
    viewer.require_office()?;
    visit_in_scope(st, viewer, visit_id)?;
    let at = now();
    let label = ChangeLabel {
        author_id: viewer.who.person.id,
        at,
        what: what.into(),
    };
    let mut refused = None;
    let result = st.visits.edit(visit_id, at, |doc: &mut VisitDocument, current| {
        let mut schedule = current.schedule.clone();
        if let Err(m) = change(&mut schedule) {
            refused = Some(m);
            return Err(VisitServiceError::Invalid("refused".into()));
        }
        doc.update_schedule_by(&schedule, &label)
            .map(|_| ())
            .map_err(document_error(visit_id))
    });
    if let Some(m) = refused {
        return Err(WebError::BadRequest(m));
    }
    result?;
    Ok(back(visit_id))
}

#[derive(Deserialize)]
pub struct RescheduleForm {
    csrf: String,
    start: String,
    end: String,
}

pub async fn reschedule(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<RescheduleForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let visit_id = parse_visit(&id)?;
        let (Some(start), Some(end)) = (
            format::parse_local_input(&st, &f.start),
            format::parse_local_input(&st, &f.end),
        ) else {
            return Err(WebError::BadRequest("Give a start and an end.".into()));
        };
        if end <= start {
            return Err(WebError::BadRequest("The end must be after the start.".into()));
        }
        edit_schedule(&st, &viewer, visit_id, "rescheduled", |s| {
            s.planned_start = start;
            s.planned_end = end;
            Ok(())
        })
    })
    .await
}

#[derive(Deserialize)]
pub struct ReassignForm {
    csrf: String,
    carer: String,
    #[serde(default)]
    second: String,
}

pub async fn reassign(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<ReassignForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let visit_id = parse_visit(&id)?;
        let mut carers = Vec::new();
        for c in [&f.carer, &f.second].into_iter().filter(|c| !c.is_empty()) {
            let id: PersonId = c
                .parse()
                .map_err(|_| WebError::BadRequest("Choose a carer from the list.".into()))?;
            if !matches!(st.store.person(id)?, Some(p) if p.role == Role::Carer) {
                return Err(WebError::BadRequest("Choose a carer from the list.".into()));
            }
            carers.push(id);
        }
        if carers.is_empty() || (carers.len() == 2 && carers[0] == carers[1]) {
            return Err(WebError::BadRequest(
                "A visit has one carer, or two different carers for a double-up.".into(),
            ));
        }
        edit_schedule(&st, &viewer, visit_id, "reassigned", |s| {
            s.carers = carers;
            Ok(())
        })
    })
    .await
}

#[derive(Deserialize)]
pub struct CancelForm {
    csrf: String,
    reason: String,
    #[serde(default)]
    chargeable: Option<String>,
}

pub async fn cancel(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<CancelForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let visit_id = parse_visit(&id)?;
        if f.reason.trim().is_empty() || f.reason.len() > 500 {
            return Err(WebError::BadRequest(
                "A cancellation needs a reason (up to 500 characters).".into(),
            ));
        }
        edit_schedule(&st, &viewer, visit_id, "cancelled", |s| {
            if s.is_cancelled() {
                return Err("The visit is already cancelled.".into());
            }
            s.status = VisitStatus::Cancelled;
            s.cancel_reason = Some(f.reason);
            s.chargeable = Some(f.chargeable.is_some());
            Ok(())
        })
    })
    .await
}
