//! People, enrolment and tokens.

use super::{validation, Refused};
use crate::auth::{hash_secret, new_enrolment_code, new_token, normalise_code};
use crate::store::{Device, Person, Principal, ServerStore, SignIn, StoreError};
use caresync_core::domain::*;

/// How long an enrolment code stays usable.
pub const ENROLMENT_CODE_TTL_MS: Millis = 7 * DAY_MS;

pub struct Enrolled {
    pub device_id: DeviceId,
    pub carer_id: PersonId,
    pub token: String,
}

pub struct IssuedCode {
    pub code: String,
    pub expires_at: Millis,
}

/// How long an office or supervisor API token works unless `--token-ttl-days` says otherwise.
pub const DEFAULT_TOKEN_TTL_MS: Millis = 90 * DAY_MS;

/// Create a person and, for office or supervisor, an API token returned once, valid for the
/// default [`DEFAULT_TOKEN_TTL_MS`].
pub fn create_person(
    store: &dyn ServerStore,
    name: &str,
    role: Role,
    team_id: Option<TeamId>,
    now: Millis,
) -> Result<(Person, Option<String>), StoreError> {
    create_person_with_token_ttl(store, name, role, team_id, now, DEFAULT_TOKEN_TTL_MS)
}

/// [`create_person`] with the token valid for `token_ttl_ms`.
pub fn create_person_with_token_ttl(
    store: &dyn ServerStore,
    name: &str,
    role: Role,
    team_id: Option<TeamId>,
    now: Millis,
    token_ttl_ms: Millis,
) -> Result<(Person, Option<String>), StoreError> {
    let person = Person {
        id: PersonId::new(),
        name: name.trim().to_string(),
        role,
        team_id,
        active: true,
    };
    store.create_person(&person)?;
    let token = if role == Role::Carer {
        None
    } else {
        let token = new_token();
        store.add_api_token(
            person.id,
            &hash_secret(&token),
            now,
            Some(now.saturating_add(token_ttl_ms)),
        )?;
        Some(token)
    };
    Ok((person, token))
}

/// A new API token for an office person or supervisor, shown once; their earlier tokens stop
/// working in the same transaction. `None` if there is no such active person, or they are a
/// carer (carers sign in with their phone's device token).
pub fn rotate_token(
    store: &dyn ServerStore,
    person: PersonId,
    now: Millis,
    token_ttl_ms: Millis,
) -> Result<Option<IssuedToken>, StoreError> {
    if !store.person(person)?.is_some_and(|p| p.role != Role::Carer) {
        return Ok(None);
    }
    let token = new_token();
    let expires_at = now.saturating_add(token_ttl_ms);
    let rotated = store.rotate_api_token(person, &hash_secret(&token), now, Some(expires_at))?;
    Ok(rotated.then_some(IssuedToken { token, expires_at }))
}

pub struct IssuedToken {
    pub token: String,
    pub expires_at: Millis,
}

/// Revoke one API token given the token itself (a leaked token: whoever holds it can name it).
pub fn revoke_token(store: &dyn ServerStore, token: &str, now: Millis) -> Result<bool, StoreError> {
    store.revoke_api_token(&hash_secret(token.trim()), now)
}

/// Shut a person's account: inactive, API tokens and phones revoked, unused codes spent.
pub fn deactivate(store: &dyn ServerStore, person: PersonId, now: Millis) -> Result<bool, StoreError> {
    let done = store.deactivate_person(person, now)?;
    if done {
        tracing::info!(%person, "person deactivated; their tokens and phones are revoked");
    }
    Ok(done)
}

pub fn issue_enrolment_code(
    store: &dyn ServerStore,
    carer: PersonId,
    now: Millis,
) -> Result<IssuedCode, StoreError> {
    let code = new_enrolment_code();
    let expires_at = now + ENROLMENT_CODE_TTL_MS;
    store.add_enrolment_code(carer, &hash_secret(&normalise_code(&code)), expires_at)?;
    Ok(IssuedCode { code, expires_at })
}

/// What came of an enrolment attempt.
pub enum Enrolment {
    Enrolled(Enrolled),
    /// An unknown, used, expired or locked code; `owner` when the code is someone's (a used or
    /// expired code), so failures can be counted against that person.
    Refused {
        owner: Option<PersonId>,
    },
}

/// Redeem a one-time code for a device token.
pub fn enrol_device(
    store: &dyn ServerStore,
    code: &str,
    device_name: &str,
    now: Millis,
) -> Result<Enrolment, StoreError> {
    let token = new_token();
    let device_id = DeviceId::new();
    let name = if device_name.trim().is_empty() {
        "phone"
    } else {
        device_name.trim()
    };
    let code_hash = hash_secret(&normalise_code(code));
    let carer = store.redeem_enrolment_code(&code_hash, now, device_id, name, &hash_secret(&token))?;
    Ok(match carer {
        Some(carer_id) => Enrolment::Enrolled(Enrolled {
            device_id,
            carer_id,
            token,
        }),
        None => Enrolment::Refused {
            owner: store.enrolment_code_owner(&code_hash)?,
        },
    })
}

/// Why a presented bearer token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such token: a typo or a guess.
    Unknown,
    Revoked,
    Expired {
        at: Millis,
    },
    /// The person's account was shut.
    Deactivated,
}

impl Refusal {
    /// A stable word for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown_token",
            Refusal::Revoked => "revoked_token",
            Refusal::Expired { .. } => "expired_token",
            Refusal::Deactivated => "deactivated_person",
        }
    }
}

/// The principal a bearer token signs in as, or why it may not.
pub fn authenticate(
    store: &dyn ServerStore,
    token: &str,
    now: Millis,
) -> Result<Result<Principal, Refusal>, StoreError> {
    Ok(judge(store.sign_in(&hash_secret(token.trim()))?, now))
}

/// [`authenticate`] when the store can answer from memory (see
/// [`ServerStore::sign_in_from_memory`]); `None`: ask [`authenticate`] on a blocking thread.
pub fn authenticate_from_memory(
    store: &dyn ServerStore,
    token: &str,
    now: Millis,
) -> Option<Result<Principal, Refusal>> {
    let sign_in = store.sign_in_from_memory(&hash_secret(token.trim()))?;
    Some(judge(Some(sign_in), now))
}

/// Whether a token as stored lets its holder in at `now`.
fn judge(sign_in: Option<SignIn>, now: Millis) -> Result<Principal, Refusal> {
    let Some(sign_in) = sign_in else {
        return Err(Refusal::Unknown);
    };
    if !sign_in.principal.person.active {
        Err(Refusal::Deactivated)
    } else if sign_in.revoked_at.is_some() {
        Err(Refusal::Revoked)
    } else if let Some(at) = sign_in.expires_at.filter(|at| now >= *at) {
        Err(Refusal::Expired { at })
    } else {
        Ok(sign_in.principal)
    }
}

// The office API's account operations: each checks what it needs and says no with a `Refused`.

/// Create a person after checking the name and that the team exists.
pub fn create_checked(
    store: &dyn ServerStore,
    name: &str,
    role: Role,
    team_id: Option<TeamId>,
    now: Millis,
    token_ttl_ms: Millis,
) -> Result<(Person, Option<String>), Refused> {
    validation::name("the name", name)?;
    validation::known_team(team_id, &store.teams()?)?;
    Ok(create_person_with_token_ttl(
        store,
        name,
        role,
        team_id,
        now,
        token_ttl_ms,
    )?)
}

fn no_person(person: PersonId) -> Refused {
    Refused::NotFound(format!("no person {person}"))
}

fn deactivated(person: PersonId) -> Refused {
    Refused::conflict("deactivated", format!("person {person} is deactivated"))
}

/// [`deactivate`] by `by`, who may not shut their own account; the person as they now are.
pub fn deactivate_by(
    store: &dyn ServerStore,
    by: &Principal,
    person: PersonId,
    now: Millis,
) -> Result<Person, Refused> {
    if person == by.person.id {
        return Err(Refused::invalid(
            "invalid",
            "you cannot deactivate yourself; another office person can",
        ));
    }
    if !deactivate(store, person, now)? {
        return Err(no_person(person));
    }
    store.person(person)?.ok_or_else(|| no_person(person))
}

/// [`rotate_token`] for `by`: the office may rotate anyone's, others their own (anyone else's
/// is "no person", like an unknown id); carers have phones, not API tokens.
pub fn rotate_token_by(
    store: &dyn ServerStore,
    by: &Principal,
    person_id: PersonId,
    now: Millis,
    token_ttl_ms: Millis,
) -> Result<IssuedToken, Refused> {
    if by.person.role != Role::Office && person_id != by.person.id {
        return Err(no_person(person_id));
    }
    let person = store.person(person_id)?.ok_or_else(|| no_person(person_id))?;
    if person.role == Role::Carer {
        return Err(Refused::invalid(
            "invalid",
            "carers sign in with their phone; revoke it and issue an enrolment code",
        ));
    }
    let issued = rotate_token(store, person_id, now, token_ttl_ms)?.ok_or_else(|| deactivated(person_id))?;
    tracing::info!(person = %person_id, by = %by.person.id, "API token rotated");
    Ok(issued)
}

/// Revoke every API token of a person; how many were live.
pub fn revoke_tokens_by(
    store: &dyn ServerStore,
    by: &Principal,
    person: PersonId,
    now: Millis,
) -> Result<u64, Refused> {
    store.person(person)?.ok_or_else(|| no_person(person))?;
    let revoked = store.revoke_api_tokens(person, now)?;
    tracing::info!(%person, revoked, by = %by.person.id, "API tokens revoked");
    Ok(revoked)
}

/// An enrolment code for an active carer.
pub fn issue_code_for(
    store: &dyn ServerStore,
    person_id: PersonId,
    now: Millis,
) -> Result<IssuedCode, Refused> {
    let person = store.person(person_id)?.ok_or_else(|| no_person(person_id))?;
    if person.role != Role::Carer {
        return Err(Refused::invalid("invalid", "devices are enrolled for carers"));
    }
    if !person.active {
        return Err(deactivated(person_id));
    }
    Ok(issue_enrolment_code(store, person_id, now)?)
}

/// Enrolled phones.
pub fn devices(store: &dyn ServerStore) -> Result<Vec<Device>, StoreError> {
    store.devices()
}

/// Revoke a phone: its token fails from its next request.
pub fn revoke_device(store: &dyn ServerStore, device: DeviceId, now: Millis) -> Result<(), Refused> {
    if !store.revoke_device(device, now)? {
        return Err(Refused::NotFound(format!("no device {device}")));
    }
    tracing::info!(%device, "device revoked");
    Ok(())
}

/// After a failed enrolment with `person`'s code, if the limiter says they have had too many:
/// spend all their unused codes.
pub fn lock_enrolment_codes(
    store: &dyn ServerStore,
    person: PersonId,
    now: Millis,
) -> Result<u64, StoreError> {
    store.lock_enrolment_codes(person, now)
}
