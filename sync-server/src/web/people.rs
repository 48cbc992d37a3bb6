//! People and devices (office): teams with their supervisors and carers, each carer's phones;
//! issue an enrolment code (shown once, with a QR code a phone can scan) and revoke a device.

use super::format::{self, Names};
use super::session::Viewer;
use super::signin::CsrfForm;
use super::{blocking, page, Chrome, WebError, WebResult};
use crate::http::{now, AppState};
use crate::services::people as people_service;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use caresync_core::domain::*;

pub struct DeviceLine {
    pub id: String,
    pub name: String,
    pub enrolled: String,
    pub last_sync: String,
    pub revoked: String,
}

pub struct PersonLine {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub active: bool,
    pub is_me: bool,
    pub devices: Vec<DeviceLine>,
}

pub struct TeamBlock {
    pub name: String,
    pub people: Vec<PersonLine>,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    chrome: Chrome,
    teams: Vec<TeamBlock>,
}

pub async fn page_route(State(st): State<AppState>, viewer: Viewer) -> WebResult<Response> {
    viewer.require_office()?;
    blocking(move || {
        let names = Names::load(&st)?;
        let devices = st.store.devices()?;
        let mut team_list: Vec<(Option<TeamId>, String)> =
            names.teams.iter().map(|(id, n)| (Some(*id), n.clone())).collect();
        team_list.sort_by(|a, b| a.1.cmp(&b.1));
        team_list.push((None, "Office and people without a team".into()));
        let mut people: Vec<_> = names.people.values().collect();
        people.sort_by(|a, b| {
            (a.role != Role::Supervisor, &a.name).cmp(&(b.role != Role::Supervisor, &b.name))
        });
        let teams = team_list
            .into_iter()
            .map(|(team, name)| TeamBlock {
                name,
                people: people
                    .iter()
                    .filter(|p| p.team_id == team)
                    .map(|p| PersonLine {
                        id: p.id.to_string(),
                        name: p.name.clone(),
                        role: match p.role {
                            Role::Carer => "Carer",
                            Role::Supervisor => "Supervisor",
                            Role::Office => "Office",
                        },
                        active: p.active,
                        is_me: p.id == viewer.who.person.id,
                        devices: devices
                            .iter()
                            .filter(|d| d.person_id == p.id)
                            .map(|d| DeviceLine {
                                id: d.id.to_string(),
                                name: d.name.clone(),
                                enrolled: format::date_time(&st, d.enrolled_at),
                                last_sync: d
                                    .last_sync_at
                                    .map_or_else(|| "never".into(), |t| format::date_time(&st, t)),
                                revoked: d
                                    .revoked_at
                                    .map(|t| format::date_time(&st, t))
                                    .unwrap_or_default(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .filter(|t: &TeamBlock| !t.people.is_empty())
            .collect();
        page(&PeoplePage {
            chrome: viewer.chrome(&st, "people"),
            teams,
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "enrolment.html")]
struct EnrolmentPage {
    chrome: Chrome,
    carer: String,
    code: String,
    expires: String,
    qr: String,
}

pub async fn enrolment(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.require_office()?;
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let carer: PersonId = id.parse().map_err(|_| WebError::NotFound)?;
        let person = st.store.person(carer)?.ok_or(WebError::NotFound)?;
        if person.role != Role::Carer {
            return Err(WebError::BadRequest("Only carers enrol phones.".into()));
        }
        let issued = people_service::issue_enrolment_code(st.store.as_ref(), carer, now())?;
        let qr = qrcode::QrCode::new(issued.code.as_bytes())
            .map(|c| {
                c.render::<qrcode::render::svg::Color<'_>>()
                    .min_dimensions(220, 220)
                    .quiet_zone(true)
                    .build()
            })
            .map_err(|e| WebError::Internal(e.to_string()))?;
        page(&EnrolmentPage {
            chrome: viewer.chrome(&st, "people"),
            carer: person.name,
            code: issued.code,
            expires: format::date_time(&st, issued.expires_at),
            qr,
        })
    })
    .await
}

/// Deactivate a person: their sessions, API token and phones stop working at once (every sign-in
/// path checks that the person is active). Their visits and records stay.
pub async fn deactivate(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.require_office()?;
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let person: PersonId = id.parse().map_err(|_| WebError::NotFound)?;
        if person == viewer.who.person.id {
            return Err(WebError::BadRequest(
                "You cannot deactivate yourself; ask another office account.".into(),
            ));
        }
        st.store.person(person)?.ok_or(WebError::NotFound)?;
        // The API's deactivation: tokens, phones and unused codes stop in the same step.
        people_service::deactivate(st.store.as_ref(), person, now())?;
        Ok(Redirect::to("/people").into_response())
    })
    .await
}

pub async fn revoke(
    State(st): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.require_office()?;
    viewer.check_csrf(&f.csrf)?;
    blocking(move || {
        let device: DeviceId = id.parse().map_err(|_| WebError::NotFound)?;
        if !st.store.revoke_device(device, now())? {
            return Err(WebError::NotFound);
        }
        Ok(Redirect::to("/people").into_response())
    })
    .await
}
