//! What a caller may see and act on. The office sees everything; a supervisor sees their own team:
//! its people, the visits with at least one carer from it (now assigned), and the clients of
//! those visits. Contracts and team names are reference data every supervisor may read.
//!
//! These are the only scope checks: the JSON API and the web pages both call them. Something
//! outside a caller's scope is answered as if it did not exist (`None`, 404), so an id cannot be
//! used to probe another team.

use crate::store::{Client, Person, Principal, ServerStore, StoreError, Team, VisitRow};
use caresync_core::domain::*;
use std::collections::HashSet;

type Result<T> = std::result::Result<T, StoreError>;

/// How far a caller's view reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The office.
    Everything,
    /// A supervisor: the people of one team and what they work on.
    Team(TeamId),
    /// A device, a carer's token, or a supervisor without a team.
    Nothing,
}

impl Scope {
    pub fn of(who: &Principal) -> Self {
        match (who.device_id, who.person.role, who.person.team_id) {
            (None, Role::Office, _) => Scope::Everything,
            (None, Role::Supervisor, Some(team)) => Scope::Team(team),
            _ => Scope::Nothing,
        }
    }
}

/// Whether at least one of `carers` is in the caller's scope.
pub fn may_see_carers(store: &dyn ServerStore, who: &Principal, carers: &[PersonId]) -> Result<bool> {
    match Scope::of(who) {
        Scope::Everything => Ok(true),
        Scope::Nothing => Ok(false),
        Scope::Team(team) => {
            for c in carers {
                if store.person(*c)?.is_some_and(|p| p.team_id == Some(team)) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// A visit's row if it exists and is in the caller's scope.
pub fn visit(store: &dyn ServerStore, who: &Principal, visit: VisitId) -> Result<Option<VisitRow>> {
    let Some(row) = store.visit_row(visit)? else {
        return Ok(None);
    };
    Ok(may_see_carers(store, who, &row.carers)?.then_some(row))
}

/// A person if they exist and are in the caller's scope (a supervisor also sees themselves).
pub fn person(store: &dyn ServerStore, who: &Principal, id: PersonId) -> Result<Option<Person>> {
    let Some(p) = store.person(id)? else {
        return Ok(None);
    };
    let visible = match Scope::of(who) {
        Scope::Everything => true,
        Scope::Team(team) => p.team_id == Some(team) || p.id == who.person.id,
        Scope::Nothing => false,
    };
    Ok(visible.then_some(p))
}

/// A client if they exist and are in the caller's scope.
pub fn client(store: &dyn ServerStore, who: &Principal, id: ClientId) -> Result<Option<Client>> {
    let Some(c) = store.client(id)? else {
        return Ok(None);
    };
    let visible = match Scope::of(who) {
        Scope::Everything => true,
        Scope::Nothing => false,
        Scope::Team(_) => may_see_carers(store, who, &store.client_carers(id)?)?,
    };
    Ok(visible.then_some(c))
}

/// The carers in the caller's scope; `None` for the office (everyone).
pub fn carers(store: &dyn ServerStore, who: &Principal) -> Result<Option<HashSet<PersonId>>> {
    match Scope::of(who) {
        Scope::Everything => Ok(None),
        Scope::Nothing => Ok(Some(HashSet::new())),
        Scope::Team(team) => Ok(Some(
            store
                .people()?
                .into_iter()
                .filter(|p| p.team_id == Some(team))
                .map(|p| p.id)
                .collect(),
        )),
    }
}

/// The people the caller may list.
pub fn people(store: &dyn ServerStore, who: &Principal) -> Result<Vec<Person>> {
    let scope = Scope::of(who);
    Ok(store
        .people()?
        .into_iter()
        .filter(|p| match scope {
            Scope::Everything => true,
            Scope::Team(team) => p.team_id == Some(team) || p.id == who.person.id,
            Scope::Nothing => false,
        })
        .collect())
}

/// The teams the caller may list: all for the office, their own for a supervisor.
pub fn teams(store: &dyn ServerStore, who: &Principal) -> Result<Vec<Team>> {
    let scope = Scope::of(who);
    Ok(store
        .teams()?
        .into_iter()
        .filter(|t| match scope {
            Scope::Everything => true,
            Scope::Team(team) => t.id == team,
            Scope::Nothing => false,
        })
        .collect())
}

/// The clients the caller may list.
pub fn clients(store: &dyn ServerStore, who: &Principal) -> Result<Vec<Client>> {
    let all = store.clients()?;
    let Some(carers) = carers(store, who)? else {
        return Ok(all);
    };
    let mut out = Vec::new();
    for c in all {
        if store.client_carers(c.id)?.iter().any(|p| carers.contains(p)) {
            out.push(c);
        }
    }
    Ok(out)
}

/// An alert record if it exists and its visit is in the caller's scope.
pub fn alert(
    store: &dyn ServerStore,
    who: &Principal,
    id: AlertId,
) -> Result<Option<crate::store::alerts::AlertRecord>> {
    let Some(alert) = store.alert(id)? else {
        return Ok(None);
    };
    Ok(visit(store, who, alert.visit_id)?.map(|_| alert))
}

/// The alerts matching `query` whose visits the caller may see (each visit checked once).
pub fn alerts(
    store: &dyn ServerStore,
    who: &Principal,
    query: &crate::store::alerts::AlertQuery,
) -> Result<Vec<crate::store::alerts::AlertRecord>> {
    let alerts = store.alerts(query)?;
    if Scope::of(who) == Scope::Everything {
        return Ok(alerts);
    }
    let mut seen: std::collections::HashMap<VisitId, bool> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for a in alerts {
        let visible = match seen.get(&a.visit_id) {
            Some(v) => *v,
            None => {
                let v = visit(store, who, a.visit_id)?.is_some();
                seen.insert(a.visit_id, v);
                v
            }
        };
        if visible {
            out.push(a);
        }
    }
    Ok(out)
}
