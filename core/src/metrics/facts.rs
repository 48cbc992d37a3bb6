//! Judge once, aggregate many times. A visit's figures are judged when it changes (the server
//! does it in the transaction that commits the change) and kept as compact facts; a report then
//! counts facts instead of re-reading documents. What changes with the report's "now" (pending →
//! overdue → missed, "no clock-out") is not frozen: the facts keep the instants at which it
//! changes, and [`UnitFacts::figures_at`] gives back exactly what [`record_outcome`] says at any
//! `now`.

use super::periods::{AgencyTimeZone, Period, PeriodKind};
use super::record::VisitRecord;
use super::rules::ContractRules;
use super::time_trust::EventTrust;
use super::visit_outcome::{record_outcome, Attendance, Figures, Punctuality, VisitInputs, VisitOutcome};
use crate::domain::*;
use chrono::{DateTime, Duration, NaiveDate, Offset, TimeZone};
use serde::{Deserialize, Serialize};

/// How many of a unit's clock events carry each time-trust flag.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagCounts {
    /// Events with any flag.
    pub flagged: u32,
    pub unverified_time: u32,
    pub clock_skew: u32,
    pub future_time: u32,
}

impl FlagCounts {
    pub fn of<'a>(events: impl Iterator<Item = &'a EventTrust>) -> Self {
        let mut c = Self::default();
        for e in events {
            c.flagged += u32::from(e.flags.any());
            c.unverified_time += u32::from(e.flags.unverified_time);
            c.clock_skew += u32::from(e.flags.clock_skew);
            c.future_time += u32::from(e.flags.future_time);
        }
        c
    }
}

/// A whole visit's, or one carer's part's, judged figures. Fields that hold for any "now" are
/// stored as judged; the three instants say when the "now"-dependent states begin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitFacts {
    pub cancelled: bool,
    pub attended: bool,
    /// i and o (trusted, after amendments), kept even for a cancelled visit (work done).
    pub clock_in: Option<Millis>,
    pub clock_out: Option<Millis>,
    pub punctuality: Option<Punctuality>,
    pub start_offset_ms: Option<Millis>,
    pub duration_ms: Option<Millis>,
    pub short: bool,
    pub overrun: bool,
    pub electronic: bool,
    pub location_verified: Option<bool>,
    /// The visit is partially attended and this unit is attended (so the row counts it).
    pub partially_attended: bool,
    /// Unattended, not cancelled: overdue once "now" is past this instant (P + late threshold).
    pub overdue_after: Option<Millis>,
    /// Unattended, not cancelled: missed once "now" is past this instant (E + missed threshold).
    pub missed_after: Option<Millis>,
    /// Attended with no clock-out: "no clock-out" once "now" is past this instant.
    pub open_after: Option<Millis>,
    pub flags: FlagCounts,
}

impl UnitFacts {
    /// From figures judged at a "now" before anything could have happened (so nothing
    /// "now"-dependent is set) and the rules' thresholds.
    fn judge(
        f: &Figures,
        planned_start: Millis,
        planned_end: Millis,
        rules: &ContractRules,
        partially_attended: bool,
        flags: FlagCounts,
    ) -> Self {
        let cancelled = f.attendance == Attendance::Cancelled;
        let attended = f.attendance == Attendance::Attended;
        let unattended = !cancelled && !attended;
        let missed_line = planned_end.saturating_add(rules.missed_after_end_ms());
        Self {
            cancelled,
            attended,
            clock_in: f.clock_in,
            clock_out: f.clock_out,
            punctuality: f.punctuality,
            start_offset_ms: f.start_offset_ms,
            duration_ms: f.duration_ms,
            short: f.short,
            overrun: f.overrun,
            electronic: f.electronic,
            location_verified: f.location_verified,
            partially_attended: attended && partially_attended,
            overdue_after: unattended.then(|| planned_start.saturating_add(rules.late_after_ms())),
            missed_after: unattended.then_some(missed_line),
            open_after: (attended && f.clock_out.is_none()).then_some(missed_line),
            flags,
        }
    }

    /// Where the unit stands at `now`: the same order of tests as the definition.
    pub fn attendance_at(&self, now: Millis) -> Attendance {
        if self.cancelled {
            Attendance::Cancelled
        } else if self.attended {
            Attendance::Attended
        } else if self.missed_after.is_some_and(|t| now > t) {
            Attendance::Missed
        } else if self.overdue_after.is_some_and(|t| now > t) {
            Attendance::Overdue
        } else {
            Attendance::Pending
        }
    }

    pub fn no_clock_out_at(&self, now: Millis) -> bool {
        self.open_after.is_some_and(|t| now > t)
    }

    /// The figures at `now`, equal to [`record_outcome`]'s at the same `now`.
    pub fn figures_at(&self, now: Millis) -> Figures {
        Figures {
            attendance: self.attendance_at(now),
            clock_in: self.clock_in,
            clock_out: self.clock_out,
            punctuality: self.punctuality,
            start_offset_ms: self.start_offset_ms,
            duration_ms: self.duration_ms,
            short: self.short,
            overrun: self.overrun,
            no_clock_out: self.no_clock_out_at(now),
            electronic: self.electronic,
            location_verified: self.location_verified,
        }
    }
}

/// One carer's part of a visit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarerFacts {
    pub carer_id: PersonId,
    pub assigned: bool,
    pub facts: UnitFacts,
}

/// Everything a report needs of one visit, judged once under its contract's rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitFacts {
    pub visit_id: VisitId,
    pub contract_id: ContractId,
    pub client_id: ClientId,
    pub planned_start: Millis,
    pub planned_end: Millis,
    pub visit: UnitFacts,
    /// Assigned carers first (schedule order), then anyone else with events or amendments.
    pub carers: Vec<CarerFacts>,
    pub chargeable: bool,
    pub authorised_ms: Millis,
    /// Work done: o − i whenever both are known, cancelled or not (see [`VisitOutcome::work_done_ms`]).
    pub delivered_ms: Millis,
    pub billable_minutes: i64,
}

impl VisitFacts {
    /// Judges a visit's record under `rules`.
    pub fn judge(record: &VisitRecord, rules: &ContractRules, inputs: &VisitInputs) -> Self {
        // Judged before anything could have happened: nothing "now"-dependent is set, and
        // everything else does not depend on "now".
        let o = record_outcome(record, rules, inputs, Millis::MIN);
        let (p, e) = (o.planned_start, o.planned_end);
        let carers = o
            .carers
            .iter()
            .map(|c| CarerFacts {
                carer_id: c.carer_id,
                assigned: c.assigned,
                facts: UnitFacts::judge(
                    &c.figures,
                    p,
                    e,
                    rules,
                    o.partially_attended,
                    FlagCounts::of(o.events.iter().filter(|ev| ev.carer_id == c.carer_id)),
                ),
            })
            .collect();
        Self {
            visit_id: o.visit_id,
            contract_id: o.contract_id,
            client_id: o.client_id,
            planned_start: p,
            planned_end: e,
            visit: UnitFacts::judge(
                &o.figures,
                p,
                e,
                rules,
                o.partially_attended,
                FlagCounts::of(o.events.iter()),
            ),
            carers,
            chargeable: o.chargeable,
            authorised_ms: o.authorised_ms,
            delivered_ms: o.work_done_ms(),
            billable_minutes: o.billable_minutes,
        }
    }

    /// The assigned carers, in schedule order.
    pub fn assigned(&self) -> impl Iterator<Item = PersonId> + '_ {
        self.carers.iter().filter(|c| c.assigned).map(|c| c.carer_id)
    }
}

/// One visit's figures at an instant, for the visit page and for anyone checking a figure.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitFigures {
    pub visit_id: VisitId,
    pub contract_id: ContractId,
    pub client_id: ClientId,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub planned_start: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub planned_end: Millis,
    /// The instant judged at.
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub as_of: Millis,
    #[serde(flatten)]
    pub figures: Figures,
    /// i − P in whole minutes (negative when early; rounded towards zero); set when attended.
    pub minutes_late: Option<i64>,
    pub planned_minutes: i64,
    /// o − i in whole minutes (nearest, half down), when both are known.
    pub actual_minutes: Option<i64>,
    pub partially_attended: bool,
    pub flags: FlagCounts,
    pub authorised_minutes: i64,
    pub delivered_minutes: i64,
    pub billable_minutes: i64,
    pub chargeable: bool,
    pub carers: Vec<CarerFigures>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarerFigures {
    pub carer_id: PersonId,
    pub assigned: bool,
    #[serde(flatten)]
    pub figures: Figures,
    pub flags: FlagCounts,
}

impl VisitFacts {
    /// The figures at `as_of`.
    pub fn figures_at(&self, as_of: Millis) -> VisitFigures {
        let minutes = |ms: Millis| super::billing::round_to_unit(ms, 1, super::rules::Rounding::Nearest);
        let figures = self.visit.figures_at(as_of);
        VisitFigures {
            visit_id: self.visit_id,
            contract_id: self.contract_id,
            client_id: self.client_id,
            planned_start: self.planned_start,
            planned_end: self.planned_end,
            as_of,
            minutes_late: figures.start_offset_ms.map(|ms| ms / MINUTE_MS),
            planned_minutes: minutes(self.planned_end.saturating_sub(self.planned_start).max(0)),
            actual_minutes: figures.duration_ms.map(minutes),
            figures,
            partially_attended: self.visit.partially_attended,
            flags: self.visit.flags,
            authorised_minutes: minutes(self.authorised_ms),
            delivered_minutes: minutes(self.delivered_ms),
            billable_minutes: self.billable_minutes,
            chargeable: self.chargeable,
            carers: self
                .carers
                .iter()
                .map(|c| CarerFigures {
                    carer_id: c.carer_id,
                    assigned: c.assigned,
                    figures: c.facts.figures_at(as_of),
                    flags: c.facts.flags,
                })
                .collect(),
        }
    }
}

/// A local day as a number: days since 1970-01-01 (local calendar). Stores group by it.
pub fn day_number(day: NaiveDate) -> i64 {
    (day - NaiveDate::default()).num_days()
}

/// The local day of a [`day_number`].
pub fn day_of_number(n: i64) -> NaiveDate {
    NaiveDate::default()
        .checked_add_signed(Duration::days(n))
        .unwrap_or_default()
}

/// The period of `kind` holding a local day.
pub fn period_of_day(kind: PeriodKind, day: NaiveDate, tz: AgencyTimeZone) -> Period {
    // Local noon of the day is unambiguous on any clock-change day.
    let at =
        tz.0.from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap_or_default())
            .earliest()
            .map_or(0, |t| t.timestamp_millis());
    Period::containing(kind, at, tz)
}

/// The agency's UTC offset over `[from, to)`: `(since, offset_ms)` pieces, the first starting at
/// `from`. The local day of an instant t in a piece is ⌊(t + offset) / 1 day⌋, which lets a
/// database group by local day with plain arithmetic.
pub fn utc_offsets(from: Millis, to: Millis, tz: AgencyTimeZone) -> Vec<(Millis, i64)> {
    let offset = |at: Millis| -> i64 {
        DateTime::from_timestamp_millis(at).map_or(0, |utc| {
            i64::from(
                tz.0.offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ) * 1000
        })
    };
    let mut pieces = vec![(from, offset(from))];
    let mut at = from;
    while at < to {
        let next = at.saturating_add(HOUR_MS).min(to);
        let current = pieces.last().map_or(0, |p| p.1);
        if offset(next) != current {
            // Find the first millisecond of the new offset.
            let (mut lo, mut hi) = (at, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset(mid) == current {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            pieces.push((hi, offset(hi)));
        }
        if next == at {
            break;
        }
        at = next;
    }
    pieces
}

/// Local day number of an instant under [`utc_offsets`] pieces (what the database computes).
pub fn day_number_by_offsets(at: Millis, pieces: &[(Millis, i64)]) -> i64 {
    let offset = pieces
        .iter()
        .take_while(|(since, _)| *since <= at)
        .last()
        .map_or(0, |p| p.1);
    at.saturating_add(offset).div_euclid(DAY_MS)
}

impl VisitOutcome {
    /// Work done: o − i whenever both are known, even on a cancelled visit (a carer who came
    /// delivered those minutes; reconciliation counts them).
    pub fn work_done_ms(&self) -> Millis {
        match (self.figures.clock_in, self.figures.clock_out) {
            (Some(i), Some(o)) => o.saturating_sub(i).max(0),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::local_date;
    use crate::metrics::test_support::*;

    const P: Millis = 1_790_064_000_000;

    #[test]
    fn facts_give_the_definition_at_every_now() {
        let mut attended = visit(vec![carer_a(), carer_b()], P, 30);
        attended.events.push(clock_in(carer_a(), P + 20 * MINUTE_MS));
        let mut done = visit(vec![carer_a()], P, 30);
        done.events.push(clock_in(carer_a(), P + 2 * MINUTE_MS));
        done.events.push(clock_out(carer_a(), P + 12 * MINUTE_MS));
        let mut cancelled = done.clone();
        cancelled.schedule.status = VisitStatus::Cancelled;
        let empty = visit(vec![carer_a()], P, 30);
        let rules = ContractRules::default();
        let inputs = VisitInputs::default();
        for v in [attended, done, cancelled, empty] {
            let record = VisitRecord::of(&v);
            let facts = VisitFacts::judge(&record, &rules, &inputs);
            for now in (-2..200)
                .map(|m| P + m * MINUTE_MS)
                .chain([P + 60 * MINUTE_MS + 1])
            {
                let o = record_outcome(&record, &rules, &inputs, now);
                assert_eq!(facts.visit.figures_at(now), o.figures, "now {now}");
                for (f, c) in facts.carers.iter().zip(&o.carers) {
                    assert_eq!(f.facts.figures_at(now), c.figures);
                }
            }
        }
    }

    #[test]
    fn offsets_give_local_days_across_clock_changes() {
        let tz = AgencyTimeZone::default();
        let from = utc(2026, 3, 27, 0, 0);
        let to = utc(2026, 11, 2, 0, 0);
        let pieces = utc_offsets(from, to, tz);
        assert_eq!(pieces.len(), 3, "{pieces:?}");
        let mut at = from;
        while at < to {
            assert_eq!(
                day_of_number(day_number_by_offsets(at, &pieces)),
                local_date(at, tz)
            );
            at += 17 * MINUTE_MS + 13;
        }
    }
}
