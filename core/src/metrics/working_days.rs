//! Working days for escalation deadlines: Monday to Friday, minus the agency's bank holidays.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use std::collections::BTreeSet;

pub fn is_working_day(day: NaiveDate, bank_holidays: &BTreeSet<NaiveDate>) -> bool {
    !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !bank_holidays.contains(&day)
}

/// The `n`th working day after `from` (`from` itself does not count; `n` = 0 gives `from`).
pub fn add_working_days(from: NaiveDate, n: u32, bank_holidays: &BTreeSet<NaiveDate>) -> NaiveDate {
    let mut day = from;
    let mut left = n;
    while left > 0 {
        day += Duration::days(1);
        if is_working_day(day, bank_holidays) {
            left -= 1;
        }
    }
    day
}

/// When a weekly reconciliation mismatch must be raised: 5 working days after the ISO week
/// (starting `week_start`, a Monday) ends on its Sunday.
pub fn reconciliation_due(week_start: NaiveDate, bank_holidays: &BTreeSet<NaiveDate>) -> NaiveDate {
    add_working_days(week_start + Duration::days(6), 5, bank_holidays)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("a date")
    }

    #[test]
    fn due_across_a_weekend_and_bank_holidays_by_hand() {
        // Week of Monday 21 December 2026 ends Sunday 27th. Working days after it, with
        // Boxing Day's substitute (Mon 28th) and New Year's Day (Fri 1 Jan) off:
        // Tue 29 (1), Wed 30 (2), Thu 31 (3), [Fri 1 holiday, Sat 2, Sun 3], Mon 4 (4), Tue 5 (5).
        let holidays: BTreeSet<NaiveDate> = [d(2026, 12, 25), d(2026, 12, 28), d(2027, 1, 1)].into();
        assert_eq!(reconciliation_due(d(2026, 12, 21), &holidays), d(2027, 1, 5));
        // No holidays: Mon 28 .. Fri 1 January.
        assert_eq!(
            reconciliation_due(d(2026, 12, 21), &BTreeSet::new()),
            d(2027, 1, 1)
        );
        // An ordinary week: Sunday 29 November → Mon 30 .. Fri 4 December.
        assert_eq!(
            reconciliation_due(d(2026, 11, 23), &BTreeSet::new()),
            d(2026, 12, 4)
        );
        // From a Friday, one working day is the Monday.
        assert_eq!(
            add_working_days(d(2026, 11, 27), 1, &BTreeSet::new()),
            d(2026, 11, 30)
        );
        assert_eq!(
            add_working_days(d(2026, 11, 27), 0, &BTreeSet::new()),
            d(2026, 11, 27)
        );
    }
}
