//! Sign-in (an API token exchanged once for a session) and sign-out.

use super::session::{self, cookie, cookie_header, over_tls, Viewer, COOKIE, SESSION_TTL_MS};
use super::{blocking, page, WebError, WebResult};
use crate::auth::new_token;
use crate::http::{now, AppState, SignInFailure};
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use caresync_core::domain::*;
use serde::Deserialize;

/// Before there is a session, the sign-in form is protected by a double-submit token: a random
/// value in a short-lived cookie and the same value in the form.
const SIGNIN_COOKIE: &str = "caresync_signin";

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    csrf: String,
    error: String,
}

fn form_page(uri: &Uri, headers: &HeaderMap, error: &str, status: StatusCode) -> WebResult<Response> {
    let csrf = new_token();
    let mut resp = page(&SignInPage {
        csrf: csrf.clone(),
        error: error.to_string(),
    })?;
    *resp.status_mut() = status;
    if let Ok(v) = cookie_header(SIGNIN_COOKIE, &csrf, 3600, over_tls(uri, headers)).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub async fn form(uri: Uri, headers: HeaderMap) -> WebResult<Response> {
    form_page(&uri, &headers, "", StatusCode::OK)
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
    csrf: String,
}

pub async fn submit(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> WebResult<Response> {
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || expected != f.csrf {
        return Err(WebError::Csrf);
    }
    let token = f.token;
    let st2 = st.clone();
    let session = blocking(move || {
        // The API's own check: unknown, revoked, expired and deactivated all refuse.
        let who = match crate::services::people::authenticate(st2.store.as_ref(), &token, now())? {
            Ok(who) => who,
            Err(refusal) => return Ok(Err(SignInFailure::refused(refusal))),
        };
        if who.device_id.is_some() || who.person.role == Role::Carer {
            return Ok(Err(SignInFailure {
                reason: "not_an_office_or_supervisor_token",
                counts: false,
                person: Some(who.person.id),
            }));
        }
        session::start(&st2, who.person.id, now()).map(Ok)
    })
    .await?;
    let id = match session {
        Ok(id) => id,
        Err(failure) => {
            let mut resp = form_page(
                &uri,
                &headers,
                "That sign-in token is not an office or supervisor token, or it has been revoked or \
                 has expired. Ask the office for a new one.",
                StatusCode::UNAUTHORIZED,
            )?;
            // Logged and counted against the address like a failed API sign-in (`http::sign_in`).
            resp.extensions_mut().insert(failure);
            return Ok(resp);
        }
    };
    let secure = over_tls(&uri, &headers);
    let mut resp = Redirect::to("/").into_response();
    *resp.status_mut() = StatusCode::SEE_OTHER;
    for c in [
        cookie_header(COOKIE, &id, SESSION_TTL_MS / 1000, secure),
        cookie_header(SIGNIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn signout(
    State(st): State<AppState>,
    viewer: Viewer,
    uri: Uri,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let hash = viewer.id_hash().to_string();
    blocking(move || Ok(st.store.end_web_session(&hash)?)).await?;
    let mut resp = Redirect::to("/signin").into_response();
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = cookie_header(COOKIE, "", 0, over_tls(&uri, &headers)).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}
