//! Who may call an operation, said once in the handler's signature: `Authed<Office>`,
//! `Authed<OfficeOrSupervisor>`, `Authed<OfficeOrSelf>`, `Authed<CarerDevice>`. The extractor
//! takes the caller that [`super::admit`] authenticated from the bearer token before the body was
//! read (401 there), and checks the rule (403 here), before any other extractor or the handler
//! runs. The rules are the operation table's [`Access`] values, so the table and the handlers
//! speak one vocabulary (`tests/tests/api_contract.rs` tries every role on every route).

use super::openapi::Access;
use super::{authenticate, blocking, ApiError, ApiResult, AppState};
use crate::store::Principal;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use caresync_core::Role;
use std::marker::PhantomData;

/// A rule about the caller, checked after authentication.
pub trait RoleRule: Send + Sync + 'static {
    /// The operation table's name for this rule (`openapi::OPERATIONS`).
    const ACCESS: Access;
    /// 403 (a problem body saying what is needed) unless the caller satisfies the rule.
    fn check(who: &Principal) -> ApiResult<()>;
}

/// The office only (a person's API token, not a phone's).
pub struct Office;
/// The office or a supervisor; a supervisor's view is scoped by `services::scope`.
pub struct OfficeOrSupervisor;
/// The office, or a supervisor acting on themselves: authorised like [`OfficeOrSupervisor`];
/// "themselves" is the service's decision (another person's id answers 404).
pub struct OfficeOrSelf;
/// An enrolled carer's phone.
pub struct CarerDevice;

/// A person's API token whose role is one of `roles`; a phone's token never is.
fn person_with_role(who: &Principal, roles: &[Role]) -> ApiResult<()> {
    if who.device_id.is_some() || !roles.contains(&who.person.role) {
        return Err(ApiError::forbidden(&format!(
            "this needs one of: {}",
            roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

impl RoleRule for Office {
    const ACCESS: Access = Access::Office;
    fn check(who: &Principal) -> ApiResult<()> {
        person_with_role(who, &[Role::Office])
    }
}

impl RoleRule for OfficeOrSupervisor {
    const ACCESS: Access = Access::OfficeOrSupervisor;
    fn check(who: &Principal) -> ApiResult<()> {
        person_with_role(who, &[Role::Office, Role::Supervisor])
    }
}

impl RoleRule for OfficeOrSelf {
    const ACCESS: Access = Access::OfficeOrSelf;
    fn check(who: &Principal) -> ApiResult<()> {
        OfficeOrSupervisor::check(who)
    }
}

impl RoleRule for CarerDevice {
    const ACCESS: Access = Access::Device;
    fn check(who: &Principal) -> ApiResult<()> {
        if who.device_id.is_none() {
            return Err(ApiError::forbidden("sync is for enrolled devices"));
        }
        if who.person.role != Role::Carer {
            return Err(ApiError::forbidden("only carers' devices sync"));
        }
        Ok(())
    }
}

/// The authenticated caller, allowed by rule `R`.
pub struct Authed<R> {
    pub who: Principal,
    rule: PhantomData<R>,
}

impl<R: RoleRule> FromRequestParts<AppState> for Authed<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = match parts.extensions.get::<Principal>() {
            Some(who) => who.clone(),
            // Only if a route were mounted outside `admit`: authenticate here, the same way.
            None => {
                let (st, headers) = (state.clone(), parts.headers.clone());
                blocking(move || authenticate(&st, &headers)).await?
            }
        };
        R::check(&who)?;
        Ok(Authed {
            who,
            rule: PhantomData,
        })
    }
}

/// An extractor that carries a rule: `Authed<R>`, or `Result<Authed<R>, ApiError>` for a
/// handler that decides when to answer the refusal (sync).
pub trait CarriesRule {
    const ACCESS: Access;
}

impl<R: RoleRule> CarriesRule for Authed<R> {
    const ACCESS: Access = R::ACCESS;
}

impl<R: RoleRule> CarriesRule for Result<Authed<R>, ApiError> {
    const ACCESS: Access = R::ACCESS;
}

/// A handler's extractors (axum's `Handler<T, _>` parameter `T`: a marker, then the arguments)
/// whose second argument, after `State`, carries a rule: the handler's rule.
pub trait Guarded {
    const ACCESS: Access;
}

impl<M, A: CarriesRule> Guarded for (M, axum::extract::State<AppState>, A) {
    const ACCESS: Access = A::ACCESS;
}
impl<M, A: CarriesRule, B> Guarded for (M, axum::extract::State<AppState>, A, B) {
    const ACCESS: Access = A::ACCESS;
}
impl<M, A: CarriesRule, B, C> Guarded for (M, axum::extract::State<AppState>, A, B, C) {
    const ACCESS: Access = A::ACCESS;
}

/// Mount operations from the operation table (`openapi::OPERATIONS`): the method and path must be
/// there, and the handler's `Authed` rule must be the table's `access`, or the router is not
/// built (so every test that starts a server checks the two agree).
pub trait Operations {
    fn op<H, T>(self, method: &'static str, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: Guarded + 'static;
}

impl Operations for axum::Router<AppState> {
    fn op<H, T>(self, method: &'static str, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: Guarded + 'static,
    {
        use axum::routing::{get, post, put};
        let Some(op) = super::openapi::OPERATIONS
            .iter()
            .find(|op| op.method == method && op.path == path)
        else {
            panic!("{method} {path} is not in the operation table (http/openapi.rs)");
        };
        assert_eq!(
            op.access,
            T::ACCESS,
            "{method} {path}: the handler's Authed rule is not the operation table's"
        );
        let route = match method {
            "get" => get(handler),
            "post" => post(handler),
            "put" => put(handler),
            other => panic!("{other} {path}: no such method in the operation table's vocabulary"),
        };
        self.route(path, route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Building the router checks every mounted operation's handler rule against the table
    /// (`Operations::op`); this names that check, so a mismatch fails here by name.
    #[test]
    fn every_handler_rule_is_the_operation_tables() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("server.db"))?;
        let _router = super::super::router(AppState::new(std::sync::Arc::new(store)));
        Ok(())
    }
}
