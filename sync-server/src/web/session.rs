//! Dashboard sign-in: an office or supervisor API token is exchanged once for a server-side
//! session. The cookie holds a random id (HttpOnly, SameSite=Strict, Secure over TLS); the store
//! holds only its hash and an expiry. Every form carries a CSRF token derived from the session id,
//! so a page from another site cannot post on the viewer's behalf.

use super::{blocking, Chrome, WebError, WebResult};
use crate::auth::{hash_secret, new_token};
use crate::http::AppState;
use crate::store::{Principal, WebSession};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use caresync_core::domain::*;

pub const COOKIE: &str = "caresync_session";
/// A session lasts one long shift; then the viewer signs in again.
pub const SESSION_TTL_MS: Millis = 12 * HOUR_MS;

/// The signed-in person behind a page request.
pub struct Viewer {
    pub who: Principal,
    /// The form token of this session.
    pub csrf: String,
    id_hash: String,
}

impl Viewer {
    pub fn is_office(&self) -> bool {
        self.who.person.role == Role::Office
    }

    /// The layout's view of the viewer.
    pub fn chrome(&self, st: &AppState, tab: &'static str) -> Chrome {
        let team = self
            .who
            .person
            .team_id
            .and_then(|t| st.store.teams().ok()?.into_iter().find(|x| x.id == t))
            .map(|t| t.name)
            .unwrap_or_default();
        Chrome {
            name: self.who.person.name.clone(),
            role: if self.is_office() { "Office" } else { "Supervisor" },
            is_office: self.is_office(),
            csrf: self.csrf.clone(),
            tab,
            team,
        }
    }

    /// Refuse a form whose token is not this session's.
    pub fn check_csrf(&self, token: &str) -> WebResult<()> {
        if constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }

    /// Office-only pages and actions.
    pub fn require_office(&self) -> WebResult<()> {
        if self.is_office() {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "This is for the office only. Supervisors have Today, Alerts, Oversight figures, visits and carers' days.",
            ))
        }
    }

    pub fn id_hash(&self) -> &str {
        &self.id_hash
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The form token of a session: tied to its secret id, so it cannot be guessed without the cookie.
fn csrf_for(session_id: &str) -> String {
    hash_secret(&format!("caresync-csrf:{session_id}"))
}

/// The value of a cookie in the request, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so), or the
/// operator asked for Secure cookies regardless (`CARESYNC_SECURE_COOKIES=1`).
pub fn over_tls(parts_uri: &axum::http::Uri, headers: &HeaderMap) -> bool {
    parts_uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
        || std::env::var("CARESYNC_SECURE_COOKIES").is_ok_and(|v| v == "1")
}

pub fn cookie_header(name: &str, value: &str, max_age_s: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Start a session for a person: returns the cookie value (shown to nobody else).
pub fn start(st: &AppState, person: PersonId, now: Millis) -> WebResult<String> {
    let id = new_token();
    st.store.create_web_session(
        &WebSession {
            id_hash: hash_secret(&id),
            person_id: person,
            created_at: now,
            expires_at: now + SESSION_TTL_MS,
        },
        now,
    )?;
    Ok(id)
}

/// The viewer for a session id, if the session exists, has not expired, and belongs to an
/// active office or supervisor account.
pub fn resolve(st: &AppState, session_id: &str, now: Millis) -> WebResult<Option<Viewer>> {
    let id_hash = hash_secret(session_id);
    let Some(session) = st.store.web_session(&id_hash)? else {
        return Ok(None);
    };
    if session.expires_at <= now {
        st.store.end_web_session(&id_hash)?;
        return Ok(None);
    }
    let Some(person) = st.store.person(session.person_id)? else {
        return Ok(None);
    };
    if !person.active || person.role == Role::Carer {
        return Ok(None);
    }
    Ok(Some(Viewer {
        who: Principal {
            person,
            device_id: None,
        },
        csrf: csrf_for(session_id),
        id_hash,
    }))
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie(&parts.headers, COOKIE).map(str::to_string) else {
            return Err(WebError::SignIn);
        };
        let st = st.clone();
        blocking(move || resolve(&st, &id, crate::http::now())?.ok_or(WebError::SignIn)).await
    }
}
