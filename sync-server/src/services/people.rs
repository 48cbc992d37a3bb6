//! People, enrolment and tokens.

use crate::auth::{hash_secret, new_enrolment_code, new_token, normalise_code};
use crate::store::{Person, Principal, ServerStore, StoreError};
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

/// Create a person and, for office or supervisor, an API token returned once.
pub fn create_person(
    store: &dyn ServerStore,
    name: &str,
    role: Role,
    team_id: Option<TeamId>,
    now: Millis,
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
        store.add_api_token(person.id, &hash_secret(&token), now)?;
        Some(token)
    };
    Ok((person, token))
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

/// Redeem a one-time code for a device token. `None` for an unknown, used or expired code.
pub fn enrol_device(
    store: &dyn ServerStore,
    code: &str,
    device_name: &str,
    now: Millis,
) -> Result<Option<Enrolled>, StoreError> {
    let token = new_token();
    let device_id = DeviceId::new();
    let name = if device_name.trim().is_empty() {
        "phone"
    } else {
        device_name.trim()
    };
    let carer = store.redeem_enrolment_code(
        &hash_secret(&normalise_code(code)),
        now,
        device_id,
        name,
        &hash_secret(&token),
    )?;
    Ok(carer.map(|carer_id| Enrolled {
        device_id,
        carer_id,
        token,
    }))
}

pub fn authenticate(store: &dyn ServerStore, token: &str) -> Result<Option<Principal>, StoreError> {
    Ok(store
        .principal_for_token(&hash_secret(token.trim()))?
        .filter(|p| p.person.active))
}
