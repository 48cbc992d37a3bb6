//! PostgreSQL, for several server instances sharing one database. Same tables and meaning as the
//! embedded store; writes to one visit take a transaction-scoped advisory lock on the visit so two
//! instances committing the same visit are serialised by the database, not by a process lock.

use super::alerts as al;
use super::client_sums as cs;
use super::facts::{self as fx, Param, ReportSnapshot, SnapshotQuery};
use super::*;
use ::postgres::types::ToSql;
use ::postgres::{Client as PgClient, NoTls, Row, Statement, Transaction};
use caresync_core::metrics::{ContractRules, TallyKey, VisitFacts};
use caresync_core::migration;
use caresync_core::sqlite::Migration;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Condvar, LazyLock, Mutex};

/// Rust run after a step's SQL, in the migration transaction.
type PgStep = fn(&mut Transaction<'_>) -> Result<()>;

/// Schema steps, `sync-server/migrations/postgres/`, applied in order; the applied count is kept
/// in `caresync_schema`. Never edit a released step; add the next one.
const MIGRATIONS: &[Migration<PgStep>] = &[
    migration!("migrations/postgres", "0001_people_visits_and_events"),
    migration!("migrations/postgres", "0002_tokens_expire"),
    migration!("migrations/postgres", "0003_web_sessions"),
    // Existing visits are judged after the file (the backfill).
    migration!("migrations/postgres", "0004_visit_facts", then judge_visits_before_sums),
    migration!("migrations/postgres", "0005_alerts_and_leases"),
    // Sums what 0004's backfill wrote; from here the commit path keeps them.
    migration!("migrations/postgres", "0006_visit_fact_sums"),
    // Sums the standing facts per client; from here the commit path keeps them.
    migration!("migrations/postgres", "0007_client_sums", then fill_client_sums),
    migration!("migrations/postgres", "0008_chunks_by_their_unique_index"),
];

const _: () = assert!(caresync_core::sqlite::numbered_in_order(MIGRATIONS));

/// The schema version this build writes (the number of the last step).
#[doc(hidden)]
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A bounded pool of blocking connections, opened on demand and reused. The bound keeps a busy
/// instance (tokio's blocking pool has hundreds of threads) within PostgreSQL's `max_connections`:
/// callers beyond it wait for a connection to come back.
pub struct PostgresStore {
    url: String,
    pool: Mutex<Pool>,
    returned: Condvar,
    max_open: usize,
    /// Tokens' rows in memory; another instance's revocation reaches it within its TTL.
    sign_ins: super::sign_in_cache::SignInCache,
}

struct Pool {
    idle: Vec<(PgClient, Prepared)>,
    open: usize,
}

/// The commit path's statements, prepared once per connection and kept by their text: sent as
/// text, each statement was parsed and planned again on every commit, a round trip more each.
/// Prepared statements belong to the connection and outlive a transaction rolled back.
#[derive(Default)]
struct Prepared(HashMap<String, Statement>);

/// More than the commit path's statements: a bound, should text ever vary.
const PREPARED_PER_CONNECTION: usize = 128;

/// A transaction with its connection's prepared statements: the commit path's `execute` and
/// `query` calls, each statement prepared the first time its connection runs it.
struct Tx<'a, 't> {
    tx: &'a mut Transaction<'t>,
    prepared: &'a mut Prepared,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl Tx<'_, '_> {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.prepared.0.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        if self.prepared.0.len() >= PREPARED_PER_CONNECTION {
            self.prepared.0.clear();
        }
        self.prepared.0.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        let s = self.statement(sql)?;
        Ok(self.tx.execute(&s, params)?)
    }

    fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        let s = self.statement(sql)?;
        Ok(self.tx.query(&s, params)?)
    }

    fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_opt(&s, params)?)
    }

    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_one(&s, params)?)
    }
}

/// Connections per instance unless `open_with_pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// A connection borrowed from the pool; returned on drop, or forgotten if it broke.
struct Conn<'a> {
    store: &'a PostgresStore,
    client: Option<(PgClient, Prepared)>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = PgClient;
    fn deref(&self) -> &PgClient {
        &self.client.as_ref().expect("present until drop").0
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgClient {
        &mut self.client.as_mut().expect("present until drop").0
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.store.give_back(Some(client));
        }
    }
}

impl PostgresStore {
    /// The token's row, from the database (see [`super::sign_in_cache`]).
    fn read_sign_in(&self, token_hash: &str) -> Result<Option<SignIn>> {
        let mut conn = self.conn()?;
        let device = conn.query_opt(
            &format!(
                "SELECT {PERSON_COLS}, d.device_id, d.revoked_at
                 FROM devices d JOIN people p ON p.person_id = d.person_id
                 WHERE d.token_hash = $1"
            ),
            &[&token_hash],
        )?;
        if let Some(r) = device {
            return Ok(Some(SignIn {
                principal: Principal {
                    person: person_from(&r)?,
                    device_id: Some(parse(r.get(5))?),
                },
                revoked_at: r.get(6),
                expires_at: None,
            }));
        }
        let token = conn.query_opt(
            &format!(
                "SELECT {PERSON_COLS}, t.revoked_at, t.expires_at
                 FROM api_tokens t JOIN people p ON p.person_id = t.person_id
                 WHERE t.token_hash = $1"
            ),
            &[&token_hash],
        )?;
        token
            .map(|r| {
                Ok(SignIn {
                    principal: Principal {
                        person: person_from(&r)?,
                        device_id: None,
                    },
                    revoked_at: r.get(5),
                    expires_at: r.get(6),
                })
            })
            .transpose()
    }

    /// Connect and bring the schema up to date. Must not be called from inside a tokio runtime's
    /// async context (the blocking client runs its own).
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with_pool_size(url, DEFAULT_POOL_SIZE)
    }

    pub fn open_with_pool_size(url: &str, max_open: usize) -> Result<Self> {
        let store = Self::unmigrated(url, max_open);
        store.migrate(MIGRATIONS.len())?;
        Ok(store)
    }

    /// Bring an empty database only up to schema `version` (and no further), as an older build
    /// left it: for tests of the upgrade path. Writing through the store is for the current
    /// schema only; write an old database's rows with SQL.
    #[doc(hidden)]
    pub fn migrate_to(url: &str, version: usize) -> Result<()> {
        Self::unmigrated(url, 1).migrate(version)
    }

    fn unmigrated(url: &str, max_open: usize) -> Self {
        Self {
            url: url.to_string(),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
            max_open: max_open.max(1),
            sign_ins: Default::default(),
        }
    }

    fn conn(&self) -> Result<Conn<'_>> {
        let mut pool = self.pool.lock().map_err(|_| StoreError::Poisoned)?;
        loop {
            if let Some(pooled) = pool.idle.pop() {
                return Ok(Conn {
                    store: self,
                    client: Some(pooled),
                });
            }
            if pool.open < self.max_open {
                pool.open += 1;
                drop(pool);
                return match PgClient::connect(&self.url, NoTls) {
                    Ok(client) => Ok(Conn {
                        store: self,
                        client: Some((client, Prepared::default())),
                    }),
                    Err(e) => {
                        self.give_back(None);
                        Err(e.into())
                    }
                };
            }
            pool = self.returned.wait(pool).map_err(|_| StoreError::Poisoned)?;
        }
    }

    /// A connection comes back (or, if broken or never made, its slot does).
    fn give_back(&self, client: Option<(PgClient, Prepared)>) {
        if let Ok(mut pool) = self.pool.lock() {
            match client {
                Some(c) if !c.0.is_closed() => pool.idle.push(c),
                _ => pool.open = pool.open.saturating_sub(1),
            }
        }
        self.returned.notify_one();
    }

    /// A transaction that may change a token's standing: the cached sign-ins are forgotten
    /// once it commits.
    fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let out = self.write_keeping_sign_ins(f)?;
        // People, tokens and devices are written here (and in the revocations below).
        self.sign_ins.invalidate();
        Ok(out)
    }

    /// A transaction that writes no person, token or device's standing (visit commits, alerts,
    /// leases), so the cached sign-ins stand. Forgetting them after every visit commit made
    /// every sync read its token from the database again.
    fn write_keeping_sign_ins<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// [`Self::write_keeping_sign_ins`] through the connection's prepared statements (the
    /// commit path: a few dozen statements per sync).
    fn write_prepared<T>(&self, f: impl FnOnce(&mut Tx<'_, '_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let (client, prepared) = conn.client.as_mut().expect("present until drop");
        let mut tx = client.transaction()?;
        let out = f(&mut Tx {
            tx: &mut tx,
            prepared,
        })?;
        tx.commit()?;
        Ok(out)
    }

    /// Apply the steps after the database's version, up to `target`.
    fn migrate(&self, target: usize) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // One migrator at a time, whichever instance starts first.
        tx.execute("SELECT pg_advisory_xact_lock(4242001)", &[])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS caresync_schema (version INTEGER NOT NULL)")?;
        let version: i32 = match tx.query_opt("SELECT version FROM caresync_schema", &[])? {
            Some(r) => r.get(0),
            None => {
                tx.execute("INSERT INTO caresync_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        let version = usize::try_from(version).map_err(|_| StoreError::Corrupt("schema version".into()))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {version} is newer than this server knows ({})",
                MIGRATIONS.len()
            )));
        }
        for step in MIGRATIONS.iter().take(target).skip(version) {
            tx.batch_execute(step.sql)?;
            if let Some(then) = step.then {
                then(&mut tx)?;
            }
            tx.execute(
                "UPDATE caresync_schema SET version = $1",
                &[&(step.version() as i32)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Serialise writers of one visit across instances until the transaction ends.
    fn lock_visit(tx: &mut Tx<'_, '_>, visit: &str) -> Result<()> {
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&visit])?;
        Ok(())
    }
}

fn parse<T: FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad value {s:?}")))
}

fn parse_opt<T: FromStr>(s: Option<String>) -> Result<Option<T>> {
    s.map(|s| parse(&s)).transpose()
}

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').filter(|s| !s.is_empty())
}

const PERSON_COLS: &str = "p.person_id, p.name, p.role, p.team_id, p.active";

fn person_from(r: &Row) -> Result<Person> {
    Ok(Person {
        id: parse(r.get(0))?,
        name: r.get(1),
        role: parse(r.get(2))?,
        team_id: parse_opt(r.get(3))?,
        active: r.get(4),
    })
}

const VISIT_COLS: &str =
    "v.visit_id, v.client_id, v.contract_id, v.carers, v.planned_start, v.planned_end, v.status, v.chargeable, v.heads, v.updated_at";

fn visit_from(r: &Row) -> Result<VisitRow> {
    Ok(VisitRow {
        visit_id: parse(r.get(0))?,
        client_id: parse(r.get(1))?,
        contract_id: parse(r.get(2))?,
        carers: split(r.get(3)).map(parse).collect::<Result<_>>()?,
        planned_start: r.get(4),
        planned_end: r.get(5),
        status: parse(r.get(6))?,
        chargeable: r.get(7),
        heads: parse(r.get(8))?,
        updated_at: r.get(9),
    })
}

const EVENT_COLS: &str = "e.event_id, e.visit_id, e.carer_id, e.device_id, e.kind, e.device_time, e.clock_offset_ms, \
     e.offset_measured_at, e.trusted_time, e.received_at, e.method, e.reason, e.lat, e.lon, e.accuracy_m, e.flags";

fn event_from(r: &Row) -> Result<EventRow> {
    let (lat, lon, acc): (Option<f64>, Option<f64>, Option<f64>) = (r.get(12), r.get(13), r.get(14));
    Ok(EventRow {
        event_id: parse(r.get(0))?,
        visit_id: parse(r.get(1))?,
        carer_id: parse(r.get(2))?,
        device_id: parse(r.get(3))?,
        kind: parse(r.get(4))?,
        device_time: r.get(5),
        clock_offset_ms: r.get(6),
        offset_measured_at: r.get(7),
        trusted_time: r.get(8),
        received_at: r.get(9),
        method: parse(r.get(10))?,
        reason: parse_opt(r.get(11))?,
        location: match (lat, lon, acc) {
            (Some(lat), Some(lon), Some(accuracy_m)) => Some(Location { lat, lon, accuracy_m }),
            _ => None,
        },
        flags: parse(r.get(15))?,
    })
}

const CLIENT_COLS: &str = "client_id, name, lat, lon, accuracy_m, tag_ids";

fn client_from(r: &Row) -> Result<Client> {
    let (lat, lon, acc): (Option<f64>, Option<f64>, Option<f64>) = (r.get(2), r.get(3), r.get(4));
    Ok(Client {
        id: parse(r.get(0))?,
        name: r.get(1),
        location: match (lat, lon) {
            (Some(lat), Some(lon)) => Some(Location {
                lat,
                lon,
                accuracy_m: acc.unwrap_or(0.0),
            }),
            _ => None,
        },
        tag_ids: split(r.get(5)).map(str::to_string).collect(),
    })
}

const CONTRACT_COLS: &str = "contract_id, name, commissioner, model, rules";

fn contract_from(r: &Row) -> Result<Contract> {
    let rules: String = r.get(4);
    Ok(Contract {
        id: parse(r.get(0))?,
        name: r.get(1),
        commissioner: r.get(2),
        model: parse(r.get(3))?,
        rules: serde_json::from_str(&rules)
            .map_err(|e| StoreError::Corrupt(format!("contract rules: {e}")))?,
    })
}

fn amendment_from(r: &Row) -> Result<AmendmentRow> {
    Ok(AmendmentRow {
        amendment_id: parse(r.get(0))?,
        visit_id: parse(r.get(1))?,
        author_id: parse(r.get(2))?,
        carer_id: parse(r.get(3))?,
        time: parse(r.get(4))?,
        corrected_time: r.get(5),
        reason: parse(r.get(6))?,
        written_at: r.get(7),
    })
}

fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

fn bind(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(v) => v as &(dyn ToSql + Sync),
            Param::Text(t) => t as &(dyn ToSql + Sync),
        })
        .collect()
}

/// Judge a visit from its rows in this transaction and make the result its standing facts from
/// `at` (as the embedded store does).
fn al_bind(values: &[al::Value]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| match v {
            al::Value::Int(i) => i as &(dyn ToSql + Sync),
            al::Value::Text(t) => t as &(dyn ToSql + Sync),
        })
        .collect()
}

fn al_insert(tx: &mut Transaction<'_>, alert: &al::AlertRecord, entry: &al::AlertEntry) -> Result<bool> {
    al_insert_prepared(
        &mut Tx {
            tx,
            prepared: &mut Prepared::default(),
        },
        alert,
        entry,
    )
}

fn al_insert_prepared(tx: &mut Tx<'_, '_>, alert: &al::AlertRecord, entry: &al::AlertEntry) -> Result<bool> {
    let values = al::alert_values(alert);
    let inserted = tx.execute(al::INSERT_ALERT, &al_bind(&values))?;
    if inserted == 1 {
        let values = al::entry_values(entry);
        tx.execute(al::INSERT_ENTRY, &al_bind(&values))?;
    }
    Ok(inserted == 1)
}

fn al_row<const N: usize>(r: &Row, ints: &[bool; N]) -> Result<al::RawRow> {
    let mut t = Vec::with_capacity(N);
    let mut i = Vec::with_capacity(N);
    for (k, is_int) in ints.iter().enumerate() {
        if *is_int {
            t.push(None);
            i.push(r.try_get(k)?);
        } else {
            t.push(r.try_get(k)?);
            i.push(None);
        }
    }
    Ok((t, i))
}

fn al_alerts(client: &mut PgClient, where_sql: &str, values: Vec<al::Value>) -> Result<Vec<al::AlertRecord>> {
    let sql = format!(
        "SELECT {} FROM alerts {where_sql} ORDER BY raised_at, alert_id",
        al::ALERT_COLS
    );
    let mut out = Vec::new();
    for r in client.query(&sql, &al_bind(&values))? {
        let (t, i) = al_row(&r, &al::ALERT_INT_COLS)?;
        out.push(al::alert_from(&t, &i)?);
    }
    Ok(out)
}

fn refresh_facts(tx: &mut Tx<'_, '_>, row: &VisitRow, at: Millis, sums: Sums) -> Result<()> {
    let id = row.visit_id.to_string();
    let events = rows(
        tx.query(
            &format!("SELECT {EVENT_COLS} FROM clock_events e WHERE e.visit_id = $1 ORDER BY e.received_at, e.event_id"),
            &[&id],
        )?,
        event_from,
    )?;
    let amendments = rows(
        tx.query(
            "SELECT amendment_id, visit_id, author_id, carer_id, time, corrected_time, reason, written_at
             FROM amendments WHERE visit_id = $1 ORDER BY written_at, amendment_id",
            &[&id],
        )?,
        amendment_from,
    )?;
    // FOR SHARE, like the rules below: a location change committing meanwhile waits, then
    // judges this visit again with what this commit wrote.
    let location = match tx.query_opt(
        &format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = $1 FOR SHARE"),
        &[&row.client_id.to_string()],
    )? {
        Some(r) => client_from(&r)?.location,
        None => None,
    };
    // FOR SHARE: a rules change committing meanwhile waits for this commit, then judges it again.
    let rules: ContractRules = tx
        .query_opt(
            "SELECT rules FROM contracts WHERE contract_id = $1 FOR SHARE",
            &[&row.contract_id.to_string()],
        )?
        .and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
        .unwrap_or_default();
    let facts = VisitFacts::judge(
        &fx::record_from_rows(row, &events, &amendments),
        &rules,
        &fx::inputs(location, &events),
    );
    write_facts(tx, &facts, at, sums)
}

/// Whether the per-contract slot sums exist yet: not while `0004`'s backfill runs (`0006`
/// sums what it wrote).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sums {
    Keep,
    NotYet,
}

/// The sums tables' upserts ([`cs::move_sums`] works out what they add).
struct SumsUpserts<'a, 'b, 'c>(&'a mut Tx<'b, 'c>);

impl cs::SumsWriter for SumsUpserts<'_, '_, '_> {
    fn add_slots(&mut self, d: &fx::SlotDelta, at: Millis) -> Result<()> {
        let mut values: Vec<&(dyn ToSql + Sync)> =
            vec![&d.slot, &d.contract, &at, &d.missed_bound, &d.open_bound];
        values.extend(d.sums.iter().map(|v| v as &(dyn ToSql + Sync)));
        self.0.execute(&ADD_SLOT_SUMS, &values)?;
        Ok(())
    }

    fn add_reconciliation(&mut self, d: &cs::ReconciliationDelta, at: Millis) -> Result<()> {
        self.0.execute(
            &ADD_RECONCILIATION,
            &[
                &d.days,
                &d.start_day,
                &d.client,
                &d.contract,
                &at,
                &d.visits,
                &d.cancelled,
                &d.authorised_ms,
                &d.delivered_ms,
                &d.billable_minutes,
            ],
        )?;
        Ok(())
    }

    fn add_carer(&mut self, d: &cs::CarerDelta) -> Result<(i64, i64)> {
        let row = self.0.query_one(
            &ADD_CARER,
            &[&d.days, &d.start_day, &d.client, &d.carer, &d.came, &d.assigned],
        )?;
        Ok((row.get(0), row.get(1)))
    }

    fn add_continuity(&mut self, d: &cs::ContinuityDelta, at: Millis) -> Result<()> {
        self.0.execute(
            &ADD_CONTINUITY,
            &[
                &d.days,
                &d.start_day,
                &d.client,
                &at,
                &d.visits,
                &d.carers_came,
                &d.carers_assigned,
            ],
        )?;
        Ok(())
    }
}

/// What the sums read of the stored visit-level row `fact_id`.
fn stored_sum_inputs(tx: &mut Tx<'_, '_>, fact_id: i64) -> Result<fx::SumInputs> {
    let row = tx.query_one(&SUM_INPUTS, &[&fact_id])?;
    let values = (0..fx::SUM_INPUT_COLS.len())
        .map(|i| {
            if i < fx::SUM_INPUT_TEXT_COLS {
                Param::Text(row.get(i))
            } else {
                Param::Int(row.get(i))
            }
        })
        .collect();
    let carers = tx
        .query(fx::SUM_INPUT_CARERS_SQL, &[&fact_id])?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(fx::SumInputs::stored(values, carers))
}

/// After `0007_client_sums` (and the bench, after writing facts in bulk): the per-client sums
/// of the facts already there, by [`cs::fill_sql`] over a temporary table of the hours the planned
/// starts fall in, with the sums' zone's offset at each (computed here, as the commit path does).
#[doc(hidden)]
pub fn fill_client_sums(tx: &mut Transaction<'_>) -> Result<()> {
    tx.batch_execute(&cs::EMPTY_SQL.join(";"))?;
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {} (hour BIGINT PRIMARY KEY, offset_ms BIGINT NOT NULL) ON COMMIT DROP",
        cs::HOURS_TABLE
    ))?;
    let hours: Vec<i64> = tx
        .query(&cs::hours_sql(), &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let offsets: Vec<i64> = hours
        .iter()
        .map(|h| cs::offset_at(h.saturating_mul(HOUR_MS)))
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO {} SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[])",
            cs::HOURS_TABLE
        ),
        &[&hours, &offsets],
    )?;
    tx.batch_execute(&format!("ANALYZE {}", cs::HOURS_TABLE))?;
    for sql in cs::fill_sql_with(cs::Ids::Uuid) {
        tx.execute(&sql, &[])?;
    }
    tx.batch_execute(&format!("DROP TABLE {}", cs::HOURS_TABLE))?;
    Ok(())
}

/// The commit path's fact statements, written once rather than formatted on every commit.
static ADD_SLOT_SUMS: LazyLock<String> = LazyLock::new(fx::add_slot_sums_sql);
static INSERT_VISIT_FACTS: LazyLock<String> = LazyLock::new(fx::insert_visit_sql);
static INSERT_CARER_FACTS: LazyLock<String> = LazyLock::new(fx::insert_carer_sql);
static ADD_RECONCILIATION: LazyLock<String> = LazyLock::new(|| cs::add_reconciliation_sql(cs::Ids::Uuid));
static ADD_CARER: LazyLock<String> = LazyLock::new(|| cs::add_carer_sql(cs::Ids::Uuid));
static ADD_CONTINUITY: LazyLock<String> = LazyLock::new(|| cs::add_continuity_sql(cs::Ids::Uuid));
static SUM_INPUTS: LazyLock<String> = LazyLock::new(fx::sum_inputs_sql);

fn write_facts(tx: &mut Tx<'_, '_>, facts: &VisitFacts, at: Millis, sums: Sums) -> Result<()> {
    let id = facts.visit_id.to_string();
    let version = fx::Version::of(facts);
    let fingerprint = version.fingerprint;
    let standing = tx.query_opt(
        "SELECT fact_id, valid_from, fingerprint FROM visit_facts
         WHERE visit_id = $1 AND valid_to IS NULL",
        &[&id],
    )?;
    let standing: Option<(i64, Millis, i64)> = standing.map(|r| (r.get(0), r.get(1), r.get(2)));
    if standing.is_some_and(|(_, _, same)| same == fingerprint) {
        return Ok(());
    }
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
            tx.execute("DELETE FROM carer_visit_facts WHERE fact_id = $1", &[&fact_id])?;
            tx.execute("DELETE FROM visit_facts WHERE fact_id = $1", &[&fact_id])?;
        } else {
            tx.execute(
                "UPDATE visit_facts SET valid_to = $2 WHERE fact_id = $1",
                &[&fact_id, &at],
            )?;
        }
    }
    let params = version.row(at);
    let fact_id: i64 = tx.query_one(&INSERT_VISIT_FACTS, &bind(&params))?.get(0);
    for (rank, c) in facts.carers.iter().enumerate() {
        let params = fx::carer_params(fact_id, rank, c);
        tx.execute(&INSERT_CARER_FACTS, &bind(&params))?;
    }
    Ok(())
}

/// Judge every visit that has no facts yet, valid from the start of time (backfill, copy).
pub(super) fn judge_visits_without_facts(tx: &mut Transaction<'_>) -> Result<()> {
    judge_unjudged(tx, Sums::Keep)
}

/// The backfill of `0004`, before the sums' table exists.
fn judge_visits_before_sums(tx: &mut Transaction<'_>) -> Result<()> {
    judge_unjudged(tx, Sums::NotYet)
}

fn judge_unjudged(tx: &mut Transaction<'_>, sums: Sums) -> Result<()> {
    let tx = &mut Tx {
        tx,
        prepared: &mut Prepared::default(),
    };
    let visits = tx.query(
        &format!(
            "SELECT {VISIT_COLS} FROM visits v WHERE NOT EXISTS
                 (SELECT 1 FROM visit_facts f WHERE f.visit_id = v.visit_id)"
        ),
        &[],
    )?;
    for row in rows(visits, visit_from)? {
        refresh_facts(tx, &row, 0, sums)?;
    }
    Ok(())
}

fn rejudge(tx: &mut Transaction<'_>, column: &str, id: &str, at: Millis) -> Result<()> {
    let tx = &mut Tx {
        tx,
        prepared: &mut Prepared::default(),
    };
    let visits = tx.query(
        &format!("SELECT {VISIT_COLS} FROM visits v WHERE v.{column} = $1"),
        &[&id],
    )?;
    for row in rows(visits, visit_from)? {
        refresh_facts(tx, &row, at, Sums::Keep)?;
    }
    Ok(())
}

/// One row of a binary `COPY`: its fields as byte ranges of one buffer.
struct CopyRow<'a> {
    buf: &'a [u8],
    fields: &'a [Option<(usize, usize)>],
}

impl CopyRow<'_> {
    fn bytes(&self, i: usize) -> Result<&[u8]> {
        match self.fields.get(i) {
            Some(Some((a, b))) => Ok(&self.buf[*a..*b]),
            _ => Err(StoreError::Corrupt(format!("sums row without field {i}"))),
        }
    }

    /// A `BIGINT`.
    fn int(&self, i: usize) -> Result<i64> {
        let b: [u8; 8] = self
            .bytes(i)?
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("sums field {i} is not a BIGINT")))?;
        Ok(i64::from_be_bytes(b))
    }

    /// A `UUID` (an id): its 16 bytes.
    fn uuid(&self, i: usize) -> Result<uuid::Uuid> {
        let b: [u8; 16] = self
            .bytes(i)?
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("sums field {i} is not a UUID")))?;
        Ok(uuid::Uuid::from_bytes(b))
    }
}

fn copy_error(e: std::io::Error) -> StoreError {
    match e.into_inner().map(|inner| inner.downcast::<::postgres::Error>()) {
        Some(Ok(pg)) => StoreError::Postgres(*pg),
        Some(Err(other)) => StoreError::Corrupt(format!("reading sums from PostgreSQL: {other}")),
        None => StoreError::Corrupt("reading sums from PostgreSQL".into()),
    }
}

/// Each row of `sql` (its `$n` integers given in `params`, written into it: `COPY` takes no
/// parameters) by a binary `COPY`. The sums' reads return hundreds of thousands of rows, and
/// the client's row objects cost more than the server's scan (about 1 µs a row); this way the
/// client does little more than find the fields.
fn copy_rows(
    tx: &mut Transaction<'_>,
    sql: &str,
    params: &[i64],
    mut each: impl FnMut(&CopyRow<'_>) -> Result<()>,
) -> Result<()> {
    use std::io::BufRead;
    let mut sql = sql.to_string();
    for (i, v) in params.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", i + 1), &v.to_string());
    }
    let mut copy = tx.copy_out(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))?;
    // Rows are parsed where they lie in the reader's buffer (a message a row); only a row cut
    // between two buffers is copied.
    let mut state = CopyState::Header;
    let mut carry: Vec<u8> = Vec::new();
    let mut fields = Vec::new();
    loop {
        let chunk = copy.fill_buf().map_err(copy_error)?;
        let n = chunk.len();
        if n == 0 {
            break;
        }
        if carry.is_empty() {
            let used = copy_parse(chunk, &mut state, &mut fields, &mut each)?;
            carry.extend_from_slice(&chunk[used..]);
        } else {
            carry.extend_from_slice(chunk);
            let used = copy_parse(&carry, &mut state, &mut fields, &mut each)?;
            carry.drain(..used);
        }
        copy.consume(n);
    }
    if state != CopyState::Done || !carry.is_empty() {
        return Err(StoreError::Corrupt("binary COPY cut short".into()));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CopyState {
    Header,
    Rows,
    Done,
}

/// Parses the header and whole rows at the start of `data`, giving each row to `each`; returns
/// how many bytes it used (the rest is an incomplete row).
fn copy_parse(
    data: &[u8],
    state: &mut CopyState,
    fields: &mut Vec<Option<(usize, usize)>>,
    each: &mut impl FnMut(&CopyRow<'_>) -> Result<()>,
) -> Result<usize> {
    let be32 = |at: usize| -> Option<i32> {
        let b = data.get(at..at + 4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 0;
    loop {
        match *state {
            CopyState::Done => return Ok(at),
            CopyState::Header => {
                let Some(extension) = be32(15) else { return Ok(0) };
                let end = 19 + usize::try_from(extension).unwrap_or(usize::MAX);
                if data.len() < end {
                    return Ok(0);
                }
                if &data[..11] != b"PGCOPY\n\xff\r\n\0" {
                    return Err(StoreError::Corrupt("not a binary COPY".into()));
                }
                at = end;
                *state = CopyState::Rows;
            }
            CopyState::Rows => {
                let Some(count) = data.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
                    return Ok(at);
                };
                if count < 0 {
                    *state = CopyState::Done;
                    at += 2;
                    continue;
                }
                fields.clear();
                let mut pos = at + 2;
                for _ in 0..count {
                    let Some(len) = be32(pos) else { return Ok(at) };
                    pos += 4;
                    match usize::try_from(len) {
                        Ok(len) if pos + len <= data.len() => {
                            fields.push(Some((pos, pos + len)));
                            pos += len;
                        }
                        Ok(_) => return Ok(at),
                        Err(_) => fields.push(None),
                    }
                }
                each(&CopyRow { buf: data, fields })?;
                at = pos;
            }
        }
    }
}

/// Reconciliation per local day (or whole week, as its Monday) from the per-client sums, or
/// `None` if a row changed after `as_of` (then the fact rows answer). `p`: the range's
/// parameters and `as_of`.
fn reconciliation_from_sums(
    tx: &mut Transaction<'_>,
    p: &[i64],
    as_of: Millis,
) -> Result<Option<Vec<caresync_core::metrics::DayMinutes>>> {
    let mut out = Vec::new();
    let mut settled = true;
    copy_rows(tx, &cs::reconciliation_sql(), p, |r| {
        settled &= r.int(3)? <= as_of;
        if settled {
            out.push(caresync_core::metrics::DayMinutes {
                day: caresync_core::metrics::facts::day_of_number(r.int(0)?),
                client_id: ClientId(r.uuid(1)?),
                contract_id: ContractId(r.uuid(2)?),
                visits: r.int(4)?.max(0) as u64,
                cancelled: r.int(5)?.max(0) as u64,
                authorised_ms: r.int(6)?,
                delivered_ms: r.int(7)?,
                billable_minutes: r.int(8)?,
            });
        }
        Ok(())
    })?;
    Ok(settled.then_some(out))
}

/// Continuity per week from the per-client sums (the partial weeks from their days), or `None`
/// if a row changed after `as_of`.
fn continuity_from_sums(
    tx: &mut Transaction<'_>,
    range: &cs::SumsRange,
    p: &[i64],
    as_of: Millis,
) -> Result<Option<Vec<caresync_core::metrics::ContinuityWeek>>> {
    let mut weeks = Vec::new();
    let mut partial: HashMap<(i64, ClientId), i64> = HashMap::new();
    let mut settled = true;
    copy_rows(tx, &cs::continuity_sql(), p, |r| {
        settled &= r.int(3)? <= as_of;
        if !settled {
            return Ok(());
        }
        let (start, client_id, visits) = (r.int(1)?, ClientId(r.uuid(2)?), r.int(4)?);
        if r.int(0)? == 7 {
            weeks.push(caresync_core::metrics::ContinuityWeek {
                week_start: caresync_core::metrics::facts::day_of_number(start),
                client_id,
                visits: visits.max(0) as u64,
                distinct_carers: r.int(5)?.max(0) as u64,
                distinct_carers_scheduled: r.int(6)?.max(0) as u64,
            });
        } else {
            *partial.entry((cs::monday(start), client_id)).or_default() += visits;
        }
        Ok(())
    })?;
    if !settled {
        return Ok(None);
    }
    if !partial.is_empty() {
        let mut days = Vec::new();
        copy_rows(
            tx,
            &cs::continuity_partial_days_sql(),
            &range.params()[2..],
            |r| {
                days.push((
                    r.int(0)?,
                    ClientId(r.uuid(1)?),
                    PersonId(r.uuid(2)?),
                    r.int(3)?,
                    r.int(4)?,
                ));
                Ok(())
            },
        )?;
        let carers = cs::distinct_carers(days);
        let visits = partial.into_iter().map(|((w, c), n)| (w, c, n)).collect();
        weeks.extend(fx::continuity_weeks(visits, carers));
    }
    Ok(Some(weeks))
}

fn read_snapshot(tx: &mut Transaction<'_>, q: &SnapshotQuery) -> Result<ReportSnapshot> {
    let range: [&(dyn ToSql + Sync); 3] = [&q.from, &q.to, &q.as_of];
    let mut out = ReportSnapshot::default();
    let tallies =
        |tx: &mut Transaction<'_>, key: TallyKey| -> Result<Vec<caresync_core::metrics::DayTally>> {
            let r = tx.query(&fx::tallies_sql(key, q), &range)?;
            rows(r, |r| {
                let counts: Vec<i64> = (0..fx::COUNT_WIDTH).map(|i| r.get(i + 2)).collect();
                fx::tally_from(r.get(0), r.get(1), &counts)
            })
        };
    if let Some(key) = q.tallies {
        out.tallies = tallies(tx, key)?;
    }
    if q.by_contract {
        out.by_contract = tallies(tx, TallyKey::Contract)?;
    }
    let sums = cs::SumsRange::of(q);
    let from_sums = |r: &cs::SumsRange| {
        let mut p: Vec<i64> = r.params().to_vec();
        p.push(q.as_of);
        p
    };
    if q.reconciliation {
        let days = match sums {
            Some(r) => reconciliation_from_sums(tx, &from_sums(&r), q.as_of)?,
            None => None,
        };
        out.reconciliation = match days {
            Some(days) => days,
            None => {
                let r = tx.query(&fx::reconciliation_sql(&q.offsets), &range)?;
                rows(r, |r| {
                    Ok(caresync_core::metrics::DayMinutes {
                        day: caresync_core::metrics::facts::day_of_number(r.get(0)),
                        client_id: parse(r.get(1))?,
                        contract_id: parse(r.get(2))?,
                        visits: r.get::<_, i64>(3).max(0) as u64,
                        cancelled: r.get::<_, i64>(4).max(0) as u64,
                        authorised_ms: r.get(5),
                        delivered_ms: r.get(6),
                        billable_minutes: r.get(7),
                    })
                })?
            }
        };
    }
    if q.continuity {
        let weeks = match sums {
            Some(r) => continuity_from_sums(tx, &r, &from_sums(&r), q.as_of)?,
            None => None,
        };
        out.continuity = match weeks {
            Some(weeks) => weeks,
            None => {
                let visits = rows(tx.query(&fx::continuity_visits_sql(&q.offsets), &range)?, |r| {
                    Ok((r.get(0), parse(r.get(1))?, r.get(2)))
                })?;
                let carers = rows(tx.query(&fx::continuity_carers_sql(&q.offsets), &range)?, |r| {
                    Ok((r.get(0), parse(r.get(1))?, r.get(2), r.get(3)))
                })?;
                fx::continuity_weeks(visits, carers)
            }
        };
    }
    if q.visits {
        let one = q.visit.map(|v| v.to_string());
        let mut args: Vec<&(dyn ToSql + Sync)> = range.to_vec();
        if let Some(v) = &one {
            args.push(v);
        }
        let mut visits = Vec::new();
        let mut at: HashMap<i64, usize> = HashMap::new();
        for r in tx.query(&fx::visits_sql(one.is_some()), &args)? {
            let unit: Vec<Option<i64>> = (0..fx::UNIT_WIDTH).map(|i| r.get(11 + i)).collect();
            let row = fx::visit_row_from(
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                (r.get(4), r.get(5)),
                r.get(7),
                (r.get(8), r.get(9), r.get(10)),
                &unit,
            )?;
            at.insert(row.fact_id, visits.len());
            visits.push(row.facts);
        }
        for r in tx.query(&fx::carers_sql(one.is_some()), &args)? {
            let unit: Vec<Option<i64>> = (0..fx::UNIT_WIDTH).map(|i| r.get(3 + i)).collect();
            let fact_id: i64 = r.get(0);
            if let Some(v) = at.get(&fact_id).and_then(|i| visits.get_mut(*i)) {
                v.carers.push(caresync_core::metrics::CarerFacts {
                    carer_id: parse(r.get(1))?,
                    assigned: r.get::<_, i64>(2) != 0,
                    facts: fx::unit_from(&unit)?,
                });
            }
        }
        out.visits = visits;
    }
    if q.visit.is_some() {
        // One visit's read (after each commit, for its alerts): only its carers, looked up by
        // key; every contract, person and device would make each commit cost the agency's size.
        for carer in fx::one_visits_carers(&out.visits) {
            if let Some(r) = tx.query_opt(
                &format!("SELECT {PERSON_COLS} FROM people p WHERE p.person_id = $1"),
                &[&carer.to_string()],
            )? {
                out.people.push(person_from(&r)?);
            }
        }
        return Ok(out);
    }
    let mut contracts = rows(
        tx.query(
            &format!("SELECT {CONTRACT_COLS} FROM contracts ORDER BY name, contract_id"),
            &[],
        )?,
        contract_from,
    )?;
    for c in &mut contracts {
        let then = tx.query_opt(
            "SELECT rules FROM contract_rules WHERE contract_id = $1 AND valid_from <= $2
             ORDER BY valid_from DESC LIMIT 1",
            &[&c.id.to_string(), &q.as_of],
        )?;
        if let Some(rules) = then.and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok()) {
            c.rules = rules;
        }
    }
    out.contracts = contracts;
    out.people = rows(
        tx.query(
            &format!("SELECT {PERSON_COLS} FROM people p ORDER BY p.name, p.person_id"),
            &[],
        )?,
        person_from,
    )?;
    out.devices = rows(
        tx.query(
            "SELECT device_id, person_id, name, enrolled_at, revoked_at, last_sync_at FROM devices ORDER BY enrolled_at",
            &[],
        )?,
        device_from,
    )?;
    Ok(out)
}

fn device_from(r: &Row) -> Result<Device> {
    Ok(Device {
        id: parse(r.get(0))?,
        person_id: parse(r.get(1))?,
        name: r.get(2),
        enrolled_at: r.get(3),
        revoked_at: r.get(4),
        last_sync_at: r.get(5),
    })
}

impl super::AlertWrites for PostgresStore {
    fn raise_alert(&self, alert: &al::AlertRecord, entry: &al::AlertEntry) -> Result<bool> {
        self.write_keeping_sign_ins(|tx| al_insert(tx, alert, entry))
    }

    fn alert(&self, id: AlertId) -> Result<Option<al::AlertRecord>> {
        let mut conn = self.conn()?;
        Ok(al_alerts(
            &mut conn,
            "WHERE alert_id = $1",
            vec![al::Value::Text(Some(id.to_string()))],
        )?
        .into_iter()
        .next())
    }

    fn update_alert(
        &self,
        alert: &al::AlertRecord,
        expected_version: u32,
        entries: &[al::AlertEntry],
    ) -> Result<bool> {
        self.write_keeping_sign_ins(|tx| {
            let values = al::update_values(alert, expected_version);
            if tx.execute(al::UPDATE_ALERT, &al_bind(&values))? != 1 {
                return Ok(false);
            }
            for e in entries {
                let values = al::entry_values(e);
                tx.execute(al::INSERT_ENTRY, &al_bind(&values))?;
            }
            Ok(true)
        })
    }
}

impl ServerStore for PostgresStore {
    // ---- dashboard sessions ------------------------------------------------------------------
    fn create_web_session(&self, session: &WebSession, now: Millis) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM web_sessions WHERE expires_at <= $1", &[&now])?;
            tx.execute(
                "INSERT INTO web_sessions (id_hash, person_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &[
                    &session.id_hash,
                    &session.person_id.to_string(),
                    &session.created_at,
                    &session.expires_at,
                ],
            )?;
            Ok(())
        })
    }

    fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>> {
        let row = self.conn()?.query_opt(
            "SELECT id_hash, person_id, created_at, expires_at FROM web_sessions WHERE id_hash = $1",
            &[&id_hash],
        )?;
        row.map(|r| {
            Ok(WebSession {
                id_hash: r.get(0),
                person_id: parse(&r.get::<_, String>(1))?,
                created_at: r.get(2),
                expires_at: r.get(3),
            })
        })
        .transpose()
    }

    fn end_web_session(&self, id_hash: &str) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM web_sessions WHERE id_hash = $1", &[&id_hash])?;
        Ok(())
    }

    fn create_person(&self, p: &Person) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO people (person_id, name, role, team_id, active) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (person_id) DO UPDATE SET name = $2, role = $3, team_id = $4, active = $5",
                &[
                    &p.id.to_string(),
                    &p.name,
                    &p.role.as_str(),
                    &p.team_id.map(|t| t.to_string()),
                    &p.active,
                ],
            )?;
            Ok(())
        })
    }

    fn person(&self, id: PersonId) -> Result<Option<Person>> {
        let row = self.conn()?.query_opt(
            &format!("SELECT {PERSON_COLS} FROM people p WHERE p.person_id = $1"),
            &[&id.to_string()],
        )?;
        row.as_ref().map(person_from).transpose()
    }

    fn people(&self) -> Result<Vec<Person>> {
        let r = self.conn()?.query(
            &format!("SELECT {PERSON_COLS} FROM people p ORDER BY p.name, p.person_id"),
            &[],
        )?;
        rows(r, person_from)
    }

    fn add_api_token(
        &self,
        person: PersonId,
        token_hash: &str,
        created_at: Millis,
        expires_at: Option<Millis>,
    ) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO api_tokens (token_hash, person_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[&token_hash, &person.to_string(), &created_at, &expires_at],
        )?;
        Ok(())
    }

    fn rotate_api_token(
        &self,
        person: PersonId,
        token_hash: &str,
        created_at: Millis,
        expires_at: Option<Millis>,
    ) -> Result<bool> {
        self.write(|tx| {
            let id = person.to_string();
            // FOR UPDATE: a concurrent deactivation waits for this rotation, or this one sees it.
            if tx
                .query_opt(
                    "SELECT 1 FROM people WHERE person_id = $1 AND active FOR UPDATE",
                    &[&id],
                )?
                .is_none()
            {
                return Ok(false);
            }
            tx.execute(
                "UPDATE api_tokens SET revoked_at = $2 WHERE person_id = $1 AND revoked_at IS NULL",
                &[&id, &created_at],
            )?;
            tx.execute(
                "INSERT INTO api_tokens (token_hash, person_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &[&token_hash, &id, &created_at, &expires_at],
            )?;
            Ok(true)
        })
    }

    fn revoke_api_token(&self, token_hash: &str, at: Millis) -> Result<bool> {
        let n = self.conn()?.execute(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE token_hash = $1",
            &[&token_hash, &at],
        )?;
        self.sign_ins.invalidate();
        Ok(n > 0)
    }

    fn revoke_api_tokens(&self, person: PersonId, at: Millis) -> Result<u64> {
        let n = self.conn()?.execute(
            "UPDATE api_tokens SET revoked_at = $2 WHERE person_id = $1 AND revoked_at IS NULL",
            &[&person.to_string(), &at],
        )?;
        self.sign_ins.invalidate();
        Ok(n)
    }

    fn deactivate_person(&self, person: PersonId, at: Millis) -> Result<bool> {
        self.write(|tx| {
            let id = person.to_string();
            if tx.execute("UPDATE people SET active = FALSE WHERE person_id = $1", &[&id])? == 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE api_tokens SET revoked_at = $2 WHERE person_id = $1 AND revoked_at IS NULL",
                &[&id, &at],
            )?;
            tx.execute(
                "UPDATE devices SET revoked_at = $2 WHERE person_id = $1 AND revoked_at IS NULL",
                &[&id, &at],
            )?;
            tx.execute(
                "UPDATE enrolment_codes SET used_at = $2 WHERE person_id = $1 AND used_at IS NULL",
                &[&id, &at],
            )?;
            Ok(true)
        })
    }

    fn enrolment_code_owner(&self, code_hash: &str) -> Result<Option<PersonId>> {
        let row = self.conn()?.query_opt(
            "SELECT person_id FROM enrolment_codes WHERE code_hash = $1",
            &[&code_hash],
        )?;
        row.map(|r| parse(r.get(0))).transpose()
    }

    fn lock_enrolment_codes(&self, person: PersonId, at: Millis) -> Result<u64> {
        Ok(self.conn()?.execute(
            "UPDATE enrolment_codes SET used_at = $2 WHERE person_id = $1 AND used_at IS NULL",
            &[&person.to_string(), &at],
        )?)
    }

    fn add_enrolment_code(&self, person: PersonId, code_hash: &str, expires_at: Millis) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO enrolment_codes (code_hash, person_id, expires_at) VALUES ($1, $2, $3)",
            &[&code_hash, &person.to_string(), &expires_at],
        )?;
        Ok(())
    }

    fn redeem_enrolment_code(
        &self,
        code_hash: &str,
        now: Millis,
        device: DeviceId,
        device_name: &str,
        token_hash: &str,
    ) -> Result<Option<PersonId>> {
        self.write(|tx| {
            // The row lock taken by UPDATE makes a second, concurrent redeemer find used_at set.
            let Some(row) = tx.query_opt(
                "UPDATE enrolment_codes SET used_at = $2
                 WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING person_id",
                &[&code_hash, &now],
            )?
            else {
                return Ok(None);
            };
            let person: String = row.get(0);
            tx.execute(
                "INSERT INTO devices (device_id, person_id, name, token_hash, enrolled_at) VALUES ($1, $2, $3, $4, $5)",
                &[&device.to_string(), &person, &device_name, &token_hash, &now],
            )?;
            Ok(Some(parse(&person)?))
        })
    }

    fn sign_in(&self, token_hash: &str) -> Result<Option<SignIn>> {
        self.sign_ins
            .get_or_read(token_hash, || self.read_sign_in(token_hash))
    }

    fn sign_in_from_memory(&self, token_hash: &str) -> Option<SignIn> {
        self.sign_ins.get(token_hash).ok()
    }

    fn revoke_device(&self, device: DeviceId, at: Millis) -> Result<bool> {
        let n = self.conn()?.execute(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, $2) WHERE device_id = $1",
            &[&device.to_string(), &at],
        )?;
        self.sign_ins.invalidate();
        Ok(n > 0)
    }

    fn devices(&self) -> Result<Vec<Device>> {
        let r = self.conn()?.query(
            "SELECT device_id, person_id, name, enrolled_at, revoked_at, last_sync_at FROM devices ORDER BY enrolled_at",
            &[],
        )?;
        rows(r, device_from)
    }

    fn device_synced(&self, device: DeviceId, at: Millis) -> Result<()> {
        self.conn()?.execute(
            "UPDATE devices SET last_sync_at = $2 WHERE device_id = $1",
            &[&device.to_string(), &at],
        )?;
        Ok(())
    }

    fn visit_chunks(&self, visit: VisitId) -> Result<Vec<Chunk>> {
        let r = self.conn()?.query(
            "SELECT chunk_hash, bytes FROM doc_chunks WHERE visit_id = $1 ORDER BY seq",
            &[&visit.to_string()],
        )?;
        rows(r, |r| {
            Ok(Chunk {
                hash: r.get(0),
                bytes: r.get(1),
            })
        })
    }

    fn visit_chunk_hashes(&self, visit: VisitId) -> Result<Vec<String>> {
        let r = self.conn()?.query(
            "SELECT chunk_hash FROM doc_chunks WHERE visit_id = $1 ORDER BY seq",
            &[&visit.to_string()],
        )?;
        Ok(r.iter().map(|r| r.get(0)).collect())
    }

    fn commit_visit_raising(&self, c: &VisitCommit, raise: &[al::AlertRecord]) -> Result<()> {
        self.write_prepared(|tx| {
            let v = &c.visit;
            let id = v.visit_id.to_string();
            Self::lock_visit(tx, &id)?;
            if let Some(chunk) = &c.chunk {
                tx.execute(
                    "INSERT INTO doc_chunks (visit_id, chunk_hash, bytes) VALUES ($1, $2, $3)
                     ON CONFLICT (visit_id, chunk_hash) DO NOTHING",
                    &[&id, &chunk.hash, &chunk.bytes],
                )?;
            }
            let carers: Vec<String> = v.carers.iter().map(|c| c.to_string()).collect();
            tx.execute(
                "INSERT INTO visits (visit_id, client_id, contract_id, carers, planned_start, planned_end, status,
                                     chargeable, heads, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (visit_id) DO UPDATE SET client_id = $2, contract_id = $3, carers = $4, planned_start = $5,
                     planned_end = $6, status = $7, chargeable = $8, heads = $9, updated_at = $10",
                &[
                    &id,
                    &v.client_id.to_string(),
                    &v.contract_id.to_string(),
                    &carers.join(","),
                    &v.planned_start,
                    &v.planned_end,
                    &v.status.as_str(),
                    &v.chargeable,
                    &v.heads.to_text(),
                    &v.updated_at,
                ],
            )?;
            // Only the assignments that change are written (most commits change none): each
            // update is a new row version and, `current` being indexed, new index entries.
            tx.execute(
                "UPDATE assignments SET current = FALSE WHERE visit_id = $1 AND current
                 AND NOT (carer_id = ANY($2))",
                &[&id, &carers],
            )?;
            for carer in &carers {
                tx.execute(
                    "INSERT INTO assignments (visit_id, carer_id, current) VALUES ($1, $2, TRUE)
                     ON CONFLICT (visit_id, carer_id) DO UPDATE SET current = TRUE WHERE NOT assignments.current",
                    &[&id, carer],
                )?;
            }
            let insert = tx.statement(
                "INSERT INTO clock_events (event_id, visit_id, carer_id, device_id, kind, device_time, clock_offset_ms,
                     offset_measured_at, trusted_time, received_at, method, reason, lat, lon, accuracy_m, flags)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (event_id) DO NOTHING",
            )?;
            for e in &c.new_events {
                tx.tx.execute(
                    &insert,
                    &[
                        &e.event_id.to_string(),
                        &e.visit_id.to_string(),
                        &e.carer_id.to_string(),
                        &e.device_id.to_string(),
                        &e.kind.as_str(),
                        &e.device_time,
                        &e.clock_offset_ms,
                        &e.offset_measured_at,
                        &e.trusted_time,
                        &e.received_at,
                        &e.method.as_str(),
                        &e.reason.map(|r| r.as_str()),
                        &e.location.map(|l| l.lat),
                        &e.location.map(|l| l.lon),
                        &e.location.map(|l| l.accuracy_m),
                        &e.flags.to_string(),
                    ],
                )?;
            }
            let insert = tx.statement(
                "INSERT INTO amendments (amendment_id, visit_id, author_id, carer_id, time, corrected_time, reason, written_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (amendment_id) DO NOTHING",
            )?;
            for a in &c.new_amendments {
                tx.tx.execute(
                    &insert,
                    &[
                        &a.amendment_id.to_string(),
                        &a.visit_id.to_string(),
                        &a.author_id.to_string(),
                        &a.carer_id.to_string(),
                        &a.time.as_str(),
                        &a.corrected_time,
                        &a.reason.as_str(),
                        &a.written_at,
                    ],
                )?;
            }
            if let Some((device, state)) = &c.sync_state {
                if let Some(state) = state {
                    tx.execute(
                        "INSERT INTO sync_states (device_id, visit_id, state) VALUES ($1, $2, $3)
                         ON CONFLICT (device_id, visit_id) DO UPDATE SET state = $3",
                        &[&device.to_string(), &id, state],
                    )?;
                }
                // The device's last sync, in the same transaction (not a second one per request).
                tx.execute(
                    "UPDATE devices SET last_sync_at = $2 WHERE device_id = $1",
                    &[&device.to_string(), &v.updated_at],
                )?;
            }
            refresh_facts(tx, v, v.updated_at, Sums::Keep)?;
            for alert in raise {
                al_insert_prepared(tx, alert, &crate::services::alerts::raised_entry(alert))?;
            }
            Ok(())
        })
    }

    fn compact_visit(&self, visit: VisitId, merged: &[String], snapshot: &Chunk) -> Result<()> {
        self.write_prepared(|tx| {
            let id = visit.to_string();
            Self::lock_visit(tx, &id)?;
            tx.execute(
                "INSERT INTO doc_chunks (visit_id, chunk_hash, bytes) VALUES ($1, $2, $3)
                 ON CONFLICT (visit_id, chunk_hash) DO NOTHING",
                &[&id, &snapshot.hash, &snapshot.bytes],
            )?;
            let doomed: Vec<&String> = merged.iter().filter(|h| **h != snapshot.hash).collect();
            tx.execute(
                "DELETE FROM doc_chunks WHERE visit_id = $1 AND chunk_hash = ANY($2)",
                &[&id, &doomed],
            )?;
            Ok(())
        })
    }

    fn sync_state(&self, device: DeviceId, visit: VisitId) -> Result<Option<Vec<u8>>> {
        let row = self.conn()?.query_opt(
            "SELECT state FROM sync_states WHERE device_id = $1 AND visit_id = $2",
            &[&device.to_string(), &visit.to_string()],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn visit_row(&self, visit: VisitId) -> Result<Option<VisitRow>> {
        let row = self.conn()?.query_opt(
            &format!("SELECT {VISIT_COLS} FROM visits v WHERE v.visit_id = $1"),
            &[&visit.to_string()],
        )?;
        row.as_ref().map(visit_from).transpose()
    }

    fn visits_for_carer(&self, carer: PersonId, from: Millis, to: Millis) -> Result<Vec<VisitRow>> {
        let r = self.conn()?.query(
            &format!(
                "SELECT {VISIT_COLS} FROM assignments a JOIN visits v ON v.visit_id = a.visit_id
                 WHERE a.carer_id = $1 AND a.current AND v.planned_start >= $2 AND v.planned_start < $3
                 ORDER BY v.planned_start"
            ),
            &[&carer.to_string(), &from, &to],
        )?;
        rows(r, visit_from)
    }

    fn was_ever_assigned(&self, visit: VisitId, carer: PersonId) -> Result<bool> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT 1 FROM assignments WHERE visit_id = $1 AND carer_id = $2",
                &[&visit.to_string(), &carer.to_string()],
            )?
            .is_some())
    }

    fn client_carers(&self, client: ClientId) -> Result<Vec<PersonId>> {
        let r = self.conn()?.query(
            "SELECT DISTINCT a.carer_id FROM visits v JOIN assignments a ON a.visit_id = v.visit_id
             WHERE v.client_id = $1 AND a.current",
            &[&client.to_string()],
        )?;
        r.iter().map(|r| parse(r.get(0))).collect()
    }

    fn events_for_visit(&self, visit: VisitId) -> Result<Vec<EventRow>> {
        let r = self.conn()?.query(
            &format!(
                "SELECT {EVENT_COLS} FROM clock_events e WHERE e.visit_id = $1 ORDER BY e.trusted_time, e.event_id"
            ),
            &[&visit.to_string()],
        )?;
        rows(r, event_from)
    }

    fn count_events(&self) -> Result<u64> {
        let n: i64 = self
            .conn()?
            .query_one("SELECT COUNT(*) FROM clock_events", &[])?
            .get(0);
        Ok(n as u64)
    }

    fn create_team(&self, team: &Team) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO teams (team_id, name) VALUES ($1, $2) ON CONFLICT (team_id) DO UPDATE SET name = $2",
            &[&team.id.to_string(), &team.name],
        )?;
        Ok(())
    }

    fn teams(&self) -> Result<Vec<Team>> {
        let r = self
            .conn()?
            .query("SELECT team_id, name FROM teams ORDER BY name", &[])?;
        rows(r, |r| {
            Ok(Team {
                id: parse(r.get(0))?,
                name: r.get(1),
            })
        })
    }

    fn upsert_client(&self, c: &Client) -> Result<()> {
        self.write(|tx| {
            let id = c.id.to_string();
            let before = match tx.query_opt(
                &format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = $1 FOR UPDATE"),
                &[&id],
            )? {
                Some(r) => Some(client_from(&r)?),
                None => None,
            };
            tx.execute(
                "INSERT INTO clients (client_id, name, lat, lon, accuracy_m, tag_ids) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (client_id) DO UPDATE SET name = $2, lat = $3, lon = $4, accuracy_m = $5, tag_ids = $6",
                &[
                    &id,
                    &c.name,
                    &c.location.map(|l| l.lat),
                    &c.location.map(|l| l.lon),
                    &c.location.map(|l| l.accuracy_m),
                    &c.tag_ids.join(","),
                ],
            )?;
            if before.is_some_and(|b| b.location != c.location) {
                rejudge(tx, "client_id", &id, caresync_core::clock::system_now())?;
            }
            Ok(())
        })
    }

    fn client(&self, id: ClientId) -> Result<Option<Client>> {
        let row = self.conn()?.query_opt(
            &format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = $1"),
            &[&id.to_string()],
        )?;
        row.as_ref().map(client_from).transpose()
    }

    fn clients(&self) -> Result<Vec<Client>> {
        let r = self.conn()?.query(
            &format!("SELECT {CLIENT_COLS} FROM clients ORDER BY name, client_id"),
            &[],
        )?;
        rows(r, client_from)
    }

    fn upsert_contract_at(&self, c: &Contract, at: Millis) -> Result<()> {
        self.write(|tx| {
            let id = c.id.to_string();
            let rules = c.rules.to_string();
            let before: Option<String> = tx
                .query_opt("SELECT rules FROM contracts WHERE contract_id = $1 FOR UPDATE", &[&id])?
                .map(|r| r.get(0));
            let changed = before.as_deref() != Some(rules.as_str());
            if changed {
                tx.execute(
                    "INSERT INTO contract_rules (contract_id, valid_from, rules) VALUES ($1, $2, $3)
                     ON CONFLICT (contract_id, valid_from) DO UPDATE SET rules = $3",
                    &[&id, &at, &rules],
                )?;
            }
            tx.execute(
                "INSERT INTO contracts (contract_id, name, commissioner, model, rules) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (contract_id) DO UPDATE SET name = $2, commissioner = $3, model = $4, rules = $5",
                &[&id, &c.name, &c.commissioner, &c.model.as_str(), &rules],
            )?;
            if changed && before.is_some() {
                rejudge(tx, "contract_id", &id, at)?;
            }
            Ok(())
        })
    }

    fn contract(&self, id: ContractId) -> Result<Option<Contract>> {
        let row = self.conn()?.query_opt(
            &format!("SELECT {CONTRACT_COLS} FROM contracts WHERE contract_id = $1"),
            &[&id.to_string()],
        )?;
        row.as_ref().map(contract_from).transpose()
    }

    fn contracts(&self) -> Result<Vec<Contract>> {
        let r = self.conn()?.query(
            &format!("SELECT {CONTRACT_COLS} FROM contracts ORDER BY name, contract_id"),
            &[],
        )?;
        rows(r, contract_from)
    }

    fn visits_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<VisitRow>> {
        let r = self.conn()?.query(
            &format!(
                "SELECT {VISIT_COLS} FROM visits v WHERE v.planned_start >= $1 AND v.planned_start < $2
                 ORDER BY v.planned_start"
            ),
            &[&from, &to],
        )?;
        rows(r, visit_from)
    }

    fn events_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<EventRow>> {
        let r = self.conn()?.query(
            &format!(
                "SELECT {EVENT_COLS} FROM clock_events e JOIN visits v ON v.visit_id = e.visit_id
                 WHERE v.planned_start >= $1 AND v.planned_start < $2"
            ),
            &[&from, &to],
        )?;
        rows(r, event_from)
    }

    fn alerts(&self, query: &al::AlertQuery) -> Result<Vec<al::AlertRecord>> {
        let mut conn = self.conn()?;
        let (where_sql, values) = al::query_where(query);
        al_alerts(&mut conn, &where_sql, values)
    }

    fn alert_history(&self, id: AlertId) -> Result<Vec<al::AlertEntry>> {
        let mut conn = self.conn()?;
        let sql = format!(
            "SELECT {} FROM alert_history WHERE alert_id = $1 ORDER BY seq",
            al::ENTRY_COLS
        );
        let mut out = Vec::new();
        for r in conn.query(&sql, &[&id.to_string()])? {
            let (t, i) = al_row(&r, &al::ENTRY_INT_COLS)?;
            out.push(al::entry_from(&t, &i)?);
        }
        Ok(out)
    }

    fn open_escalation(&self, e: &al::Escalation) -> Result<bool> {
        self.write_keeping_sign_ins(|tx| {
            let values = al::escalation_values(e);
            Ok(tx.execute(al::INSERT_ESCALATION, &al_bind(&values))? == 1)
        })
    }

    fn escalations(&self) -> Result<Vec<al::Escalation>> {
        let mut conn = self.conn()?;
        let sql = format!(
            "SELECT {} FROM escalations ORDER BY week_start, contract_id, client_id",
            al::ESCALATION_COLS
        );
        let mut out = Vec::new();
        for r in conn.query(&sql, &[])? {
            let (t, i) = al_row(&r, &al::ESCALATION_INT_COLS)?;
            out.push(al::escalation_from(&t, &i)?);
        }
        Ok(out)
    }

    fn raise_escalation(&self, c: &al::CommissionerContact) -> Result<bool> {
        let Some(escalation) = c.escalation_id.clone() else {
            return Ok(false);
        };
        self.write_keeping_sign_ins(|tx| {
            let by = c.recorded_by.to_string();
            let n = tx.execute(
                al::RAISE_ESCALATION,
                &[&escalation, &c.recorded_at, &c.contact_on, &by, &c.contact_id],
            )?;
            if n != 1 {
                return Ok(false);
            }
            let values = al::contact_values(c);
            tx.execute(al::INSERT_CONTACT, &al_bind(&values))?;
            Ok(true)
        })
    }

    fn add_commissioner_contact(&self, c: &al::CommissionerContact) -> Result<()> {
        self.write(|tx| {
            let values = al::contact_values(c);
            tx.execute(al::INSERT_CONTACT, &al_bind(&values))?;
            Ok(())
        })
    }

    fn commissioner_contacts(&self) -> Result<Vec<al::CommissionerContact>> {
        let mut conn = self.conn()?;
        let sql = format!(
            "SELECT {} FROM commissioner_contacts ORDER BY contact_on, recorded_at",
            al::CONTACT_COLS
        );
        let mut out = Vec::new();
        for r in conn.query(&sql, &[])? {
            let (t, i) = al_row(&r, &al::CONTACT_INT_COLS)?;
            out.push(al::contact_from(&t, &i)?);
        }
        Ok(out)
    }

    fn claim_lease(&self, name: &str, holder: &str, now: Millis, until: Millis) -> Result<bool> {
        self.write_keeping_sign_ins(|tx| {
            tx.execute(al::ADD_LEASE, &[&name])?;
            Ok(tx.execute(al::CLAIM_LEASE, &[&name, &holder, &now, &until])? == 1)
        })
    }

    fn report_snapshot(&self, q: &SnapshotQuery) -> Result<ReportSnapshot> {
        let mut conn = self.conn()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let out = read_snapshot(&mut tx, q)?;
        tx.commit()?;
        Ok(out)
    }

    fn amendments_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<AmendmentRow>> {
        let r = self.conn()?.query(
            "SELECT a.amendment_id, a.visit_id, a.author_id, a.carer_id, a.time, a.corrected_time, a.reason, a.written_at
             FROM amendments a JOIN visits v ON v.visit_id = a.visit_id
             WHERE v.planned_start >= $1 AND v.planned_start < $2",
            &[&from, &to],
        )?;
        rows(r, amendment_from)
    }
}

impl PostgresStore {
    /// A pooled connection for statements outside the trait (the copy from the embedded store).
    pub(crate) fn client(&self) -> Result<impl std::ops::DerefMut<Target = PgClient> + '_> {
        self.conn()
    }
}
