//! Weekly reconciliation of authorised against delivered and billable minutes, per client and
//! contract, and continuity of carer per client; both by ISO week (Monday 00:00 local).

use super::billing::round_to_unit;
use super::csv::{to_csv, CsvRow};
use super::facts::period_of_day;
use super::periods::{AgencyTimeZone, Period, PeriodKind};
use super::rules::Rounding;
use super::visit_outcome::{Attendance, VisitOutcome};
use crate::domain::*;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One client's minutes on one contract in one ISO week.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationRow {
    /// `2026-W18`.
    pub week: String,
    pub week_start: String,
    pub client_id: ClientId,
    pub contract_id: ContractId,
    pub visits: u64,
    pub cancelled: u64,
    /// Planned minutes of visits not cancelled.
    pub authorised_minutes: i64,
    /// o − i of visits with a clock-in and a clock-out, cancelled ones included: work done
    /// is never lost from the figures.
    pub delivered_minutes: i64,
    /// The contract's billing rule per visit, summed (cancelled-but-chargeable visits included).
    pub billable_minutes: i64,
    pub delivered_minus_authorised: i64,
    pub billable_minus_authorised: i64,
}

impl CsvRow for ReconciliationRow {
    const COLUMNS: &'static [&'static str] = &[
        "week",
        "week_start",
        "client_id",
        "contract_id",
        "visits",
        "cancelled",
        "authorised_minutes",
        "delivered_minutes",
        "billable_minutes",
        "delivered_minus_authorised",
        "billable_minus_authorised",
    ];
}

/// Distinct carers who attended a client in one ISO week.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuityRow {
    pub week: String,
    pub week_start: String,
    pub client_id: ClientId,
    /// Visits not cancelled.
    pub visits: u64,
    /// Carers with a clock-in on a visit not cancelled.
    pub distinct_carers: u64,
    /// Carers assigned to visits not cancelled (whether or not they came).
    pub distinct_carers_scheduled: u64,
}

impl CsvRow for ContinuityRow {
    const COLUMNS: &'static [&'static str] = &[
        "week",
        "week_start",
        "client_id",
        "visits",
        "distinct_carers",
        "distinct_carers_scheduled",
    ];
}

fn week_of(o: &VisitOutcome, tz: AgencyTimeZone) -> Period {
    Period::containing(PeriodKind::Week, o.planned_start, tz)
}

/// Minutes from summed milliseconds, to the nearest minute (half or less down), as billing rounds.
fn minutes(ms: Millis) -> i64 {
    round_to_unit(ms, 1, Rounding::Nearest)
}

/// One client's minutes on one contract on one local day, as a store sums them from facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayMinutes {
    pub day: NaiveDate,
    pub client_id: ClientId,
    pub contract_id: ContractId,
    pub visits: u64,
    pub cancelled: u64,
    pub authorised_ms: Millis,
    /// Work done, cancelled visits included.
    pub delivered_ms: Millis,
    pub billable_minutes: i64,
}

/// Per ISO week (of the planned start, local), client and contract; sorted in that order.
pub fn weekly_reconciliation(outcomes: &[VisitOutcome], tz: AgencyTimeZone) -> Vec<ReconciliationRow> {
    let days: Vec<DayMinutes> = outcomes
        .iter()
        .map(|o| DayMinutes {
            day: Period::containing(PeriodKind::Day, o.planned_start, tz).start,
            client_id: o.client_id,
            contract_id: o.contract_id,
            visits: 1,
            cancelled: u64::from(o.is_cancelled()),
            authorised_ms: o.authorised_ms,
            delivered_ms: o.work_done_ms(),
            billable_minutes: o.billable_minutes,
        })
        .collect();
    reconciliation_from_days(&days, tz)
}

/// The ISO week of local days, with its label and first day as text, worked out once per day:
/// a month's report has a few hundred thousand rows over a few dozen days.
struct WeekNames {
    tz: AgencyTimeZone,
    by_day: HashMap<NaiveDate, usize>,
    weeks: Vec<(Period, String, String)>,
}

impl WeekNames {
    fn new(tz: AgencyTimeZone) -> Self {
        WeekNames {
            tz,
            by_day: HashMap::new(),
            weeks: Vec::new(),
        }
    }

    /// The index of `day`'s week in `self.weeks`.
    fn of(&mut self, day: NaiveDate) -> usize {
        if let Some(&i) = self.by_day.get(&day) {
            return i;
        }
        let week = period_of_day(PeriodKind::Week, day, self.tz);
        let i = self
            .weeks
            .iter()
            .position(|(p, _, _)| *p == week)
            .unwrap_or_else(|| {
                let start = week.start.format("%Y-%m-%d").to_string();
                self.weeks.push((week, week.label(), start));
                self.weeks.len() - 1
            });
        self.by_day.insert(day, i);
        i
    }
}

/// The same rows from per-day sums (a day may stand for its whole week: only its week counts).
pub fn reconciliation_from_days(days: &[DayMinutes], tz: AgencyTimeZone) -> Vec<ReconciliationRow> {
    #[derive(Default)]
    struct Sums {
        visits: u64,
        cancelled: u64,
        authorised_ms: Millis,
        delivered_ms: Millis,
        billable_minutes: i64,
    }
    let mut names = WeekNames::new(tz);
    // Sorted by week, client and contract, then each run summed: cheaper than a map when the
    // store gives the days in key order, as both stores do.
    let mut keyed: Vec<((NaiveDate, ClientId, ContractId), usize, &DayMinutes)> = days
        .iter()
        .map(|d| {
            let w = names.of(d.day);
            ((names.weeks[w].0.start, d.client_id, d.contract_id), w, d)
        })
        .collect();
    keyed.sort_by_key(|(key, _, _)| *key);
    let mut out: Vec<ReconciliationRow> = Vec::new();
    let mut at = 0;
    while at < keyed.len() {
        let (key, w, _) = keyed[at];
        let mut s = Sums::default();
        while at < keyed.len() && keyed[at].0 == key {
            let d = keyed[at].2;
            s.visits += d.visits;
            s.cancelled += d.cancelled;
            s.authorised_ms = s.authorised_ms.saturating_add(d.authorised_ms);
            s.delivered_ms = s.delivered_ms.saturating_add(d.delivered_ms);
            s.billable_minutes = s.billable_minutes.saturating_add(d.billable_minutes);
            at += 1;
        }
        let (_, label, start) = &names.weeks[w];
        let authorised = minutes(s.authorised_ms);
        let delivered = minutes(s.delivered_ms);
        out.push(ReconciliationRow {
            week: label.clone(),
            week_start: start.clone(),
            client_id: key.1,
            contract_id: key.2,
            visits: s.visits,
            cancelled: s.cancelled,
            authorised_minutes: authorised,
            delivered_minutes: delivered,
            billable_minutes: s.billable_minutes,
            delivered_minus_authorised: delivered.saturating_sub(authorised),
            billable_minus_authorised: s.billable_minutes.saturating_sub(authorised),
        });
    }
    out
}

/// One client's week, as a store counts it from facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContinuityWeek {
    /// The Monday.
    pub week_start: NaiveDate,
    pub client_id: ClientId,
    pub visits: u64,
    pub distinct_carers: u64,
    pub distinct_carers_scheduled: u64,
}

/// Continuity rows from per-week counts (weeks with no visit not cancelled are left out).
pub fn continuity_from_weeks(weeks: &[ContinuityWeek], tz: AgencyTimeZone) -> Vec<ContinuityRow> {
    let mut sorted: Vec<&ContinuityWeek> = weeks.iter().filter(|w| w.visits > 0).collect();
    sorted.sort_by_key(|w| (w.week_start, w.client_id));
    let mut names = WeekNames::new(tz);
    sorted
        .into_iter()
        .map(|w| {
            let i = names.of(w.week_start);
            let (_, label, start) = &names.weeks[i];
            ContinuityRow {
                week: label.clone(),
                week_start: start.clone(),
                client_id: w.client_id,
                visits: w.visits,
                distinct_carers: w.distinct_carers,
                distinct_carers_scheduled: w.distinct_carers_scheduled,
            }
        })
        .collect()
}

/// Per ISO week and client, across contracts.
pub fn continuity(outcomes: &[VisitOutcome], tz: AgencyTimeZone) -> Vec<ContinuityRow> {
    type Carers = BTreeSet<PersonId>;
    let mut weeks: BTreeMap<(NaiveDate, ClientId), (Period, u64, Carers, Carers)> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| !o.is_cancelled()) {
        let week = week_of(o, tz);
        let entry = weeks
            .entry((week.start, o.client_id))
            .or_insert_with(|| (week, 0, Carers::new(), Carers::new()));
        entry.1 += 1;
        for c in &o.carers {
            if c.figures.attendance == Attendance::Attended {
                entry.2.insert(c.carer_id);
            }
            if c.assigned {
                entry.3.insert(c.carer_id);
            }
        }
    }
    weeks
        .into_iter()
        .map(
            |((_, client_id), (week, visits, came, scheduled))| ContinuityRow {
                week: week.label(),
                week_start: week.start.format("%Y-%m-%d").to_string(),
                client_id,
                visits,
                distinct_carers: came.len() as u64,
                distinct_carers_scheduled: scheduled.len() as u64,
            },
        )
        .collect()
}

/// Reconciliation rows as CSV (header included).
pub fn reconciliation_csv(rows: &[ReconciliationRow]) -> Result<String, serde_json::Error> {
    to_csv(rows)
}

/// Continuity rows as CSV (header included).
pub fn continuity_csv(rows: &[ContinuityRow]) -> Result<String, serde_json::Error> {
    to_csv(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::csv::assert_csv_matches_json;
    use crate::metrics::report::{GroupBy, PunctualityReport, ReportContext, ReportQuery};
    use crate::metrics::rules::{BillingBasis, BillingRule, ContractRules};
    use crate::metrics::test_support::*;
    use crate::metrics::visit_outcome::{visit_outcome, VisitInputs};

    fn capped_15_up() -> ContractRules {
        ContractRules {
            billing: BillingRule {
                basis: BillingBasis::Capped,
                unit_min: 15,
                rounding: Rounding::Up,
            },
            ..ContractRules::default()
        }
    }

    /// ISO week 18 of 2026 runs Mon 27 April – Sun 3 May: it spans the April/May month end.
    fn week_18_visits() -> Vec<VisitOutcome> {
        let rules = capped_15_up();
        let now = utc(2026, 5, 10, 0, 0);
        let inputs = VisitInputs::default();
        let mut out = Vec::new();
        // Wed 29 April 09:00, 45 min planned, A stays 38 min: capped 38 → up to 45.
        let mut v = visit(vec![carer_a()], utc(2026, 4, 29, 8, 0), 45);
        v.events.push(clock_in(carer_a(), utc(2026, 4, 29, 8, 2)));
        v.events.push(clock_out(carer_a(), utc(2026, 4, 29, 8, 40)));
        out.push(visit_outcome(&v, &rules, &inputs, now));
        // Fri 1 May 09:00 (08:00 UTC), 30 min planned, B stays 50 min: capped 30 → 30.
        let mut v = visit(vec![carer_b()], utc(2026, 5, 1, 8, 0), 30);
        v.events.push(clock_in(carer_b(), utc(2026, 5, 1, 8, 0)));
        v.events.push(clock_out(carer_b(), utc(2026, 5, 1, 8, 50)));
        out.push(visit_outcome(&v, &rules, &inputs, now));
        // Sat 2 May, 30 min planned, A never comes: missed, bills 0, still authorised.
        let v = visit(vec![carer_a()], utc(2026, 5, 2, 8, 0), 30);
        out.push(visit_outcome(&v, &rules, &inputs, now));
        // Sun 3 May, 60 min, cancelled but chargeable: not authorised, bills 60.
        let mut v = visit(vec![carer_c()], utc(2026, 5, 3, 8, 0), 60);
        v.schedule.status = VisitStatus::Cancelled;
        v.schedule.chargeable = Some(true);
        out.push(visit_outcome(&v, &rules, &inputs, now));
        // Mon 4 May: the next ISO week.
        let mut v = visit(vec![carer_a()], utc(2026, 5, 4, 8, 0), 30);
        v.events.push(clock_in(carer_a(), utc(2026, 5, 4, 8, 0)));
        v.events.push(clock_out(carer_a(), utc(2026, 5, 4, 8, 30)));
        out.push(visit_outcome(&v, &rules, &inputs, now));
        out
    }

    #[test]
    fn a_week_spanning_the_month_end_reconciles_as_one_week() -> Result<(), serde_json::Error> {
        let outcomes = week_18_visits();
        let rows = weekly_reconciliation(&outcomes, AgencyTimeZone::default());
        assert_eq!(rows.len(), 2);
        let w18 = &rows[0];
        assert_eq!(
            (w18.week.as_str(), w18.week_start.as_str()),
            ("2026-W18", "2026-04-27")
        );
        assert_eq!((w18.visits, w18.cancelled), (4, 1));
        // Authorised: 45 + 30 + 30 (missed still authorised) = 105; cancelled excluded.
        assert_eq!(w18.authorised_minutes, 105);
        // Delivered: 38 + 50 = 88.
        assert_eq!(w18.delivered_minutes, 88);
        // Billable: 45 + 30 + 0 + 60 = 135.
        assert_eq!(w18.billable_minutes, 135);
        assert_eq!(w18.delivered_minus_authorised, -17);
        assert_eq!(w18.billable_minus_authorised, 30);
        assert_eq!(
            (rows[1].week.as_str(), rows[1].authorised_minutes),
            ("2026-W19", 30)
        );

        // The monthly report splits the same week: April has 1 visit, May 4.
        let query = ReportQuery {
            group_by: GroupBy::All,
            period: PeriodKind::Month,
            time_zone: AgencyTimeZone::default(),
        };
        let report = PunctualityReport::build(&outcomes, &ReportContext::default(), query);
        let months: Vec<(&str, u64)> = report
            .rows
            .iter()
            .map(|r| (r.period.as_str(), r.scheduled))
            .collect();
        assert_eq!(months, vec![("2026-04", 1), ("2026-05", 4)]);

        assert_csv_matches_json(&reconciliation_csv(&rows)?, &rows);
        Ok(())
    }

    #[test]
    fn continuity_counts_carers_who_came() -> Result<(), serde_json::Error> {
        let rows = continuity(&week_18_visits(), AgencyTimeZone::default());
        // Week 18: A and B came; A, B assigned (C's visit was cancelled). Week 19: A.
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].visits,
                rows[0].distinct_carers,
                rows[0].distinct_carers_scheduled
            ),
            (3, 2, 2)
        );
        assert_eq!((rows[1].visits, rows[1].distinct_carers), (1, 1));
        assert_csv_matches_json(&continuity_csv(&rows)?, &rows);
        Ok(())
    }

    #[test]
    fn week_starts_monday_midnight_local() {
        // Sun 2026-10-25 23:30 GMT is still week 43; Mon 00:30 GMT (00:30 UTC) is week 44.
        let rules = ContractRules::default();
        let now = utc(2026, 11, 1, 0, 0);
        let sunday = visit(vec![carer_a()], utc(2026, 10, 25, 23, 30), 30);
        let monday = visit(vec![carer_a()], utc(2026, 10, 26, 0, 30), 30);
        let outcomes: Vec<_> = [sunday, monday]
            .iter()
            .map(|v| visit_outcome(v, &rules, &VisitInputs::default(), now))
            .collect();
        let rows = weekly_reconciliation(&outcomes, AgencyTimeZone::default());
        let weeks: Vec<&str> = rows.iter().map(|r| r.week.as_str()).collect();
        assert_eq!(weeks, vec!["2026-W43", "2026-W44"]);
    }
}
