//! Per-visit facts in the store: the rows `caresync_core::metrics::VisitFacts` are kept in, and
//! the queries that sum them into reports. Shared by both backends (the SQL is written once with
//! `$n` placeholders; SQLite takes `?n`).
//!
//! Facts are versioned: each commit that changes a visit closes its current version
//! (`valid_to` = the commit's time) and opens a new one, so a report `as_of` T reads the version
//! that stood at T: the schedule, events, amendments and contract rules as the server knew them.
//! The SQL only sums columns and compares the stored instants with `as_of`; what each column
//! means is decided in `caresync_core::metrics::facts`.

use super::{AmendmentRow, EventRow, Result, StoreError, VisitRow};
use caresync_core::domain::*;
use caresync_core::metrics::{
    ContinuityWeek, DayMinutes, DayTally, FlagCounts, Punctuality, ReportRow, TallyKey, TimeCorrection,
    UnitFacts, VisitFacts, VisitInputs, VisitRecord,
};
use caresync_core::ClockEvent;
use std::collections::HashMap;
use std::sync::LazyLock;

/// What one report reads, in one snapshot.
#[derive(Clone, Debug, Default)]
pub struct SnapshotQuery {
    /// Planned starts in `[from, to)`.
    pub from: Millis,
    pub to: Millis,
    pub as_of: Millis,
    /// The agency's UTC offset over the range (`caresync_core::metrics::facts::utc_offsets`).
    pub offsets: Vec<(Millis, i64)>,
    /// Punctuality counts per local day and this key.
    pub tallies: Option<TallyKey>,
    /// Punctuality counts per local day and contract (for KPI rows).
    pub by_contract: bool,
    pub reconciliation: bool,
    pub continuity: bool,
    /// The visits' facts themselves (alerts, one visit's figures).
    pub visits: bool,
    /// Only this visit (with `visits`). Then `people` holds only its carers, and `contracts` and
    /// `devices` are empty.
    pub visit: Option<VisitId>,
}

/// The carers of a single visit's read, each once: the people [`SnapshotQuery::visit`] reads.
pub fn one_visits_carers(visits: &[VisitFacts]) -> Vec<PersonId> {
    let mut carers: Vec<PersonId> = visits
        .iter()
        .flat_map(|v| v.carers.iter().map(|c| c.carer_id))
        .collect();
    carers.sort();
    carers.dedup();
    carers
}

/// One consistent read for one report.
#[derive(Clone, Debug, Default)]
pub struct ReportSnapshot {
    pub tallies: Vec<DayTally>,
    pub by_contract: Vec<DayTally>,
    pub reconciliation: Vec<DayMinutes>,
    pub continuity: Vec<ContinuityWeek>,
    pub visits: Vec<VisitFacts>,
    /// Contracts with their rules as they stood at `as_of`.
    pub contracts: Vec<super::Contract>,
    pub people: Vec<super::Person>,
    pub devices: Vec<super::Device>,
}

/// The narrow input of the metrics, from a visit's projected rows.
pub fn record_from_rows(row: &VisitRow, events: &[EventRow], amendments: &[AmendmentRow]) -> VisitRecord {
    VisitRecord {
        visit_id: row.visit_id,
        client_id: row.client_id,
        contract_id: row.contract_id,
        carers: row.carers.clone(),
        planned_start: row.planned_start,
        planned_end: row.planned_end,
        cancelled: row.status == VisitStatus::Cancelled,
        chargeable: row.chargeable,
        events: events
            .iter()
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
        corrections: amendments
            .iter()
            .map(|a| TimeCorrection {
                id: a.amendment_id,
                carer_id: a.carer_id,
                time: a.time,
                corrected_time: a.corrected_time,
                written_at: a.written_at,
            })
            .collect(),
    }
}

pub fn inputs(client_location: Option<Location>, events: &[EventRow]) -> VisitInputs {
    VisitInputs {
        client_location,
        received_at: events.iter().map(|e| (e.event_id, e.received_at)).collect(),
    }
}

/// The columns of one unit (a visit, or a carer's part of it), in table order.
pub const UNIT_COLS: &str =
    "cancelled, attended, clock_in, clock_out, on_time, late, early, start_offset_ms, \
     duration_ms, short, overrun, electronic, location_checked, location_verified, partially_attended, \
     overdue_after, missed_after, open_after, flagged_events, unverified_time_events, clock_skew_events, \
     future_time_events";
pub const UNIT_WIDTH: usize = 22;

/// The visit-level columns beyond the unit's.
pub const VISIT_COLS: &str =
    "visit_id, contract_id, client_id, planned_start, planned_end, carers, chargeable, \
     authorised_ms, delivered_ms, billable_minutes";

/// A unit's values, in [`UNIT_COLS`] order.
pub fn unit_values(u: &UnitFacts) -> [Option<i64>; UNIT_WIDTH] {
    let b = |v: bool| Some(i64::from(v));
    let p = |want: Punctuality| b(u.punctuality == Some(want));
    [
        b(u.cancelled),
        b(u.attended),
        u.clock_in,
        u.clock_out,
        p(Punctuality::OnTime),
        p(Punctuality::Late),
        p(Punctuality::Early),
        u.start_offset_ms,
        u.duration_ms,
        b(u.short),
        b(u.overrun),
        b(u.electronic),
        b(u.location_verified.is_some()),
        b(u.location_verified == Some(true)),
        b(u.partially_attended),
        u.overdue_after,
        u.missed_after,
        u.open_after,
        Some(i64::from(u.flags.flagged)),
        Some(i64::from(u.flags.unverified_time)),
        Some(i64::from(u.flags.clock_skew)),
        Some(i64::from(u.flags.future_time)),
    ]
}

/// A unit back from its values.
pub fn unit_from(v: &[Option<i64>]) -> Result<UnitFacts> {
    if v.len() != UNIT_WIDTH {
        return Err(StoreError::Corrupt("facts row of the wrong width".into()));
    }
    let b = |i: usize| v[i].unwrap_or(0) != 0;
    let n = |i: usize| u32::try_from(v[i].unwrap_or(0)).unwrap_or(u32::MAX);
    let punctuality = if b(4) {
        Some(Punctuality::OnTime)
    } else if b(5) {
        Some(Punctuality::Late)
    } else if b(6) {
        Some(Punctuality::Early)
    } else {
        None
    };
    Ok(UnitFacts {
        cancelled: b(0),
        attended: b(1),
        clock_in: v[2],
        clock_out: v[3],
        punctuality,
        start_offset_ms: v[7],
        duration_ms: v[8],
        short: b(9),
        overrun: b(10),
        electronic: b(11),
        location_verified: b(12).then(|| b(13)),
        partially_attended: b(14),
        overdue_after: v[15],
        missed_after: v[16],
        open_after: v[17],
        flags: FlagCounts {
            flagged: n(18),
            unverified_time: n(19),
            clock_skew: n(20),
            future_time: n(21),
        },
    })
}

/// A value to bind, for either backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Int(Option<i64>),
    Text(String),
}

/// The values of a visit-level facts row: [`VISIT_COLS`], `valid_from`, then [`UNIT_COLS`].
pub fn visit_params(f: &VisitFacts, valid_from: Millis) -> Vec<Param> {
    let assigned: Vec<String> = f.assigned().map(|c| c.to_string()).collect();
    let mut p = vec![
        Param::Text(f.visit_id.to_string()),
        Param::Text(f.contract_id.to_string()),
        Param::Text(f.client_id.to_string()),
        Param::Int(Some(f.planned_start)),
        Param::Int(Some(f.planned_end)),
        Param::Text(assigned.join(",")),
        Param::Int(Some(i64::from(f.chargeable))),
        Param::Int(Some(f.authorised_ms)),
        Param::Int(Some(f.delivered_ms)),
        Param::Int(Some(f.billable_minutes)),
        Param::Int(Some(valid_from)),
    ];
    p.extend(unit_values(&f.visit).into_iter().map(Param::Int));
    p
}

/// The names of [`visit_params`]' values, in order.
fn visit_param_names() -> impl Iterator<Item = &'static str> {
    VISIT_COLS
        .split(',')
        .chain(["valid_from"])
        .chain(UNIT_COLS.split(','))
        .map(str::trim)
}

/// The columns of a visit-level version that some sums read (its carer rows aside), in the
/// order [`SumInputs`] keeps them: the text ones first, then what the slot sums read (from
/// `contract_id`, [`slot_sum_inputs`]), then the reconciliation's minutes.
pub const SUM_INPUT_COLS: [&str; 23] = [
    "client_id",
    "contract_id",
    "planned_start",
    "cancelled",
    "attended",
    "on_time",
    "late",
    "early",
    "missed_after",
    "short",
    "overrun",
    "open_after",
    "partially_attended",
    "electronic",
    "location_checked",
    "location_verified",
    "flagged_events",
    "unverified_time_events",
    "clock_skew_events",
    "future_time_events",
    "authorised_ms",
    "delivered_ms",
    "billable_minutes",
];
/// How many of [`SUM_INPUT_COLS`] are text (read as such from a row).
pub const SUM_INPUT_TEXT_COLS: usize = 2;

/// What each sums table reads of a version ([`SumInputs::slot_terms`], and `client_sums`'
/// reconciliation and continuity statements): its key's columns and what it adds up. A
/// planned start stands for its slot and its day (equal starts, equal periods). The slot sums
/// read the contract, the planned start and every unit column summed or bounded.
fn slot_sum_inputs() -> &'static [&'static str] {
    &SUM_INPUT_COLS[1..20]
}
const RECONCILIATION_INPUTS: [&str; 7] = [
    "client_id",
    "contract_id",
    "planned_start",
    "cancelled",
    "authorised_ms",
    "delivered_ms",
    "billable_minutes",
];
/// With the carer rows' carer, `assigned` and `attended`.
const CONTINUITY_INPUTS: [&str; 3] = ["client_id", "planned_start", "cancelled"];

/// Reads [`SUM_INPUT_COLS`] of the visit-level row `$1`.
pub fn sum_inputs_sql() -> String {
    format!(
        "SELECT {} FROM visit_facts WHERE fact_id = $1",
        SUM_INPUT_COLS.join(", ")
    )
}

/// Reads the carer rows of the visit-level row `$1` as [`SumInputs`] keeps them.
pub const SUM_INPUT_CARERS_SQL: &str =
    "SELECT carer_id, assigned, attended FROM carer_visit_facts WHERE fact_id = $1 ORDER BY rank";

/// What the sums read of one version of a visit's facts: compared between the standing
/// version and the next, it says which sums the new version moves. A version changes the
/// slot sums at each clock event, but the reconciliation only when times or minutes change
/// (clock-out, cancellation) and continuity only when a carer first comes or is assigned
/// (clock-in, reassignment); the others keep their rows and are not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumInputs {
    /// [`SUM_INPUT_COLS`], in order.
    values: Vec<Param>,
    /// Per carer row, by rank: carer, `assigned`, `attended`.
    carers: Vec<(String, i64, i64)>,
}

/// Which sums a new version moves (each table's −1 of the old version and +1 of the new).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    pub slots: bool,
    pub reconciliation: bool,
    pub continuity: bool,
}

impl Moved {
    /// A first version moves them all.
    pub const ALL: Moved = Moved {
        slots: true,
        reconciliation: true,
        continuity: true,
    };
}

impl SumInputs {
    /// What the sums would read of `f` written as a version whose row's values are `params`
    /// ([`visit_params`] of `f`).
    fn of(f: &VisitFacts, params: &[Param]) -> Self {
        // Where each of SUM_INPUT_COLS is among the row's values, found once.
        static AT: LazyLock<Vec<Option<usize>>> = LazyLock::new(|| {
            SUM_INPUT_COLS
                .iter()
                .map(|c| visit_param_names().position(|name| name == *c))
                .collect()
        });
        let values = AT
            .iter()
            .map(|at| {
                at.and_then(|i| params.get(i))
                    .cloned()
                    .unwrap_or(Param::Int(None))
            })
            .collect();
        let attended = UNIT_COLS
            .split(',')
            .map(str::trim)
            .position(|c| c == "attended")
            .unwrap_or(1);
        let carers = f
            .carers
            .iter()
            .map(|c| {
                (
                    c.carer_id.to_string(),
                    i64::from(c.assigned),
                    unit_values(&c.facts)[attended].unwrap_or(0),
                )
            })
            .collect();
        Self { values, carers }
    }

    /// From a stored version: [`sum_inputs_sql`]'s row (text, then integers) and
    /// [`SUM_INPUT_CARERS_SQL`]'s rows.
    pub fn stored(values: Vec<Param>, carers: Vec<(String, i64, i64)>) -> Self {
        Self { values, carers }
    }

    /// The client's id, as the facts keep it.
    pub fn client(&self) -> &str {
        self.text(0)
    }

    /// The contract's id, as the facts keep it.
    pub fn contract(&self) -> &str {
        self.text(1)
    }

    fn text(&self, i: usize) -> &str {
        match self.values.get(i) {
            Some(Param::Text(t)) => t,
            _ => "",
        }
    }

    /// An integer column of [`SUM_INPUT_COLS`] (0 if null or not one of them).
    pub fn int(&self, col: &str) -> i64 {
        match SUM_INPUT_COLS
            .iter()
            .position(|c| *c == col)
            .and_then(|i| self.values.get(i))
        {
            Some(Param::Int(Some(v))) => *v,
            _ => 0,
        }
    }

    /// A column of [`SUM_INPUT_COLS`] that may be null.
    pub fn opt(&self, col: &str) -> Option<i64> {
        match SUM_INPUT_COLS
            .iter()
            .position(|c| *c == col)
            .and_then(|i| self.values.get(i))
        {
            Some(Param::Int(v)) => *v,
            _ => None,
        }
    }

    /// What this version adds to its slot's sums, in [`SUM_COLS`] order from `visits`:
    /// `unattended` counts a version with a missed line, `unclosed` one with an open line.
    pub fn slot_terms(&self) -> [i64; SLOT_SUMS] {
        let has = |c: &str| i64::from(self.opt(c).is_some());
        [
            1,
            self.int("cancelled"),
            self.int("attended"),
            self.int("on_time"),
            self.int("late"),
            self.int("early"),
            has("missed_after"),
            self.int("short"),
            self.int("overrun"),
            has("open_after"),
            self.int("partially_attended"),
            self.int("electronic"),
            self.int("location_checked"),
            self.int("location_verified"),
            self.int("flagged_events"),
            self.int("unverified_time_events"),
            self.int("clock_skew_events"),
            self.int("future_time_events"),
        ]
    }

    /// The carer rows, by rank: carer, `assigned`, `attended`.
    pub fn carers(&self) -> impl Iterator<Item = (&str, i64, i64)> {
        self.carers
            .iter()
            .map(|(c, assigned, attended)| (c.as_str(), *assigned, *attended))
    }

    /// Which sums move from `old`'s contribution to this one's.
    pub fn moved_from(&self, old: &SumInputs) -> Moved {
        let differ = |cols: &[&str]| {
            cols.iter().any(|c| {
                let i = SUM_INPUT_COLS.iter().position(|k| k == c);
                i.is_none_or(|i| self.values.get(i) != old.values.get(i))
            })
        };
        Moved {
            slots: differ(slot_sum_inputs()),
            reconciliation: differ(&RECONCILIATION_INPUTS),
            continuity: differ(&CONTINUITY_INPUTS) || self.carers != old.carers,
        }
    }
}

/// `INSERT` of a visit-level row ([`visit_params`], then the fingerprint), placeholders from
/// `$1`, returning its `fact_id`.
pub fn insert_visit_sql() -> String {
    let n = 12 + UNIT_WIDTH;
    format!(
        "INSERT INTO visit_facts ({VISIT_COLS}, valid_from, {UNIT_COLS}, fingerprint) VALUES ({}) RETURNING fact_id",
        placeholders(1, n)
    )
}

/// A digest of everything a version holds but its time: a commit that changes no figure (a note,
/// a replayed message) keeps the standing version instead of adding an identical one.
fn fingerprint(f: &VisitFacts, params: &[Param]) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    let mut feed = |params: &[Param]| {
        for p in params {
            match p {
                Param::Int(v) => v.hash(&mut h),
                Param::Text(t) => t.hash(&mut h),
            }
        }
    };
    feed(params);
    for (rank, c) in f.carers.iter().enumerate() {
        feed(&carer_params(0, rank, c));
    }
    // Stored in a signed 64-bit column.
    h.finish() as i64
}

/// A facts version about to be written: its row's values, built once per write for the
/// fingerprint, the sums' inputs and the row (each built them again).
pub struct Version {
    /// [`visit_params`], valid from 0 until [`Version::row`] sets it.
    params: Vec<Param>,
    pub fingerprint: i64,
}

/// Where `valid_from` is among [`visit_params`]' values.
const VALID_FROM_AT: usize = 10;

impl Version {
    pub fn of(f: &VisitFacts) -> Self {
        let params = visit_params(f, 0);
        Version {
            fingerprint: fingerprint(f, &params),
            params,
        }
    }

    /// What the sums read of this version of `f` (asked only when it is written: a version
    /// with the standing one's fingerprint is not).
    pub fn sum_inputs(&self, f: &VisitFacts) -> SumInputs {
        SumInputs::of(f, &self.params)
    }

    /// What [`insert_visit_sql`] binds: the row's values valid from `at`, then the fingerprint.
    pub fn row(&self, at: Millis) -> Vec<Param> {
        let mut params = self.params.clone();
        params[VALID_FROM_AT] = Param::Int(Some(at));
        params.push(Param::Int(Some(self.fingerprint)));
        params
    }
}

/// The values of a carer row: `fact_id`, `carer_id`, `assigned`, `rank`, then [`UNIT_COLS`].
pub fn carer_params(fact_id: i64, rank: usize, c: &caresync_core::metrics::CarerFacts) -> Vec<Param> {
    let mut p = vec![
        Param::Int(Some(fact_id)),
        Param::Text(c.carer_id.to_string()),
        Param::Int(Some(i64::from(c.assigned))),
        Param::Int(Some(i64::try_from(rank).unwrap_or(i64::MAX))),
    ];
    p.extend(unit_values(&c.facts).into_iter().map(Param::Int));
    p
}

pub fn insert_carer_sql() -> String {
    format!(
        "INSERT INTO carer_visit_facts (fact_id, carer_id, assigned, rank, {UNIT_COLS}) VALUES ({})",
        placeholders(1, 4 + UNIT_WIDTH)
    )
}

fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SQL for SQLite: `?n` for `$n`.
pub fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The version of a visit's facts standing at `$3`, among visits planned in `[$1, $2)`.
const STANDING: &str =
    "f.planned_start >= $1 AND f.planned_start < $2 AND f.valid_from <= $3 AND (f.valid_to IS NULL OR f.valid_to > $3)";

/// The local day number of `f.planned_start`, by the agency's offsets (literal integers).
fn local_day(offsets: &[(Millis, i64)]) -> String {
    local_day_of("f.planned_start", offsets)
}

/// The local day number of the instant `at` (an SQL expression), by the agency's offsets.
fn local_day_of(at: &str, offsets: &[(Millis, i64)]) -> String {
    // No offsets given: UTC days.
    let mut case = format!("(CASE WHEN {at} IS NULL THEN 0");
    for (since, offset) in offsets.iter().rev() {
        case.push_str(&format!(" WHEN {at} >= {since} THEN {offset}"));
    }
    case.push_str(" ELSE 0 END)");
    let x = format!("({at} + {case})");
    format!("(({x} - ((({x} % {DAY_MS}) + {DAY_MS}) % {DAY_MS})) / {DAY_MS})")
}

/// The counts of [`ReportRow`] from unit columns of alias `u`, in its field order.
fn counts(u: &str) -> String {
    let sum = |c: &str| format!("CAST(SUM({u}.{c}) AS BIGINT)");
    let when = |cond: String| format!("CAST(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS BIGINT)");
    [
        "COUNT(*)".to_string(),
        sum("cancelled"),
        sum("attended"),
        sum("on_time"),
        sum("late"),
        sum("early"),
        when(format!("{u}.missed_after < $3")),
        when(format!("{u}.missed_after >= $3 AND {u}.overdue_after >= $3")),
        when(format!("{u}.missed_after >= $3 AND {u}.overdue_after < $3")),
        sum("short"),
        sum("overrun"),
        when(format!("{u}.open_after < $3")),
        sum("partially_attended"),
        sum("electronic"),
        sum("location_checked"),
        sum("location_verified"),
        sum("flagged_events"),
        sum("unverified_time_events"),
        sum("clock_skew_events"),
        sum("future_time_events"),
    ]
    .join(", ")
}

pub const COUNT_WIDTH: usize = 20;

/// Partial sums per contract are kept per quarter hour of planned start ([`SLOT_MS`]): every
/// time zone in use today changes its offset on a quarter hour by a multiple of one, so each
/// slot lies in one local day of any such zone and the sums need no time zone at commit (a
/// change of the agency's zone re-stamps nothing).
pub const SLOT_MS: i64 = 15 * 60_000;

/// Whether the range and the agency's offsets over it fall on slot boundaries, so that each
/// slot's sums belong to one local day of the report (else the rows are summed).
pub fn slots_fit(q: &SnapshotQuery) -> bool {
    let on = |ms: i64| ms.rem_euclid(SLOT_MS) == 0;
    on(q.from) && on(q.to) && q.offsets.iter().all(|&(since, offset)| on(since) && on(offset))
}

/// The columns of `visit_fact_sums` after its key (`slot`, `contract_id`): when its content
/// last changed, upper bounds of the standing rows' `missed_after` and `open_after`, then sums
/// of the standing (`valid_to IS NULL`) visit-level rows.
pub const SUM_COLS: &str =
    "changed_at, missed_bound, open_bound, visits, cancelled, attended, on_time, late, early, \
     unattended, short, overrun, unclosed, partially_attended, electronic, location_checked, \
     location_verified, flagged_events, unverified_time_events, clock_skew_events, future_time_events";

/// Adds a [`SlotDelta`] to its slot and contract's row: `$1` the slot, `$2` the contract,
/// `$3` `changed_at` (the later is kept), `$4` and `$5` the bounds (the larger is kept), then
/// the sums in [`SUM_COLS`] order from `visits`.
pub fn add_slot_sums_sql() -> String {
    let names: Vec<&str> = SUM_COLS.split(',').map(str::trim).collect();
    let later = |c: &str| {
        format!(
            "{c} = CASE WHEN visit_fact_sums.{c} IS NULL OR excluded.{c} > visit_fact_sums.{c} \
             THEN excluded.{c} ELSE visit_fact_sums.{c} END"
        )
    };
    let mut set: Vec<String> = names[..3].iter().map(|c| later(c)).collect();
    set.extend(
        names[3..]
            .iter()
            .map(|c| format!("{c} = visit_fact_sums.{c} + excluded.{c}")),
    );
    let values: Vec<String> = (3..=names.len() + 2)
        .map(|i| format!("CAST(${i} AS BIGINT)"))
        .collect();
    format!(
        "INSERT INTO visit_fact_sums (slot, contract_id, {SUM_COLS})
         VALUES (CAST($1 AS BIGINT), CAST($2 AS TEXT), {})
         ON CONFLICT (slot, contract_id) DO UPDATE SET {}",
        values.join(", "),
        set.join(", ")
    )
}

/// What a new version adds to a slot and contract's sums (less what the old one took away):
/// the bounds are the new version's (only an added row can raise them), the sums in
/// [`SUM_COLS`] order from `visits`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotDelta {
    pub slot: i64,
    pub contract: String,
    pub missed_bound: Option<Millis>,
    pub open_bound: Option<Millis>,
    pub sums: [i64; SLOT_SUMS],
}

/// How many sums a slot row keeps after its bounds.
pub const SLOT_SUMS: usize = 18;

/// The settled sums of slot alias `s` at `$3`: nothing in them changed after `$3`, and every
/// "now"-dependent line of their rows is already behind `$3` (all missed, all unclosed), so
/// the sums are the counts of the rows standing at `$3`.
const SETTLED: &str = "s.changed_at <= $3 AND (s.missed_bound IS NULL OR s.missed_bound < $3) \
     AND (s.open_bound IS NULL OR s.open_bound < $3)";

/// Counts per local day and contract from the slot sums where they are settled at `$3`, and
/// from the fact rows of the other slots (the last hours' visits, or all of them for an `as_of`
/// in the past). Only when [`slots_fit`].
fn contract_tallies_from_sums_sql(offsets: &[(Millis, i64)]) -> String {
    let slots =
        format!("s.slot >= CAST($1 AS BIGINT) / {SLOT_MS} AND s.slot < CAST($2 AS BIGINT) / {SLOT_MS}");
    let settled = format!(
        "SELECT {} AS d, s.contract_id AS k, s.visits AS c0, s.cancelled AS c1, s.attended AS c2,
                s.on_time AS c3, s.late AS c4, s.early AS c5, s.unattended AS c6, 0 AS c7, 0 AS c8,
                s.short AS c9, s.overrun AS c10, s.unclosed AS c11, s.partially_attended AS c12,
                s.electronic AS c13, s.location_checked AS c14, s.location_verified AS c15,
                s.flagged_events AS c16, s.unverified_time_events AS c17, s.clock_skew_events AS c18,
                s.future_time_events AS c19
         FROM visit_fact_sums s WHERE {slots} AND {SETTLED} AND s.visits <> 0",
        local_day_of(&format!("(s.slot * {SLOT_MS})"), offsets)
    );
    // The slots with a contract not settled, then their rows (by the planned-start index; the
    // CROSS JOIN keeps SQLite from building an index on the contract), then only the rows of
    // a contract not settled in that slot.
    let open = format!(
        "SELECT {} AS d, f.contract_id AS k, {}
         FROM (SELECT DISTINCT s.slot FROM visit_fact_sums s WHERE {slots} AND NOT ({SETTLED})) u
         CROSS JOIN visit_facts f
         WHERE f.planned_start >= u.slot * {SLOT_MS} AND f.planned_start < u.slot * {SLOT_MS} + {SLOT_MS}
           AND {STANDING}
           AND EXISTS (SELECT 1 FROM visit_fact_sums s WHERE s.slot = u.slot AND s.contract_id = f.contract_id
                       AND NOT ({SETTLED}))",
        local_day(offsets),
        row_counts("f")
    );
    let sums: Vec<String> = (0..COUNT_WIDTH)
        .map(|i| format!("CAST(SUM(t.c{i}) AS BIGINT)"))
        .collect();
    format!(
        "SELECT t.d, t.k, {} FROM ({settled} UNION ALL {open}) t GROUP BY t.d, t.k",
        sums.join(", ")
    )
}

/// The same counts for one row of alias `u`, each 0 or 1 (or the row's event count), to be
/// summed outside: [`counts`] before the `SUM`.
fn row_counts(u: &str) -> String {
    let when = |cond: String| format!("CASE WHEN {cond} THEN 1 ELSE 0 END");
    [
        "1".to_string(),
        format!("{u}.cancelled"),
        format!("{u}.attended"),
        format!("{u}.on_time"),
        format!("{u}.late"),
        format!("{u}.early"),
        when(format!("{u}.missed_after < $3")),
        when(format!("{u}.missed_after >= $3 AND {u}.overdue_after >= $3")),
        when(format!("{u}.missed_after >= $3 AND {u}.overdue_after < $3")),
        format!("{u}.short"),
        format!("{u}.overrun"),
        when(format!("{u}.open_after < $3")),
        format!("{u}.partially_attended"),
        format!("{u}.electronic"),
        format!("{u}.location_checked"),
        format!("{u}.location_verified"),
        format!("{u}.flagged_events"),
        format!("{u}.unverified_time_events"),
        format!("{u}.clock_skew_events"),
        format!("{u}.future_time_events"),
    ]
    .join(", ")
}

/// Counts per local day and key: columns day, key, then [`COUNT_WIDTH`] counts.
pub fn tallies_sql(key: TallyKey, q: &SnapshotQuery) -> String {
    let offsets = &q.offsets;
    if key == TallyKey::Contract && slots_fit(q) {
        return contract_tallies_from_sums_sql(offsets);
    }
    let day = local_day(offsets);
    match key {
        TallyKey::Carer => format!(
            "SELECT {day} AS d, c.carer_id AS k, {} FROM carer_visit_facts c JOIN visit_facts f ON f.fact_id = c.fact_id
             WHERE {STANDING} GROUP BY d, k",
            counts("c")
        ),
        TallyKey::Contract | TallyKey::Client => {
            let k = if key == TallyKey::Contract { "contract_id" } else { "client_id" };
            format!(
                "SELECT {day} AS d, f.{k} AS k, {} FROM visit_facts f WHERE {STANDING} GROUP BY d, k",
                counts("f")
            )
        }
    }
}

/// A tally from its row values: day, key, counts.
pub fn tally_from(day: i64, key: String, c: &[i64]) -> Result<DayTally> {
    if c.len() != COUNT_WIDTH {
        return Err(StoreError::Corrupt("tally of the wrong width".into()));
    }
    let u = |i: usize| u64::try_from(c[i]).unwrap_or(0);
    Ok(DayTally {
        day: caresync_core::metrics::facts::day_of_number(day),
        key,
        counts: ReportRow {
            scheduled: u(0),
            cancelled: u(1),
            attended: u(2),
            on_time: u(3),
            late: u(4),
            early: u(5),
            missed: u(6),
            pending: u(7),
            overdue: u(8),
            short: u(9),
            overrun: u(10),
            no_clock_out: u(11),
            partially_attended: u(12),
            electronic: u(13),
            location_checked: u(14),
            location_verified: u(15),
            flagged_events: u(16),
            unverified_time_events: u(17),
            clock_skew_events: u(18),
            future_time_events: u(19),
            ..ReportRow::default()
        },
    })
}

/// day, client, contract, visits, cancelled, authorised, delivered, billable.
pub fn reconciliation_sql(offsets: &[(Millis, i64)]) -> String {
    format!(
        "SELECT {} AS d, f.client_id, f.contract_id, COUNT(*), CAST(SUM(f.cancelled) AS BIGINT),
                CAST(SUM(f.authorised_ms) AS BIGINT), CAST(SUM(f.delivered_ms) AS BIGINT),
                CAST(SUM(f.billable_minutes) AS BIGINT)
         FROM visit_facts f WHERE {STANDING} GROUP BY d, f.client_id, f.contract_id",
        local_day(offsets)
    )
}

/// Monday of a local day number (day 0, 1970-01-01, was a Thursday).
fn week(day: &str) -> String {
    format!("({day} - ((({day} % 7) + 10) % 7))")
}

/// week, client, visits (not cancelled).
pub fn continuity_visits_sql(offsets: &[(Millis, i64)]) -> String {
    format!(
        "SELECT {} AS w, f.client_id, COUNT(*) FROM visit_facts f
         WHERE {STANDING} AND f.cancelled = 0 GROUP BY w, f.client_id",
        week(&local_day(offsets))
    )
}

/// week, client, distinct carers who came, distinct carers assigned (visits not cancelled).
pub fn continuity_carers_sql(offsets: &[(Millis, i64)]) -> String {
    format!(
        "SELECT {} AS w, f.client_id,
                COUNT(DISTINCT CASE WHEN c.attended = 1 THEN c.carer_id END),
                COUNT(DISTINCT CASE WHEN c.assigned = 1 THEN c.carer_id END)
         FROM carer_visit_facts c JOIN visit_facts f ON f.fact_id = c.fact_id
         WHERE {STANDING} AND f.cancelled = 0 GROUP BY w, f.client_id",
        week(&local_day(offsets))
    )
}

/// Merges the two continuity queries.
pub fn continuity_weeks(
    visits: Vec<(i64, ClientId, i64)>,
    carers: Vec<(i64, ClientId, i64, i64)>,
) -> Vec<ContinuityWeek> {
    let mut weeks: HashMap<(i64, ClientId), ContinuityWeek> = HashMap::new();
    for (w, client_id, n) in visits {
        weeks.entry((w, client_id)).or_default().visits = u64::try_from(n).unwrap_or(0);
    }
    for (w, client_id, came, assigned) in carers {
        let e = weeks.entry((w, client_id)).or_default();
        e.distinct_carers = u64::try_from(came).unwrap_or(0);
        e.distinct_carers_scheduled = u64::try_from(assigned).unwrap_or(0);
    }
    weeks
        .into_iter()
        .map(|((w, client_id), mut c)| {
            c.week_start = caresync_core::metrics::facts::day_of_number(w);
            c.client_id = client_id;
            c
        })
        .collect()
}

/// Visit-level rows standing at `$3` in `[$1, $2)` (optionally one visit, `$4`): fact_id,
/// [`VISIT_COLS`], [`UNIT_COLS`].
pub fn visits_sql(one: bool) -> String {
    let cols = format!(
        "f.fact_id, {}, {}",
        prefixed("f", VISIT_COLS),
        prefixed("f", UNIT_COLS)
    );
    let only = if one { " AND f.visit_id = $4" } else { "" };
    format!("SELECT {cols} FROM visit_facts f WHERE {STANDING}{only} ORDER BY f.planned_start, f.visit_id")
}

/// Their carer rows: fact_id, carer_id, assigned, [`UNIT_COLS`].
pub fn carers_sql(one: bool) -> String {
    let only = if one { " AND f.visit_id = $4" } else { "" };
    format!(
        "SELECT c.fact_id, c.carer_id, c.assigned, {} FROM carer_visit_facts c JOIN visit_facts f ON f.fact_id = c.fact_id
         WHERE {STANDING}{only} ORDER BY c.fact_id, c.rank",
        prefixed("c", UNIT_COLS)
    )
}

fn prefixed(alias: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A visit-level row read back (before its carers are attached).
pub struct VisitFactsRow {
    pub fact_id: i64,
    pub facts: VisitFacts,
}

pub fn parse<T: std::str::FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad value {s:?}")))
}

/// From `fact_id`, the visit columns' text and integer values, and the unit values.
#[allow(clippy::too_many_arguments)]
pub fn visit_row_from(
    fact_id: i64,
    visit_id: &str,
    contract_id: &str,
    client_id: &str,
    planned: (i64, i64),
    chargeable: i64,
    sums: (i64, i64, i64),
    unit: &[Option<i64>],
) -> Result<VisitFactsRow> {
    Ok(VisitFactsRow {
        fact_id,
        facts: VisitFacts {
            visit_id: parse(visit_id)?,
            contract_id: parse(contract_id)?,
            client_id: parse(client_id)?,
            planned_start: planned.0,
            planned_end: planned.1,
            visit: unit_from(unit)?,
            carers: vec![],
            chargeable: chargeable != 0,
            authorised_ms: sums.0,
            delivered_ms: sums.1,
            billable_minutes: sums.2,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Version::row`] sets `valid_from` where the row's values keep it.
    #[test]
    fn valid_from_is_where_the_row_keeps_it() {
        assert_eq!(
            visit_param_names().position(|name| name == "valid_from"),
            Some(VALID_FROM_AT)
        );
    }
}
