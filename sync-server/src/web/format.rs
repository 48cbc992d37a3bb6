//! How a person reads things: names instead of ids, local times, one-decimal percentages.

use crate::http::AppState;
use crate::store::StoreError;
use caresync_core::domain::*;
use chrono::{NaiveDate, TimeZone};

pub use crate::services::names::Names;

impl Names {
    /// Names of everyone and everything a page mentions, read once per request.
    pub fn load(st: &AppState) -> Result<Self, StoreError> {
        Self::from_store(st.store.as_ref())
    }
}

fn local(st: &AppState, at: Millis) -> Option<chrono::DateTime<chrono_tz::Tz>> {
    chrono::Utc
        .timestamp_millis_opt(at)
        .single()
        .map(|t| t.with_timezone(&st.tz))
}

/// `08:05`
pub fn time(st: &AppState, at: Millis) -> String {
    local(st, at).map_or_else(|| "?".into(), |t| t.format("%H:%M").to_string())
}

/// `08:05:31`, for clock events where seconds matter.
pub fn time_s(st: &AppState, at: Millis) -> String {
    local(st, at).map_or_else(|| "?".into(), |t| t.format("%H:%M:%S").to_string())
}

/// `Wed 25 Nov 2026, 08:05`
pub fn date_time(st: &AppState, at: Millis) -> String {
    local(st, at).map_or_else(|| "?".into(), |t| t.format("%a %-d %b %Y, %H:%M").to_string())
}

/// `08:05` when the instant falls on `day` (local), else `Wed 25 Nov, 17:06`: a timeline or list
/// about one day speaks in times and names the day only when it differs.
pub fn when(st: &AppState, at: Millis, day: NaiveDate) -> String {
    match local(st, at) {
        Some(t) if t.date_naive() == day => t.format("%H:%M").to_string(),
        Some(t) => t.format("%a %-d %b, %H:%M").to_string(),
        None => "?".into(),
    }
}

/// The local date of an instant.
pub fn day_of(st: &AppState, at: Millis) -> NaiveDate {
    local(st, at).map_or_else(NaiveDate::default, |t| t.date_naive())
}

/// How a carer clocked, as the office says it.
pub fn method(m: ClockMethod) -> &'static str {
    match m {
        ClockMethod::App => "In the app",
        ClockMethod::Gps => "GPS",
        ClockMethod::Qr => "QR code",
        ClockMethod::Nfc => "NFC tag",
        ClockMethod::Manual => "Manual",
    }
}

/// A report period as a person reads it, from its first local day (`YYYY-MM-DD`): `w/c 23 Nov
/// 2026` (week commencing), `November 2026`, `Wed 25 Nov 2026`; `short` leaves out the year of
/// a week or day (chart axes). The machine label (`2026-W48`) when the day does not parse.
pub fn period(kind: caresync_core::metrics::PeriodKind, start: &str, label: &str, short: bool) -> String {
    use caresync_core::metrics::PeriodKind;
    let Ok(day) = NaiveDate::parse_from_str(start, "%Y-%m-%d") else {
        return label.to_string();
    };
    let pattern = match (kind, short) {
        (PeriodKind::Week, false) => "w/c %-d %b %Y",
        (PeriodKind::Week, true) => "w/c %-d %b",
        (PeriodKind::Month, false) => "%B %Y",
        (PeriodKind::Month, true) => "%b %Y",
        (PeriodKind::Day, false) => "%a %-d %b %Y",
        (PeriodKind::Day, true) => "%a %-d %b",
    };
    day.format(pattern).to_string()
}

/// The days `from` to `to` (both included) as a subtitle reads them: `26 Nov 2026`,
/// `13 to 26 Nov 2026`, `30 Oct to 26 Nov 2026`, `28 Dec 2026 to 3 Jan 2027`.
pub fn days(from: NaiveDate, to: NaiveDate) -> String {
    use chrono::Datelike;
    let end = to.format("%-d %b %Y");
    if from == to {
        end.to_string()
    } else if (from.year(), from.month()) == (to.year(), to.month()) {
        format!("{} to {end}", from.day())
    } else if from.year() == to.year() {
        format!("{} to {end}", from.format("%-d %b"))
    } else {
        format!("{} to {end}", from.format("%-d %b %Y"))
    }
}

/// `Wednesday 25 November 2026`
pub fn long_date(day: NaiveDate) -> String {
    day.format("%A %-d %B %Y").to_string()
}

pub fn today(st: &AppState, now: Millis) -> NaiveDate {
    day_of(st, now)
}

/// `12.3%`, or a dash when there is nothing to divide by.
pub fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "–".into(), |v| format!("{v:.1}%"))
}

/// `1 h 05 min`, `25 min`, or `-3 min`.
pub fn minutes(ms: Millis) -> String {
    let m = ms / MINUTE_MS;
    if m.abs() >= 60 {
        format!(
            "{}{} h {:02} min",
            if m < 0 { "-" } else { "" },
            m.abs() / 60,
            m.abs() % 60
        )
    } else {
        format!("{m} min")
    }
}

/// A length of time as a person says it: `under 1 min`, `12 min`, `1 h 5 min`, `2 d 3 h`.
pub fn duration(ms: Millis) -> String {
    let m = ms.max(0) / MINUTE_MS;
    match m {
        0 => "under 1 min".into(),
        1..=59 => format!("{m} min"),
        60..=1439 if m % 60 == 0 => format!("{} h", m / 60),
        60..=1439 => format!("{} h {} min", m / 60, m % 60),
        _ if (m % 1440) / 60 == 0 => format!("{} d", m / 1440),
        _ => format!("{} d {} h", m / 1440, (m % 1440) / 60),
    }
}

/// An alert kind as a person says it.
pub fn alert_kind(kind: caresync_core::metrics::AlertKind) -> &'static str {
    use caresync_core::metrics::AlertKind;
    match kind {
        AlertKind::Overdue => "Overdue",
        AlertKind::Missed => "Missed",
        AlertKind::NoClockOut => "No clock-out",
        AlertKind::Short => "Short visit",
        AlertKind::TimeTrust => "Clock time flagged",
        AlertKind::Concern => "Concern",
        AlertKind::Safeguarding => "Safeguarding",
        AlertKind::TaskNotDone => "Task refused or not done",
    }
}

/// A wire word as a person writes it: `no_signal_at_door` → `No signal at door`.
pub fn words(wire: &str) -> String {
    let mut s = wire.replace('_', " ");
    if let Some(first) = s.get(0..1) {
        let upper = first.to_uppercase();
        s.replace_range(0..1, &upper);
    }
    s
}

/// Value of a `datetime-local` input (`2026-11-25T08:05`) in the agency's zone → UTC millis.
pub fn parse_local_input(st: &AppState, s: &str) -> Option<Millis> {
    let naive = chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    st.tz
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// The `datetime-local` value of an instant.
pub fn local_input(st: &AppState, at: Millis) -> String {
    local(st, at).map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_read_words_minutes_and_one_decimal() {
        assert_eq!(pct(Some(12.345)), "12.3%");
        assert_eq!(pct(None), "–");
        assert_eq!(minutes(65 * MINUTE_MS), "1 h 05 min");
        assert_eq!(minutes(-3 * MINUTE_MS), "-3 min");
        assert_eq!(words("no_signal_at_door"), "No signal at door");
        assert_eq!(duration(30_000), "under 1 min");
        assert_eq!(duration(12 * MINUTE_MS), "12 min");
        assert_eq!(duration(65 * MINUTE_MS), "1 h 5 min");
        assert_eq!(duration(120 * MINUTE_MS), "2 h");
        assert_eq!(duration((2 * 24 * 60 + 3 * 60 + 7) * MINUTE_MS), "2 d 3 h");
        assert_eq!(duration(-5), "under 1 min");
    }

    #[test]
    fn spans_of_days_read_as_people_say_them() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        assert_eq!(days(d("2026-11-26"), d("2026-11-26")), "26 Nov 2026");
        assert_eq!(days(d("2026-11-13"), d("2026-11-26")), "13 to 26 Nov 2026");
        assert_eq!(days(d("2026-10-30"), d("2026-11-26")), "30 Oct to 26 Nov 2026");
        assert_eq!(
            days(d("2026-12-28"), d("2027-01-03")),
            "28 Dec 2026 to 3 Jan 2027"
        );
    }

    #[test]
    fn periods_read_as_people_say_them() {
        use caresync_core::metrics::PeriodKind;
        assert_eq!(
            period(PeriodKind::Week, "2026-11-23", "2026-W48", false),
            "w/c 23 Nov 2026"
        );
        assert_eq!(
            period(PeriodKind::Week, "2026-11-23", "2026-W48", true),
            "w/c 23 Nov"
        );
        assert_eq!(
            period(PeriodKind::Month, "2026-11-01", "2026-11", false),
            "November 2026"
        );
        assert_eq!(
            period(PeriodKind::Day, "2026-11-25", "2026-11-25", false),
            "Wed 25 Nov 2026"
        );
        assert_eq!(period(PeriodKind::Week, "", "2026-W48", false), "2026-W48");
    }
}
