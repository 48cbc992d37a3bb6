//! Escalations with deadlines: a weekly reconciliation mismatch (authorised against delivered
//! minutes, per client and contract) opens an escalation to be raised with the commissioner
//! within 5 working days of the week's end (Monday to Friday, minus the agency's bank holidays);
//! raising it records a commissioner contact. Contacts can also be recorded on their own, as
//! evidence of proactive communication.

use super::alerts::OversightSettings;
use super::reports::{self, Span};
use crate::store::alerts::{CommissionerContact, Escalation};
use crate::store::{ServerStore, StoreError};
use caresync_core::domain::*;
use caresync_core::metrics::working_days::reconciliation_due;
use chrono::{Datelike, Duration, NaiveDate};
use chrono_tz::Tz;
use serde::Serialize;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The local day of an instant.
pub fn local_day(at: Millis, tz: Tz) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.with_timezone(&tz).date_naive())
        .unwrap_or_default()
}

/// Open an escalation for every mismatch in the last `weeks` complete ISO weeks before `now`.
/// Returns how many were opened (others exist already: each (contract, client, week) once).
pub fn open_for_mismatches(
    store: &dyn ServerStore,
    settings: &OversightSettings,
    tz: Tz,
    now: Millis,
    weeks: i64,
) -> Result<usize> {
    let today = local_day(now, tz);
    let this_monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let from = this_monday - Duration::weeks(weeks);
    let (start, end) = reports::day_range(tz, from, this_monday).map_err(StoreError::Conflict)?;
    let rows = reports::reconciliation(
        store,
        Span {
            from: start,
            to: end,
            as_of: now,
            tz,
        },
    )?;
    let mut opened = 0;
    for r in rows.iter().filter(|r| r.delivered_minus_authorised != 0) {
        let Ok(week_start) = r.week_start.parse::<NaiveDate>() else {
            continue;
        };
        let e = Escalation {
            escalation_id: uuid::Uuid::new_v4().to_string(),
            contract_id: r.contract_id,
            client_id: r.client_id,
            week_start: r.week_start.clone(),
            authorised_minutes: r.authorised_minutes,
            delivered_minutes: r.delivered_minutes,
            opened_at: now,
            due_on: reconciliation_due(week_start, &settings.bank_holidays).to_string(),
            raised_at: None,
            raised_on: None,
            raised_by: None,
            contact_id: None,
        };
        opened += usize::from(store.open_escalation(&e)?);
    }
    Ok(opened)
}

/// An escalation with where it stands on `today`.
#[derive(utoipa::ToSchema)]
#[schema(as = Escalation)]
#[derive(Clone, Debug, Serialize)]
pub struct EscalationView {
    #[serde(flatten)]
    pub escalation: Escalation,
    /// `open` or `raised`.
    #[schema(value_type = String, pattern = "^(open|raised)$")]
    pub status: &'static str,
    /// Raised: whether on or before the due day. Open: `false` once the due day has passed,
    /// else `None` (still in time).
    pub on_time: Option<bool>,
}

pub fn view(e: Escalation, today: NaiveDate) -> EscalationView {
    let due = e.due_on.parse::<NaiveDate>().ok();
    let (status, on_time) = match (&e.raised_on, due) {
        (Some(on), Some(due)) => ("raised", on.parse::<NaiveDate>().ok().map(|d| d <= due)),
        (Some(_), None) => ("raised", None),
        (None, Some(due)) => ("open", (today > due).then_some(false)),
        (None, None) => ("open", None),
    };
    EscalationView {
        escalation: e,
        status,
        on_time,
    }
}

/// How the escalations due in one month stood for one team: due that month, raised on or
/// before the due day, late (raised after it, or still open once it has passed). The rest are
/// open and still in time. "On time" is [`view`]'s `on_time`, so the list and the figures agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnTimeTally {
    pub due: u64,
    pub on_time: u64,
    pub late: u64,
}

/// The team(s) an escalation belongs to: the teams of the carers assigned to the client's
/// visits under that contract planned in that ISO week (each team once). A client has no team
/// of their own; the supervisors whose carers delivered the week are the ones to ask. With no
/// such carer it belongs to no team (`None`).
fn teams_of(
    e: &Escalation,
    visits: &[crate::store::VisitRow],
    team_of: &std::collections::HashMap<PersonId, TeamId>,
    tz: Tz,
) -> std::collections::BTreeSet<Option<TeamId>> {
    let week = e.week_start.parse::<NaiveDate>().ok();
    let mut out = std::collections::BTreeSet::new();
    for v in visits {
        if v.contract_id != e.contract_id || v.client_id != e.client_id {
            continue;
        }
        let day = local_day(v.planned_start, tz);
        let monday = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
        if Some(monday) != week {
            continue;
        }
        out.extend(v.carers.iter().filter_map(|c| team_of.get(c)).map(|t| Some(*t)));
    }
    if out.is_empty() {
        out.insert(None);
    }
    out
}

/// [`OnTimeTally`] per (team, local month of the due day) for escalations due in
/// `[from, to)` (local days), as they stand on `today`. An escalation involving two teams counts
/// for each of them.
pub fn on_time_by_team_month(
    store: &dyn ServerStore,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
    today: NaiveDate,
) -> Result<std::collections::BTreeMap<(Option<TeamId>, String), OnTimeTally>> {
    let due: Vec<(Escalation, NaiveDate)> = store
        .escalations()?
        .into_iter()
        .filter_map(|e| {
            let d = e.due_on.parse::<NaiveDate>().ok()?;
            (from <= d && d < to).then_some((e, d))
        })
        .collect();
    let mut out = std::collections::BTreeMap::new();
    let weeks = due
        .iter()
        .filter_map(|(e, _)| e.week_start.parse::<NaiveDate>().ok());
    let (Some(first), Some(last)) = (weeks.clone().min(), weeks.max()) else {
        return Ok(out);
    };
    let (start, end) =
        reports::day_range(tz, first, last + Duration::days(7)).map_err(StoreError::Conflict)?;
    let visits = store.visits_planned_between(start, end)?;
    let team_of: std::collections::HashMap<PersonId, TeamId> = store
        .people()?
        .into_iter()
        .filter_map(|p| Some((p.id, p.team_id?)))
        .collect();
    for (e, due_on) in due {
        let teams = teams_of(&e, &visits, &team_of, tz);
        let on_time = view(e, today).on_time;
        let month = due_on.format("%Y-%m").to_string();
        for team in teams {
            let t: &mut OnTimeTally = out.entry((team, month.clone())).or_default();
            t.due += 1;
            t.on_time += u64::from(on_time == Some(true));
            t.late += u64::from(on_time == Some(false));
        }
    }
    Ok(out)
}

/// Why raising an escalation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RaiseError {
    #[error("no escalation {0}")]
    Unknown(String),
    #[error("escalation {0} was already raised")]
    AlreadyRaised(String),
    #[error("a summary has 1 to {MAX_NOTE_CHARS} characters")]
    BadSummary,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_summary(summary: &str) -> Result<(), RaiseError> {
    if summary.trim().is_empty() || summary.chars().count() > MAX_NOTE_CHARS {
        return Err(RaiseError::BadSummary);
    }
    Ok(())
}

/// Raise an escalation with the commissioner now: records the contact and marks it raised.
pub fn raise(
    store: &dyn ServerStore,
    tz: Tz,
    escalation_id: &str,
    by: PersonId,
    summary: &str,
    now: Millis,
) -> Result<EscalationView, RaiseError> {
    check_summary(summary)?;
    let e = store
        .escalations()?
        .into_iter()
        .find(|e| e.escalation_id == escalation_id)
        .ok_or_else(|| RaiseError::Unknown(escalation_id.to_string()))?;
    let today = local_day(now, tz);
    let contact = CommissionerContact {
        contact_id: uuid::Uuid::new_v4().to_string(),
        contract_id: e.contract_id,
        contact_on: today.to_string(),
        summary: summary.to_string(),
        recorded_by: by,
        recorded_at: now,
        escalation_id: Some(e.escalation_id.clone()),
    };
    if !store.raise_escalation(&contact)? {
        return Err(RaiseError::AlreadyRaised(escalation_id.to_string()));
    }
    let raised = store
        .escalations()?
        .into_iter()
        .find(|x| x.escalation_id == escalation_id)
        .ok_or_else(|| RaiseError::Unknown(escalation_id.to_string()))?;
    Ok(view(raised, today))
}

/// Record a contact with a commissioner on a given day.
pub fn record_contact(
    store: &dyn ServerStore,
    contract: ContractId,
    on: NaiveDate,
    summary: &str,
    by: PersonId,
    now: Millis,
) -> Result<CommissionerContact, RaiseError> {
    check_summary(summary)?;
    let contact = CommissionerContact {
        contact_id: uuid::Uuid::new_v4().to_string(),
        contract_id: contract,
        contact_on: on.to_string(),
        summary: summary.to_string(),
        recorded_by: by,
        recorded_at: now,
        escalation_id: None,
    };
    store.add_commissioner_contact(&contact)?;
    Ok(contact)
}

/// Every escalation with its due day, status and whether it was raised in time, as of today.
pub fn list(store: &dyn ServerStore, tz: Tz, now: Millis) -> Result<Vec<EscalationView>> {
    let today = local_day(now, tz);
    Ok(store.escalations()?.into_iter().map(|e| view(e, today)).collect())
}

/// Contacts with commissioners, the evidence of proactive communication.
pub fn contacts(store: &dyn ServerStore) -> Result<Vec<CommissionerContact>> {
    store.commissioner_contacts()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(due: &str, raised_on: Option<&str>) -> Escalation {
        Escalation {
            escalation_id: "e".into(),
            contract_id: ContractId::new(),
            client_id: ClientId::new(),
            week_start: "2026-12-21".into(),
            authorised_minutes: 120,
            delivered_minutes: 90,
            opened_at: 0,
            due_on: due.into(),
            raised_at: raised_on.map(|_| 1),
            raised_on: raised_on.map(str::to_string),
            raised_by: None,
            contact_id: None,
        }
    }

    #[test]
    fn raised_on_the_due_day_is_on_time_and_the_day_after_is_late() {
        let d = |s: &str| s.parse::<NaiveDate>().expect("date");
        let today = d("2027-01-05");
        assert_eq!(
            view(esc("2027-01-05", Some("2027-01-05")), today).on_time,
            Some(true)
        );
        assert_eq!(
            view(esc("2027-01-05", Some("2027-01-06")), today).on_time,
            Some(false)
        );
        assert_eq!(
            view(esc("2027-01-05", None), today).on_time,
            None,
            "still in time"
        );
        let late = view(esc("2027-01-05", None), d("2027-01-06"));
        assert_eq!((late.status, late.on_time), ("open", Some(false)));
    }
}

/// One framework contract's month so far and where it is heading.
#[derive(utoipa::ToSchema)]
#[schema(as = KpiProjection)]
#[derive(Clone, Debug, Serialize)]
pub struct ContractProjection {
    pub contract_id: ContractId,
    pub commissioner: String,
    /// `YYYY-MM`, local.
    pub month: String,
    pub month_to_date: caresync_core::metrics::projection::KpiCounts,
    /// The last seven days (within the month).
    pub recent: caresync_core::metrics::projection::KpiCounts,
    /// Visits planned from now to the month's end, not cancelled.
    pub remaining: u64,
    #[serde(flatten)]
    pub projection: caresync_core::metrics::projection::KpiProjection,
}

/// For each contract with KPI targets: this month to date, projected to its end at `now`.
pub fn kpi_projections(store: &dyn ServerStore, tz: Tz, now: Millis) -> Result<Vec<ContractProjection>> {
    use caresync_core::metrics::projection::{project, KpiCounts};
    use caresync_core::metrics::{ContractRules, KpiRow};
    let today = local_day(now, tz);
    let month_start = today.with_day(1).unwrap_or(today);
    let next_month = month_start
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(month_start);
    let tomorrow = today + Duration::days(1);
    let recent_start = (today - Duration::days(6)).max(month_start);
    let span = |from: NaiveDate, to: NaiveDate| -> Result<Span> {
        let (from, to) = reports::day_range(tz, from, to).map_err(StoreError::Conflict)?;
        Ok(Span {
            from,
            to,
            as_of: now,
            tz,
        })
    };
    let counts = |rows: &[KpiRow], contract: ContractId| {
        rows.iter()
            .filter(|r| r.contract_id == contract)
            .fold(KpiCounts::default(), |c, r| KpiCounts {
                attended: c.attended + r.attended,
                late: c.late + r.late,
                missed: c.missed + r.missed,
            })
    };
    let mtd = reports::kpi(store, span(month_start, tomorrow)?)?;
    let recent = reports::kpi(store, span(recent_start, tomorrow)?)?;
    let (_, month_end) = reports::day_range(tz, month_start, next_month).map_err(StoreError::Conflict)?;
    let scheduled = store.visits_planned_between(now, month_end)?;
    let mut out = Vec::new();
    for c in store.contracts()? {
        let Some(kpi) = serde_json::from_value::<ContractRules>(c.rules.clone())
            .ok()
            .and_then(|r| r.kpi)
        else {
            continue;
        };
        let remaining = scheduled
            .iter()
            .filter(|v| v.contract_id == c.id && v.status != VisitStatus::Cancelled)
            .count() as u64;
        let (m, r) = (counts(&mtd, c.id), counts(&recent, c.id));
        out.push(ContractProjection {
            contract_id: c.id,
            commissioner: c.commissioner.clone(),
            month: month_start.format("%Y-%m").to_string(),
            month_to_date: m,
            recent: r,
            remaining,
            projection: project(m, r, remaining, kpi),
        });
    }
    Ok(out)
}
