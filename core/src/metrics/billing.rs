//! Billable minutes by the contract's rule (brief, section 5).
//!
//! All arithmetic is on whole milliseconds, so "exactly half a unit" is exact.

use super::rules::{BillingBasis, BillingRule, Rounding};
use crate::domain::{Millis, MINUTE_MS};

/// What the billing rule needs to know about one visit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Billable {
    /// Not billed at all: cancelled and not chargeable, or never attended (missed, pending, overdue).
    Nothing,
    /// Cancelled but chargeable: the planned duration, rounded to the unit, whatever the basis.
    CancelledChargeable { planned_ms: Millis },
    /// Attended. `actual_ms` is o − i, absent while there is no clock-out.
    Attended {
        planned_ms: Millis,
        actual_ms: Option<Millis>,
    },
}

/// Billable minutes for one visit.
///
/// - planned basis: E − P; actual: o − i; capped: min(o − i, E − P).
/// - an attended visit with no clock-out bills 0 under actual and capped (nothing to bill yet;
///   the office amends the clock-out), and the planned duration under planned.
/// - negative durations (clock-out before clock-in) count as 0.
pub fn billable_minutes(rule: &BillingRule, visit: Billable) -> i64 {
    let ms = match visit {
        Billable::Nothing => 0,
        Billable::CancelledChargeable { planned_ms } => planned_ms,
        Billable::Attended {
            planned_ms,
            actual_ms,
        } => match rule.basis {
            BillingBasis::Planned => planned_ms,
            BillingBasis::Actual => actual_ms.unwrap_or(0),
            BillingBasis::Capped => actual_ms.map_or(0, |a| a.min(planned_ms)),
        },
    };
    round_to_unit(ms.max(0), rule.unit_min, rule.rounding)
}

/// Rounds a non-negative duration to whole units of `unit_min` minutes; returns minutes.
/// Nearest: a remainder of half a unit or less rounds down, more than half rounds up.
pub fn round_to_unit(duration_ms: Millis, unit_min: u32, rounding: Rounding) -> i64 {
    let unit_ms = Millis::from(unit_min.max(1)) * MINUTE_MS;
    let duration_ms = duration_ms.max(0);
    let whole = duration_ms / unit_ms;
    let rest = duration_ms % unit_ms;
    let units = match rounding {
        Rounding::Down => whole,
        Rounding::Up if rest > 0 => whole + 1,
        Rounding::Up => whole,
        Rounding::Nearest if rest * 2 > unit_ms => whole + 1,
        Rounding::Nearest => whole,
    };
    units * Millis::from(unit_min.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Millis = 1000;

    fn rule(basis: BillingBasis, unit_min: u32, rounding: Rounding) -> BillingRule {
        BillingRule {
            basis,
            unit_min,
            rounding,
        }
    }

    #[test]
    fn nearest_half_rounds_down() {
        // 1-minute unit: 37 min 30 s is exactly half → 37; 37 min 30.001 s → 38.
        assert_eq!(round_to_unit(37 * MINUTE_MS + 30 * SEC, 1, Rounding::Nearest), 37);
        assert_eq!(
            round_to_unit(37 * MINUTE_MS + 30 * SEC + 1, 1, Rounding::Nearest),
            38
        );
        // 15-minute unit: 37.5 min = 2 units + 7.5 min, exactly half → 30; 37.5 min + 1 ms → 45.
        assert_eq!(
            round_to_unit(37 * MINUTE_MS + 30 * SEC, 15, Rounding::Nearest),
            30
        );
        assert_eq!(
            round_to_unit(37 * MINUTE_MS + 30 * SEC + 1, 15, Rounding::Nearest),
            45
        );
        // 5-minute unit: 22.5 min → 20; 30-minute unit: 45 min → 30; 60-minute unit: 90 min → 60.
        assert_eq!(round_to_unit(22 * MINUTE_MS + 30 * SEC, 5, Rounding::Nearest), 20);
        assert_eq!(round_to_unit(45 * MINUTE_MS, 30, Rounding::Nearest), 30);
        assert_eq!(round_to_unit(90 * MINUTE_MS, 60, Rounding::Nearest), 60);
        assert_eq!(round_to_unit(90 * MINUTE_MS + 1, 60, Rounding::Nearest), 120);
    }

    #[test]
    fn down_and_up_for_each_unit() {
        // 31 min 1 s in each unit: down / up.
        let d = 31 * MINUTE_MS + SEC;
        let expected = [(1, 31, 32), (5, 30, 35), (15, 30, 45), (30, 30, 60), (60, 0, 60)];
        for (unit, down, up) in expected {
            assert_eq!(round_to_unit(d, unit, Rounding::Down), down, "down, unit {unit}");
            assert_eq!(round_to_unit(d, unit, Rounding::Up), up, "up, unit {unit}");
        }
        // An exact multiple never moves.
        assert_eq!(round_to_unit(30 * MINUTE_MS, 15, Rounding::Up), 30);
        assert_eq!(round_to_unit(30 * MINUTE_MS, 15, Rounding::Down), 30);
        assert_eq!(round_to_unit(0, 15, Rounding::Up), 0);
    }

    #[test]
    fn basis_planned_actual_capped() {
        let planned_ms = 30 * MINUTE_MS;
        let long = Billable::Attended {
            planned_ms,
            actual_ms: Some(41 * MINUTE_MS),
        };
        let short = Billable::Attended {
            planned_ms,
            actual_ms: Some(22 * MINUTE_MS),
        };
        let planned = rule(BillingBasis::Planned, 1, Rounding::Nearest);
        let actual = rule(BillingBasis::Actual, 1, Rounding::Nearest);
        let capped = rule(BillingBasis::Capped, 1, Rounding::Nearest);
        assert_eq!(billable_minutes(&planned, long), 30);
        assert_eq!(billable_minutes(&planned, short), 30);
        assert_eq!(billable_minutes(&actual, long), 41);
        assert_eq!(billable_minutes(&actual, short), 22);
        assert_eq!(billable_minutes(&capped, long), 30);
        assert_eq!(billable_minutes(&capped, short), 22);
        // Capped then rounded: 22 min in 15-minute units, up → 30.
        assert_eq!(
            billable_minutes(&rule(BillingBasis::Capped, 15, Rounding::Up), short),
            30
        );
    }

    #[test]
    fn cancelled_missed_and_open_visits() {
        let actual = rule(BillingBasis::Actual, 15, Rounding::Nearest);
        let planned_ms = 45 * MINUTE_MS;
        assert_eq!(billable_minutes(&actual, Billable::Nothing), 0);
        // Cancelled chargeable bills planned whatever the basis: 45 min in 15-min units.
        assert_eq!(
            billable_minutes(&actual, Billable::CancelledChargeable { planned_ms }),
            45
        );
        let open = Billable::Attended {
            planned_ms,
            actual_ms: None,
        };
        assert_eq!(billable_minutes(&actual, open), 0);
        assert_eq!(
            billable_minutes(&rule(BillingBasis::Planned, 15, Rounding::Nearest), open),
            45
        );
        let backwards = Billable::Attended {
            planned_ms,
            actual_ms: Some(-5 * MINUTE_MS),
        };
        assert_eq!(billable_minutes(&actual, backwards), 0);
    }
}
