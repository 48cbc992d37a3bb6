//! What a viewer may see. The dashboard asks exactly the question the API asks (office: all; a
//! supervisor: visits with at least one carer from their team), by calling the API's own check:
//! this file is the one place the pages reach it, so a change to the rule reaches them too.

use super::{WebError, WebResult};
use crate::http::AppState;
use crate::store::Principal;
use caresync_core::domain::*;
use std::collections::{HashMap, HashSet};

/// The API's scope rule (`services::scope`), called (not copied).
fn api_may_see_carers(st: &AppState, who: &Principal, carers: &[PersonId]) -> WebResult<bool> {
    crate::services::scope::may_see_carers(st.store.as_ref(), who, carers).map_err(WebError::from)
}

/// The viewer's scope for one request: answers per carer are remembered, so a list of a
/// thousand visits asks the rule once per carer.
pub struct Scope<'a> {
    st: &'a AppState,
    who: &'a Principal,
    office: bool,
    known: HashMap<PersonId, bool>,
    visits: HashMap<VisitId, bool>,
}

impl<'a> Scope<'a> {
    pub fn new(st: &'a AppState, who: &'a Principal) -> Self {
        Self {
            st,
            who,
            office: who.person.role == Role::Office,
            known: HashMap::new(),
            visits: HashMap::new(),
        }
    }

    /// Whether a visit with these carers is visible: at least one of them is.
    pub fn sees_visit(&mut self, carers: &[PersonId]) -> WebResult<bool> {
        if self.office {
            return api_may_see_carers(self.st, self.who, carers);
        }
        for c in carers {
            if self.sees_carer(*c)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn sees_carer(&mut self, carer: PersonId) -> WebResult<bool> {
        if let Some(known) = self.known.get(&carer) {
            return Ok(*known);
        }
        let yes = api_may_see_carers(self.st, self.who, &[carer])?;
        self.known.insert(carer, yes);
        Ok(yes)
    }

    /// Whether an alert record is visible: its visit is in the viewer's scope, by the same call
    /// the oversight API makes (`services::scope::visit`). Answers are remembered per visit.
    pub fn sees_alert_visit(&mut self, visit: VisitId) -> WebResult<bool> {
        if let Some(known) = self.visits.get(&visit) {
            return Ok(*known);
        }
        let yes = crate::services::scope::visit(self.st.store.as_ref(), self.who, visit)?.is_some();
        self.visits.insert(visit, yes);
        Ok(yes)
    }

    /// The team whose figures the viewer sees (`None`: every team), as the API's figures do.
    pub fn figures_team(&self) -> WebResult<Option<TeamId>> {
        match crate::services::scope::Scope::of(self.who) {
            crate::services::scope::Scope::Everything => Ok(None),
            crate::services::scope::Scope::Team(t) => Ok(Some(t)),
            crate::services::scope::Scope::Nothing => Err(WebError::NotFound),
        }
    }

    /// The carers this viewer sees (`None`: everyone), for `services::reports::alerts`.
    pub fn carers(&mut self) -> WebResult<Option<HashSet<PersonId>>> {
        if self.office {
            return Ok(None);
        }
        let mut out = HashSet::new();
        for p in self.st.store.people()? {
            if p.role == Role::Carer && self.sees_carer(p.id)? {
                out.insert(p.id);
            }
        }
        Ok(Some(out))
    }
}
