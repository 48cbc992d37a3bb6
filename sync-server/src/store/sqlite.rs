//! The embedded default: one SQLite file in the data directory.

use super::alerts as al;
use super::client_sums as cs;
use super::facts::{self as fx, Param, ReportSnapshot, SnapshotQuery};
use super::sign_in_cache::{SignInCache, WriteStamp};
use super::*;
use caresync_core::metrics::{ContractRules, TallyKey, VisitFacts};
use caresync_core::migration;
use caresync_core::sqlite::{self, Durability, Migration};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::sync::{Mutex, MutexGuard};

pub mod group_commit;

/// Schema steps, `sync-server/migrations/sqlite/`; index `i` moves the file from version `i` to
/// `i + 1` (`PRAGMA user_version`). Never edit a released step; add the next one.
const MIGRATIONS: &[Migration] = &[
    migration!("migrations/sqlite", "0001_people_visits_and_events"),
    migration!("migrations/sqlite", "0002_events_carry_planned_start"),
    migration!("migrations/sqlite", "0003_tokens_expire"),
    migration!("migrations/sqlite", "0004_web_sessions"),
    migration!("migrations/sqlite", "0005_visit_facts", then judge_existing_visits),
    migration!("migrations/sqlite", "0006_alerts_and_leases"),
    // Sums what 0005's backfill wrote; from here the commit path keeps them.
    migration!("migrations/sqlite", "0007_visit_fact_sums"),
    // Sums the standing facts per client; from here the commit path keeps them.
    migration!("migrations/sqlite", "0008_client_sums", then fill_client_sums),
    migration!(
        "migrations/sqlite",
        "0009_indexes_the_commit_path_no_longer_needs"
    ),
];

const _: () = assert!(sqlite::numbered_in_order(MIGRATIONS));

/// After `0005_visit_facts`: existing visits are judged (the backfill), each getting one version
/// valid from the start of time, so an `as_of` before the upgrade sees the visit as it stood at
/// the upgrade.
fn judge_existing_visits(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<VisitRow> = {
        let mut stmt = tx.prepare(&format!("SELECT {VISIT_COLS} FROM visits v"))?;
        let rows = stmt.query_map([], visit_from)?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for row in &rows {
        refresh_facts(tx, row, 0, Sums::NotYet)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    }
    Ok(())
}

/// After `0008_client_sums` (and the bench, after writing facts in bulk): the per-client sums
/// of the facts already there, by [`cs::fill_sql`] over a temporary table of the hours the planned
/// starts fall in, with the sums' zone's offset at each (SQLite has no time zones).
#[doc(hidden)]
pub fn fill_client_sums(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(&cs::EMPTY_SQL.join(";"))?;
    tx.execute_batch(&format!(
        "CREATE TEMP TABLE {} (hour INTEGER PRIMARY KEY, offset_ms INTEGER NOT NULL)",
        cs::HOURS_TABLE
    ))?;
    let hours: Vec<i64> = tx
        .prepare(&cs::hours_sql())?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut insert = tx.prepare(&format!("INSERT INTO {} VALUES (?1, ?2)", cs::HOURS_TABLE))?;
        for hour in hours {
            insert.execute(params![hour, cs::offset_at(hour.saturating_mul(HOUR_MS))])?;
        }
    }
    for sql in cs::fill_sql() {
        tx.execute(&sql, [])?;
    }
    tx.execute_batch(&format!("DROP TABLE temp.{}", cs::HOURS_TABLE))
}

/// A bounded page cache on every connection; the reports' connection also reads through a memory
/// map (no read syscall and copy per page: a report touches every page of a month's rows).
///
/// The connections of the sync path do not map the file: in WAL mode SQLite drops a
/// connection's whole mapping when it starts a read after another connection committed, so
/// under ingest (a commit every few milliseconds) each read of a visit unmapped the file and
/// faulted its pages back in: about 15 % of the server's CPU in a 500-phone run (`perf`).
fn tune(conn: &Connection, map: Map) -> rusqlite::Result<()> {
    let bytes = match map {
        Map::File => MMAP_BYTES,
        Map::None => 0,
    };
    conn.pragma_update(None, "mmap_size", bytes)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Every statement of the commit path stays prepared (rusqlite keeps 16 by default).
    conn.set_prepared_statement_cache_capacity(64);
    sqlite::plan_once(conn)
}

#[derive(Clone, Copy)]
enum Map {
    File,
    None,
}

/// Address space, not memory: mapped pages are the OS's file cache, shared and reclaimable.
/// The bundled SQLite's ceiling (`SQLITE_MAX_MMAP_SIZE`, just under 2 GiB); a larger file reads
/// its remainder through ordinary reads.
const MMAP_BYTES: i64 = 0x7fff_0000;
/// Per connection (three: reads, the writer, reports). A page not in it is read from the OS's
/// file cache (the reports' connection maps it instead).
const CACHE_KIB: i64 = 16 << 10;

fn al_bind(values: Vec<al::Value>) -> Vec<rusqlite::types::Value> {
    values
        .into_iter()
        .map(|v| match v {
            al::Value::Int(Some(i)) => rusqlite::types::Value::Integer(i),
            al::Value::Text(Some(t)) => rusqlite::types::Value::Text(t),
            al::Value::Int(None) | al::Value::Text(None) => rusqlite::types::Value::Null,
        })
        .collect()
}

fn al_insert(tx: &Connection, alert: &al::AlertRecord, entry: &al::AlertEntry) -> Result<bool> {
    let inserted = tx
        .prepare_cached(&INSERT_ALERT)?
        .execute(rusqlite::params_from_iter(al_bind(al::alert_values(alert))))?;
    if inserted == 1 {
        tx.prepare_cached(&INSERT_ENTRY)?
            .execute(rusqlite::params_from_iter(al_bind(al::entry_values(entry))))?;
    }
    Ok(inserted == 1)
}

fn al_get(conn: &Connection, id: AlertId) -> Result<Option<al::AlertRecord>> {
    Ok(al_alerts(
        conn,
        "WHERE alert_id = $1",
        vec![al::Value::Text(Some(id.to_string()))],
    )?
    .into_iter()
    .next())
}

/// An alert's new standing and its history entries, if its version is still `expected_version`.
fn al_update(
    tx: &Connection,
    alert: &al::AlertRecord,
    expected_version: u32,
    entries: &[al::AlertEntry],
) -> Result<bool> {
    let changed = tx
        .prepare_cached(&UPDATE_ALERT)?
        .execute(rusqlite::params_from_iter(al_bind(al::update_values(
            alert,
            expected_version,
        ))))?;
    if changed != 1 {
        return Ok(false);
    }
    for e in entries {
        tx.prepare_cached(&INSERT_ENTRY)?
            .execute(rusqlite::params_from_iter(al_bind(al::entry_values(e))))?;
    }
    Ok(true)
}

/// A row read as text and integers by column kind.
fn al_row<const N: usize>(r: &Row<'_>, ints: &[bool; N]) -> rusqlite::Result<al::RawRow> {
    let mut t = Vec::with_capacity(N);
    let mut i = Vec::with_capacity(N);
    for (k, is_int) in ints.iter().enumerate() {
        if *is_int {
            t.push(None);
            i.push(r.get(k)?);
        } else {
            t.push(r.get(k)?);
            i.push(None);
        }
    }
    Ok((t, i))
}

fn al_alerts(conn: &Connection, where_sql: &str, values: Vec<al::Value>) -> Result<Vec<al::AlertRecord>> {
    let mut stmt = conn.prepare_cached(&al::sqlite_sql(&format!(
        "SELECT {} FROM alerts {where_sql} ORDER BY raised_at, alert_id",
        al::ALERT_COLS
    )))?;
    let rows = stmt.query_map(rusqlite::params_from_iter(al_bind(values)), |r| {
        al_row(r, &al::ALERT_INT_COLS)
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (t, i) = row?;
        out.push(al::alert_from(&t, &i)?);
    }
    Ok(out)
}

/// Judge a visit from its rows in this transaction and make the result its standing facts
/// from `at` (the version standing before closes at `at`; one opened at the same instant or
/// later is replaced, so versions never overlap).
fn refresh_facts(tx: &Connection, row: &VisitRow, at: Millis, sums: Sums) -> Result<()> {
    let id = row.visit_id.to_string();
    let events: Vec<EventRow> = tx
        .prepare_cached(&VISIT_EVENTS)?
        .query_map([&id], event_from)?
        .collect::<rusqlite::Result<_>>()?;
    let amendments: Vec<AmendmentRow> = tx
        .prepare_cached(&VISIT_AMENDMENTS)?
        .query_map([&id], amendment_from)?
        .collect::<rusqlite::Result<_>>()?;
    let location = tx
        .prepare_cached(&CLIENT_BY_ID)?
        .query_row([row.client_id.to_string()], client_from)
        .optional()?
        .and_then(|c| c.location);
    let rules: ContractRules = tx
        .prepare_cached("SELECT rules FROM contracts WHERE contract_id = ?1")?
        .query_row([row.contract_id.to_string()], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    let facts = VisitFacts::judge(
        &fx::record_from_rows(row, &events, &amendments),
        &rules,
        &fx::inputs(location, &events),
    );
    write_facts(tx, &facts, at, sums)
}

fn bind(params: Vec<Param>) -> Vec<rusqlite::types::Value> {
    params
        .into_iter()
        .map(|p| match p {
            Param::Int(Some(v)) => rusqlite::types::Value::Integer(v),
            Param::Int(None) => rusqlite::types::Value::Null,
            Param::Text(t) => rusqlite::types::Value::Text(t),
        })
        .collect()
}

/// Whether the per-contract slot sums exist yet: not while `0005`'s backfill runs (`0007`
/// sums what it wrote).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sums {
    Keep,
    NotYet,
}

/// A snapshot's visit rows and carer rows, for every visit of a range and for one (the alert
/// review after each commit to a due visit reads one: built once, not on every commit).
static VISITS_SQL: LazyLock<[String; 2]> =
    LazyLock::new(|| [false, true].map(|one| fx::sqlite(&fx::visits_sql(one))));
static CARERS_SQL: LazyLock<[String; 2]> =
    LazyLock::new(|| [false, true].map(|one| fx::sqlite(&fx::carers_sql(one))));
/// The alert statements every raised or changed alert runs, in SQLite's placeholders.
static INSERT_ALERT: LazyLock<String> = LazyLock::new(|| al::sqlite_sql(al::INSERT_ALERT));
static INSERT_ENTRY: LazyLock<String> = LazyLock::new(|| al::sqlite_sql(al::INSERT_ENTRY));
static UPDATE_ALERT: LazyLock<String> = LazyLock::new(|| al::sqlite_sql(al::UPDATE_ALERT));
/// The commit path's fact statements, written once rather than formatted on every commit (the
/// statement cache is keyed by the text, so building it was most of a cached statement's cost).
static VISIT_EVENTS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {EVENT_COLS} FROM clock_events WHERE visit_id = ?1 ORDER BY rowid"));
static VISIT_AMENDMENTS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {AMENDMENT_COLS} FROM amendments WHERE visit_id = ?1 ORDER BY rowid"));
static CLIENT_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = ?1"));
static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO clock_events ({EVENT_COLS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (event_id) DO NOTHING"
    )
});
static ADD_SLOT_SUMS: LazyLock<String> = LazyLock::new(|| fx::sqlite(&fx::add_slot_sums_sql()));
static INSERT_VISIT_FACTS: LazyLock<String> = LazyLock::new(|| fx::sqlite(&fx::insert_visit_sql()));
static INSERT_CARER_FACTS: LazyLock<String> = LazyLock::new(|| fx::sqlite(&fx::insert_carer_sql()));
static ADD_RECONCILIATION: LazyLock<String> =
    LazyLock::new(|| fx::sqlite(&cs::add_reconciliation_sql(cs::Ids::Text)));
static ADD_CARER: LazyLock<String> = LazyLock::new(|| fx::sqlite(&cs::add_carer_sql(cs::Ids::Text)));
static ADD_CONTINUITY: LazyLock<String> =
    LazyLock::new(|| fx::sqlite(&cs::add_continuity_sql(cs::Ids::Text)));
static SUM_INPUTS: LazyLock<String> = LazyLock::new(|| fx::sqlite(&fx::sum_inputs_sql()));
static SUM_INPUT_CARERS: LazyLock<String> = LazyLock::new(|| fx::sqlite(fx::SUM_INPUT_CARERS_SQL));

/// The sums tables' upserts ([`cs::move_sums`] works out what they add).
struct SumsUpserts<'a>(&'a Connection);

impl cs::SumsWriter for SumsUpserts<'_> {
    fn add_slots(&mut self, d: &fx::SlotDelta, at: Millis) -> Result<()> {
        let mut values: Vec<rusqlite::types::Value> = vec![
            d.slot.into(),
            d.contract.clone().into(),
            at.into(),
            d.missed_bound.into(),
            d.open_bound.into(),
        ];
        values.extend(d.sums.iter().map(|&v| rusqlite::types::Value::from(v)));
        self.0
            .prepare_cached(&ADD_SLOT_SUMS)?
            .execute(rusqlite::params_from_iter(values))?;
        Ok(())
    }

    fn add_reconciliation(&mut self, d: &cs::ReconciliationDelta, at: Millis) -> Result<()> {
        self.0.prepare_cached(&ADD_RECONCILIATION)?.execute(params![
            d.days,
            d.start_day,
            d.client,
            d.contract,
            at,
            d.visits,
            d.cancelled,
            d.authorised_ms,
            d.delivered_ms,
            d.billable_minutes
        ])?;
        Ok(())
    }

    fn add_carer(&mut self, d: &cs::CarerDelta) -> Result<(i64, i64)> {
        Ok(self.0.prepare_cached(&ADD_CARER)?.query_row(
            params![d.days, d.start_day, d.client, d.carer, d.came, d.assigned],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    fn add_continuity(&mut self, d: &cs::ContinuityDelta, at: Millis) -> Result<()> {
        self.0.prepare_cached(&ADD_CONTINUITY)?.execute(params![
            d.days,
            d.start_day,
            d.client,
            at,
            d.visits,
            d.carers_came,
            d.carers_assigned
        ])?;
        Ok(())
    }
}

/// What the sums read of the stored visit-level row `fact_id`.
fn stored_sum_inputs(tx: &Connection, fact_id: i64) -> Result<fx::SumInputs> {
    let values = tx.prepare_cached(&SUM_INPUTS)?.query_row([fact_id], |r| {
        (0..fx::SUM_INPUT_COLS.len())
            .map(|i| {
                Ok(if i < fx::SUM_INPUT_TEXT_COLS {
                    Param::Text(r.get(i)?)
                } else {
                    Param::Int(r.get(i)?)
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    let carers = tx
        .prepare_cached(&SUM_INPUT_CARERS)?
        .query_map([fact_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(fx::SumInputs::stored(values, carers))
}

fn write_facts(tx: &Connection, facts: &VisitFacts, at: Millis, sums: Sums) -> Result<()> {
    let id = facts.visit_id.to_string();
    let version = fx::Version::of(facts);
    let fingerprint = version.fingerprint;
    let standing: Option<(i64, Millis, i64)> = tx
        .prepare_cached(
            "SELECT fact_id, valid_from, fingerprint FROM visit_facts
             WHERE visit_id = ?1 AND valid_to IS NULL",
        )?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if standing.is_some_and(|(_, _, same)| same == fingerprint) {
        return Ok(());
    }
    // Versions of one visit never go back in time, whatever the clock of the instance.
    let at = standing.map_or(at, |(_, from, _)| at.max(from));
    // Only the sums whose inputs differ between the versions are written.
    let inputs = version.sum_inputs(facts);
    let old_inputs = match standing {
        Some((fact_id, ..)) if sums == Sums::Keep => Some(stored_sum_inputs(tx, fact_id)?),
        _ => None,
    };
    let moved = old_inputs
        .as_ref()
        .map_or(fx::Moved::ALL, |old| inputs.moved_from(old));
    if sums == Sums::Keep {
        cs::move_sums(&mut SumsUpserts(tx), moved, old_inputs.as_ref(), &inputs, at)?;
    }
    if let Some((fact_id, from, _)) = standing {
        if from == at {
            tx.prepare_cached("DELETE FROM carer_visit_facts WHERE fact_id = ?1")?
                .execute([fact_id])?;
            tx.prepare_cached("DELETE FROM visit_facts WHERE fact_id = ?1")?
                .execute([fact_id])?;
        } else {
            tx.prepare_cached("UPDATE visit_facts SET valid_to = ?2 WHERE fact_id = ?1")?
                .execute(params![fact_id, at])?;
        }
    }
    let params = version.row(at);
    let fact_id: i64 = tx
        .prepare_cached(&INSERT_VISIT_FACTS)?
        .query_row(rusqlite::params_from_iter(bind(params)), |r| r.get(0))?;
    let mut insert = tx.prepare_cached(&INSERT_CARER_FACTS)?;
    for (rank, c) in facts.carers.iter().enumerate() {
        insert.execute(rusqlite::params_from_iter(bind(fx::carer_params(
            fact_id, rank, c,
        ))))?;
    }
    Ok(())
}

/// Judge again, from `at`, every visit matching `filter` (a contract's after its rules change,
/// a client's after their location does).
fn rejudge(tx: &Connection, filter: &str, id: &str, at: Millis) -> Result<()> {
    let rows: Vec<VisitRow> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT {VISIT_COLS} FROM visits v WHERE v.{filter} = ?1"
        ))?;
        let rows = stmt.query_map([id], visit_from)?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for row in &rows {
        refresh_facts(tx, row, at, Sums::Keep)?;
    }
    Ok(())
}

fn device_from(r: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: column(r, 0)?,
        person_id: column(r, 1)?,
        name: r.get(2)?,
        enrolled_at: r.get(3)?,
        revoked_at: r.get(4)?,
        last_sync_at: r.get(5)?,
    })
}

fn amendment_from(r: &Row<'_>) -> rusqlite::Result<AmendmentRow> {
    Ok(AmendmentRow {
        amendment_id: column(r, 0)?,
        visit_id: column(r, 1)?,
        author_id: column(r, 2)?,
        carer_id: column(r, 3)?,
        time: column(r, 4)?,
        corrected_time: r.get(5)?,
        reason: column(r, 6)?,
        written_at: r.get(7)?,
    })
}

const AMENDMENT_COLS: &str =
    "amendment_id, visit_id, author_id, carer_id, time, corrected_time, reason, written_at";

/// Reconciliation per local day (or whole week, as its Monday) from the per-client sums, or
/// `None` if a row changed after `as_of` (then the fact rows answer). `p`: the range's
/// parameters and `as_of`.
fn reconciliation_from_sums(
    tx: &Connection,
    p: &[i64],
    as_of: Millis,
) -> Result<Option<Vec<caresync_core::metrics::DayMinutes>>> {
    let mut stmt = tx.prepare_cached(&fx::sqlite(&cs::reconciliation_sql()))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(p))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        if r.get::<_, Millis>(3)? > as_of {
            return Ok(None);
        }
        out.push(day_minutes(r, 4)?);
    }
    Ok(Some(out))
}

fn reconciliation_from_rows(
    tx: &Connection,
    q: &SnapshotQuery,
) -> Result<Vec<caresync_core::metrics::DayMinutes>> {
    let mut stmt = tx.prepare_cached(&fx::sqlite(&fx::reconciliation_sql(&q.offsets)))?;
    let rows = stmt.query_map(params![q.from, q.to, q.as_of], |r| day_minutes(r, 3))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A reconciliation row: day, client and contract, then the five sums from column `sums`.
fn day_minutes(r: &Row<'_>, sums: usize) -> rusqlite::Result<caresync_core::metrics::DayMinutes> {
    Ok(caresync_core::metrics::DayMinutes {
        day: caresync_core::metrics::facts::day_of_number(r.get(0)?),
        client_id: column(r, 1)?,
        contract_id: column(r, 2)?,
        visits: r.get::<_, i64>(sums)?.max(0) as u64,
        cancelled: r.get::<_, i64>(sums + 1)?.max(0) as u64,
        authorised_ms: r.get(sums + 2)?,
        delivered_ms: r.get(sums + 3)?,
        billable_minutes: r.get(sums + 4)?,
    })
}

/// Continuity per week from the per-client sums (the partial weeks from their days), or `None`
/// if a row changed after `as_of`.
fn continuity_from_sums(
    tx: &Connection,
    range: &cs::SumsRange,
    p: &[i64],
    as_of: Millis,
) -> Result<Option<Vec<caresync_core::metrics::ContinuityWeek>>> {
    let mut weeks = Vec::new();
    let mut partial: HashMap<(i64, ClientId), i64> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(&fx::sqlite(&cs::continuity_sql()))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(p))?;
        while let Some(r) = rows.next()? {
            if r.get::<_, Millis>(3)? > as_of {
                return Ok(None);
            }
            let (days, start, client_id): (i64, i64, ClientId) = (r.get(0)?, r.get(1)?, column(r, 2)?);
            let visits: i64 = r.get(4)?;
            if days == 7 {
                weeks.push(caresync_core::metrics::ContinuityWeek {
                    week_start: caresync_core::metrics::facts::day_of_number(start),
                    client_id,
                    visits: visits.max(0) as u64,
                    distinct_carers: r.get::<_, i64>(5)?.max(0) as u64,
                    distinct_carers_scheduled: r.get::<_, i64>(6)?.max(0) as u64,
                });
            } else {
                *partial.entry((cs::monday(start), client_id)).or_default() += visits;
            }
        }
    }
    if !partial.is_empty() {
        let days = tx
            .prepare_cached(&fx::sqlite(&cs::continuity_partial_days_sql()))?
            .query_map(rusqlite::params_from_iter(&range.params()[2..]), |r| {
                Ok((r.get(0)?, column(r, 1)?, column(r, 2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let carers = cs::distinct_carers(days);
        let visits = partial.into_iter().map(|((w, c), n)| (w, c, n)).collect();
        weeks.extend(fx::continuity_weeks(visits, carers));
    }
    Ok(Some(weeks))
}

/// Every read of one report, inside one read transaction (one snapshot).
fn read_snapshot(tx: &Connection, q: &SnapshotQuery) -> Result<ReportSnapshot> {
    let range = params![q.from, q.to, q.as_of];
    let mut out = ReportSnapshot::default();
    let tallies = |key: TallyKey| -> Result<Vec<caresync_core::metrics::DayTally>> {
        let mut stmt = tx.prepare_cached(&fx::sqlite(&fx::tallies_sql(key, q)))?;
        let mut rows = stmt.query(range)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let counts: Vec<i64> = (0..fx::COUNT_WIDTH)
                .map(|i| r.get::<_, i64>(i + 2))
                .collect::<rusqlite::Result<_>>()?;
            out.push(fx::tally_from(r.get(0)?, r.get(1)?, &counts)?);
        }
        Ok(out)
    };
    if let Some(key) = q.tallies {
        out.tallies = tallies(key)?;
    }
    if q.by_contract {
        out.by_contract = tallies(TallyKey::Contract)?;
    }
    let sums = cs::SumsRange::of(q);
    let from_sums = |r: &cs::SumsRange| {
        let mut p: Vec<i64> = r.params().to_vec();
        p.push(q.as_of);
        p
    };
    if q.reconciliation {
        if let Some(days) = sums
            .map(|r| reconciliation_from_sums(tx, &from_sums(&r), q.as_of))
            .transpose()?
            .flatten()
        {
            out.reconciliation = days;
        } else {
            out.reconciliation = reconciliation_from_rows(tx, q)?;
        }
    }
    if q.continuity {
        if let Some(weeks) = sums
            .map(|r| continuity_from_sums(tx, &r, &from_sums(&r), q.as_of))
            .transpose()?
            .flatten()
        {
            out.continuity = weeks;
        } else {
            let range = params![q.from, q.to, q.as_of];
            let visits = tx
                .prepare_cached(&fx::sqlite(&fx::continuity_visits_sql(&q.offsets)))?
                .query_map(range, |r| Ok((r.get(0)?, column(r, 1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let carers = tx
                .prepare_cached(&fx::sqlite(&fx::continuity_carers_sql(&q.offsets)))?
                .query_map(range, |r| Ok((r.get(0)?, column(r, 1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            out.continuity = fx::continuity_weeks(visits, carers);
        }
    }
    if q.visits {
        let one = q.visit.map(|v| v.to_string());
        let mut args: Vec<rusqlite::types::Value> = bind(vec![
            Param::Int(Some(q.from)),
            Param::Int(Some(q.to)),
            Param::Int(Some(q.as_of)),
        ]);
        if let Some(v) = &one {
            args.push(rusqlite::types::Value::Text(v.clone()));
        }
        let mut stmt = tx.prepare_cached(&VISITS_SQL[usize::from(one.is_some())])?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut visits = Vec::new();
        let mut at: HashMap<i64, usize> = HashMap::new();
        while let Some(r) = rows.next()? {
            let unit: Vec<Option<i64>> = (0..fx::UNIT_WIDTH)
                .map(|i| r.get(11 + i))
                .collect::<rusqlite::Result<_>>()?;
            let text = |i: usize| r.get::<_, String>(i);
            let row = fx::visit_row_from(
                r.get(0)?,
                &text(1)?,
                &text(2)?,
                &text(3)?,
                (r.get(4)?, r.get(5)?),
                r.get(7)?,
                (r.get(8)?, r.get(9)?, r.get(10)?),
                &unit,
            )?;
            at.insert(row.fact_id, visits.len());
            visits.push(row.facts);
        }
        drop(rows);
        let mut stmt = tx.prepare_cached(&CARERS_SQL[usize::from(one.is_some())])?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(r) = rows.next()? {
            let unit: Vec<Option<i64>> = (0..fx::UNIT_WIDTH)
                .map(|i| r.get(3 + i))
                .collect::<rusqlite::Result<_>>()?;
            let fact_id: i64 = r.get(0)?;
            if let Some(v) = at.get(&fact_id).and_then(|i| visits.get_mut(*i)) {
                v.carers.push(caresync_core::metrics::CarerFacts {
                    carer_id: column(r, 1)?,
                    assigned: r.get::<_, i64>(2)? != 0,
                    facts: fx::unit_from(&unit)?,
                });
            }
        }
        out.visits = visits;
    }
    if q.visit.is_some() {
        // One visit's read (after each commit, for its alerts): only its carers, looked up by
        // key; every contract, person and device would make each commit cost the agency's size.
        let mut stmt = tx.prepare_cached(
            "SELECT person_id, name, role, team_id, active FROM people WHERE person_id = ?1",
        )?;
        for carer in fx::one_visits_carers(&out.visits) {
            if let Some(person) = stmt.query_row([carer.to_string()], person_from).optional()? {
                out.people.push(person);
            }
        }
        return Ok(out);
    }
    // Contracts with the rules that stood at `as_of` (the current ones for a contract whose
    // history starts later).
    let mut contracts: Vec<Contract> = tx
        .prepare_cached(&format!(
            "SELECT {CONTRACT_COLS} FROM contracts ORDER BY name, contract_id"
        ))?
        .query_map([], contract_from)?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = tx.prepare_cached(
        "SELECT rules FROM contract_rules WHERE contract_id = ?1 AND valid_from <= ?2
         ORDER BY valid_from DESC LIMIT 1",
    )?;
    for c in &mut contracts {
        let then: Option<String> = stmt
            .query_row(params![c.id.to_string(), q.as_of], |r| r.get(0))
            .optional()?;
        if let Some(rules) = then.and_then(|json| serde_json::from_str(&json).ok()) {
            c.rules = rules;
        }
    }
    out.contracts = contracts;
    out.people = tx
        .prepare_cached("SELECT person_id, name, role, team_id, active FROM people ORDER BY name, person_id")?
        .query_map([], person_from)?
        .collect::<rusqlite::Result<_>>()?;
    out.devices = tx
        .prepare_cached(
            "SELECT device_id, person_id, name, enrolled_at, revoked_at, last_sync_at FROM devices ORDER BY enrolled_at",
        )?
        .query_map([], device_from)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(out)
}

pub struct SqliteStore {
    /// Reads outside the reports. It writes nothing: every write goes through the writer, so no
    /// writer waits on another for SQLite's lock, shares none of its `fsync`s, or makes the
    /// writer's page cache start again (in WAL mode a connection drops its whole cache when it
    /// finds that another connection committed).
    conn: Mutex<Connection>,
    /// A second, read-only connection for report queries: in WAL mode it reads while the writer
    /// goes on, so a long report never holds up phones' syncs. (Each query reads its own
    /// snapshot; a report's three queries are not one transaction.)
    reports: Mutex<Connection>,
    /// Every write, phones' commits and the office's alike: see [`group_commit`].
    writer: group_commit::Writer,
    /// Several visit services write through this store (tests of the multi-instance catch-up,
    /// standing in for PostgreSQL); a server process never does.
    shared: bool,
    /// Presented tokens' rows, answered from memory while the stamp stands
    /// (see [`super::sign_in_cache`]).
    sign_ins: SignInCache,
    stamp: WriteStamp,
}

impl SqliteStore {
    /// Open (creating if needed) and migrate. A damaged file is refused and left exactly where it
    /// is ([`sqlite::OnUnreadable::Refuse`]): the server never starts empty over it.
    pub fn open(path: &Path) -> Result<Self> {
        // FULL: a commit is on disk, power loss included, before anyone is told it happened. The
        // writer's groups share one fsync among every sync waiting (see `group_commit`).
        let conn = sqlite::open_with(path, MIGRATIONS, Durability::Full, sqlite::OnUnreadable::Refuse)?;
        tune(&conn, Map::None)?;
        let write_conn = sqlite::open_with(path, MIGRATIONS, Durability::Full, sqlite::OnUnreadable::Refuse)?;
        tune(&write_conn, Map::None)?;
        // Statement journals in memory, in SQLite's 1 KiB chunks. Every statement of a commit that
        // could fail half-way (an insert into a table with a unique index, an upsert) opens one;
        // kept as a temporary file they buffer their first 64 KiB in one allocation, and freeing
        // that made glibc trim the writer's heap and fault it back in for the next: 1.8 `madvise`
        // calls and 2.1 more page faults per sync, about 5 % of the server (docs/performance.md).
        write_conn.pragma_update(None, "temp_store", "MEMORY")?;
        let writer = group_commit::Writer::start(write_conn)?;
        let reports = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reports.busy_timeout(std::time::Duration::from_secs(5))?;
        tune(&reports, Map::File)?;
        Ok(Self {
            conn: Mutex::new(conn),
            reports: Mutex::new(reports),
            writer,
            shared: false,
            sign_ins: SignInCache::default(),
            stamp: WriteStamp::beside(path),
        })
    }

    /// Say that several visit services in this process share the store, so each checks for the
    /// others' chunks before using a cached document, as instances on PostgreSQL do.
    pub fn shared_by_several_services(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Keep the writer inside a write of its own until the returned sender is dropped, so a
    /// test can hold commits in flight.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (inside, is_inside) = std::sync::mpsc::channel();
        self.writer.submit(
            move |_: &Connection| {
                let _ = inside.send(());
                let _ = released.recv();
                Ok(())
            },
            |_: Result<()>| {},
        );
        let _ = is_inside.recv();
        release
    }

    /// How many writes went through the writer and in how many transactions.
    pub fn group_commit_counts(&self) -> group_commit::Counts {
        self.writer.counts()
    }

    /// What is wrong with the database file at `path`, if anything: it must open and pass
    /// `PRAGMA quick_check`. Read-only; the file is not changed.
    pub fn damage(path: &Path) -> Option<String> {
        let conn = match Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(conn) => conn,
            Err(e) => return Some(e.to_string()),
        };
        match conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)) {
            Ok(verdict) if verdict == "ok" => None,
            Ok(verdict) => Some(verdict),
            Err(e) => Some(e.to_string()),
        }
    }

    /// The connection, for reads outside the trait (the copy to PostgreSQL).
    pub(crate) fn connection(&self) -> Result<MutexGuard<'_, Connection>> {
        self.lock()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    fn lock_reports(&self) -> Result<MutexGuard<'_, Connection>> {
        self.reports.lock().map_err(|_| StoreError::Poisoned)
    }

    /// A transaction that may change a token's standing (people, tokens, devices, enrolment):
    /// once it commits, the cached sign-ins of this process are forgotten and the stamp tells
    /// every other process on the file.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let out = self.write_keeping_sign_ins(f)?;
        self.sign_ins.invalidate();
        self.stamp.bump();
        Ok(out)
    }

    /// A write of nobody's standing (alerts, leases, reference data, compaction), in the writer's
    /// next group. `f` may run twice (see [`group_commit`]): it must act only on the connection.
    fn write_keeping_sign_ins<T: Send + 'static>(
        &self,
        f: impl FnMut(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.write(f)
    }

    /// The token's row, from the database.
    fn read_sign_in(&self, token_hash: &str) -> Result<Option<SignIn>> {
        let conn = self.lock()?;
        let device = conn
            .prepare_cached(
                "SELECT p.person_id, p.name, p.role, p.team_id, p.active, d.device_id, d.revoked_at
                 FROM devices d JOIN people p ON p.person_id = d.person_id
                 WHERE d.token_hash = ?1",
            )?
            .query_row([token_hash], |r| {
                let person = person_from(r)?;
                let device: DeviceId = column(r, 5)?;
                Ok(SignIn {
                    principal: Principal {
                        person,
                        device_id: Some(device),
                    },
                    revoked_at: r.get(6)?,
                    expires_at: None,
                })
            })
            .optional()?;
        if device.is_some() {
            return Ok(device);
        }
        let token = conn
            .prepare_cached(
                "SELECT p.person_id, p.name, p.role, p.team_id, p.active, t.revoked_at, t.expires_at
                 FROM api_tokens t JOIN people p ON p.person_id = t.person_id
                 WHERE t.token_hash = ?1",
            )?
            .query_row([token_hash], |r| {
                Ok(SignIn {
                    principal: Principal {
                        person: person_from(r)?,
                        device_id: None,
                    },
                    revoked_at: r.get(5)?,
                    expires_at: r.get(6)?,
                })
            })
            .optional()?;
        Ok(token)
    }
}

fn parse<T: FromStr>(s: &str) -> rusqlite::Result<T> {
    s.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad value {s:?}").into(),
        )
    })
}

/// A text column parsed in place (no `String` per value: reports read millions).
fn column<T: FromStr>(r: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text = r.get_ref(index)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })?;
    parse(text)
}

fn person_from(r: &Row<'_>) -> rusqlite::Result<Person> {
    Ok(Person {
        id: column(r, 0)?,
        name: r.get(1)?,
        role: column(r, 2)?,
        team_id: r.get::<_, Option<String>>(3)?.map(|t| parse(&t)).transpose()?,
        active: r.get(4)?,
    })
}

fn visit_from(r: &Row<'_>) -> rusqlite::Result<VisitRow> {
    let carers: String = r.get(3)?;
    let heads: String = r.get(8)?;
    Ok(VisitRow {
        visit_id: column(r, 0)?,
        client_id: column(r, 1)?,
        contract_id: column(r, 2)?,
        carers: carers
            .split(',')
            .filter(|s| !s.is_empty())
            .map(parse)
            .collect::<rusqlite::Result<_>>()?,
        planned_start: r.get(4)?,
        planned_end: r.get(5)?,
        status: column(r, 6)?,
        chargeable: r.get(7)?,
        heads: parse(&heads)?,
        updated_at: r.get(9)?,
    })
}

const VISIT_COLS: &str =
    "v.visit_id, v.client_id, v.contract_id, v.carers, v.planned_start, v.planned_end, v.status, v.chargeable, v.heads, v.updated_at";

fn event_from(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    let lat: Option<f64> = r.get(12)?;
    let lon: Option<f64> = r.get(13)?;
    let acc: Option<f64> = r.get(14)?;
    Ok(EventRow {
        event_id: column(r, 0)?,
        visit_id: column(r, 1)?,
        carer_id: column(r, 2)?,
        device_id: column(r, 3)?,
        kind: column(r, 4)?,
        device_time: r.get(5)?,
        clock_offset_ms: r.get(6)?,
        offset_measured_at: r.get(7)?,
        trusted_time: r.get(8)?,
        received_at: r.get(9)?,
        method: column(r, 10)?,
        reason: r.get::<_, Option<String>>(11)?.map(|s| parse(&s)).transpose()?,
        location: match (lat, lon, acc) {
            (Some(lat), Some(lon), Some(accuracy_m)) => Some(Location { lat, lon, accuracy_m }),
            _ => None,
        },
        flags: column(r, 15)?,
    })
}

const CLIENT_COLS: &str = "client_id, name, lat, lon, accuracy_m, tag_ids";

fn client_from(r: &Row<'_>) -> rusqlite::Result<Client> {
    let (lat, lon, acc): (Option<f64>, Option<f64>, Option<f64>) = (r.get(2)?, r.get(3)?, r.get(4)?);
    let tags: String = r.get(5)?;
    Ok(Client {
        id: column(r, 0)?,
        name: r.get(1)?,
        location: match (lat, lon, acc) {
            (Some(lat), Some(lon), acc) => Some(Location {
                lat,
                lon,
                accuracy_m: acc.unwrap_or(0.0),
            }),
            _ => None,
        },
        tag_ids: tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

const CONTRACT_COLS: &str = "contract_id, name, commissioner, model, rules";

fn contract_from(r: &Row<'_>) -> rusqlite::Result<Contract> {
    let rules: String = r.get(4)?;
    Ok(Contract {
        id: column(r, 0)?,
        name: r.get(1)?,
        commissioner: r.get(2)?,
        model: column(r, 3)?,
        rules: serde_json::from_str(&rules).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

const EVENT_COLS: &str = "event_id, visit_id, carer_id, device_id, kind, device_time, clock_offset_ms, \
     offset_measured_at, trusted_time, received_at, method, reason, lat, lon, accuracy_m, flags";

impl super::AlertWrites for SqliteStore {
    fn raise_alert(&self, alert: &al::AlertRecord, entry: &al::AlertEntry) -> Result<bool> {
        let (alert, entry) = (alert.clone(), entry.clone());
        self.write_keeping_sign_ins(move |tx| al_insert(tx, &alert, &entry))
    }

    fn alert(&self, id: AlertId) -> Result<Option<al::AlertRecord>> {
        al_get(&*self.lock()?, id)
    }

    fn update_alert(
        &self,
        alert: &al::AlertRecord,
        expected_version: u32,
        entries: &[al::AlertEntry],
    ) -> Result<bool> {
        let (alert, entries) = (alert.clone(), entries.to_vec());
        self.write_keeping_sign_ins(move |tx| al_update(tx, &alert, expected_version, &entries))
    }
}

/// The alert writes of the writer's transaction in progress: a due visit's review inside the
/// commit that changed it ([`commit_work`]).
struct InCommit<'a>(&'a Connection);

impl super::AlertWrites for InCommit<'_> {
    fn raise_alert(&self, alert: &al::AlertRecord, entry: &al::AlertEntry) -> Result<bool> {
        al_insert(self.0, alert, entry)
    }

    fn alert(&self, id: AlertId) -> Result<Option<al::AlertRecord>> {
        al_get(self.0, id)
    }

    fn update_alert(
        &self,
        alert: &al::AlertRecord,
        expected_version: u32,
        entries: &[al::AlertEntry],
    ) -> Result<bool> {
        al_update(self.0, alert, expected_version, entries)
    }
}

impl ServerStore for SqliteStore {
    fn group_commits(&self) -> Option<group_commit::Counts> {
        Some(self.writer.counts())
    }

    // ---- dashboard sessions ------------------------------------------------------------------
    fn create_web_session(&self, session: &WebSession, now: Millis) -> Result<()> {
        let session = session.clone();
        self.write(move |tx| {
            let session = &session;
            tx.execute("DELETE FROM web_sessions WHERE expires_at <= ?1", [now])?;
            tx.execute(
                "INSERT INTO web_sessions (id_hash, person_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    session.id_hash,
                    session.person_id.to_string(),
                    session.created_at,
                    session.expires_at
                ],
            )?;
            Ok(())
        })
    }

    fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT id_hash, person_id, created_at, expires_at FROM web_sessions WHERE id_hash = ?1",
                [id_hash],
                |r| {
                    Ok(WebSession {
                        id_hash: r.get(0)?,
                        person_id: column(r, 1)?,
                        created_at: r.get(2)?,
                        expires_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    fn end_web_session(&self, id_hash: &str) -> Result<()> {
        let id_hash = id_hash.to_string();
        self.write(move |tx| {
            let id_hash = id_hash.as_str();
            tx.execute("DELETE FROM web_sessions WHERE id_hash = ?1", [id_hash])?;
            Ok(())
        })
    }

    fn create_person(&self, p: &Person) -> Result<()> {
        let p = p.clone();
        self.write(move |tx| {
            let p = &p;
            tx.execute(
                "INSERT INTO people (person_id, name, role, team_id, active) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (person_id) DO UPDATE SET name = ?2, role = ?3, team_id = ?4, active = ?5",
                params![
                    p.id.to_string(),
                    p.name,
                    p.role.as_str(),
                    p.team_id.map(|t| t.to_string()),
                    p.active
                ],
            )?;
            Ok(())
        })
    }

    fn person(&self, id: PersonId) -> Result<Option<Person>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT person_id, name, role, team_id, active FROM people WHERE person_id = ?1",
                [id.to_string()],
                person_from,
            )
            .optional()?)
    }

    fn people(&self) -> Result<Vec<Person>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT person_id, name, role, team_id, active FROM people ORDER BY name, person_id",
        )?;
        let rows = stmt.query_map([], person_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_api_token(
        &self,
        person: PersonId,
        token_hash: &str,
        created_at: Millis,
        expires_at: Option<Millis>,
    ) -> Result<()> {
        let token_hash = token_hash.to_string();
        self.write(move |tx| {
            let token_hash = token_hash.as_str();
            tx.execute(
                "INSERT INTO api_tokens (token_hash, person_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token_hash, person.to_string(), created_at, expires_at],
            )?;
            Ok(())
        })
    }

    fn rotate_api_token(
        &self,
        person: PersonId,
        token_hash: &str,
        created_at: Millis,
        expires_at: Option<Millis>,
    ) -> Result<bool> {
        let token_hash = token_hash.to_string();
        self.write(move |tx| {
            let token_hash = token_hash.as_str();
            let active = tx
                .query_row(
                    "SELECT 1 FROM people WHERE person_id = ?1 AND active",
                    [person.to_string()],
                    |_| Ok(()),
                )
                .optional()?;
            if active.is_none() {
                return Ok(false);
            }
            tx.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE person_id = ?1 AND revoked_at IS NULL",
                params![person.to_string(), created_at],
            )?;
            tx.execute(
                "INSERT INTO api_tokens (token_hash, person_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token_hash, person.to_string(), created_at, expires_at],
            )?;
            Ok(true)
        })
    }

    fn revoke_api_token(&self, token_hash: &str, at: Millis) -> Result<bool> {
        let token_hash = token_hash.to_string();
        self.write(move |tx| {
            let token_hash = token_hash.as_str();
            let n = tx.execute(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE token_hash = ?1",
                params![token_hash, at],
            )?;
            Ok(n > 0)
        })
    }

    fn revoke_api_tokens(&self, person: PersonId, at: Millis) -> Result<u64> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE person_id = ?1 AND revoked_at IS NULL",
                params![person.to_string(), at],
            )?;
            Ok(n as u64)
        })
    }

    fn deactivate_person(&self, person: PersonId, at: Millis) -> Result<bool> {
        self.write(move |tx| {
            let id = person.to_string();
            if tx.execute("UPDATE people SET active = 0 WHERE person_id = ?1", [&id])? == 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE person_id = ?1 AND revoked_at IS NULL",
                params![id, at],
            )?;
            tx.execute(
                "UPDATE devices SET revoked_at = ?2 WHERE person_id = ?1 AND revoked_at IS NULL",
                params![id, at],
            )?;
            tx.execute(
                "UPDATE enrolment_codes SET used_at = ?2 WHERE person_id = ?1 AND used_at IS NULL",
                params![id, at],
            )?;
            Ok(true)
        })
    }

    fn enrolment_code_owner(&self, code_hash: &str) -> Result<Option<PersonId>> {
        let conn = self.lock()?;
        let owner: Option<String> = conn
            .query_row(
                "SELECT person_id FROM enrolment_codes WHERE code_hash = ?1",
                [code_hash],
                |r| r.get(0),
            )
            .optional()?;
        Ok(owner.map(|o| parse(&o)).transpose()?)
    }

    fn lock_enrolment_codes(&self, person: PersonId, at: Millis) -> Result<u64> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE enrolment_codes SET used_at = ?2 WHERE person_id = ?1 AND used_at IS NULL",
                params![person.to_string(), at],
            )?;
            Ok(n as u64)
        })
    }

    fn add_enrolment_code(&self, person: PersonId, code_hash: &str, expires_at: Millis) -> Result<()> {
        let code_hash = code_hash.to_string();
        self.write(move |tx| {
            let code_hash = code_hash.as_str();
            tx.execute(
                "INSERT INTO enrolment_codes (code_hash, person_id, expires_at) VALUES (?1, ?2, ?3)",
                params![code_hash, person.to_string(), expires_at],
            )?;
            Ok(())
        })
    }

    fn redeem_enrolment_code(
        &self,
        code_hash: &str,
        now: Millis,
        device: DeviceId,
        device_name: &str,
        token_hash: &str,
    ) -> Result<Option<PersonId>> {
        let code_hash = code_hash.to_string();
        let device_name = device_name.to_string();
        let token_hash = token_hash.to_string();
        self.write(move |tx| {
            let code_hash = code_hash.as_str(); let device_name = device_name.as_str(); let token_hash = token_hash.as_str();
            let person: Option<String> = tx
                .query_row(
                    "UPDATE enrolment_codes SET used_at = ?2
                     WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2 RETURNING person_id",
                    params![code_hash, now],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(person) = person else { return Ok(None) };
            tx.execute(
                "INSERT INTO devices (device_id, person_id, name, token_hash, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![device.to_string(), person, device_name, token_hash, now],
            )?;
            Ok(Some(parse(&person)?))
        })
    }

    fn sign_in(&self, token_hash: &str) -> Result<Option<SignIn>> {
        // The command-line tools change tokens in this file beside the running server; the
        // stamp says when (see `sign_in_cache`), and then nothing cached is used.
        if !self.stamp.check(&self.sign_ins) {
            return self.read_sign_in(token_hash);
        }
        self.sign_ins
            .get_or_read(token_hash, || self.read_sign_in(token_hash))
    }

    fn sign_in_from_memory(&self, token_hash: &str) -> Option<SignIn> {
        self.stamp
            .check(&self.sign_ins)
            .then(|| self.sign_ins.get(token_hash).ok())?
    }

    fn revoke_device(&self, device: DeviceId, at: Millis) -> Result<bool> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE device_id = ?1",
                params![device.to_string(), at],
            )?;
            Ok(n > 0)
        })
    }

    fn devices(&self) -> Result<Vec<Device>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, person_id, name, enrolled_at, revoked_at, last_sync_at FROM devices ORDER BY enrolled_at",
        )?;
        let rows = stmt.query_map([], device_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn device_synced(&self, device: DeviceId, at: Millis) -> Result<()> {
        self.writer.write(move |tx| {
            tx.execute(
                "UPDATE devices SET last_sync_at = ?2 WHERE device_id = ?1",
                params![device.to_string(), at],
            )?;
            Ok(())
        })
    }

    fn visit_chunks(&self, visit: VisitId) -> Result<Vec<Chunk>> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached("SELECT chunk_hash, bytes FROM doc_chunks WHERE visit_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([visit.to_string()], |r| {
            Ok(Chunk {
                hash: r.get(0)?,
                bytes: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn visit_chunk_hashes(&self, visit: VisitId) -> Result<Vec<String>> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached("SELECT chunk_hash FROM doc_chunks WHERE visit_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([visit.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One server process owns the file (the command-line tools write people and tokens, never
    /// documents).
    fn shared_by_instances(&self) -> bool {
        self.shared
    }

    fn commit_visit_raising(&self, c: &VisitCommit, raise: &[al::AlertRecord]) -> Result<()> {
        // Handed to the writer thread and answered once its group is durable (`group_commit`).
        self.writer.write(commit_work(c.clone(), raise.to_vec(), None)?)
    }

    fn reviews_in_commit(&self) -> bool {
        true
    }

    fn commit_visit_then(
        &self,
        c: VisitCommit,
        raise: Vec<al::AlertRecord>,
        review: Option<super::CommitReview>,
        then: super::CommitReply,
    ) {
        match commit_work(c, raise, review) {
            Ok(work) => self.writer.submit(work, then),
            Err(e) => then(Err(e)),
        }
    }

    fn compact_visit(&self, visit: VisitId, merged: &[String], snapshot: &Chunk) -> Result<()> {
        let merged = merged.to_vec();
        let snapshot = snapshot.clone();
        self.write_keeping_sign_ins(move |tx| {
            let merged = merged.as_slice();
            let snapshot = &snapshot;
            let id = visit.to_string();
            tx.execute(
                "INSERT INTO doc_chunks (visit_id, chunk_hash, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (visit_id, chunk_hash) DO NOTHING",
                params![id, snapshot.hash, snapshot.bytes],
            )?;
            let mut delete =
                tx.prepare_cached("DELETE FROM doc_chunks WHERE visit_id = ?1 AND chunk_hash = ?2")?;
            for hash in merged.iter().filter(|h| **h != snapshot.hash) {
                delete.execute(params![id, hash])?;
            }
            Ok(())
        })
    }

    fn sync_state(&self, device: DeviceId, visit: VisitId) -> Result<Option<Vec<u8>>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT state FROM sync_states WHERE device_id = ?1 AND visit_id = ?2",
                params![device.to_string(), visit.to_string()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn visit_row(&self, visit: VisitId) -> Result<Option<VisitRow>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                &format!("SELECT {VISIT_COLS} FROM visits v WHERE v.visit_id = ?1"),
                [visit.to_string()],
                visit_from,
            )
            .optional()?)
    }

    fn visits_for_carer(&self, carer: PersonId, from: Millis, to: Millis) -> Result<Vec<VisitRow>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VISIT_COLS} FROM assignments a JOIN visits v ON v.visit_id = a.visit_id
             WHERE a.carer_id = ?1 AND a.current = 1 AND v.planned_start >= ?2 AND v.planned_start < ?3
             ORDER BY v.planned_start"
        ))?;
        let rows = stmt.query_map(params![carer.to_string(), from, to], visit_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn was_ever_assigned(&self, visit: VisitId, carer: PersonId) -> Result<bool> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT 1 FROM assignments WHERE visit_id = ?1 AND carer_id = ?2",
                params![visit.to_string(), carer.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn client_carers(&self, client: ClientId) -> Result<Vec<PersonId>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT a.carer_id FROM visits v JOIN assignments a ON a.visit_id = v.visit_id
             WHERE v.client_id = ?1 AND a.current = 1",
        )?;
        let rows = stmt.query_map([client.to_string()], |r| column(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn events_for_visit(&self, visit: VisitId) -> Result<Vec<EventRow>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM clock_events WHERE visit_id = ?1 ORDER BY trusted_time, event_id"
        ))?;
        let rows = stmt.query_map([visit.to_string()], event_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn count_events(&self) -> Result<u64> {
        let conn = self.lock()?;
        Ok(conn.query_row("SELECT COUNT(*) FROM clock_events", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn create_team(&self, team: &Team) -> Result<()> {
        let team = team.clone();
        self.write_keeping_sign_ins(move |tx| {
            let team = &team;
            tx.execute(
                "INSERT INTO teams (team_id, name) VALUES (?1, ?2) ON CONFLICT (team_id) DO UPDATE SET name = ?2",
                params![team.id.to_string(), team.name],
            )?;
            Ok(())
        })
    }

    fn teams(&self) -> Result<Vec<Team>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT team_id, name FROM teams ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Team {
                id: column(r, 0)?,
                name: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn upsert_client(&self, c: &Client) -> Result<()> {
        let c = c.clone();
        self.write_keeping_sign_ins(move |tx| {
            let c = &c;
            let id = c.id.to_string();
            let before = tx
                .query_row(&format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = ?1"), [&id], client_from)
                .optional()?;
            tx.execute(
                "INSERT INTO clients (client_id, name, lat, lon, accuracy_m, tag_ids) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (client_id) DO UPDATE SET name = ?2, lat = ?3, lon = ?4, accuracy_m = ?5, tag_ids = ?6",
                params![
                    c.id.to_string(),
                    c.name,
                    c.location.map(|l| l.lat),
                    c.location.map(|l| l.lon),
                    c.location.map(|l| l.accuracy_m),
                    c.tag_ids.join(",")
                ],
            )?;
            // "Location verified" is judged against the client's recorded location.
            if before.is_some_and(|b| b.location != c.location) {
                rejudge(tx, "client_id", &id, caresync_core::clock::system_now())?;
            }
            Ok(())
        })
    }

    fn client(&self, id: ClientId) -> Result<Option<Client>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                &format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = ?1"),
                [id.to_string()],
                client_from,
            )
            .optional()?)
    }

    fn clients(&self) -> Result<Vec<Client>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CLIENT_COLS} FROM clients ORDER BY name, client_id"
        ))?;
        let rows = stmt.query_map([], client_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn upsert_contract_at(&self, c: &Contract, at: Millis) -> Result<()> {
        let c = c.clone();
        self.write_keeping_sign_ins(move |tx| {
            let c = &c;
            let id = c.id.to_string();
            let before: Option<String> = tx
                .query_row("SELECT rules FROM contracts WHERE contract_id = ?1", [&id], |r| r.get(0))
                .optional()?;
            let rules = c.rules.to_string();
            let changed = before.as_deref() != Some(rules.as_str());
            if changed {
                tx.execute(
                    "INSERT INTO contract_rules (contract_id, valid_from, rules) VALUES (?1, ?2, ?3)
                     ON CONFLICT (contract_id, valid_from) DO UPDATE SET rules = ?3",
                    params![id, at, rules],
                )?;
            }
            tx.execute(
                "INSERT INTO contracts (contract_id, name, commissioner, model, rules) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (contract_id) DO UPDATE SET name = ?2, commissioner = ?3, model = ?4, rules = ?5",
                params![c.id.to_string(), c.name, c.commissioner, c.model.as_str(), c.rules.to_string()],
            )?;
            if changed && before.is_some() {
                rejudge(tx, "contract_id", &id, at)?;
            }
            Ok(())
        })
    }

    fn contract(&self, id: ContractId) -> Result<Option<Contract>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                &format!("SELECT {CONTRACT_COLS} FROM contracts WHERE contract_id = ?1"),
                [id.to_string()],
                contract_from,
            )
            .optional()?)
    }

    fn contracts(&self) -> Result<Vec<Contract>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CONTRACT_COLS} FROM contracts ORDER BY name, contract_id"
        ))?;
        let rows = stmt.query_map([], contract_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn visits_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<VisitRow>> {
        let conn = self.lock_reports()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VISIT_COLS} FROM visits v WHERE v.planned_start >= ?1 AND v.planned_start < ?2 ORDER BY v.planned_start"
        ))?;
        let rows = stmt.query_map(params![from, to], visit_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn events_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<EventRow>> {
        let conn = self.lock_reports()?;
        let cols: Vec<String> = EVENT_COLS
            .split(", ")
            .map(|c| format!("e.{}", c.trim()))
            .collect();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM visits v JOIN clock_events e ON e.visit_id = v.visit_id
             WHERE v.planned_start >= ?1 AND v.planned_start < ?2",
            cols.join(", ")
        ))?;
        let rows = stmt.query_map(params![from, to], event_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn alerts(&self, query: &al::AlertQuery) -> Result<Vec<al::AlertRecord>> {
        let conn = self.lock()?;
        let (where_sql, values) = al::query_where(query);
        al_alerts(&conn, &where_sql, values)
    }

    fn alert_history(&self, id: AlertId) -> Result<Vec<al::AlertEntry>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM alert_history WHERE alert_id = ?1 ORDER BY seq",
            al::ENTRY_COLS
        ))?;
        let rows = stmt.query_map([id.to_string()], |r| al_row(r, &al::ENTRY_INT_COLS))?;
        let mut out = Vec::new();
        for row in rows {
            let (t, i) = row?;
            out.push(al::entry_from(&t, &i)?);
        }
        Ok(out)
    }

    fn open_escalation(&self, e: &al::Escalation) -> Result<bool> {
        let e = e.clone();
        self.write_keeping_sign_ins(move |tx| {
            let e = &e;
            Ok(tx
                .prepare_cached(&al::sqlite_sql(al::INSERT_ESCALATION))?
                .execute(rusqlite::params_from_iter(al_bind(al::escalation_values(e))))?
                == 1)
        })
    }

    fn escalations(&self) -> Result<Vec<al::Escalation>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM escalations ORDER BY week_start, contract_id, client_id",
            al::ESCALATION_COLS
        ))?;
        let rows = stmt.query_map([], |r| al_row(r, &al::ESCALATION_INT_COLS))?;
        let mut out = Vec::new();
        for row in rows {
            let (t, i) = row?;
            out.push(al::escalation_from(&t, &i)?);
        }
        Ok(out)
    }

    fn raise_escalation(&self, c: &al::CommissionerContact) -> Result<bool> {
        let Some(escalation) = c.escalation_id.clone() else {
            return Ok(false);
        };
        let c = c.clone();
        self.write_keeping_sign_ins(move |tx| {
            let c = &c;
            let n = tx
                .prepare_cached(&al::sqlite_sql(al::RAISE_ESCALATION))?
                .execute(params![
                    escalation,
                    c.recorded_at,
                    c.contact_on,
                    c.recorded_by.to_string(),
                    c.contact_id
                ])?;
            if n != 1 {
                return Ok(false);
            }
            tx.prepare_cached(&al::sqlite_sql(al::INSERT_CONTACT))?
                .execute(rusqlite::params_from_iter(al_bind(al::contact_values(c))))?;
            Ok(true)
        })
    }

    fn add_commissioner_contact(&self, c: &al::CommissionerContact) -> Result<()> {
        let c = c.clone();
        self.write_keeping_sign_ins(move |tx| {
            let c = &c;
            tx.prepare_cached(&al::sqlite_sql(al::INSERT_CONTACT))?
                .execute(rusqlite::params_from_iter(al_bind(al::contact_values(c))))?;
            Ok(())
        })
    }

    fn commissioner_contacts(&self) -> Result<Vec<al::CommissionerContact>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM commissioner_contacts ORDER BY contact_on, recorded_at",
            al::CONTACT_COLS
        ))?;
        let rows = stmt.query_map([], |r| al_row(r, &al::CONTACT_INT_COLS))?;
        let mut out = Vec::new();
        for row in rows {
            let (t, i) = row?;
            out.push(al::contact_from(&t, &i)?);
        }
        Ok(out)
    }

    fn claim_lease(&self, name: &str, holder: &str, now: Millis, until: Millis) -> Result<bool> {
        let name = name.to_string();
        let holder = holder.to_string();
        self.write_keeping_sign_ins(move |tx| {
            let name = name.as_str();
            let holder = holder.as_str();
            tx.prepare_cached(&al::sqlite_sql(al::ADD_LEASE))?
                .execute([name])?;
            let n = tx
                .prepare_cached(&al::sqlite_sql(al::CLAIM_LEASE))?
                .execute(params![name, holder, now, until])?;
            Ok(n == 1)
        })
    }

    fn report_snapshot(&self, q: &SnapshotQuery) -> Result<ReportSnapshot> {
        let mut conn = self.lock_reports()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = read_snapshot(&tx, q)?;
        tx.commit()?;
        Ok(out)
    }

    fn amendments_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<AmendmentRow>> {
        let conn = self.lock_reports()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.amendment_id, a.visit_id, a.author_id, a.carer_id, a.time, a.corrected_time, a.reason, a.written_at
             FROM visits v JOIN amendments a ON a.visit_id = v.visit_id
             WHERE v.planned_start >= ?1 AND v.planned_start < ?2",
        )?;
        let rows = stmt.query_map(params![from, to], |r| {
            Ok(AmendmentRow {
                amendment_id: column(r, 0)?,
                visit_id: column(r, 1)?,
                author_id: column(r, 2)?,
                carer_id: column(r, 3)?,
                time: column(r, 4)?,
                corrected_time: r.get(5)?,
                reason: column(r, 6)?,
                written_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// A visit's commit as the writer runs it (see [`group_commit`]): the chunk, the visit row, its
/// events, amendments and facts, the device's sync state, the alerts raised and (a due visit)
/// its alert review, in the group's transaction. Refused before anything is queued if it carries
/// another visit's rows.
fn commit_work(
    c: VisitCommit,
    raise: Vec<al::AlertRecord>,
    review: Option<super::CommitReview>,
) -> Result<impl FnMut(&Connection) -> Result<()> + Send + 'static> {
    // Events and amendments take the commit's planned start, so they must be its visit's.
    let visit = c.visit.visit_id;
    if c.new_events.iter().any(|e| e.visit_id != visit)
        || c.new_amendments.iter().any(|a| a.visit_id != visit)
    {
        return Err(StoreError::Conflict(format!(
            "a commit to visit {visit} carries another visit's rows"
        )));
    }
    Ok(move |tx: &Connection| {
        let c = &c;
        let v = &c.visit;
        let id = v.visit_id.to_string();
        if let Some(chunk) = &c.chunk {
            tx.prepare_cached(
                "INSERT INTO doc_chunks (visit_id, chunk_hash, bytes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (visit_id, chunk_hash) DO NOTHING",
            )?
            .execute(params![id, chunk.hash, chunk.bytes])?;
        }
        let carers: Vec<String> = v.carers.iter().map(|c| c.to_string()).collect();
        let joined = carers.join(",");
        let (client, contract) = (v.client_id.to_string(), v.contract_id.to_string());
        // The indexed columns (client, planned start) and the contract are set only when they
        // change: SQLite rewrites the entry of every index on a column an UPDATE sets, same
        // value or not, and each rewrite is a page in the WAL and again at the checkpoint.
        tx.prepare_cached("INSERT INTO visits (visit_id, client_id, contract_id, carers, planned_start, planned_end, status,
                                     chargeable, heads, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (visit_id) DO UPDATE SET carers = ?4, planned_end = ?6, status = ?7, chargeable = ?8,
                     heads = ?9, updated_at = ?10")?.execute(params![
                    id,
                    client,
                    contract,
                    joined,
                    v.planned_start,
                    v.planned_end,
                    v.status.as_str(),
                    v.chargeable,
                    v.heads.to_text(),
                    v.updated_at
                ],
            )?;
        tx.prepare_cached(
            "UPDATE visits SET client_id = ?2, contract_id = ?3, planned_start = ?4
                 WHERE visit_id = ?1 AND (client_id <> ?2 OR contract_id <> ?3 OR planned_start <> ?4)",
        )?
        .execute(params![id, client, contract, v.planned_start])?;
        // Only the assignments that change are written (most commits change none).
        tx.prepare_cached(
            "UPDATE assignments SET current = 0 WHERE visit_id = ?1 AND current = 1
                 AND instr(',' || ?2 || ',', ',' || carer_id || ',') = 0",
        )?
        .execute(params![id, joined])?;
        for carer in &carers {
            tx.prepare_cached("INSERT INTO assignments (visit_id, carer_id, current) VALUES (?1, ?2, 1)
                     ON CONFLICT (visit_id, carer_id) DO UPDATE SET current = 1 WHERE assignments.current = 0")?
                    .execute(params![id, carer])?;
        }
        let mut insert = tx.prepare_cached(&INSERT_EVENT)?;
        for e in &c.new_events {
            insert.execute(params![
                e.event_id.to_string(),
                e.visit_id.to_string(),
                e.carer_id.to_string(),
                e.device_id.to_string(),
                e.kind.as_str(),
                e.device_time,
                e.clock_offset_ms,
                e.offset_measured_at,
                e.trusted_time,
                e.received_at,
                e.method.as_str(),
                e.reason.map(|r| r.as_str()),
                e.location.map(|l| l.lat),
                e.location.map(|l| l.lon),
                e.location.map(|l| l.accuracy_m),
                e.flags.to_string(),
            ])?;
        }
        let mut insert = tx.prepare_cached(
                "INSERT INTO amendments (amendment_id, visit_id, author_id, carer_id, time, corrected_time, reason,
                                         written_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (amendment_id) DO NOTHING",
            )?;
        for a in &c.new_amendments {
            insert.execute(params![
                a.amendment_id.to_string(),
                a.visit_id.to_string(),
                a.author_id.to_string(),
                a.carer_id.to_string(),
                a.time.as_str(),
                a.corrected_time,
                a.reason.as_str(),
                a.written_at,
            ])?;
        }
        if let Some((device, state)) = &c.sync_state {
            if let Some(state) = state {
                tx.prepare_cached(
                    "INSERT INTO sync_states (device_id, visit_id, state) VALUES (?1, ?2, ?3)
                         ON CONFLICT (device_id, visit_id) DO UPDATE SET state = ?3",
                )?
                .execute(params![device.to_string(), id, state])?;
            }
            // The device's last sync, in the same transaction (not a second one per request).
            tx.prepare_cached("UPDATE devices SET last_sync_at = ?2 WHERE device_id = ?1")?
                .execute(params![device.to_string(), v.updated_at])?;
        }
        refresh_facts(tx, v, v.updated_at, Sums::Keep)?;
        for alert in &raise {
            al_insert(tx, alert, &crate::services::alerts::raised_entry(alert))?;
        }
        if let Some(review) = &review {
            // On the writer's connection, whose pages this commit just wrote. A failed review
            // leaves the change stored (what it wrote before failing stands, each alert whole);
            // the sweep makes good the rest.
            if let Err(e) = review_in_commit(tx, review, visit) {
                tracing::warn!(%visit, error = %e, "alert review in a commit failed; the sweep will retry");
            }
        }
        Ok(())
    })
}

/// A due visit's alerts reviewed by its facts as this commit leaves them
/// ([`crate::services::alerts::review_snapshot`]), raised and closed in the same transaction.
fn review_in_commit(tx: &Connection, review: &super::CommitReview, visit: VisitId) -> Result<()> {
    use crate::services::alerts::{one_visit, open_on, review_snapshot};
    let snapshot = read_snapshot(tx, &one_visit(visit, review.now))?;
    let (where_sql, values) = al::query_where(&open_on(visit));
    let open = al_alerts(tx, &where_sql, values)?;
    review_snapshot(&InCommit(tx), &review.settings, &snapshot, &open, review.now)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every write goes through the one writer: the office's and the sweep's as well as phones'
    /// commits, so none waits on another connection for SQLite's lock, and the writer's page
    /// cache is never dropped because another connection committed.
    #[test]
    fn every_write_goes_through_the_writer() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("server.db"))?;
        let before = store.group_commit_counts().writes;
        let team = Team {
            id: TeamId::new(),
            name: "North".into(),
        };
        store.create_team(&team)?;
        store.create_person(&Person {
            id: PersonId::new(),
            name: "Ann".into(),
            role: Role::Supervisor,
            team_id: Some(team.id),
            active: true,
        })?;
        assert!(store.claim_lease("sweep", "a", 1, 2)?);
        assert_eq!(store.group_commit_counts().writes, before + 3);
        // Written, and read back through the other connection.
        assert_eq!(store.teams()?, vec![team]);
        assert_eq!(store.people()?.len(), 1);
        assert!(!store.claim_lease("sweep", "b", 1, 2)?, "the lease is held");
        Ok(())
    }

    /// The writer keeps its statement journals in memory (1 KiB chunks), not as temporary files
    /// buffering 64 KiB each, whose every free made glibc trim the writer's heap.
    #[test]
    fn the_writer_keeps_statement_journals_in_memory() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("server.db"))?;
        let temp_store: i64 = store
            .writer
            .write(|c| Ok(c.pragma_query_value(None, "temp_store", |r| r.get(0))?))?;
        assert_eq!(temp_store, 2, "MEMORY");
        Ok(())
    }

    /// A store written at schema 1 (before events carried their visit's planned start) opens at
    /// the current schema with its events and amendments in the right periods.
    #[test]
    fn schema_1_upgrades_with_events_in_their_periods() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("server.db");
        let (visit, event, amendment) = (VisitId::new(), EventId::new(), AmendmentId::new());
        {
            let conn = sqlite::open(&path, &MIGRATIONS[..1], Durability::Normal)?;
            conn.execute_batch(&format!(
                "INSERT INTO visits VALUES ('{visit}', '{c}', '{k}', '', 500000, 600000, 'scheduled', NULL, '', 1);
                 INSERT INTO clock_events (event_id, visit_id, carer_id, device_id, kind, device_time,
                     trusted_time, received_at, method)
                 VALUES ('{event}', '{visit}', '{p}', '{d}', 'clock_in', 500000, 500000, 500001, 'app');
                 INSERT INTO amendments VALUES ('{amendment}', '{visit}', '{p}', '{p}', 'clock_in', 500000,
                     'forgot_to_clock', 700000);",
                c = ClientId::new(),
                k = ContractId::new(),
                p = PersonId::new(),
                d = DeviceId::new(),
            ))?;
        }
        let store = SqliteStore::open(&path)?;
        let version: i64 = store.lock()?.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(version, MIGRATIONS.len() as i64);
        let events = store.events_planned_between(500_000, 500_001)?;
        assert_eq!(events.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![event]);
        assert!(store.events_planned_between(0, 500_000)?.is_empty());
        let amendments = store.amendments_planned_between(500_000, 500_001)?;
        assert_eq!(
            amendments.iter().map(|a| a.amendment_id).collect::<Vec<_>>(),
            vec![amendment]
        );
        Ok(())
    }

    /// Every table's columns (name, type, not null, default, key position) and every object's
    /// SQL with white space folded: what a fresh database and a migrated one must share.
    fn full_schema(conn: &Connection) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (kind, name, sql) in sqlite::schema_fingerprint(conn)? {
            out.push(format!(
                "{kind} {name}: {}",
                sql.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
            if kind == "table" {
                let mut stmt = conn
                    .prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")?;
                let cols = stmt.query_map([&name], |r| {
                    Ok(format!(
                        "  {name}.{}: {} notnull={} default={:?} pk={}",
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?
                    ))
                })?;
                out.extend(cols.collect::<rusqlite::Result<Vec<_>>>()?);
            }
        }
        Ok(out)
    }

    /// The one check of the numbered files: a database made at schema 1 with rows in it and
    /// migrated one step at a time ends with exactly the schema of a fresh one, at the same version.
    #[test]
    fn a_database_migrated_step_by_step_has_the_fresh_schema() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("old.db");
        let (visit, person, contract) = (VisitId::new(), PersonId::new(), ContractId::new());
        {
            let conn = sqlite::open(&path, &MIGRATIONS[..1], Durability::Normal)?;
            conn.execute_batch(&format!(
                "INSERT INTO people VALUES ('{person}', 'Ann', 'carer', NULL, 1);
                 INSERT INTO api_tokens VALUES ('token', '{person}', 1, NULL);
                 INSERT INTO contracts VALUES ('{contract}', 'Spot', 'County', 'spot', '{rules}');
                 INSERT INTO visits VALUES ('{visit}', '{c}', '{contract}', '{person}', 500000, 600000,
                     'scheduled', NULL, '', 1);
                 INSERT INTO assignments VALUES ('{visit}', '{person}', 1);
                 INSERT INTO clock_events (event_id, visit_id, carer_id, device_id, kind, device_time,
                     trusted_time, received_at, method)
                 VALUES ('{e}', '{visit}', '{person}', '{d}', 'clock_in', 500000, 500000, 500001, 'app');",
                c = ClientId::new(),
                e = EventId::new(),
                d = DeviceId::new(),
                rules = serde_json::to_string(&ContractRules::default())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ))?;
        }
        for n in 2..=MIGRATIONS.len() {
            let conn = sqlite::open(&path, &MIGRATIONS[..n], Durability::Normal)?;
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            assert_eq!(version, MIGRATIONS[n - 1].version());
        }
        let migrated = SqliteStore::open(&path)?;
        let fresh = SqliteStore::open(&dir.path().join("fresh.db"))?;
        let version = |s: &SqliteStore| -> Result<i64> {
            Ok(s.lock()?.query_row("PRAGMA user_version", [], |r| r.get(0))?)
        };
        assert_eq!(version(&migrated)?, 9);
        assert_eq!(version(&fresh)?, 9);
        let schema = full_schema(&*migrated.lock()?)?;
        assert_eq!(schema, full_schema(&*fresh.lock()?)?);
        assert!(schema.iter().any(|s| s.starts_with("table leases")), "{schema:?}");
        // The rows came through, the backfill judged the visit.
        assert_eq!(migrated.visit_row(visit)?.map(|v| v.contract_id), Some(contract));
        let facts: i64 = migrated
            .lock()?
            .query_row("SELECT COUNT(*) FROM visit_facts", [], |r| r.get(0))?;
        assert_eq!(facts, 1);
        Ok(())
    }

    fn schema_of(conn: &Connection) -> Result<Vec<(String, String)>> {
        let mut stmt = conn.prepare(
            "SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Tokens from before expiry existed get the default 90 days from the upgrade (not forever);
    /// revoked ones stay revoked; the upgraded schema is the fresh one.
    #[test]
    fn a_commit_that_changes_no_figure_keeps_the_standing_version() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("server.db"))?;
        let start = 1_790_064_000_000;
        let mut row = VisitRow {
            visit_id: VisitId::new(),
            client_id: ClientId::new(),
            contract_id: ContractId::new(),
            carers: vec![PersonId::new()],
            planned_start: start,
            planned_end: start + 30 * MINUTE_MS,
            status: VisitStatus::Scheduled,
            chargeable: None,
            heads: Heads::default(),
            updated_at: start - 3 * HOUR_MS,
        };
        let commit = |row: &VisitRow| {
            store.commit_visit(&VisitCommit {
                visit: row.clone(),
                chunk: None,
                new_events: vec![],
                new_amendments: vec![],
                sync_state: None,
            })
        };
        let versions = || -> Result<Vec<(Millis, Option<Millis>)>> {
            let conn = store.lock()?;
            let mut stmt =
                conn.prepare("SELECT valid_from, valid_to FROM visit_facts ORDER BY valid_from")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        commit(&row)?;
        // A note or a replayed message: the row is rewritten, no figure changes.
        row.updated_at = start - 2 * HOUR_MS;
        commit(&row)?;
        assert_eq!(versions()?, vec![(start - 3 * HOUR_MS, None)]);
        // A reschedule: the standing version closes, a new one opens.
        row.planned_start += HOUR_MS;
        row.planned_end += HOUR_MS;
        row.updated_at = start - HOUR_MS;
        commit(&row)?;
        assert_eq!(
            versions()?,
            vec![
                (start - 3 * HOUR_MS, Some(start - HOUR_MS)),
                (start - HOUR_MS, None)
            ]
        );
        Ok(())
    }

    #[test]
    fn schema_5_backfills_the_facts_of_existing_visits() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("server.db");
        let (carer, client, contract) = (PersonId::new(), ClientId::new(), ContractId::new());
        let start = 1_790_064_000_000;
        let visit = |n: i64| VisitRow {
            visit_id: VisitId::new(),
            client_id: client,
            contract_id: contract,
            carers: vec![carer],
            planned_start: start + n * HOUR_MS,
            planned_end: start + n * HOUR_MS + 30 * MINUTE_MS,
            status: VisitStatus::Scheduled,
            chargeable: None,
            heads: Heads::default(),
            updated_at: start - DAY_MS,
        };
        let (on_time, missed) = (visit(0), visit(1));
        let clock_in = EventRow {
            event_id: EventId::new(),
            visit_id: on_time.visit_id,
            carer_id: carer,
            device_id: DeviceId::new(),
            kind: ClockKind::ClockIn,
            device_time: start + 2 * MINUTE_MS,
            clock_offset_ms: Some(0),
            offset_measured_at: Some(start),
            trusted_time: start + 2 * MINUTE_MS,
            received_at: start + 3 * MINUTE_MS,
            method: ClockMethod::Nfc,
            reason: None,
            location: None,
            flags: Default::default(),
        };
        let query = SnapshotQuery {
            from: start - DAY_MS,
            to: start + DAY_MS,
            as_of: start + 5 * HOUR_MS,
            tallies: Some(TallyKey::Contract),
            visits: true,
            ..SnapshotQuery::default()
        };
        let judged_at_commit = {
            let store = SqliteStore::open(&path)?;
            for (row, events) in [(&on_time, vec![clock_in]), (&missed, vec![])] {
                store.commit_visit(&VisitCommit {
                    visit: row.clone(),
                    chunk: None,
                    new_events: events,
                    new_amendments: vec![],
                    sync_state: None,
                })?;
            }
            store.report_snapshot(&query)?
        };
        // A database from before the facts: the tables gone, what 0009 dropped back, the schema
        // at version 4.
        {
            let conn = Connection::open(&path)?;
            conn.execute_batch(
                "DROP TABLE visit_fact_sums; DROP TABLE carer_visit_facts; DROP TABLE visit_facts;
                 DROP TABLE contract_rules; DROP TABLE reconciliation_sums; DROP TABLE continuity_sums;
                 DROP TABLE continuity_carer_sums;
                 ALTER TABLE clock_events ADD COLUMN planned_start INTEGER NOT NULL DEFAULT 0;
                 CREATE INDEX clock_events_by_planned_start ON clock_events (planned_start);
                 ALTER TABLE amendments ADD COLUMN planned_start INTEGER NOT NULL DEFAULT 0;
                 CREATE INDEX amendments_by_planned_start ON amendments (planned_start);
                 CREATE INDEX doc_chunks_by_visit ON doc_chunks (visit_id, seq);
                 PRAGMA user_version = 4;",
            )?;
        }
        let store = SqliteStore::open(&path)?;
        let backfilled = store.report_snapshot(&query)?;
        assert_eq!(backfilled.tallies, judged_at_commit.tallies);
        assert_eq!(backfilled.tallies.len(), 1);
        let counts = &backfilled.tallies[0].counts;
        assert_eq!(
            (counts.scheduled, counts.attended, counts.on_time, counts.missed),
            (2, 1, 1, 1)
        );
        assert_eq!(backfilled.visits, judged_at_commit.visits);
        // Backfilled facts stand from the start of time.
        let old = store.report_snapshot(&SnapshotQuery {
            as_of: 0,
            ..query.clone()
        })?;
        assert_eq!(old.tallies[0].counts.scheduled, 2);
        let fresh = SqliteStore::open(&dir.path().join("fresh.db"))?;
        assert_eq!(schema_of(&*store.lock()?)?, schema_of(&*fresh.lock()?)?);
        Ok(())
    }

    #[test]
    fn schema_2_upgrades_with_tokens_expiring_and_the_fresh_schema() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("server.db");
        let person = PersonId::new();
        {
            let conn = sqlite::open(&path, &MIGRATIONS[..2], Durability::Normal)?;
            conn.execute_batch(&format!(
                "INSERT INTO people VALUES ('{person}', 'Office', 'office', NULL, 1);
                 INSERT INTO api_tokens VALUES ('live', '{person}', 1, NULL);
                 INSERT INTO api_tokens VALUES ('revoked', '{person}', 1, 5);"
            ))?;
        }
        let before = caresync_core::clock::system_now();
        let store = SqliteStore::open(&path)?;
        let live = store.sign_in("live")?.ok_or(StoreError::Corrupt("lost".into()))?;
        let expires = live.expires_at.ok_or(StoreError::Corrupt("no expiry".into()))?;
        let ninety = 90 * DAY_MS;
        assert!(
            expires >= before - 1_000 + ninety && expires <= before + 60_000 + ninety,
            "{expires}"
        );
        let revoked = store
            .sign_in("revoked")?
            .ok_or(StoreError::Corrupt("lost".into()))?;
        assert_eq!(revoked.revoked_at, Some(5));

        let fresh = SqliteStore::open(&dir.path().join("fresh.db"))?;
        let upgraded = schema_of(&*store.lock()?)?;
        assert_eq!(upgraded, schema_of(&*fresh.lock()?)?);
        Ok(())
    }
}
