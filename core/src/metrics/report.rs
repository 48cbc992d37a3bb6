//! The punctuality report: visit outcomes counted and rated per group and local period, plus the
//! monthly KPI status of every contract that carries KPI targets.
//!
//! Rates are percentages (0–100) and absent (`null`, empty in CSV) when their denominator is 0:
//! late, early, on-time, short ÷ attended; missed ÷ (attended + missed); ECM ÷ attended;
//! location verified ÷ attended visits whose client has a recorded location.

use super::csv::{to_csv, CsvRow};
use super::facts::{period_of_day, FlagCounts};
use super::periods::{AgencyTimeZone, Period, PeriodKind};
use super::rules::ContractRules;
use super::visit_outcome::{visit_outcome, Attendance, Figures, Punctuality, VisitInputs, VisitOutcome};
use crate::domain::*;
use crate::visit_document::Visit;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What the office knows about a contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContractInfo {
    pub contract_id: ContractId,
    /// The commissioning body, e.g. "Northshire County Council".
    pub commissioner: String,
    pub model: CommissioningModel,
    pub rules: ContractRules,
}

/// Grouping attributes the report takes as data rather than looking them up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportContext {
    pub contracts: HashMap<ContractId, ContractInfo>,
    /// Each carer's team; carers without one group under `no_team`.
    pub teams: HashMap<PersonId, TeamId>,
}

impl ReportContext {
    /// The rules of a visit's contract; the brief's defaults for a contract the office never set up.
    pub fn rules_for(&self, contract: ContractId) -> ContractRules {
        self.contracts
            .get(&contract)
            .map(|c| c.rules.clone())
            .unwrap_or_default()
    }

    /// [`visit_outcome`] under the visit's own contract rules.
    pub fn outcome(&self, visit: &Visit, inputs: &VisitInputs, now: Millis) -> VisitOutcome {
        visit_outcome(visit, &self.rules_for(visit.schedule.contract_id), inputs, now)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One group, `all`.
    All,
    Contract,
    CommissioningModel,
    Commissioner,
    Carer,
    Client,
    Team,
}

/// What a store groups facts by to answer a grouping; the rest is mapped here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TallyKey {
    Contract,
    Client,
    Carer,
}

/// Counts of one key on one local day, as a store sums them from facts (the count fields of a
/// [`ReportRow`]; its labels and rates are left empty).
#[derive(Clone, Debug, PartialEq)]
pub struct DayTally {
    pub day: NaiveDate,
    /// A contract, client or carer id, per the [`TallyKey`].
    pub key: String,
    pub counts: ReportRow,
}

impl GroupBy {
    pub fn tally_key(self) -> TallyKey {
        match self {
            GroupBy::Client => TallyKey::Client,
            GroupBy::Carer | GroupBy::Team => TallyKey::Carer,
            _ => TallyKey::Contract,
        }
    }

    /// The group a tally key falls in.
    fn group_of(self, key: &str, context: &ReportContext) -> String {
        let contract = || {
            key.parse::<ContractId>()
                .ok()
                .and_then(|id| context.contracts.get(&id))
        };
        match self {
            GroupBy::All => "all".to_string(),
            GroupBy::Contract | GroupBy::Client | GroupBy::Carer => key.to_string(),
            GroupBy::CommissioningModel => {
                contract().map_or_else(|| "unknown".to_string(), |c| c.model.to_string())
            }
            GroupBy::Commissioner => {
                contract().map_or_else(|| "unknown".to_string(), |c| c.commissioner.clone())
            }
            GroupBy::Team => key
                .parse::<PersonId>()
                .ok()
                .and_then(|p| context.teams.get(&p))
                .map_or_else(|| "no_team".to_string(), TeamId::to_string),
        }
    }

    /// Carer and team rows count each carer's part of a visit, judged on that carer's own times.
    pub fn unit(self) -> CountUnit {
        match self {
            GroupBy::Carer | GroupBy::Team => CountUnit::CarerVisit,
            _ => CountUnit::Visit,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountUnit {
    Visit,
    /// One carer's part of a visit: a double-up counts once per carer.
    CarerVisit,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportQuery {
    pub group_by: GroupBy,
    pub period: PeriodKind,
    /// An IANA time zone name, e.g. `Europe/London`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub time_zone: AgencyTimeZone,
}

/// One group in one period. Flat, so the CSV carries exactly the JSON fields.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// `2026-10-25`, `2026-W43` or `2026-10`.
    pub period: String,
    pub period_start: String,
    /// The group's key: a UUID, `spot`/`framework`, a commissioner's name, `all`, `no_team`,
    /// or `unknown` for a contract missing from the context.
    pub group: String,
    /// Visits (or carer-visits) in the row, cancelled ones included.
    pub scheduled: u64,
    pub cancelled: u64,
    pub attended: u64,
    pub on_time: u64,
    pub late: u64,
    pub early: u64,
    pub missed: u64,
    pub pending: u64,
    pub overdue: u64,
    pub short: u64,
    pub overrun: u64,
    pub no_clock_out: u64,
    pub partially_attended: u64,
    pub electronic: u64,
    /// Attended with a known client location: the denominator of the location rate.
    pub location_checked: u64,
    pub location_verified: u64,
    /// Events with any time-trust flag, and per flag (cancelled visits' events included).
    pub flagged_events: u64,
    pub unverified_time_events: u64,
    pub clock_skew_events: u64,
    pub future_time_events: u64,
    pub on_time_pct: Option<f64>,
    pub late_pct: Option<f64>,
    pub early_pct: Option<f64>,
    pub short_pct: Option<f64>,
    pub missed_pct: Option<f64>,
    pub electronic_pct: Option<f64>,
    pub location_verified_pct: Option<f64>,
}

impl CsvRow for ReportRow {
    const COLUMNS: &'static [&'static str] = &[
        "period",
        "period_start",
        "group",
        "scheduled",
        "cancelled",
        "attended",
        "on_time",
        "late",
        "early",
        "missed",
        "pending",
        "overdue",
        "short",
        "overrun",
        "no_clock_out",
        "partially_attended",
        "electronic",
        "location_checked",
        "location_verified",
        "flagged_events",
        "unverified_time_events",
        "clock_skew_events",
        "future_time_events",
        "on_time_pct",
        "late_pct",
        "early_pct",
        "short_pct",
        "missed_pct",
        "electronic_pct",
        "location_verified_pct",
    ];
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KpiStatus {
    Ok,
    /// The rate is strictly above the contract's maximum.
    Breach,
}

/// A contract's KPI standing for one local month.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KpiRow {
    pub contract_id: ContractId,
    pub commissioner: String,
    pub month: String,
    pub attended: u64,
    pub late: u64,
    pub missed: u64,
    pub late_pct: Option<f64>,
    pub missed_pct: Option<f64>,
    pub max_late_pct: f64,
    pub max_missed_pct: f64,
    pub late_status: KpiStatus,
    pub missed_status: KpiStatus,
    /// Breach if either is.
    pub status: KpiStatus,
}

impl CsvRow for KpiRow {
    const COLUMNS: &'static [&'static str] = &[
        "contract_id",
        "commissioner",
        "month",
        "attended",
        "late",
        "missed",
        "late_pct",
        "missed_pct",
        "max_late_pct",
        "max_missed_pct",
        "late_status",
        "missed_status",
        "status",
    ];
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PunctualityReport {
    pub query: ReportQuery,
    pub unit: CountUnit,
    /// Sorted by period, then group.
    pub rows: Vec<ReportRow>,
    /// Every contract with KPI targets, per local month with visits, whatever the grouping.
    pub kpi: Vec<KpiRow>,
}

impl PunctualityReport {
    /// Counts `outcomes` (each visit once, placed by its planned start in local time).
    pub fn build(outcomes: &[VisitOutcome], context: &ReportContext, query: ReportQuery) -> Self {
        let tz = query.time_zone;
        let mut tallies: BTreeMap<(Period, String), Tally> = BTreeMap::new();
        for o in outcomes {
            let period = Period::containing(query.period, o.planned_start, tz);
            let contract = context.contracts.get(&o.contract_id);
            let visit_group = |key: String| (period, key);
            match query.group_by {
                GroupBy::Carer | GroupBy::Team => {
                    for c in &o.carers {
                        let key = match query.group_by {
                            GroupBy::Carer => c.carer_id.to_string(),
                            _ => context
                                .teams
                                .get(&c.carer_id)
                                .map_or_else(|| "no_team".to_string(), TeamId::to_string),
                        };
                        let events = o.events.iter().filter(|e| e.carer_id == c.carer_id);
                        tallies.entry(visit_group(key)).or_default().add(
                            &c.figures,
                            o.partially_attended,
                            FlagCounts::of(events),
                        );
                    }
                }
                group_by => {
                    let key = match group_by {
                        GroupBy::Contract => o.contract_id.to_string(),
                        GroupBy::CommissioningModel => {
                            contract.map_or_else(|| "unknown".to_string(), |c| c.model.to_string())
                        }
                        GroupBy::Commissioner => {
                            contract.map_or_else(|| "unknown".to_string(), |c| c.commissioner.clone())
                        }
                        GroupBy::Client => o.client_id.to_string(),
                        _ => "all".to_string(),
                    };
                    tallies.entry(visit_group(key)).or_default().add(
                        &o.figures,
                        o.partially_attended,
                        FlagCounts::of(o.events.iter()),
                    );
                }
            }
        }
        let rows = tallies
            .into_iter()
            .map(|((period, group), t)| t.row(&period, group))
            .collect();
        Self {
            query,
            unit: query.group_by.unit(),
            rows,
            kpi: kpi_rows(outcomes, context, tz),
        }
    }

    /// The same report from counts a store summed per local day and key: `tallies` keyed by
    /// `query.group_by.tally_key()`, `by_contract` keyed by contract (for the KPI rows).
    pub fn from_tallies(
        tallies: &[DayTally],
        by_contract: &[DayTally],
        context: &ReportContext,
        query: ReportQuery,
    ) -> Self {
        let tz = query.time_zone;
        let mut rows: BTreeMap<(Period, String), Tally> = BTreeMap::new();
        for t in tallies {
            let period = period_of_day(query.period, t.day, tz);
            let group = query.group_by.group_of(&t.key, context);
            rows.entry((period, group)).or_default().merge(&t.counts);
        }
        let mut months: BTreeMap<(ContractId, NaiveDate), (u64, u64, u64)> = BTreeMap::new();
        for t in by_contract {
            let Ok(contract) = t.key.parse::<ContractId>() else {
                continue;
            };
            let has_kpi = context
                .contracts
                .get(&contract)
                .is_some_and(|c| c.rules.kpi.is_some());
            if !has_kpi {
                continue;
            }
            let month = period_of_day(PeriodKind::Month, t.day, tz).start;
            let m = months.entry((contract, month)).or_default();
            m.0 += t.counts.attended;
            m.1 += t.counts.late;
            m.2 += t.counts.missed;
        }
        Self {
            query,
            unit: query.group_by.unit(),
            rows: rows
                .into_iter()
                .map(|((period, group), t)| t.row(&period, group))
                .collect(),
            kpi: kpi_from_months(months, context),
        }
    }

    /// The rows as CSV (header included); the same figures as the JSON rows.
    pub fn rows_csv(&self) -> Result<String, serde_json::Error> {
        to_csv(&self.rows)
    }

    /// The KPI rows as CSV (header included).
    pub fn kpi_csv(&self) -> Result<String, serde_json::Error> {
        to_csv(&self.kpi)
    }
}

/// Percentage, or none when there is nothing to divide by.
fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// Strictly above the maximum, compared as part·100 > max·whole so a rate exactly at the maximum
/// is never a breach by a rounding error.
pub fn kpi_status(part: u64, whole: u64, max_pct: f64) -> KpiStatus {
    if whole > 0 && part as f64 * 100.0 > max_pct * whole as f64 {
        KpiStatus::Breach
    } else {
        KpiStatus::Ok
    }
}

#[derive(Default)]
struct Tally {
    row: ReportRow,
}

impl Tally {
    /// The one counting rule: what one visit (or carer-visit) adds to its row.
    fn add(&mut self, f: &Figures, partially_attended: bool, flags: FlagCounts) {
        let r = &mut self.row;
        let yes = |b: bool| u64::from(b);
        r.scheduled += 1;
        r.flagged_events += u64::from(flags.flagged);
        r.unverified_time_events += u64::from(flags.unverified_time);
        r.clock_skew_events += u64::from(flags.clock_skew);
        r.future_time_events += u64::from(flags.future_time);
        match f.attendance {
            Attendance::Cancelled => r.cancelled += 1,
            Attendance::Missed => r.missed += 1,
            Attendance::Pending => r.pending += 1,
            Attendance::Overdue => r.overdue += 1,
            Attendance::Attended => {
                r.attended += 1;
                match f.punctuality {
                    Some(Punctuality::OnTime) => r.on_time += 1,
                    Some(Punctuality::Late) => r.late += 1,
                    Some(Punctuality::Early) => r.early += 1,
                    None => {}
                }
                r.short += yes(f.short);
                r.overrun += yes(f.overrun);
                r.no_clock_out += yes(f.no_clock_out);
                r.partially_attended += yes(partially_attended);
                r.electronic += yes(f.electronic);
                r.location_checked += yes(f.location_verified.is_some());
                r.location_verified += yes(f.location_verified == Some(true));
            }
        }
    }

    /// Adds counts summed elsewhere (by a store, per local day).
    fn merge(&mut self, c: &ReportRow) {
        let r = &mut self.row;
        for (into, from) in [
            (&mut r.scheduled, c.scheduled),
            (&mut r.cancelled, c.cancelled),
            (&mut r.attended, c.attended),
            (&mut r.on_time, c.on_time),
            (&mut r.late, c.late),
            (&mut r.early, c.early),
            (&mut r.missed, c.missed),
            (&mut r.pending, c.pending),
            (&mut r.overdue, c.overdue),
            (&mut r.short, c.short),
            (&mut r.overrun, c.overrun),
            (&mut r.no_clock_out, c.no_clock_out),
            (&mut r.partially_attended, c.partially_attended),
            (&mut r.electronic, c.electronic),
            (&mut r.location_checked, c.location_checked),
            (&mut r.location_verified, c.location_verified),
            (&mut r.flagged_events, c.flagged_events),
            (&mut r.unverified_time_events, c.unverified_time_events),
            (&mut r.clock_skew_events, c.clock_skew_events),
            (&mut r.future_time_events, c.future_time_events),
        ] {
            *into += from;
        }
    }

    fn row(self, period: &Period, group: String) -> ReportRow {
        let mut r = self.row;
        r.period = period.label();
        r.period_start = period.start.format("%Y-%m-%d").to_string();
        r.group = group;
        r.on_time_pct = pct(r.on_time, r.attended);
        r.late_pct = pct(r.late, r.attended);
        r.early_pct = pct(r.early, r.attended);
        r.short_pct = pct(r.short, r.attended);
        r.missed_pct = pct(r.missed, r.attended + r.missed);
        r.electronic_pct = pct(r.electronic, r.attended);
        r.location_verified_pct = pct(r.location_verified, r.location_checked);
        r
    }
}

fn kpi_rows(outcomes: &[VisitOutcome], context: &ReportContext, tz: AgencyTimeZone) -> Vec<KpiRow> {
    // (contract, month start) → (attended, late, missed)
    let mut months: BTreeMap<(ContractId, NaiveDate), (u64, u64, u64)> = BTreeMap::new();
    for o in outcomes {
        let has_kpi = context
            .contracts
            .get(&o.contract_id)
            .is_some_and(|c| c.rules.kpi.is_some());
        if !has_kpi {
            continue;
        }
        let month = Period::containing(PeriodKind::Month, o.planned_start, tz).start;
        let m = months.entry((o.contract_id, month)).or_default();
        match o.figures.attendance {
            Attendance::Attended => {
                m.0 += 1;
                m.1 += u64::from(o.figures.punctuality == Some(Punctuality::Late));
            }
            Attendance::Missed => m.2 += 1,
            _ => {}
        }
    }
    kpi_from_months(months, context)
}

/// KPI rows from (contract, month start) → (attended, late, missed).
fn kpi_from_months(
    months: BTreeMap<(ContractId, NaiveDate), (u64, u64, u64)>,
    context: &ReportContext,
) -> Vec<KpiRow> {
    months
        .into_iter()
        .filter_map(|((contract_id, start), (attended, late, missed))| {
            let info = context.contracts.get(&contract_id)?;
            let targets = info.rules.kpi?;
            let late_status = kpi_status(late, attended, targets.max_late_pct);
            let missed_status = kpi_status(missed, attended + missed, targets.max_missed_pct);
            let status = if late_status == KpiStatus::Breach || missed_status == KpiStatus::Breach {
                KpiStatus::Breach
            } else {
                KpiStatus::Ok
            };
            Some(KpiRow {
                contract_id,
                commissioner: info.commissioner.clone(),
                month: start.format("%Y-%m").to_string(),
                attended,
                late,
                missed,
                late_pct: pct(late, attended),
                missed_pct: pct(missed, attended + missed),
                max_late_pct: targets.max_late_pct,
                max_missed_pct: targets.max_missed_pct,
                late_status,
                missed_status,
                status,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::csv::assert_csv_matches_json;
    use crate::metrics::rules::KpiTargets;
    use crate::metrics::test_support::*;

    fn framework(max_late_pct: f64, max_missed_pct: f64) -> ContractInfo {
        ContractInfo {
            contract_id: contract_x(),
            commissioner: "Northshire County Council, \"Adults\"".into(),
            model: CommissioningModel::Framework,
            rules: ContractRules {
                kpi: Some(KpiTargets {
                    max_late_pct,
                    max_missed_pct,
                }),
                ..ContractRules::default()
            },
        }
    }

    fn spot() -> ContractInfo {
        ContractInfo {
            contract_id: contract_y(),
            commissioner: "Southshire".into(),
            model: CommissioningModel::Spot,
            rules: ContractRules::default(),
        }
    }

    fn context(x: ContractInfo) -> ReportContext {
        ReportContext {
            contracts: HashMap::from([(contract_x(), x), (contract_y(), spot())]),
            teams: HashMap::from([(carer_a(), TeamId(uuid::Uuid::from_u128(0x7E)))]),
        }
    }

    /// A 30-minute visit at `start` for carer A, clocked in `late_min` minutes after P and out 30
    /// minutes after clocking in; `None` leaves it unattended.
    fn visit_at(start: Millis, late_min: Option<i64>) -> Visit {
        let mut v = visit(vec![carer_a()], start, 30);
        if let Some(m) = late_min {
            v.events.push(clock_in(carer_a(), start + m * MINUTE_MS));
            v.events.push(clock_out(carer_a(), start + (m + 30) * MINUTE_MS));
        }
        v
    }

    fn month_query(group_by: GroupBy) -> ReportQuery {
        ReportQuery {
            group_by,
            period: PeriodKind::Month,
            time_zone: AgencyTimeZone::default(),
        }
    }

    #[test]
    fn counts_and_rates_with_cancelled_excluded() {
        let ctx = context(framework(50.0, 50.0));
        let day = utc(2026, 6, 10, 9, 0);
        let now = utc(2026, 6, 11, 9, 0);
        let mut visits = [
            visit_at(day, Some(0)),                 // on time
            visit_at(day + HOUR_MS, Some(20)),      // late
            visit_at(day + 2 * HOUR_MS, Some(-20)), // early
            visit_at(day + 3 * HOUR_MS, Some(5)),   // on time
            visit_at(day + 4 * HOUR_MS, None),      // missed
            visit_at(day + 5 * HOUR_MS, Some(40)),  // cancelled (late, but excluded)
        ];
        visits[5].schedule.status = VisitStatus::Cancelled;
        // The early visit only stays 15 min: short (15 < 22.5).
        visits[2].events[1] = clock_out(carer_a(), day + 2 * HOUR_MS - 5 * MINUTE_MS);
        let outcomes: Vec<_> = visits
            .iter()
            .map(|v| ctx.outcome(v, &VisitInputs::default(), now))
            .collect();
        let report = PunctualityReport::build(&outcomes, &ctx, month_query(GroupBy::All));
        assert_eq!(report.unit, CountUnit::Visit);
        assert_eq!(report.rows.len(), 1);
        let r = &report.rows[0];
        assert_eq!((r.period.as_str(), r.group.as_str()), ("2026-06", "all"));
        assert_eq!((r.scheduled, r.cancelled, r.attended, r.missed), (6, 1, 4, 1));
        assert_eq!((r.on_time, r.late, r.early, r.short), (2, 1, 1, 1));
        // ÷ attended (4): 50 %, 25 %, 25 %, 25 %; missed ÷ (4 + 1) = 20 %.
        assert_eq!(r.on_time_pct, Some(50.0));
        assert_eq!(r.late_pct, Some(25.0));
        assert_eq!(r.early_pct, Some(25.0));
        assert_eq!(r.short_pct, Some(25.0));
        assert_eq!(r.missed_pct, Some(20.0));
        // All four attended visits are app-clocked, unamended: 100 % ECM. No client location known.
        assert_eq!(r.electronic_pct, Some(100.0));
        assert_eq!(r.location_checked, 0);
        assert_eq!(r.location_verified_pct, None);
        assert_eq!(r.flagged_events, 0);
    }

    #[test]
    fn groups_by_model_commissioner_client_carer_team() {
        let ctx = context(framework(5.0, 1.0));
        let day = utc(2026, 6, 10, 9, 0);
        let now = utc(2026, 6, 11, 9, 0);
        let mut on_spot = visit_at(day, Some(30));
        on_spot.schedule.contract_id = contract_y();
        on_spot.schedule.client_id = client_2();
        // A double-up on the framework contract: A on time, B (no team) 20 min late.
        let mut double = visit(vec![carer_a(), carer_b()], day + HOUR_MS, 30);
        double.events.push(clock_in(carer_a(), day + HOUR_MS));
        double
            .events
            .push(clock_in(carer_b(), day + HOUR_MS + 20 * MINUTE_MS));
        let outcomes: Vec<_> = [visit_at(day + 2 * HOUR_MS, Some(0)), on_spot, double]
            .iter()
            .map(|v| ctx.outcome(v, &VisitInputs::default(), now))
            .collect();
        let by = |g| PunctualityReport::build(&outcomes, &ctx, month_query(g));
        let model = by(GroupBy::CommissioningModel);
        let groups: Vec<(&str, u64, u64)> = model
            .rows
            .iter()
            .map(|r| (r.group.as_str(), r.attended, r.late))
            .collect();
        assert_eq!(groups, vec![("framework", 2, 0), ("spot", 1, 1)]);
        let commissioner = by(GroupBy::Commissioner);
        assert_eq!(
            commissioner.rows[0].group,
            "Northshire County Council, \"Adults\""
        );
        let client = by(GroupBy::Client);
        assert_eq!(client.rows.len(), 2);
        let carer = by(GroupBy::Carer);
        assert_eq!(carer.unit, CountUnit::CarerVisit);
        // A: three carer-visits, one late (the spot one). B: one, late.
        let a = carer.rows.iter().find(|r| r.group == carer_a().to_string());
        let b = carer.rows.iter().find(|r| r.group == carer_b().to_string());
        assert_eq!(a.map(|r| (r.attended, r.late)), Some((3, 1)));
        assert_eq!(b.map(|r| (r.attended, r.late)), Some((1, 1)));
        let team = by(GroupBy::Team);
        let teams: Vec<(&str, u64)> = team
            .rows
            .iter()
            .map(|r| (r.group.as_str(), r.scheduled))
            .collect();
        assert_eq!(
            teams,
            vec![("00000000-0000-0000-0000-00000000007e", 3), ("no_team", 1)]
        );
    }

    #[test]
    fn flags_location_and_live_states_reach_the_rows() {
        let ctx = context(framework(5.0, 1.0));
        let p = utc(2026, 6, 10, 9, 0);
        // "Now" is 09:20: P + 20 min.
        let now = p + 20 * MINUTE_MS;
        // Double-up: A clocks in at P with a skewed phone (offset −3 min) 300 m from home; B never
        // arrives. A visit planned at 09:10 is pending until 09:25; one planned at 08:50 has been
        // overdue since 09:05 and is not missed until 09:50.
        let mut double = visit(vec![carer_a(), carer_b()], p, 30);
        let mut e = clock_in(carer_a(), p);
        e.device_time = p + 3 * MINUTE_MS;
        e.clock_offset_ms = Some(-3 * MINUTE_MS);
        e.offset_measured_at = Some(p);
        e.location = Some(north_of_home(300.0));
        double.events.push(e);
        let pending = visit_at(p + 10 * MINUTE_MS, None);
        let overdue = visit_at(p - 10 * MINUTE_MS, None);
        let inputs = VisitInputs {
            client_location: Some(client_home()),
            received_at: HashMap::new(),
        };
        let outcomes: Vec<_> = [double, pending, overdue]
            .iter()
            .map(|v| ctx.outcome(v, &inputs, now))
            .collect();
        let all = PunctualityReport::build(&outcomes, &ctx, month_query(GroupBy::All));
        let r = &all.rows[0];
        assert_eq!(
            (r.scheduled, r.attended, r.pending, r.overdue, r.missed),
            (3, 1, 1, 1, 0)
        );
        // Pending and overdue are in neither rate's denominator: missed 0 ÷ (1 + 0).
        assert_eq!(r.missed_pct, Some(0.0));
        assert_eq!(
            (r.partially_attended, r.location_checked, r.location_verified),
            (1, 1, 0)
        );
        assert_eq!(r.location_verified_pct, Some(0.0));
        assert_eq!(
            (r.flagged_events, r.clock_skew_events, r.unverified_time_events),
            (1, 1, 0)
        );
        // No clock-out yet: not ECM compliant.
        assert_eq!(r.electronic_pct, Some(0.0));
        let carers = PunctualityReport::build(&outcomes, &ctx, month_query(GroupBy::Carer));
        let b = carers.rows.iter().find(|r| r.group == carer_b().to_string());
        // B's part of the double-up: P + 20 min > P + 15, unattended: overdue for B, no events.
        assert_eq!(b.map(|r| (r.overdue, r.flagged_events)), Some((1, 0)));
        let a = carers.rows.iter().find(|r| r.group == carer_a().to_string());
        assert_eq!(a.map(|r| (r.attended, r.flagged_events)), Some((1, 1)));
    }

    #[test]
    fn day_rows_follow_local_days_across_the_clock_change() {
        let ctx = context(framework(5.0, 1.0));
        // 00:30 BST on 2026-10-25 (23:30 UTC on the 24th) and 09:00 GMT on the 25th: one local day.
        let visits = [
            visit_at(utc(2026, 10, 24, 23, 30), Some(0)),
            visit_at(utc(2026, 10, 25, 9, 0), Some(0)),
        ];
        let now = utc(2026, 10, 26, 12, 0);
        let outcomes: Vec<_> = visits
            .iter()
            .map(|v| ctx.outcome(v, &VisitInputs::default(), now))
            .collect();
        let query = ReportQuery {
            group_by: GroupBy::All,
            period: PeriodKind::Day,
            time_zone: AgencyTimeZone::default(),
        };
        let report = PunctualityReport::build(&outcomes, &ctx, query);
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows[0].period, "2026-10-25");
        assert_eq!(report.rows[0].scheduled, 2);
    }

    fn kpi_month(late_visits: usize, on_time_visits: usize, missed: usize, targets: ContractInfo) -> KpiRow {
        let ctx = context(targets);
        let start = utc(2026, 7, 1, 9, 0);
        let mut visits = Vec::new();
        let mut n = 0;
        for late in [Some(20)]
            .repeat(late_visits)
            .into_iter()
            .chain([Some(0)].repeat(on_time_visits))
        {
            visits.push(visit_at(start + n * HOUR_MS, late));
            n += 1;
        }
        for _ in 0..missed {
            visits.push(visit_at(start + n * HOUR_MS, None));
            n += 1;
        }
        let now = utc(2026, 8, 1, 9, 0);
        let outcomes: Vec<_> = visits
            .iter()
            .map(|v| ctx.outcome(v, &VisitInputs::default(), now))
            .collect();
        let report = PunctualityReport::build(&outcomes, &ctx, month_query(GroupBy::Contract));
        assert_eq!(report.kpi.len(), 1, "one framework contract, one month");
        report.kpi[0].clone()
    }

    #[test]
    fn kpi_at_the_boundary_is_ok_and_above_is_breach() {
        // 1 late of 20 attended = exactly 5 %: ok at max 5 %.
        let k = kpi_month(1, 19, 0, framework(5.0, 1.0));
        assert_eq!(k.late_pct, Some(5.0));
        assert_eq!((k.late_status, k.status), (KpiStatus::Ok, KpiStatus::Ok));
        // 2 late of 20 = 10 % > 5 %: breach.
        let k = kpi_month(2, 18, 0, framework(5.0, 1.0));
        assert_eq!((k.late_status, k.status), (KpiStatus::Breach, KpiStatus::Breach));
        // Missed: 1 of (19 attended + 1 missed) = 5 %: ok at max 5 %, breach at max 4.99 %.
        let k = kpi_month(0, 19, 1, framework(5.0, 5.0));
        assert_eq!(k.missed_pct, Some(5.0));
        assert_eq!(k.missed_status, KpiStatus::Ok);
        let k = kpi_month(0, 19, 1, framework(5.0, 4.99));
        assert_eq!(
            (k.missed_status, k.late_status, k.status),
            (KpiStatus::Breach, KpiStatus::Ok, KpiStatus::Breach)
        );
        // A rate like 1/3 (33.33…%) against max 33.333333333333336 (its float) must not flip by rounding.
        let k = kpi_month(1, 2, 0, framework(100.0 / 3.0, 50.0));
        assert_eq!(k.late_status, KpiStatus::Ok);
        assert_eq!(k.month, "2026-07");
    }

    #[test]
    fn csv_reads_back_to_the_json_figures() -> Result<(), serde_json::Error> {
        let ctx = context(framework(5.0, 1.0));
        let day = utc(2026, 6, 10, 9, 0);
        let visits = [
            visit_at(day, Some(0)),
            visit_at(day + HOUR_MS, Some(20)),
            visit_at(day + 2 * HOUR_MS, Some(0)),
            visit_at(day + 3 * HOUR_MS, None),
        ];
        let outcomes: Vec<_> = visits
            .iter()
            .map(|v| ctx.outcome(v, &VisitInputs::default(), utc(2026, 6, 12, 0, 0)))
            .collect();
        let report = PunctualityReport::build(&outcomes, &ctx, month_query(GroupBy::Commissioner));
        // 1 late of 3 attended: 33.333…% must survive the trip exactly.
        assert_eq!(report.rows[0].late_pct, Some(100.0 / 3.0));
        assert_csv_matches_json(&report.rows_csv()?, &report.rows);
        assert_csv_matches_json(&report.kpi_csv()?, &report.kpi);
        // And the JSON itself reads back to the same report.
        let back: PunctualityReport = serde_json::from_str(&serde_json::to_string(&report)?)?;
        assert_eq!(back, report);
        Ok(())
    }
}
