//! Alerts as records with a lifecycle: raised → acknowledged → resolved (with an action from a
//! fixed list and a note), or closed by the server when the cause goes away, saying why. An alert
//! not acknowledged by its kind's deadline escalates to the office.
//!
//! Raising happens in three places, all idempotent by the store's unique key (visit, kind,
//! carer, subject):
//! - a concern (a `concern` or `safeguarding` note, a task refused or not done) arriving from a
//!   phone is raised in the same transaction as the change that carries it;
//! - after a commit to a visit that is due, [`review_visit`] raises what the visit's facts say
//!   now and closes what they no longer say;
//! - a background [`sweep`] does the same for every recent visit as time passes (pending →
//!   overdue → missed needs no commit) and escalates alerts past their deadline. Instances share
//!   the sweep through a lease, and every write is conditional, so each alert is raised once and
//!   each step happens once however many instances run.
//!
//! The lifecycle rules themselves are pure functions ([`acknowledge`], [`resolve`],
//! [`escalate`], [`close`]) over an [`AlertRecord`], returning the new standing and the history
//! entries to append; the history is never rewritten.

use crate::store::alerts::*;
use crate::store::facts::{ReportSnapshot, SnapshotQuery};
use crate::store::{AlertWrites, Person, ServerStore, StoreError};
use caresync_core::domain::*;
use caresync_core::metrics::{alert_kinds, AlertKind, Attendance, UnitFacts, VisitFacts};
use caresync_core::visit_document::{Note, TaskOutcome};
use std::collections::{BTreeMap, HashMap, HashSet};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How the server raises and escalates alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct OversightSettings {
    /// Per kind: how long after raising an alert must be acknowledged before it escalates.
    pub ack_within: BTreeMap<AlertKind, Millis>,
    /// How often the background sweep runs.
    pub sweep_every_ms: Millis,
    /// How far back the sweep looks at visits' planned starts.
    pub sweep_back_ms: Millis,
    /// Days that are not working days for escalation deadlines (`--bank-holidays`).
    pub bank_holidays: std::collections::BTreeSet<chrono::NaiveDate>,
}

impl Default for OversightSettings {
    fn default() -> Self {
        let m = |minutes: i64| minutes * MINUTE_MS;
        let ack_within = AlertKind::ALL
            .iter()
            .map(|k| {
                let within = match k {
                    AlertKind::Missed | AlertKind::Overdue | AlertKind::Safeguarding => m(15),
                    AlertKind::NoClockOut | AlertKind::Concern | AlertKind::TaskNotDone => m(60),
                    AlertKind::Short | AlertKind::TimeTrust => m(24 * 60),
                };
                (*k, within)
            })
            .collect();
        Self {
            ack_within,
            sweep_every_ms: MINUTE_MS,
            sweep_back_ms: 2 * DAY_MS,
            bank_holidays: Default::default(),
        }
    }
}

impl OversightSettings {
    /// Defaults changed by `kind=minutes` pairs, comma-separated (e.g. `missed=15,concern=30`).
    pub fn with_ack_minutes(mut self, spec: &str) -> Result<Self, String> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, minutes) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected kind=minutes"))?;
            let kind: AlertKind = kind.trim().parse().map_err(|e| format!("{e}"))?;
            let minutes: f64 = minutes
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: minutes must be a number"))?;
            if !(minutes.is_finite() && (0.0..=7.0 * 24.0 * 60.0).contains(&minutes)) {
                return Err(format!("{part:?}: minutes must be between 0 and 10080"));
            }
            self.ack_within
                .insert(kind, (minutes * MINUTE_MS as f64).round() as Millis);
        }
        Ok(self)
    }

    /// Bank holidays from comma-separated `YYYY-MM-DD` days.
    pub fn with_bank_holidays(mut self, spec: &str) -> Result<Self, String> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let day = part
                .parse::<chrono::NaiveDate>()
                .map_err(|_| format!("{part:?}: expected YYYY-MM-DD"))?;
            self.bank_holidays.insert(day);
        }
        Ok(self)
    }

    pub fn ack_within(&self, kind: AlertKind) -> Millis {
        self.ack_within.get(&kind).copied().unwrap_or(15 * MINUTE_MS)
    }
}

/// A new alert, raised at `at`.
pub fn new_alert(
    settings: &OversightSettings,
    visit: VisitId,
    kind: AlertKind,
    carer: PersonId,
    subject: String,
    team: Option<TeamId>,
    at: Millis,
) -> AlertRecord {
    AlertRecord {
        alert_id: AlertId::new(),
        visit_id: visit,
        kind,
        carer_id: carer,
        subject,
        team_id: team,
        raised_at: at,
        ack_due_at: at.saturating_add(settings.ack_within(kind)),
        state: AlertState::Raised,
        acknowledged_at: None,
        acknowledged_by: None,
        escalated_at: None,
        resolved_at: None,
        resolved_by: None,
        action: None,
        note: None,
        closed_at: None,
        close_reason: None,
        version: 1,
    }
}

/// The first history entry of an alert.
pub fn raised_entry(a: &AlertRecord) -> AlertEntry {
    AlertEntry {
        alert_id: a.alert_id,
        seq: 1,
        at: a.raised_at,
        step: AlertStep::Raised,
        by: None,
        action: None,
        note: None,
        close_reason: None,
        detail: format!("{} raised for the carer's supervisor", a.kind),
    }
}

/// Why a change to an alert is refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("the alert is already {0}")]
    Final(&'static str),
    #[error("the alert is already acknowledged")]
    AlreadyAcknowledged,
    #[error("a resolution needs a note of 1 to {MAX_NOTE_CHARS} characters")]
    BadNote,
    #[error("no alert {0}")]
    Unknown(AlertId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new standing and the entries that record how it came about.
pub type Step = (AlertRecord, Vec<AlertEntry>);

fn entry(
    a: &AlertRecord,
    seq: u32,
    at: Millis,
    step: AlertStep,
    by: Option<PersonId>,
    detail: String,
) -> AlertEntry {
    AlertEntry {
        alert_id: a.alert_id,
        seq,
        at,
        step,
        by,
        action: None,
        note: None,
        close_reason: None,
        detail,
    }
}

fn open_or_refuse(a: &AlertRecord) -> Result<(), LifecycleError> {
    if a.state.is_open() {
        Ok(())
    } else {
        Err(LifecycleError::Final(a.state.as_str()))
    }
}

/// Escalate to the office if `at` is past the deadline and nobody has acknowledged (the
/// deadline itself is still in time). `None` when there is nothing to do.
pub fn escalate(a: &AlertRecord, at: Millis) -> Option<Step> {
    if a.state != AlertState::Raised || a.escalated_at.is_some() || at <= a.ack_due_at {
        return None;
    }
    let mut next = a.clone();
    next.escalated_at = Some(at);
    next.version += 1;
    let e = entry(
        a,
        next.version,
        at,
        AlertStep::Escalated,
        None,
        "not acknowledged in time: escalated to the office".into(),
    );
    Some((next, vec![e]))
}

/// Acknowledge at `at`. If the deadline has already passed without an escalation being
/// recorded (the sweep had not run yet), the escalation is recorded first: late is late.
pub fn acknowledge(a: &AlertRecord, by: PersonId, at: Millis) -> Result<Step, LifecycleError> {
    open_or_refuse(a)?;
    if a.acknowledged_at.is_some() {
        return Err(LifecycleError::AlreadyAcknowledged);
    }
    let (mut next, mut entries) = escalate(a, at).unwrap_or_else(|| (a.clone(), vec![]));
    next.state = AlertState::Acknowledged;
    next.acknowledged_at = Some(at);
    next.acknowledged_by = Some(by);
    next.version += 1;
    entries.push(entry(
        a,
        next.version,
        at,
        AlertStep::Acknowledged,
        Some(by),
        "acknowledged".into(),
    ));
    Ok((next, entries))
}

/// Resolve with an action and a note. An alert not yet acknowledged is acknowledged by the
/// same person at the same instant (resolving it is seeing it).
pub fn resolve(
    a: &AlertRecord,
    by: PersonId,
    at: Millis,
    action: ResolutionAction,
    note: &str,
) -> Result<Step, LifecycleError> {
    open_or_refuse(a)?;
    if note.trim().is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        return Err(LifecycleError::BadNote);
    }
    let (mut next, mut entries) = if a.acknowledged_at.is_some() {
        (a.clone(), vec![])
    } else {
        acknowledge(a, by, at)?
    };
    next.state = AlertState::Resolved;
    next.resolved_at = Some(at);
    next.resolved_by = Some(by);
    next.action = Some(action);
    next.note = Some(note.to_string());
    next.version += 1;
    let mut e = entry(
        a,
        next.version,
        at,
        AlertStep::Resolved,
        Some(by),
        format!("resolved: {}", action.as_str()),
    );
    e.action = Some(action);
    e.note = Some(note.to_string());
    entries.push(e);
    Ok((next, entries))
}

/// The server closes an open alert because its cause went away.
pub fn close(a: &AlertRecord, at: Millis, reason: CloseReason) -> Option<Step> {
    if !a.state.is_open() {
        return None;
    }
    let mut next = a.clone();
    next.state = AlertState::Closed;
    next.closed_at = Some(at);
    next.close_reason = Some(reason);
    next.version += 1;
    let mut e = entry(
        a,
        next.version,
        at,
        AlertStep::Closed,
        None,
        format!("closed: {}", reason.explain()),
    );
    e.close_reason = Some(reason);
    Some((next, vec![e]))
}

/// Read an alert, apply `step`, write it if nobody changed it meanwhile (else read and try
/// again). `Ok(None)` when `step` has nothing to do.
pub fn change<E: From<StoreError> + From<LifecycleError>>(
    store: &dyn AlertWrites,
    id: AlertId,
    step: impl Fn(&AlertRecord) -> Result<Option<Step>, E>,
) -> Result<Option<AlertRecord>, E> {
    for _ in 0..8 {
        let current = store.alert(id)?.ok_or(LifecycleError::Unknown(id))?;
        let Some((next, entries)) = step(&current)? else {
            return Ok(None);
        };
        if store.update_alert(&next, current.version, &entries)? {
            return Ok(Some(next));
        }
    }
    Err(StoreError::Conflict(format!("alert {id} kept changing under us")).into())
}

/// A person acknowledges an alert now: what the API and the dashboard both call.
pub fn acknowledge_by(
    store: &dyn ServerStore,
    id: AlertId,
    by: PersonId,
    at: Millis,
) -> Result<AlertRecord, LifecycleError> {
    change::<LifecycleError>(store, id, |a| Ok(Some(acknowledge(a, by, at)?)))?
        .ok_or(LifecycleError::Unknown(id))
}

/// A person resolves an alert now with an action and a note: what the API and the dashboard
/// both call.
pub fn resolve_by(
    store: &dyn ServerStore,
    id: AlertId,
    by: PersonId,
    at: Millis,
    action: ResolutionAction,
    note: &str,
) -> Result<AlertRecord, LifecycleError> {
    change::<LifecycleError>(store, id, |a| Ok(Some(resolve(a, by, at, action, note)?)))?
        .ok_or(LifecycleError::Unknown(id))
}

impl From<LifecycleError> for StoreError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Store(s) => s,
            other => StoreError::Conflict(other.to_string()),
        }
    }
}

/// The concerns in what a carer's phone just wrote: notes in the `concern` or `safeguarding`
/// category, and tasks recorded as refused or not done.
pub fn concerns(
    settings: &OversightSettings,
    visit: VisitId,
    carer: &Person,
    notes: &[Note],
    outcomes: &[TaskOutcome],
    at: Millis,
) -> Vec<AlertRecord> {
    let mut out = Vec::new();
    for n in notes {
        let kind = match n.category {
            NoteCategory::Concern => AlertKind::Concern,
            NoteCategory::Safeguarding => AlertKind::Safeguarding,
            _ => continue,
        };
        out.push(new_alert(
            settings,
            visit,
            kind,
            carer.id,
            n.id.to_string(),
            carer.team_id,
            at,
        ));
    }
    for o in outcomes {
        if matches!(o.result, TaskResult::Refused | TaskResult::NotDone) {
            out.push(new_alert(
                settings,
                visit,
                AlertKind::TaskNotDone,
                carer.id,
                o.id.to_string(),
                carer.team_id,
                at,
            ));
        }
    }
    out
}

/// Why a visit-state alert no longer holds for a carer's part of a visit.
fn why_gone(kind: AlertKind, unit: Option<&UnitFacts>, now: Millis) -> CloseReason {
    let Some(u) = unit else {
        return CloseReason::Reassigned;
    };
    if u.cancelled {
        return CloseReason::Cancelled;
    }
    match kind {
        AlertKind::Overdue | AlertKind::Missed => match u.attendance_at(now) {
            Attendance::Attended => CloseReason::Attended,
            Attendance::Missed => CloseReason::BecameMissed,
            _ => CloseReason::Rescheduled,
        },
        AlertKind::NoClockOut if u.clock_out.is_some() => CloseReason::ClockedOut,
        AlertKind::NoClockOut => CloseReason::Rescheduled,
        AlertKind::Short => CloseReason::NoLongerShort,
        _ => CloseReason::TimesNoLongerFlagged,
    }
}

/// What one review of a visit did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reviewed {
    pub raised: Vec<AlertId>,
    pub closed: Vec<AlertId>,
}

/// Raise the visit-state alerts the visit's facts say at `now` for each assigned carer, and
/// close the open ones they no longer say. `open` are the visit's open alerts.
pub fn review_facts(
    store: &dyn AlertWrites,
    settings: &OversightSettings,
    facts: &VisitFacts,
    open: &[AlertRecord],
    teams: &HashMap<PersonId, Option<TeamId>>,
    now: Millis,
) -> Result<Reviewed> {
    let mut done = Reviewed::default();
    let mut holds: HashSet<(AlertKind, PersonId)> = HashSet::new();
    for c in facts.carers.iter().filter(|c| c.assigned) {
        for kind in alert_kinds(&c.facts, now) {
            holds.insert((kind, c.carer_id));
        }
    }
    for a in open.iter().filter(|a| a.kind.from_visit_state()) {
        if holds.contains(&(a.kind, a.carer_id)) {
            continue;
        }
        let unit = facts
            .carers
            .iter()
            .find(|c| c.assigned && c.carer_id == a.carer_id)
            .map(|c| &c.facts);
        let reason = why_gone(a.kind, unit, now);
        if change::<StoreError>(store, a.alert_id, |cur| Ok(close(cur, now, reason)))?.is_some() {
            done.closed.push(a.alert_id);
        }
    }
    let mut holds: Vec<_> = holds.into_iter().collect();
    holds.sort();
    for (kind, carer) in holds {
        if open.iter().any(|a| a.kind == kind && a.carer_id == carer) {
            continue;
        }
        let team = teams.get(&carer).copied().flatten();
        let alert = new_alert(settings, facts.visit_id, kind, carer, String::new(), team, now);
        // An alert closed or resolved earlier is not raised again for the same visit and carer:
        // the unique key holds it.
        if store.raise_alert(&alert, &raised_entry(&alert))? {
            done.raised.push(alert.alert_id);
        }
    }
    Ok(done)
}

fn teams_of(people: &[Person]) -> HashMap<PersonId, Option<TeamId>> {
    people.iter().map(|p| (p.id, p.team_id)).collect()
}

/// Review one visit after a commit (or whenever): its facts as of `now`.
pub fn review_visit(
    store: &dyn ServerStore,
    settings: &OversightSettings,
    visit: VisitId,
    now: Millis,
) -> Result<Reviewed> {
    let snapshot = store.report_snapshot(&one_visit(visit, now))?;
    let open = store.alerts(&open_on(visit))?;
    review_snapshot(store, settings, &snapshot, &open, now)
}

/// What a review of one visit reads: its facts standing at `now`, and its carers.
pub fn one_visit(visit: VisitId, now: Millis) -> SnapshotQuery {
    SnapshotQuery {
        from: Millis::MIN,
        to: Millis::MAX,
        as_of: now,
        visits: true,
        visit: Some(visit),
        ..SnapshotQuery::default()
    }
}

/// A visit's open alerts.
pub fn open_on(visit: VisitId) -> AlertQuery {
    AlertQuery {
        open_only: true,
        visit: Some(visit),
        ..AlertQuery::default()
    }
}

/// [`review_facts`] of the visit a [`one_visit`] snapshot read, given its open alerts (nothing
/// if it has no facts).
pub fn review_snapshot(
    writes: &dyn AlertWrites,
    settings: &OversightSettings,
    snapshot: &ReportSnapshot,
    open: &[AlertRecord],
    now: Millis,
) -> Result<Reviewed> {
    let Some(facts) = snapshot.visits.first() else {
        return Ok(Reviewed::default());
    };
    review_facts(writes, settings, facts, open, &teams_of(&snapshot.people), now)
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// False when another instance holds the sweep's lease.
    pub ran: bool,
    pub raised: usize,
    pub closed: usize,
    pub escalated: usize,
}

/// The lease's name.
pub const SWEEP_LEASE: &str = "alert_sweep";

/// The time-driven pass, as `holder` (an instance's id): raise and close by every recent
/// visit's facts at `now`, then escalate what is past its deadline.
pub fn sweep(
    store: &dyn ServerStore,
    settings: &OversightSettings,
    holder: &str,
    now: Millis,
) -> Result<Swept> {
    // Held a little longer than a pass takes, so a crashed holder's lease lapses by itself.
    let lease = settings.sweep_every_ms.max(1000).saturating_mul(3);
    if !store.claim_lease(SWEEP_LEASE, holder, now, now.saturating_add(lease))? {
        return Ok(Swept::default());
    }
    let mut swept = Swept {
        ran: true,
        ..Swept::default()
    };
    let snapshot = store.report_snapshot(&SnapshotQuery {
        from: now.saturating_sub(settings.sweep_back_ms),
        to: now.saturating_add(1),
        as_of: now,
        visits: true,
        ..SnapshotQuery::default()
    })?;
    let teams = teams_of(&snapshot.people);
    let open = store.alerts(&AlertQuery {
        open_only: true,
        ..AlertQuery::default()
    })?;
    let mut open_by_visit: HashMap<VisitId, Vec<AlertRecord>> = HashMap::new();
    for a in &open {
        open_by_visit.entry(a.visit_id).or_default().push(a.clone());
    }
    let mut seen = HashSet::new();
    for facts in &snapshot.visits {
        seen.insert(facts.visit_id);
        let visit_open = open_by_visit.get(&facts.visit_id).map_or(&[][..], Vec::as_slice);
        let r = review_facts(store, settings, facts, visit_open, &teams, now)?;
        swept.raised += r.raised.len();
        swept.closed += r.closed.len();
    }
    // Open alerts of visits outside the window (moved, or older than it) are reviewed too.
    for visit in open_by_visit.keys().filter(|v| !seen.contains(*v)) {
        let r = review_visit(store, settings, *visit, now)?;
        swept.closed += r.closed.len();
        swept.raised += r.raised.len();
    }
    for a in store.alerts(&AlertQuery {
        open_only: true,
        ..AlertQuery::default()
    })? {
        if a.state == AlertState::Raised
            && a.escalated_at.is_none()
            && now > a.ack_due_at
            && change::<StoreError>(store, a.alert_id, |cur| Ok(escalate(cur, now)))?.is_some()
        {
            swept.escalated += 1;
        }
    }
    Ok(swept)
}

/// Oversight figures for one team and local month: how many alerts were raised, by kind, and
/// how fast they were handled.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, serde::Serialize)]
pub struct OversightRow {
    /// The team's id (empty for carers without a team) and name.
    pub team_id: String,
    pub team: String,
    /// `YYYY-MM`, in the agency's time zone, by when the alert was raised.
    pub month: String,
    pub raised: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub acknowledged: u64,
    /// Minutes from raised to acknowledged (nearest-rank median and 90th percentile).
    pub ack_median_minutes: Option<f64>,
    pub ack_p90_minutes: Option<f64>,
    pub resolved: u64,
    /// Minutes from raised to resolved.
    pub resolve_median_minutes: Option<f64>,
    pub resolve_p90_minutes: Option<f64>,
    /// Closed by the server because the cause went away.
    pub closed_by_server: u64,
    pub escalated: u64,
    /// escalated ÷ raised, as a percentage (one decimal).
    pub escalated_pct: Option<f64>,
    /// Reconciliation escalations due this month that involve the team (see
    /// `services::escalations::on_time_by_team_month`).
    pub escalations_due: u64,
    /// Of those, raised with the commissioner on or before the due day.
    pub escalations_on_time: u64,
    /// Raised after the due day, or still open once it has passed.
    pub escalations_late: u64,
    /// on time ÷ (on time + late), as a percentage (one decimal); open ones still in time are
    /// not yet judged.
    pub escalations_on_time_pct: Option<f64>,
}

/// The nearest-rank percentile (`p` in 1..=100) of sorted values: the value at rank ⌈p·n/100⌉.
pub fn nearest_rank(sorted: &[Millis], p: u32) -> Option<Millis> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p) * n).div_ceil(100).clamp(1, n);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

fn minutes(ms: Option<Millis>) -> Option<f64> {
    ms.map(|v| (v as f64 / MINUTE_MS as f64 * 10.0).round() / 10.0)
}

fn pct_of(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

/// Figures per team and month over alerts raised in `[from, to)`, limited to `team` if given,
/// with the reconciliation escalations due in those months as they stand at `now`.
pub fn figures(
    store: &dyn ServerStore,
    tz: chrono_tz::Tz,
    from: Millis,
    to: Millis,
    only_team: Option<TeamId>,
    now: Millis,
) -> Result<Vec<OversightRow>> {
    use super::escalations::{local_day, on_time_by_team_month, OnTimeTally};
    let names: HashMap<TeamId, String> = store.teams()?.into_iter().map(|t| (t.id, t.name)).collect();
    let alerts = store.alerts(&AlertQuery {
        raised_from: Some(from),
        raised_to: Some(to),
        ..AlertQuery::default()
    })?;
    #[derive(Default)]
    struct Acc {
        raised: u64,
        by_kind: BTreeMap<String, u64>,
        ack: Vec<Millis>,
        resolve: Vec<Millis>,
        closed: u64,
        escalated: u64,
        escalations: OnTimeTally,
    }
    let mut groups: BTreeMap<(String, String), (Option<TeamId>, Acc)> = BTreeMap::new();
    for a in alerts {
        if only_team.is_some() && a.team_id != only_team {
            continue;
        }
        let month = chrono::DateTime::from_timestamp_millis(a.raised_at)
            .map(|t| t.with_timezone(&tz).format("%Y-%m").to_string())
            .unwrap_or_default();
        let team_name = a.team_id.and_then(|t| names.get(&t).cloned()).unwrap_or_default();
        let (_, acc) = groups
            .entry((team_name, month))
            .or_insert_with(|| (a.team_id, Acc::default()));
        acc.raised += 1;
        *acc.by_kind.entry(a.kind.as_str().to_string()).or_default() += 1;
        if let Some(at) = a.acknowledged_at {
            acc.ack.push(at.saturating_sub(a.raised_at));
        }
        if let Some(at) = a.resolved_at {
            acc.resolve.push(at.saturating_sub(a.raised_at));
        }
        acc.closed += u64::from(a.state == AlertState::Closed);
        acc.escalated += u64::from(a.escalated_at.is_some());
    }
    let tallies = on_time_by_team_month(
        store,
        tz,
        local_day(from, tz),
        local_day(to, tz),
        local_day(now, tz),
    )?;
    for ((team_id, month), tally) in tallies {
        if only_team.is_some() && team_id != only_team {
            continue;
        }
        let team_name = team_id.and_then(|t| names.get(&t).cloned()).unwrap_or_default();
        let (_, acc) = groups
            .entry((team_name, month))
            .or_insert_with(|| (team_id, Acc::default()));
        acc.escalations = tally;
    }
    Ok(groups
        .into_iter()
        .map(|((team, month), (team_id, mut acc))| {
            acc.ack.sort_unstable();
            acc.resolve.sort_unstable();
            let mut by_kind = acc.by_kind;
            for k in AlertKind::ALL {
                by_kind.entry(k.as_str().to_string()).or_default();
            }
            OversightRow {
                team_id: team_id.map(|t| t.to_string()).unwrap_or_default(),
                team,
                month,
                raised: acc.raised,
                by_kind,
                acknowledged: acc.ack.len() as u64,
                ack_median_minutes: minutes(nearest_rank(&acc.ack, 50)),
                ack_p90_minutes: minutes(nearest_rank(&acc.ack, 90)),
                resolved: acc.resolve.len() as u64,
                resolve_median_minutes: minutes(nearest_rank(&acc.resolve, 50)),
                resolve_p90_minutes: minutes(nearest_rank(&acc.resolve, 90)),
                closed_by_server: acc.closed,
                escalated: acc.escalated,
                escalated_pct: pct_of(acc.escalated, acc.raised),
                escalations_due: acc.escalations.due,
                escalations_on_time: acc.escalations.on_time,
                escalations_late: acc.escalations.late,
                escalations_on_time_pct: pct_of(
                    acc.escalations.on_time,
                    acc.escalations.on_time + acc.escalations.late,
                ),
            }
        })
        .collect())
}

/// The figures as CSV (one column per alert kind), the team's id last so readers of the earlier
/// columns by position are undisturbed.
/// [`figures`] for the caller's scope: the office every team, a supervisor their own, anyone
/// else nothing.
pub fn figures_for(
    store: &dyn ServerStore,
    who: &crate::store::Principal,
    tz: chrono_tz::Tz,
    from: Millis,
    to: Millis,
    now: Millis,
) -> Result<Vec<OversightRow>> {
    use super::scope::Scope;
    match Scope::of(who) {
        Scope::Everything => figures(store, tz, from, to, None, now),
        Scope::Team(team) => figures(store, tz, from, to, Some(team), now),
        Scope::Nothing => Ok(vec![]),
    }
}

/// An alert's history, oldest first (append-only).
pub fn history(store: &dyn ServerStore, id: AlertId) -> Result<Vec<AlertEntry>> {
    store.alert_history(id)
}

pub fn figures_csv(rows: &[OversightRow]) -> String {
    let mut head = vec!["team", "month", "raised"];
    head.extend(AlertKind::ALL.iter().map(|k| k.as_str()));
    head.extend([
        "acknowledged",
        "ack_median_minutes",
        "ack_p90_minutes",
        "resolved",
        "resolve_median_minutes",
        "resolve_p90_minutes",
        "closed_by_server",
        "escalated",
        "escalated_pct",
        "escalations_due",
        "escalations_on_time",
        "escalations_late",
        "escalations_on_time_pct",
        "team_id",
    ]);
    let mut out = head.join(",");
    out.push_str("\r\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    for r in rows {
        let mut cells = vec![csv_cell(&r.team), r.month.clone(), r.raised.to_string()];
        cells.extend(
            AlertKind::ALL
                .iter()
                .map(|k| r.by_kind.get(k.as_str()).copied().unwrap_or(0).to_string()),
        );
        cells.extend([
            r.acknowledged.to_string(),
            opt(r.ack_median_minutes),
            opt(r.ack_p90_minutes),
            r.resolved.to_string(),
            opt(r.resolve_median_minutes),
            opt(r.resolve_p90_minutes),
            r.closed_by_server.to_string(),
            r.escalated.to_string(),
            opt(r.escalated_pct),
            r.escalations_due.to_string(),
            r.escalations_on_time.to_string(),
            r.escalations_late.to_string(),
            opt(r.escalations_on_time_pct),
            csv_cell(&r.team_id),
        ]);
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A text cell, neutralised as the metrics' CSV writer does it (OWASP: a leading `=`, `+`, `-`,
/// `@`, tab or carriage return gets a single quote) and quoted when needed or neutralised.
fn csv_cell(s: &str) -> String {
    let s = caresync_core::metrics::text_cell(s);
    if s.contains([',', '"', '\n', '\r']) || s.starts_with('\'') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_790_064_000_000;

    fn alert(kind: AlertKind) -> AlertRecord {
        new_alert(
            &OversightSettings::default(),
            VisitId::new(),
            kind,
            PersonId::new(),
            String::new(),
            None,
            T,
        )
    }

    #[test]
    fn a_missed_alert_acknowledged_exactly_at_its_deadline_does_not_escalate() {
        let a = alert(AlertKind::Missed);
        // 15 minutes for a missed visit, by default.
        assert_eq!(a.ack_due_at, T + 15 * MINUTE_MS);
        assert!(
            escalate(&a, T + 15 * MINUTE_MS).is_none(),
            "the deadline itself is in time"
        );
        let sup = PersonId::new();
        let (acked, entries) = acknowledge(&a, sup, T + 15 * MINUTE_MS).expect("allowed");
        assert_eq!(acked.escalated_at, None);
        assert_eq!(acked.state, AlertState::Acknowledged);
        assert_eq!(acked.version, 2);
        assert_eq!(
            entries.iter().map(|e| e.step).collect::<Vec<_>>(),
            vec![AlertStep::Acknowledged]
        );
        // Once acknowledged, the deadline passing changes nothing.
        assert!(escalate(&acked, T + HOUR_MS).is_none());
    }

    #[test]
    fn one_second_late_escalates_whether_the_sweep_or_the_acknowledgement_sees_it_first() {
        let a = alert(AlertKind::Missed);
        let late = T + 15 * MINUTE_MS + 1000;
        let (escalated, entries) = escalate(&a, late).expect("allowed");
        assert_eq!(escalated.escalated_at, Some(late));
        assert_eq!(entries[0].step, AlertStep::Escalated);
        assert_eq!(entries[0].seq, 2);
        // An escalation is recorded once.
        assert!(escalate(&escalated, late + 1000).is_none());
        // Acknowledged late before any sweep: the escalation is recorded first.
        let (acked, entries) = acknowledge(&a, PersonId::new(), late).expect("allowed");
        assert_eq!(acked.escalated_at, Some(late));
        assert_eq!(
            entries.iter().map(|e| (e.seq, e.step)).collect::<Vec<_>>(),
            vec![(2, AlertStep::Escalated), (3, AlertStep::Acknowledged)]
        );
    }

    #[test]
    fn per_kind_deadlines_are_configurable_and_bad_settings_are_refused() {
        let s = OversightSettings::default()
            .with_ack_minutes("missed=5, concern=0.5")
            .expect("allowed");
        assert_eq!(s.ack_within(AlertKind::Missed), 5 * MINUTE_MS);
        assert_eq!(s.ack_within(AlertKind::Concern), 30_000);
        assert_eq!(s.ack_within(AlertKind::Overdue), 15 * MINUTE_MS);
        assert!(OversightSettings::default().with_ack_minutes("lost=5").is_err());
        assert!(OversightSettings::default()
            .with_ack_minutes("missed=-1")
            .is_err());
        assert!(OversightSettings::default().with_ack_minutes("missed").is_err());
    }

    #[test]
    fn resolving_needs_a_note_acknowledges_if_needed_and_is_final() {
        let a = alert(AlertKind::Concern);
        let sup = PersonId::new();
        assert!(matches!(
            resolve(&a, sup, T + 1, ResolutionAction::ContactedCarer, "  "),
            Err(LifecycleError::BadNote)
        ));
        let (done, entries) =
            resolve(&a, sup, T + 1, ResolutionAction::ContactedCarer, "rang Ann").expect("allowed");
        assert_eq!(done.state, AlertState::Resolved);
        assert_eq!(done.acknowledged_at, Some(T + 1));
        assert_eq!(entries.len(), 2);
        assert!(matches!(
            acknowledge(&done, sup, T + 2),
            Err(LifecycleError::Final("resolved"))
        ));
        assert!(close(&done, T + 3, CloseReason::Attended).is_none());
    }

    #[test]
    fn nearest_rank_percentiles_by_hand() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(nearest_rank(&v, 50), Some(5));
        assert_eq!(nearest_rank(&v, 90), Some(9));
        assert_eq!(nearest_rank(&[7], 90), Some(7));
        assert_eq!(nearest_rank(&[3, 9, 12], 50), Some(9));
        assert_eq!(nearest_rank(&[3, 9, 12], 90), Some(12));
        assert_eq!(nearest_rank(&[], 50), None);
    }
}
