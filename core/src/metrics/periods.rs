//! Local days, ISO weeks and months in the agency's time zone (default Europe/London).
//!
//! A visit belongs to the period holding its planned start P, read as local wall time, so a
//! visit at 00:30 on a clock-change night falls on that local day whatever the UTC date.

use crate::domain::Millis;
use chrono::{DateTime, Datelike, Duration, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The agency's time zone, serialised by its IANA name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgencyTimeZone(pub Tz);

impl Default for AgencyTimeZone {
    fn default() -> Self {
        Self(chrono_tz::Europe::London)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}; use an IANA name such as \"Europe/London\"")]
pub struct UnknownTimeZone(pub String);

impl std::str::FromStr for AgencyTimeZone {
    type Err = UnknownTimeZone;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Tz>()
            .map(Self)
            .map_err(|_| UnknownTimeZone(s.to_string()))
    }
}

impl fmt::Display for AgencyTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl Serialize for AgencyTimeZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for AgencyTimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Day,
    /// ISO week: Monday 00:00 local to the next Monday.
    Week,
    Month,
}

/// One local period, named by its first local day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    pub kind: PeriodKind,
    /// First local day of the period (a Monday for weeks, the 1st for months).
    pub start: NaiveDate,
}

impl Period {
    /// The period of `kind` holding the instant `at` in `tz`.
    pub fn containing(kind: PeriodKind, at: Millis, tz: AgencyTimeZone) -> Period {
        let day = local_date(at, tz);
        let start = match kind {
            PeriodKind::Day => day,
            PeriodKind::Week => day
                .checked_sub_signed(Duration::days(i64::from(day.weekday().num_days_from_monday())))
                .unwrap_or(day),
            PeriodKind::Month => day.with_day(1).unwrap_or(day),
        };
        Period { kind, start }
    }

    /// `2026-10-25` for a day, `2026-W43` for an ISO week, `2026-10` for a month.
    pub fn label(&self) -> String {
        match self.kind {
            PeriodKind::Day => self.start.format("%Y-%m-%d").to_string(),
            PeriodKind::Week => {
                let w = self.start.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            PeriodKind::Month => self.start.format("%Y-%m").to_string(),
        }
    }
}

/// The local calendar date of an instant. Instants beyond chrono's range fall back to 1970-01-01
/// rather than panicking (no real visit is there).
pub fn local_date(at: Millis, tz: AgencyTimeZone) -> NaiveDate {
    DateTime::from_timestamp_millis(at)
        .map(|utc| utc.with_timezone(&tz.0).date_naive())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::test_support::utc;

    fn london() -> AgencyTimeZone {
        AgencyTimeZone::default()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    #[test]
    fn half_past_midnight_on_the_night_clocks_go_back() {
        // 2026-10-25 00:30 BST (UTC+1) is 2026-10-24 23:30 UTC: the UTC date is the 24th, the
        // local day the 25th (a Sunday, so ISO week 43 starting Monday the 19th; month October).
        let at = utc(2026, 10, 24, 23, 30);
        assert_eq!(local_date(at, london()), date(2026, 10, 25));
        assert_eq!(
            Period::containing(PeriodKind::Day, at, london()).label(),
            "2026-10-25"
        );
        let week = Period::containing(PeriodKind::Week, at, london());
        assert_eq!(week.start, date(2026, 10, 19));
        assert_eq!(week.label(), "2026-W43");
        // 00:30 local happens once before 01:00 BST→GMT; 01:30 happens twice. 01:30 GMT is
        // 01:30 UTC on the 25th: still the 25th.
        assert_eq!(local_date(utc(2026, 10, 25, 1, 30), london()), date(2026, 10, 25));
        // 23:30 GMT on the 25th is 23:30 UTC: the 25th, not the 26th.
        assert_eq!(
            local_date(utc(2026, 10, 25, 23, 30), london()),
            date(2026, 10, 25)
        );
    }

    #[test]
    fn half_past_midnight_around_clocks_going_forward() {
        // 2026-03-29 00:30 is still GMT (clocks go forward at 01:00 GMT): 00:30 UTC, the 29th.
        assert_eq!(local_date(utc(2026, 3, 29, 0, 30), london()), date(2026, 3, 29));
        // That day is 23 hours long: 2026-03-30 00:30 BST is 2026-03-29 23:30 UTC, the 30th.
        let at = utc(2026, 3, 29, 23, 30);
        assert_eq!(local_date(at, london()), date(2026, 3, 30));
        // The 30th is a Monday: it starts ISO week 14, and the 29th (Sunday) ends week 13.
        assert_eq!(
            Period::containing(PeriodKind::Week, at, london()).label(),
            "2026-W14"
        );
        assert_eq!(
            Period::containing(PeriodKind::Week, utc(2026, 3, 29, 0, 30), london()).label(),
            "2026-W13"
        );
        // In UTC the same instant would be the 29th: the zone matters.
        let utc_zone = AgencyTimeZone(chrono_tz::UTC);
        assert_eq!(local_date(at, utc_zone), date(2026, 3, 29));
    }

    #[test]
    fn months_and_weeks_across_a_month_end() {
        // Thu 2026-04-30 and Fri 2026-05-01 are in ISO week 18 (Mon 27 April) but different months.
        let thu = utc(2026, 4, 30, 9, 0);
        let fri = utc(2026, 5, 1, 9, 0);
        let w = |t| Period::containing(PeriodKind::Week, t, london());
        assert_eq!(w(thu), w(fri));
        assert_eq!(w(thu).start, date(2026, 4, 27));
        assert_eq!(
            Period::containing(PeriodKind::Month, thu, london()).label(),
            "2026-04"
        );
        assert_eq!(
            Period::containing(PeriodKind::Month, fri, london()).label(),
            "2026-05"
        );
        // ISO week-year differs from the calendar year at the turn: Thu 2026-12-31 is 2026-W53.
        assert_eq!(
            Period::containing(PeriodKind::Week, utc(2026, 12, 31, 9, 0), london()).label(),
            "2026-W53"
        );
    }

    #[test]
    fn time_zone_by_name() -> Result<(), serde_json::Error> {
        let tz: AgencyTimeZone = serde_json::from_str("\"Europe/Dublin\"")?;
        assert_eq!(tz.to_string(), "Europe/Dublin");
        assert!(serde_json::from_str::<AgencyTimeZone>("\"Mars/Olympus\"").is_err());
        assert_eq!(
            serde_json::to_string(&AgencyTimeZone::default())?,
            "\"Europe/London\""
        );
        Ok(())
    }
}
