//! Reports over the projected rows: punctuality (with KPI status), weekly reconciliation,
//! continuity, and live alerts. The definitions themselves live in `caresync_core::metrics`;
//! this module only gathers rows into visits and hands them over.

use crate::http::AppState;
use crate::store::{AmendmentRow, EventRow, StoreError, VisitRow};
use caresync_core::domain::*;
use caresync_core::metrics::*;
use caresync_core::visit_document::{Amendment, ClockEvent, Schedule, Visit, SCHEMA_VERSION};
use chrono::NaiveDate;
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

/// Visits judged at `as_of`, with what the report needs to group them.
pub struct Judged {
    pub outcomes: Vec<VisitOutcome>,
    pub context: ReportContext,
}

/// UTC bounds of the local days `[from, to)`.
pub fn day_range(state: &AppState, from: NaiveDate, to: NaiveDate) -> Result<(Millis, Millis), String> {
    if to <= from {
        return Err("`to` must be after `from`".into());
    }
    if (to - from).num_days() > MAX_REPORT_DAYS {
        return Err(format!("a report covers at most {MAX_REPORT_DAYS} days"));
    }
    let (start, _) = caresync_core::store::local_day_bounds(state.tz, from);
    let (end, _) = caresync_core::store::local_day_bounds(state.tz, to);
    Ok((start, end))
}

/// Gather the visits planned in `[from, to)` from the projections and judge them at `as_of`.
/// Events the server received after `as_of` and amendments written after it are left out, so a
/// report can be reproduced later.
pub fn judge(state: &AppState, from: Millis, to: Millis, as_of: Millis) -> Result<Judged, StoreError> {
    let store = state.store.as_ref();
    let rows = store.visits_planned_between(from, to)?;
    let mut events: HashMap<VisitId, Vec<EventRow>> = HashMap::new();
    for e in store.events_planned_between(from, to)? {
        if e.received_at <= as_of {
            events.entry(e.visit_id).or_default().push(e);
        }
    }
    let mut amendments: HashMap<VisitId, Vec<AmendmentRow>> = HashMap::new();
    for a in store.amendments_planned_between(from, to)? {
        if a.written_at <= as_of {
            amendments.entry(a.visit_id).or_default().push(a);
        }
    }
    let context = context(state)?;
    let locations: HashMap<ClientId, Location> = store
        .clients()?
        .into_iter()
        .filter_map(|c| c.location.map(|l| (c.id, l)))
        .collect();
    let gathered: Vec<_> = rows
        .into_iter()
        .map(|row| {
            let evs = events.remove(&row.visit_id).unwrap_or_default();
            let ams = amendments.remove(&row.visit_id).unwrap_or_default();
            (row, evs, ams)
        })
        .collect();
    let judge_one = |(row, evs, ams): (VisitRow, Vec<EventRow>, Vec<AmendmentRow>)| {
        let inputs = VisitInputs {
            client_location: locations.get(&row.client_id).copied(),
            received_at: evs.iter().map(|e| (e.event_id, e.received_at)).collect(),
        };
        let visit = visit_from_rows(row, evs, ams);
        context.outcome(&visit, &inputs, as_of)
    };
    // Judging is independent per visit: a big period uses every core.
    let threads = if gathered.len() < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
    };
    let outcomes = map_in_parallel(gathered, threads, judge_one);
    Ok(Judged { outcomes, context })
}

/// Periods with fewer visits are judged on the calling thread.
const PARALLEL_FROM: usize = 20_000;

/// `items.map(f)` on up to `threads` threads, each taking a contiguous part; the order is kept.
fn map_in_parallel<T: Send, U: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    if threads < 2 || items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    let size = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > size {
        let tail = rest.split_off(size);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::map_in_parallel;

    #[test]
    fn parallel_map_keeps_every_item_in_order() {
        for (n, threads) in [(0, 4), (1, 4), (7, 1), (7, 3), (10, 3), (1000, 8), (5, 8)] {
            let items: Vec<u64> = (0..n).collect();
            let expected: Vec<u64> = items.iter().map(|i| i * i + 1).collect();
            assert_eq!(
                map_in_parallel(items, threads, |i| i * i + 1),
                expected,
                "n={n} threads={threads}"
            );
        }
    }

    #[test]
    fn parallel_map_runs_on_several_threads() {
        let ids = map_in_parallel((0..64).collect::<Vec<u32>>(), 4, |_| std::thread::current().id());
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 4);
    }
}

pub fn context(state: &AppState) -> Result<ReportContext, StoreError> {
    let store = state.store.as_ref();
    let mut contracts = HashMap::new();
    for c in store.contracts()? {
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
                commissioner: c.commissioner,
                model: c.model,
                rules,
            },
        );
    }
    let teams = store
        .people()?
        .into_iter()
        .filter_map(|p| p.team_id.map(|t| (p.id, t)))
        .collect();
    Ok(ReportContext { contracts, teams })
}

/// The parts of a visit the metrics need, rebuilt from its projected rows.
fn visit_from_rows(row: VisitRow, events: Vec<EventRow>, amendments: Vec<AmendmentRow>) -> Visit {
    Visit {
        schema_version: SCHEMA_VERSION,
        visit_id: row.visit_id,
        schedule: Schedule {
            client_id: row.client_id,
            contract_id: row.contract_id,
            carers: row.carers,
            planned_start: row.planned_start,
            planned_end: row.planned_end,
            tasks: vec![],
            status: row.status,
            cancel_reason: None,
            chargeable: row.chargeable,
        },
        events: events
            .into_iter()
            .map(|e| ClockEvent {
                id: e.event_id,
                kind: e.kind,
                carer_id: e.carer_id,
                device_id: e.device_id,
                device_time: e.device_time,
                clock_offset_ms: e.clock_offset_ms,
                offset_measured_at: e.offset_measured_at,
                method: e.method,
                reason: e.reason,
                location: e.location,
                tag_id: None,
            })
            .collect(),
        notes: vec![],
        task_outcomes: vec![],
        amendments: amendments
            .into_iter()
            .map(|a| Amendment {
                id: a.amendment_id,
                author_id: a.author_id,
                author_role: Role::Office,
                carer_id: a.carer_id,
                time: a.time,
                corrected_time: a.corrected_time,
                reason: a.reason,
                comment: None,
                written_at: a.written_at,
            })
            .collect(),
    }
}

pub fn punctuality(
    judged: &Judged,
    group_by: GroupBy,
    period: PeriodKind,
    tz: chrono_tz::Tz,
) -> PunctualityReport {
    PunctualityReport::build(
        &judged.outcomes,
        &judged.context,
        ReportQuery {
            group_by,
            period,
            time_zone: AgencyTimeZone(tz),
        },
    )
}

/// One live alert for a supervisor.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub visit_id: VisitId,
    pub client_id: ClientId,
    pub carers: Vec<PersonId>,
    pub planned_start: Millis,
    pub planned_end: Millis,
    /// `overdue`, `missed`, `no_clock_out`, `short`, `time_trust`.
    pub kind: &'static str,
    /// For overdue and missed visits: no assigned carer's phone has synced since the visit was
    /// due, so the carer may well be in the house with no signal.
    pub phone_silent_since_due: bool,
}

/// Alerts now, for visits planned in the last 24 hours and up to now, limited to `carers` when
/// given (a supervisor's team).
pub fn alerts(
    state: &AppState,
    now: Millis,
    carers: Option<&HashSet<PersonId>>,
) -> Result<Vec<Alert>, StoreError> {
    let judged = judge(state, now - DAY_MS, now + 1, now)?;
    let mut last_sync: HashMap<PersonId, Millis> = HashMap::new();
    for d in state.store.devices()? {
        if let Some(at) = d.last_sync_at.filter(|_| d.revoked_at.is_none()) {
            let e = last_sync.entry(d.person_id).or_insert(at);
            *e = (*e).max(at);
        }
    }
    let mut out = Vec::new();
    for o in &judged.outcomes {
        let assigned: Vec<PersonId> = o
            .carers
            .iter()
            .filter(|c| c.assigned)
            .map(|c| c.carer_id)
            .collect();
        if let Some(scope) = carers {
            if !assigned.iter().any(|c| scope.contains(c)) {
                continue;
            }
        }
        let silent = assigned
            .iter()
            .all(|c| last_sync.get(c).is_none_or(|at| *at < o.planned_start));
        let mut push = |kind: &'static str, silent: bool| {
            out.push(Alert {
                visit_id: o.visit_id,
                client_id: o.client_id,
                carers: assigned.clone(),
                planned_start: o.planned_start,
                planned_end: o.planned_end,
                kind,
                phone_silent_since_due: silent,
            })
        };
        match o.figures.attendance {
            Attendance::Overdue => push("overdue", silent),
            Attendance::Missed => push("missed", silent),
            _ => {}
        }
        if o.figures.no_clock_out {
            push("no_clock_out", false);
        }
        if o.figures.short {
            push("short", false);
        }
        if o.flagged_events() > 0 {
            push("time_trust", false);
        }
    }
    out.sort_by_key(|a| (a.planned_start, a.visit_id));
    Ok(out)
}

/// The demo's closing table: spot against framework, week by week, and the KPI status.
pub fn demo_table(state: &AppState, from: NaiveDate, to: NaiveDate) -> Result<String, String> {
    let (start, end) = day_range(state, from, to)?;
    let judged = judge(state, start, end, caresync_core::clock::system_now()).map_err(|e| e.to_string())?;
    let report = punctuality(&judged, GroupBy::CommissioningModel, PeriodKind::Week, state.tz);
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
    let by_week = punctuality(&judged, GroupBy::Contract, PeriodKind::Week, state.tz);
    let names: HashMap<String, String> = state
        .store
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
        let Some(info) = r
            .group
            .parse::<ContractId>()
            .ok()
            .and_then(|id| judged.context.contracts.get(&id))
        else {
            continue;
        };
        let Some(kpi) = info.rules.kpi else { continue };
        let status = |v: Option<f64>, max: f64| {
            if v.is_some_and(|v| v > max) {
                "BREACH"
            } else {
                "ok"
            }
        };
        let _ = writeln!(
            out,
            "{:<10} {:<36} late {:>6} (max {:.1}%) {:<6}  missed {:>6} (max {:.1}%) {}",
            r.period,
            names.get(&r.group).map_or(r.group.as_str(), String::as_str),
            pct(r.late_pct),
            kpi.max_late_pct,
            status(r.late_pct, kpi.max_late_pct),
            pct(r.missed_pct),
            kpi.max_missed_pct,
            status(r.missed_pct, kpi.max_missed_pct)
        );
    }
    Ok(out)
}
