//! Reports from the per-visit facts the store keeps at commit: punctuality (with KPI status),
//! weekly reconciliation, continuity, live alerts and one visit's figures. Each report is one
//! read of the store (one snapshot) summed by day and key in the database; the definitions and
//! the rest of the counting live in `caresync_core::metrics`. Services take the store and the
//! agency's time zone, never HTTP state.

use crate::store::facts::{ReportSnapshot, SnapshotQuery};
use crate::store::{ServerStore, StoreError};
use caresync_core::domain::*;
use caresync_core::metrics::facts::utc_offsets;
use caresync_core::metrics::*;
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// The longest period one report may cover.
pub const MAX_REPORT_DAYS: i64 = 400;

/// Parse and validate a contract's rules; omitted fields take the brief's defaults.
pub fn parse_rules(value: serde_json::Value) -> Result<serde_json::Value, String> {
    let rules: ContractRules = serde_json::from_value(value).map_err(|e| format!("rules: {e}"))?;
    rules.validate().map_err(|e| e.to_string())?;
    serde_json::to_value(&rules).map_err(|e| e.to_string())
}

/// UTC bounds of the local days `[from, to)`.
pub fn day_range(tz: Tz, from: NaiveDate, to: NaiveDate) -> Result<(Millis, Millis), String> {
    if to <= from {
        return Err("`to` must be after `from`".into());
    }
    if (to - from).num_days() > MAX_REPORT_DAYS {
        return Err(format!("a report covers at most {MAX_REPORT_DAYS} days"));
    }
    let (start, _) = caresync_core::store::local_day_bounds(tz, from);
    let (end, _) = caresync_core::store::local_day_bounds(tz, to);
    Ok((start, end))
}

/// What a report covers: visits planned in `[from, to)`, as the server knew them at `as_of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from: Millis,
    pub to: Millis,
    pub as_of: Millis,
    pub tz: Tz,
}

impl Span {
    fn query(&self) -> SnapshotQuery {
        SnapshotQuery {
            from: self.from,
            to: self.to,
            as_of: self.as_of,
            offsets: utc_offsets(self.from, self.to, AgencyTimeZone(self.tz)),
            ..SnapshotQuery::default()
        }
    }

    fn time_zone(&self) -> AgencyTimeZone {
        AgencyTimeZone(self.tz)
    }
}

/// Contracts (with the rules that stood at `as_of`) and teams, for grouping.
pub fn context(snapshot: &ReportSnapshot) -> ReportContext {
    let mut contracts = HashMap::new();
    for c in &snapshot.contracts {
        // Rules were validated when stored; a row that no longer parses falls back to defaults
        // and is logged, rather than failing every report.
        let rules = serde_json::from_value::<ContractRules>(c.rules.clone()).unwrap_or_else(|e| {
            tracing::error!(contract = %c.id, error = %e, "stored contract rules unreadable; using defaults");
            ContractRules::default()
        });
        contracts.insert(
            c.id,
            ContractInfo {
                contract_id: c.id,
                commissioner: c.commissioner.clone(),
                model: c.model,
                rules,
            },
        );
    }
    let teams = snapshot
        .people
        .iter()
        .filter_map(|p| p.team_id.map(|t| (p.id, t)))
        .collect();
    ReportContext { contracts, teams }
}

/// Punctuality grouped and by period, with every KPI contract's monthly status.
pub fn punctuality(
    store: &dyn ServerStore,
    span: Span,
    group_by: GroupBy,
    period: PeriodKind,
) -> Result<PunctualityReport, StoreError> {
    let key = group_by.tally_key();
    let snapshot = store.report_snapshot(&SnapshotQuery {
        tallies: Some(key),
        by_contract: key != TallyKey::Contract,
        ..span.query()
    })?;
    let by_contract = if key == TallyKey::Contract {
        &snapshot.tallies
    } else {
        &snapshot.by_contract
    };
    Ok(PunctualityReport::from_tallies(
        &snapshot.tallies,
        by_contract,
        &context(&snapshot),
        ReportQuery {
            group_by,
            period,
            time_zone: span.time_zone(),
        },
    ))
}

/// Each KPI contract's standing per local month.
pub fn kpi(store: &dyn ServerStore, span: Span) -> Result<Vec<KpiRow>, StoreError> {
    Ok(punctuality(store, span, GroupBy::Contract, PeriodKind::Month)?.kpi)
}

/// Authorised against delivered and billable minutes, per ISO week, client and contract.
pub fn reconciliation(store: &dyn ServerStore, span: Span) -> Result<Vec<ReconciliationRow>, StoreError> {
    let snapshot = store.report_snapshot(&SnapshotQuery {
        reconciliation: true,
        ..span.query()
    })?;
    Ok(reconciliation_from_days(
        &snapshot.reconciliation,
        span.time_zone(),
    ))
}

/// Distinct carers per client per ISO week.
pub fn continuity(store: &dyn ServerStore, span: Span) -> Result<Vec<ContinuityRow>, StoreError> {
    let snapshot = store.report_snapshot(&SnapshotQuery {
        continuity: true,
        ..span.query()
    })?;
    Ok(continuity_from_weeks(&snapshot.continuity, span.time_zone()))
}

/// Each visit planned in the span, with its figures at `as_of` (the live boards: today, a
/// carer's day). Ordered by planned start.
pub fn visits(store: &dyn ServerStore, span: Span) -> Result<Vec<VisitFigures>, StoreError> {
    let snapshot = store.report_snapshot(&SnapshotQuery {
        visits: true,
        ..span.query()
    })?;
    let mut out: Vec<VisitFigures> = snapshot.visits.iter().map(|f| f.figures_at(span.as_of)).collect();
    out.sort_by_key(|f| (f.planned_start, f.visit_id));
    Ok(out)
}

/// Why one visit's figures cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum FiguresError {
    #[error("as_of {as_of} is in the future (now {now}): figures are only known up to now")]
    FutureAsOf { as_of: Millis, now: Millis },
    #[error("no visit {0} as of then")]
    Unknown(VisitId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One visit's figures as the server knew them at `as_of` (never later than `now`).
pub fn visit_figures(
    store: &dyn ServerStore,
    visit: VisitId,
    as_of: Millis,
    now: Millis,
) -> Result<VisitFigures, FiguresError> {
    if as_of > now {
        return Err(FiguresError::FutureAsOf { as_of, now });
    }
    let snapshot = store.report_snapshot(&SnapshotQuery {
        from: Millis::MIN,
        to: Millis::MAX,
        as_of,
        visits: true,
        visit: Some(visit),
        ..SnapshotQuery::default()
    })?;
    snapshot
        .visits
        .first()
        .map(|f| f.figures_at(as_of))
        .ok_or(FiguresError::Unknown(visit))
}

/// One live alert for a supervisor.
#[derive(utoipa::ToSchema, Clone, Debug, Serialize)]
pub struct Alert {
    pub visit_id: VisitId,
    pub client_id: ClientId,
    pub carers: Vec<PersonId>,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub planned_start: Millis,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub planned_end: Millis,
    pub kind: AlertKind,
    /// For overdue and missed visits: no assigned carer's phone has synced since the visit was
    /// due, so the carer may well be in the house with no signal.
    pub phone_silent_since_due: bool,
}

/// Alerts now, for visits planned in the last 24 hours and up to now, limited to `carers` when
/// given (a supervisor's team).
pub fn alerts(
    store: &dyn ServerStore,
    now: Millis,
    carers: Option<&HashSet<PersonId>>,
) -> Result<Vec<Alert>, StoreError> {
    let snapshot = store.report_snapshot(&SnapshotQuery {
        from: now.saturating_sub(DAY_MS),
        to: now.saturating_add(1),
        as_of: now,
        visits: true,
        ..SnapshotQuery::default()
    })?;
    let mut last_sync: HashMap<PersonId, Millis> = HashMap::new();
    for d in &snapshot.devices {
        if let Some(at) = d.last_sync_at.filter(|_| d.revoked_at.is_none()) {
            let e = last_sync.entry(d.person_id).or_insert(at);
            *e = (*e).max(at);
        }
    }
    let mut out = Vec::new();
    for f in &snapshot.visits {
        let assigned: Vec<PersonId> = f.assigned().collect();
        if let Some(scope) = carers {
            if !assigned.iter().any(|c| scope.contains(c)) {
                continue;
            }
        }
        let silent = phone_silent_since_due(
            f.planned_start,
            assigned.iter().map(|c| last_sync.get(c).copied()),
        );
        for kind in alert_kinds(&f.visit, now) {
            out.push(Alert {
                visit_id: f.visit_id,
                client_id: f.client_id,
                carers: assigned.clone(),
                planned_start: f.planned_start,
                planned_end: f.planned_end,
                kind,
                phone_silent_since_due: kind.may_be_offline() && silent,
            });
        }
    }
    out.sort_by_key(|a| (a.planned_start, a.visit_id));
    Ok(out)
}

/// The demo's closing table: spot against framework, week by week, and the KPI status.
pub fn demo_table(store: &dyn ServerStore, tz: Tz, from: NaiveDate, to: NaiveDate) -> Result<String, String> {
    let (start, end) = day_range(tz, from, to)?;
    let span = Span {
        from: start,
        to: end,
        as_of: caresync_core::clock::system_now(),
        tz,
    };
    let report =
        punctuality(store, span, GroupBy::CommissioningModel, PeriodKind::Week).map_err(|e| e.to_string())?;
    let pct = |p: Option<f64>| p.map_or("-".to_string(), |v| format!("{v:.1}%"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Punctuality, spot against framework, week by week (as of now)"
    );
    let _ = writeln!(
        out,
        "{:<10} {:<10} {:>7} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "week", "model", "visits", "attended", "on time", "late", "missed", "short", "ECM"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:>7} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7}",
            r.period,
            r.group,
            r.scheduled,
            r.attended,
            pct(r.on_time_pct),
            pct(r.late_pct),
            pct(r.missed_pct),
            pct(r.short_pct),
            pct(r.electronic_pct)
        );
    }
    let by_week = punctuality(store, span, GroupBy::Contract, PeriodKind::Week).map_err(|e| e.to_string())?;
    let contracts: HashMap<ContractId, ContractRules> = store
        .contracts()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|c| Some((c.id, serde_json::from_value(c.rules).ok()?)))
        .collect();
    let names: HashMap<String, String> = store
        .contracts()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|c| (c.id.to_string(), c.name))
        .collect();
    let _ = writeln!(
        out,
        "\nFramework KPI (max late % / max missed %), by week so the trend shows early:"
    );
    for r in &by_week.rows {
        let Some(rules) = r
            .group
            .parse::<ContractId>()
            .ok()
            .and_then(|id| contracts.get(&id))
        else {
            continue;
        };
        let Some(kpi) = rules.kpi else { continue };
        // The KPI rule of the metrics, applied week by week so the trend shows early.
        let status = |part: u64, whole: u64, max: f64| match kpi_status(part, whole, max) {
            KpiStatus::Breach => "BREACH",
            KpiStatus::Ok => "ok",
        };
        let _ = writeln!(
            out,
            "{:<10} {:<36} late {:>6} (max {:.1}%) {:<6}  missed {:>6} (max {:.1}%) {}",
            r.period,
            names.get(&r.group).map_or(r.group.as_str(), String::as_str),
            pct(r.late_pct),
            kpi.max_late_pct,
            status(r.late, r.attended, kpi.max_late_pct),
            pct(r.missed_pct),
            kpi.max_missed_pct,
            status(r.missed, r.attended + r.missed, kpi.max_missed_pct)
        );
    }
    Ok(out)
}
