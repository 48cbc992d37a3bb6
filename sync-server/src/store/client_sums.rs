//! Per-client sums for the weekly reconciliation and continuity, kept by the commit path beside
//! the slot sums (`facts::add_slot_sums_sql`), so a month's reconciliation or continuity reads its
//! sums instead of every fact row. Shared by both backends (`$n` placeholders, as in `facts`).
//!
//! Both reports are per *local* day or week, and a local day needs a time zone at commit. The
//! sums are kept in one fixed zone, [`SUMS_ZONE`] (the agency zone every deployment uses today);
//! a report reads them only when its zone gives the same local days over its range
//! ([`SumsRange::of`]), else it sums the fact rows as before. A change of the agency's zone
//! would therefore make these reports slow, never wrong.
//!
//! Each period is kept twice: per ISO week (`days` = 7, keyed by its Monday) for the weeks wholly
//! inside a report's range, and per day (`days` = 1) for the days of the weeks it only partly
//! covers. Every column is independent of the report's "now" (no overdue or missed line), so
//! a sums row gives the counts of the versions standing at `as_of` exactly when nothing in it
//! changed after `as_of` (`changed_at <= as_of`); a report that meets a row changed later is
//! answered from the fact rows instead (exact, slower). Rows are never deleted (a period emptied
//! by a reschedule keeps its row with zero visits and its `changed_at`), so that test sees every
//! change.
//!
//! Continuity counts *distinct* carers, which do not add up across visits: the carers' own visit
//! counts are kept per period, client and carer (`continuity_carer_sums`), and the period's row
//! (`continuity_sums`) holds how many of them are positive, moved at each commit by the carers of
//! the committed row whose own count turns from or to zero.

use super::facts::{Moved, SlotDelta, SnapshotQuery, SumInputs, SLOT_MS, SLOT_SUMS};
use super::Result;
use caresync_core::domain::*;
use caresync_core::metrics::facts::utc_offsets;
use caresync_core::metrics::AgencyTimeZone;
use chrono::{DateTime, Offset, TimeZone};
use std::collections::BTreeMap;

/// The zone the per-client sums' days and weeks are local to.
pub const SUMS_ZONE: chrono_tz::Tz = chrono_tz::Europe::London;

/// [`SUMS_ZONE`]'s offset from UTC at `at`, in milliseconds.
pub fn offset_at(at: Millis) -> i64 {
    DateTime::from_timestamp_millis(at).map_or(0, |utc| {
        i64::from(
            SUMS_ZONE
                .offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc(),
        ) * 1000
    })
}

/// The local day (days since 1970-01-01) a visit planned at `at` is summed under: by the offset
/// at the start of `at`'s UTC hour, so the migration can sum by hour ([`fill_sql`]). London has
/// changed its offset only on whole UTC hours since 1847, so this is the local day; a report
/// checks it over its own range ([`SumsRange::of`]).
pub fn sums_day(at: Millis) -> i64 {
    let hour = at.div_euclid(HOUR_MS);
    at.saturating_add(offset_at(hour.saturating_mul(HOUR_MS)))
        .div_euclid(DAY_MS)
}

/// The Monday of a day number (day 0, 1970-01-01, was a Thursday).
pub fn monday(day: i64) -> i64 {
    day - (day + 3).rem_euclid(7)
}

/// What a report reads from the sums: whole weeks `[weeks.0, weeks.1)` (their Mondays), and
/// the days `[a, b)` of each of `days` (the weeks the range only partly covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SumsRange {
    pub weeks: (i64, i64),
    pub days: [(i64, i64); 2],
}

impl SumsRange {
    /// When the report's local days are [`SUMS_ZONE`]'s days over its range: the same UTC
    /// offsets, changing on whole hours, and the range from a local midnight to a local
    /// midnight. Else (or if the query reads neither report) `None`: the fact rows are summed.
    pub fn of(q: &SnapshotQuery) -> Option<SumsRange> {
        if !(q.reconciliation || q.continuity) || q.from >= q.to || q.to.saturating_sub(q.from) > 400 * DAY_MS
        {
            return None;
        }
        if q.offsets != utc_offsets(q.from, q.to, AgencyTimeZone(SUMS_ZONE))
            || q.offsets.iter().any(|(since, _)| since.rem_euclid(HOUR_MS) != 0)
        {
            return None;
        }
        let midnight = |at: Millis| {
            let local = at.checked_add(offset_at(at))?;
            (local.rem_euclid(DAY_MS) == 0).then_some(local.div_euclid(DAY_MS))
        };
        let (from, to) = (midnight(q.from)?, midnight(q.to)?);
        let (first, last) = (monday(from + 6), monday(to));
        Some(if first < last {
            SumsRange {
                weeks: (first, last),
                days: [(from, first), (last, to)],
            }
        } else {
            SumsRange {
                weeks: (0, 0),
                days: [(from, to), (0, 0)],
            }
        })
    }
}

/// How the sums' ids are kept: as the facts' text (the embedded store), or as `UUID` (PostgreSQL:
/// 16 bytes a key instead of 36 characters, narrower index tuples, and read back by binary `COPY`
/// without parsing text; a report reads hundreds of thousands of rows, two ids each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids {
    Text,
    Uuid,
}

impl Ids {
    /// The facts' text id `expr` as the sums keep it.
    fn of(self, expr: &str) -> String {
        match self {
            Ids::Text => expr.to_string(),
            Ids::Uuid => format!("CAST({expr} AS UUID)"),
        }
    }
}

/// `changed_at = the later of the two`, on upsert.
fn later(table: &str) -> String {
    format!(
        "changed_at = CASE WHEN excluded.changed_at > {table}.changed_at THEN excluded.changed_at \
         ELSE {table}.changed_at END"
    )
}

/// The reconciliation sums' columns after the key (`days`, `start_day`, `client_id`,
/// `contract_id`).
pub const RECONCILIATION_COLS: [&str; 6] = [
    "changed_at",
    "visits",
    "cancelled",
    "authorised_ms",
    "delivered_ms",
    "billable_minutes",
];

/// A text parameter as the sums keep ids.
fn id_param(ids: Ids, n: usize) -> String {
    match ids {
        Ids::Text => format!("${n}"),
        Ids::Uuid => format!("CAST(CAST(${n} AS TEXT) AS UUID)"),
    }
}

/// Adds [`ReconciliationDelta`] `$1`..`$10` (period, client, contract, then `changed_at` and
/// the five sums) to its row, `changed_at` the later.
pub fn add_reconciliation_sql(ids: Ids) -> String {
    let add: Vec<String> = RECONCILIATION_COLS[1..]
        .iter()
        .map(|c| format!("{c} = reconciliation_sums.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO reconciliation_sums (days, start_day, client_id, contract_id, {})
         VALUES (CAST($1 AS BIGINT), CAST($2 AS BIGINT), {}, {}, CAST($5 AS BIGINT), CAST($6 AS BIGINT),
                 CAST($7 AS BIGINT), CAST($8 AS BIGINT), CAST($9 AS BIGINT), CAST($10 AS BIGINT))
         ON CONFLICT (days, start_day, client_id, contract_id) DO UPDATE SET {}, {}",
        RECONCILIATION_COLS.join(", "),
        id_param(ids, 3),
        id_param(ids, 4),
        later("reconciliation_sums"),
        add.join(", ")
    )
}

/// Adds [`CarerDelta`] `$1`..`$6` (period, client, carer, came, assigned) to the carer's row,
/// returning its counts after.
pub fn add_carer_sql(ids: Ids) -> String {
    format!(
        "INSERT INTO continuity_carer_sums (days, start_day, client_id, carer_id, came, assigned)
         VALUES (CAST($1 AS BIGINT), CAST($2 AS BIGINT), {}, {}, CAST($5 AS BIGINT), CAST($6 AS BIGINT))
         ON CONFLICT (days, start_day, client_id, carer_id) DO UPDATE SET
             came = continuity_carer_sums.came + excluded.came,
             assigned = continuity_carer_sums.assigned + excluded.assigned
         RETURNING came, assigned",
        id_param(ids, 3),
        id_param(ids, 4),
    )
}

/// Adds [`ContinuityDelta`] `$1`..`$7` (period, client, `changed_at`, visits, carers who came,
/// carers assigned) to its row, `changed_at` the later.
pub fn add_continuity_sql(ids: Ids) -> String {
    format!(
        "INSERT INTO continuity_sums (days, start_day, client_id, changed_at, visits, carers_came, carers_assigned)
         VALUES (CAST($1 AS BIGINT), CAST($2 AS BIGINT), {}, CAST($4 AS BIGINT), CAST($5 AS BIGINT),
                 CAST($6 AS BIGINT), CAST($7 AS BIGINT))
         ON CONFLICT (days, start_day, client_id) DO UPDATE SET {},
             visits = continuity_sums.visits + excluded.visits,
             carers_came = continuity_sums.carers_came + excluded.carers_came,
             carers_assigned = continuity_sums.carers_assigned + excluded.carers_assigned",
        id_param(ids, 3),
        later("continuity_sums"),
    )
}

/// What a new version adds to a reconciliation sums row (less what the old one took away).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconciliationDelta {
    pub days: i64,
    pub start_day: i64,
    pub client: String,
    pub contract: String,
    pub visits: i64,
    pub cancelled: i64,
    pub authorised_ms: i64,
    pub delivered_ms: i64,
    pub billable_minutes: i64,
}

/// What a new version adds to one carer's counts for a client and period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarerDelta {
    pub days: i64,
    pub start_day: i64,
    pub client: String,
    pub carer: String,
    pub came: i64,
    pub assigned: i64,
}

/// What a new version adds to a client's continuity row for a period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContinuityDelta {
    pub days: i64,
    pub start_day: i64,
    pub client: String,
    pub visits: i64,
    pub carers_came: i64,
    pub carers_assigned: i64,
}

/// A backend's four upserts ([`super::facts::add_slot_sums_sql`], [`add_reconciliation_sql`],
/// [`add_carer_sql`], [`add_continuity_sql`]).
pub trait SumsWriter {
    fn add_slots(&mut self, d: &SlotDelta, at: Millis) -> Result<()>;
    fn add_reconciliation(&mut self, d: &ReconciliationDelta, at: Millis) -> Result<()>;
    /// The carer's counts (came, assigned) after the addition.
    fn add_carer(&mut self, d: &CarerDelta) -> Result<(i64, i64)>;
    fn add_continuity(&mut self, d: &ContinuityDelta, at: Millis) -> Result<()>;
}

/// The two periods a version planned at `planned` is summed under: its week (7 days from its
/// Monday) and its day.
fn periods_of(planned: Millis) -> [(i64, i64); 2] {
    let day = sums_day(planned);
    [(7, monday(day)), (1, day)]
}

/// The sums (the contract's slots, the client's reconciliation and continuity) move, at `at`,
/// from a visit's standing version (`old`, what the sums read of it; `None` for its first) to
/// its new one, in the tables `moved` names. The difference is worked out here and each sums
/// row written once: a −1 statement for the old version and a +1 for the new one, each summing
/// rows in SQL, wrote the same rows twice.
///
/// Continuity counts distinct carers: a carer's own count is added to first, and the period's
/// distinct carers move by those whose count turned from zero (+1) or to zero (−1): the count
/// before is the count after less the difference.
pub fn move_sums(
    w: &mut dyn SumsWriter,
    moved: Moved,
    old: Option<&SumInputs>,
    new: &SumInputs,
    at: Millis,
) -> Result<()> {
    let sides: Vec<(i64, &SumInputs)> = old.map(|o| (-1, o)).into_iter().chain([(1, new)]).collect();
    if moved.slots {
        let mut rows: BTreeMap<(i64, &str), SlotDelta> = BTreeMap::new();
        for (s, v) in &sides {
            let slot = v.int("planned_start").div_euclid(SLOT_MS);
            let row = rows.entry((slot, v.contract())).or_insert_with(|| SlotDelta {
                slot,
                contract: v.contract().to_string(),
                missed_bound: None,
                open_bound: None,
                sums: [0; SLOT_SUMS],
            });
            for (sum, term) in row.sums.iter_mut().zip(v.slot_terms()) {
                *sum += s * term;
            }
            if *s > 0 {
                (row.missed_bound, row.open_bound) = (v.opt("missed_after"), v.opt("open_after"));
            }
        }
        for row in rows.values() {
            w.add_slots(row, at)?;
        }
    }
    if moved.reconciliation {
        let mut rows: BTreeMap<(i64, i64, &str, &str), [i64; 5]> = BTreeMap::new();
        for (s, v) in &sides {
            for (days, start) in periods_of(v.int("planned_start")) {
                let row = rows.entry((days, start, v.client(), v.contract())).or_default();
                row[0] += s;
                row[1] += s * v.int("cancelled");
                row[2] += s * v.int("authorised_ms");
                row[3] += s * v.int("delivered_ms");
                row[4] += s * v.int("billable_minutes");
            }
        }
        for (
            (days, start_day, client, contract),
            [visits, cancelled, authorised_ms, delivered_ms, billable_minutes],
        ) in rows
        {
            let delta = ReconciliationDelta {
                days,
                start_day,
                client: client.to_string(),
                contract: contract.to_string(),
                visits,
                cancelled,
                authorised_ms,
                delivered_ms,
                billable_minutes,
            };
            w.add_reconciliation(&delta, at)?;
        }
    }
    if moved.continuity {
        let mut carers: BTreeMap<(i64, i64, &str, &str), (i64, i64)> = BTreeMap::new();
        let mut periods: BTreeMap<(i64, i64, &str), ContinuityDelta> = BTreeMap::new();
        for (s, v) in &sides {
            let cancelled = v.int("cancelled");
            for (days, start) in periods_of(v.int("planned_start")) {
                let period = periods.entry((days, start, v.client())).or_default();
                period.visits += s * (1 - cancelled);
                if cancelled != 0 {
                    continue;
                }
                for (carer, assigned, attended) in v.carers() {
                    let counts = carers.entry((days, start, v.client(), carer)).or_default();
                    counts.0 += s * attended;
                    counts.1 += s * assigned;
                }
            }
        }
        let turned = |after: i64, difference: i64| match (after, difference) {
            (a, d) if d != 0 && a > 0 && a == d => 1,
            (0, d) if d < 0 => -1,
            _ => 0,
        };
        for ((days, start_day, client, carer), (came, assigned)) in carers {
            if came == 0 && assigned == 0 {
                continue;
            }
            let delta = CarerDelta {
                days,
                start_day,
                client: client.to_string(),
                carer: carer.to_string(),
                came,
                assigned,
            };
            let (came_now, assigned_now) = w.add_carer(&delta)?;
            if let Some(period) = periods.get_mut(&(days, start_day, client)) {
                period.carers_came += turned(came_now, came);
                period.carers_assigned += turned(assigned_now, assigned);
            }
        }
        for ((days, start_day, client), period) in periods {
            let delta = ContinuityDelta {
                days,
                start_day,
                client: client.to_string(),
                ..period
            };
            w.add_continuity(&delta, at)?;
        }
    }
    Ok(())
}

/// The name of the temporary table [`fill_sql`] reads: each UTC hour (`hour`) that a fact row's
/// planned start falls in, with [`SUMS_ZONE`]'s offset at its start (`offset_ms`).
pub const HOURS_TABLE: &str = "sums_hours";

/// The UTC hour of `at` (an SQL expression of milliseconds), floored.
pub fn hour_of(at: &str) -> String {
    format!("(({at} - ((({at} % {HOUR_MS}) + {HOUR_MS}) % {HOUR_MS})) / {HOUR_MS})")
}

/// The statements that sum the standing fact rows into the (empty) tables, as the commit path
/// would have kept them, given [`HOURS_TABLE`]: the migration that creates the tables, and the
/// bench that writes facts in bulk. Every version counts towards `changed_at`, the standing ones
/// towards the sums (as `visit_fact_sums` is filled).
pub fn fill_sql() -> [String; 3] {
    fill_sql_with(Ids::Text)
}

/// [`fill_sql`] for sums keeping `ids`.
pub fn fill_sql_with(ids: Ids) -> [String; 3] {
    let (client, contract, carer) = (
        ids.of("f.client_id"),
        ids.of("f.contract_id"),
        ids.of("c.carer_id"),
    );
    let x = format!(
        "(f.planned_start + (SELECT h.offset_ms FROM {HOURS_TABLE} h WHERE h.hour = {}))",
        hour_of("f.planned_start")
    );
    let day = format!("(({x} - ((({x} % {DAY_MS}) + {DAY_MS}) % {DAY_MS})) / {DAY_MS})");
    let start = "(CASE WHEN k.days = 7 THEN (v.d - (((v.d % 7) + 10) % 7)) ELSE v.d END)";
    let kinds = "(SELECT 7 AS days UNION ALL SELECT 1 AS days) k";
    let changed =
        "CASE WHEN f.valid_to IS NULL OR f.valid_to < f.valid_from THEN f.valid_from ELSE f.valid_to END";
    let standing = "CASE WHEN f.valid_to IS NULL THEN 1 ELSE 0 END";
    let reconciliation = format!(
        "INSERT INTO reconciliation_sums (days, start_day, client_id, contract_id, {})
         SELECT k.days, {start} AS sd, v.client_id, v.contract_id, MAX(v.changed), SUM(v.standing),
                SUM(v.standing * v.cancelled), SUM(v.standing * v.authorised_ms),
                SUM(v.standing * v.delivered_ms), SUM(v.standing * v.billable_minutes)
         FROM (SELECT {day} AS d, {client} AS client_id, {contract} AS contract_id, {changed} AS changed, {standing} AS standing,
                      f.cancelled, f.authorised_ms, f.delivered_ms, f.billable_minutes
               FROM visit_facts f) v CROSS JOIN {kinds}
         GROUP BY k.days, sd, v.client_id, v.contract_id",
        RECONCILIATION_COLS.join(", ")
    );
    let carers = format!(
        "INSERT INTO continuity_carer_sums (days, start_day, client_id, carer_id, came, assigned)
         SELECT k.days, {start} AS sd, v.client_id, {carer}, SUM(c.attended), SUM(c.assigned)
         FROM (SELECT {day} AS d, f.fact_id, {client} AS client_id FROM visit_facts f
               WHERE f.valid_to IS NULL AND f.cancelled = 0) v
         JOIN carer_visit_facts c ON c.fact_id = v.fact_id CROSS JOIN {kinds}
         GROUP BY k.days, sd, v.client_id, {carer}"
    );
    let count = |what: &str| {
        format!(
            "(SELECT COUNT(*) FROM continuity_carer_sums c WHERE c.days = t.days AND c.start_day = t.sd
                  AND c.client_id = t.client_id AND c.{what} > 0)"
        )
    };
    let continuity = format!(
        "INSERT INTO continuity_sums (days, start_day, client_id, changed_at, visits, carers_came, carers_assigned)
         SELECT t.days, t.sd, t.client_id, t.changed, t.visits, {}, {}
         FROM (SELECT k.days, {start} AS sd, v.client_id, MAX(v.changed) AS changed,
                      SUM(v.standing * (1 - v.cancelled)) AS visits
               FROM (SELECT {day} AS d, {client} AS client_id, {changed} AS changed, {standing} AS standing, f.cancelled
                     FROM visit_facts f) v CROSS JOIN {kinds}
               GROUP BY k.days, sd, v.client_id) t",
        count("came"),
        count("assigned")
    );
    [reconciliation, carers, continuity]
}

/// Empties the tables before [`fill_sql`] (a re-run migration, or the bench's bulk facts).
pub const EMPTY_SQL: [&str; 3] = [
    "DELETE FROM reconciliation_sums",
    "DELETE FROM continuity_sums",
    "DELETE FROM continuity_carer_sums",
];

/// The UTC hours the fact rows' planned starts fall in (to fill [`HOURS_TABLE`]).
pub fn hours_sql() -> String {
    format!(
        "SELECT DISTINCT {} FROM visit_facts f",
        hour_of("f.planned_start")
    )
}

/// The sums rows whose start day is in `[$a, $b)` for the three ranges of a [`SumsRange`]
/// (`$1`–`$6`: weeks, then the two day ranges), with a row kept if it has visits or changed
/// after `$7`.
fn in_range(table: &str, cols: &str) -> String {
    let part = |days: u8, a: u8, b: u8| {
        format!(
            "SELECT {cols} FROM {table} s WHERE s.days = {days} AND s.start_day >= CAST(${a} AS BIGINT)
                 AND s.start_day < CAST(${b} AS BIGINT) AND (s.visits <> 0 OR s.changed_at > CAST($7 AS BIGINT))"
        )
    };
    format!(
        "{} UNION ALL {} UNION ALL {}",
        part(7, 1, 2),
        part(1, 3, 4),
        part(1, 5, 6)
    )
}

/// The reconciliation from the sums: period start day, client, contract, `changed_at`, visits,
/// cancelled, authorised, delivered, billable. A week's row stands for its Monday (the metrics
/// sum days into weeks). Parameters: [`SumsRange::params`], then `as_of`.
pub fn reconciliation_sql() -> String {
    in_range(
        "reconciliation_sums",
        "s.start_day, s.client_id, s.contract_id, s.changed_at, s.visits, s.cancelled, s.authorised_ms,
         s.delivered_ms, s.billable_minutes",
    )
}

/// Continuity of the whole weeks and the days of partial weeks: `days` (7 or 1), period start
/// day, client, `changed_at`, visits not cancelled, carers who came, carers assigned (of a day
/// row: of that day alone, so unused). Parameters as [`reconciliation_sql`].
pub fn continuity_sql() -> String {
    in_range(
        "continuity_sums",
        "s.days, s.start_day, s.client_id, s.changed_at, s.visits, s.carers_came, s.carers_assigned",
    )
}

/// The carers' day rows of the partial weeks (their days `[$1, $2)` and `[$3, $4)`): day,
/// client, carer, visits come to, visits assigned to. Counted by [`distinct_carers`]: a
/// `COUNT(DISTINCT …)` by week and client sorted them on disk on PostgreSQL (170 ms for the
/// 100,000 rows of a month's three partial-week days), where counting them here takes a few.
pub fn continuity_partial_days_sql() -> String {
    let part = |a: u8, b: u8| {
        format!(
            "SELECT c.start_day, c.client_id, c.carer_id, c.came, c.assigned FROM continuity_carer_sums c
             WHERE c.days = 1 AND c.start_day >= CAST(${a} AS BIGINT) AND c.start_day < CAST(${b} AS BIGINT)
               AND (c.came > 0 OR c.assigned > 0)"
        )
    };
    format!("{} UNION ALL {}", part(1, 2), part(3, 4))
}

/// Per week (its Monday) and client, the distinct carers who came and who were assigned, from
/// [`continuity_partial_days_sql`]'s rows: (day, client, carer, came, assigned).
pub fn distinct_carers(mut days: Vec<(i64, ClientId, PersonId, i64, i64)>) -> Vec<(i64, ClientId, i64, i64)> {
    for d in &mut days {
        d.0 = monday(d.0);
    }
    days.sort_unstable_by_key(|d| (d.0, d.1, d.2));
    let mut out: Vec<(i64, ClientId, i64, i64)> = Vec::new();
    let mut at = 0;
    while at < days.len() {
        let (week, client, carer) = (days[at].0, days[at].1, days[at].2);
        let (mut came, mut assigned) = (false, false);
        while at < days.len() && (days[at].0, days[at].1, days[at].2) == (week, client, carer) {
            came |= days[at].3 > 0;
            assigned |= days[at].4 > 0;
            at += 1;
        }
        match out.last_mut() {
            Some(last) if (last.0, last.1) == (week, client) => {
                last.2 += i64::from(came);
                last.3 += i64::from(assigned);
            }
            _ => out.push((week, client, i64::from(came), i64::from(assigned))),
        }
    }
    out
}

impl SumsRange {
    /// `$1`–`$6` of the reads: weeks, then the two day ranges.
    pub fn params(&self) -> [i64; 6] {
        [
            self.weeks.0,
            self.weeks.1,
            self.days[0].0,
            self.days[0].1,
            self.days[1].0,
            self.days[1].1,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caresync_core::metrics::facts::day_number;
    use chrono::NaiveDate;

    fn london_midnight(y: i32, m: u32, d: u32) -> Millis {
        let day = NaiveDate::from_ymd_opt(y, m, d).expect("date");
        SUMS_ZONE
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("time"))
            .earliest()
            .expect("exists")
            .timestamp_millis()
    }

    fn query(from: Millis, to: Millis, tz: chrono_tz::Tz) -> SnapshotQuery {
        SnapshotQuery {
            from,
            to,
            offsets: utc_offsets(from, to, AgencyTimeZone(tz)),
            reconciliation: true,
            ..SnapshotQuery::default()
        }
    }

    #[test]
    fn days_and_weeks_are_london_days_and_iso_weeks() {
        // 00:30 BST on Monday 30 March 2026 is 23:30 UTC on the Sunday.
        let at = london_midnight(2026, 3, 30) + 30 * MINUTE_MS;
        let day = day_number(NaiveDate::from_ymd_opt(2026, 3, 30).expect("date"));
        assert_eq!(sums_day(at), day);
        assert_eq!(sums_day(at - HOUR_MS), day - 1);
        assert_eq!(monday(day), day);
        assert_eq!(monday(day + 6), day);
        assert_eq!(monday(day - 1), day - 7);
        assert_eq!(monday(0), -3);
    }

    #[test]
    fn distinct_carers_count_each_carer_once_a_week() {
        let (a, b) = (ClientId::new(), ClientId::new());
        let (x, y) = (PersonId::new(), PersonId::new());
        // Monday 30 March 2026 is day 20542; the Tuesday and the Sunday before.
        let rows = vec![
            (20543, a, x, 1, 1),
            (20542, a, x, 0, 1),
            (20542, a, y, 0, 1),
            (20541, a, y, 2, 2),
            (20543, b, y, 1, 0),
        ];
        let mut counted = distinct_carers(rows);
        counted.sort_by_key(|c| (c.0, c.1));
        let mut expected = vec![(20535, a, 1, 1), (20542, a, 1, 2), (20542, b, 1, 0)];
        expected.sort_by_key(|c| (c.0, c.1));
        assert_eq!(counted, expected);
    }

    #[test]
    fn a_month_reads_its_whole_weeks_and_the_days_of_its_partial_ones() {
        let (from, to) = (london_midnight(2026, 3, 1), london_midnight(2026, 4, 1));
        let d = |m: u32, d: u32| day_number(NaiveDate::from_ymd_opt(2026, m, d).expect("date"));
        let r = SumsRange::of(&query(from, to, SUMS_ZONE)).expect("London");
        assert_eq!(r.weeks, (d(3, 2), d(3, 30)));
        assert_eq!(r.days, [(d(3, 1), d(3, 2)), (d(3, 30), d(4, 1))]);
        // Within one week: days only.
        let r = SumsRange::of(&query(
            london_midnight(2026, 3, 3),
            london_midnight(2026, 3, 6),
            SUMS_ZONE,
        ))
        .expect("London");
        assert_eq!(r.weeks, (0, 0));
        assert_eq!(r.days, [(d(3, 3), d(3, 6)), (0, 0)]);
        // Another zone's days, or a range off midnight: the fact rows.
        assert_eq!(SumsRange::of(&query(from, to, chrono_tz::Europe::Paris)), None);
        assert_eq!(SumsRange::of(&query(from + 1, to + 1, SUMS_ZONE)), None);
        assert_eq!(SumsRange::of(&query(from + HOUR_MS, to, SUMS_ZONE)), None);
    }
}
