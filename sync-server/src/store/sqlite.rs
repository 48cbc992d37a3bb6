//! The embedded default: one SQLite file in the data directory.

use super::*;
use caresync_core::sqlite::{self, Durability, Migration};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

pub mod group_commit;

const MIGRATIONS: &[Migration] = &[schema_v1, schema_v2, schema_v3];

fn schema_v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE people (
             person_id TEXT PRIMARY KEY,
             name TEXT NOT NULL,
             role TEXT NOT NULL CHECK (role IN ('carer', 'supervisor', 'office')),
             team_id TEXT,
             active INTEGER NOT NULL DEFAULT 1
         );
         CREATE TABLE api_tokens (
             token_hash TEXT PRIMARY KEY,
             person_id TEXT NOT NULL REFERENCES people (person_id),
             created_at INTEGER NOT NULL,
             revoked_at INTEGER
         );
         CREATE TABLE enrolment_codes (
             code_hash TEXT PRIMARY KEY,
             person_id TEXT NOT NULL REFERENCES people (person_id),
             expires_at INTEGER NOT NULL,
             used_at INTEGER
         );
         CREATE TABLE devices (
             device_id TEXT PRIMARY KEY,
             person_id TEXT NOT NULL REFERENCES people (person_id),
             name TEXT NOT NULL,
             token_hash TEXT NOT NULL UNIQUE,
             enrolled_at INTEGER NOT NULL,
             revoked_at INTEGER,
             last_sync_at INTEGER
         );
         CREATE TABLE doc_chunks (
             visit_id TEXT NOT NULL,
             chunk_hash TEXT NOT NULL,
             bytes BLOB NOT NULL,
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             UNIQUE (visit_id, chunk_hash)
         );
         CREATE INDEX doc_chunks_by_visit ON doc_chunks (visit_id, seq);
         CREATE TABLE sync_states (
             device_id TEXT NOT NULL,
             visit_id TEXT NOT NULL,
             state BLOB NOT NULL,
             PRIMARY KEY (device_id, visit_id)
         );
         CREATE TABLE visits (
             visit_id TEXT PRIMARY KEY,
             client_id TEXT NOT NULL,
             contract_id TEXT NOT NULL,
             carers TEXT NOT NULL,
             planned_start INTEGER NOT NULL,
             planned_end INTEGER NOT NULL,
             status TEXT NOT NULL,
             chargeable INTEGER,
             heads TEXT NOT NULL,
             updated_at INTEGER NOT NULL
         );
         CREATE INDEX visits_by_start ON visits (planned_start);
         CREATE TABLE assignments (
             visit_id TEXT NOT NULL REFERENCES visits (visit_id),
             carer_id TEXT NOT NULL,
             current INTEGER NOT NULL,
             PRIMARY KEY (visit_id, carer_id)
         );
         CREATE INDEX assignments_by_carer ON assignments (carer_id, current);
         CREATE TABLE clock_events (
             event_id TEXT PRIMARY KEY,
             visit_id TEXT NOT NULL REFERENCES visits (visit_id),
             carer_id TEXT NOT NULL,
             device_id TEXT NOT NULL,
             kind TEXT NOT NULL,
             device_time INTEGER NOT NULL,
             clock_offset_ms INTEGER,
             offset_measured_at INTEGER,
             trusted_time INTEGER NOT NULL,
             received_at INTEGER NOT NULL,
             method TEXT NOT NULL,
             reason TEXT,
             lat REAL,
             lon REAL,
             accuracy_m REAL,
             flags TEXT NOT NULL DEFAULT ''
         );
         CREATE INDEX clock_events_by_visit ON clock_events (visit_id);
         CREATE TABLE amendments (
             amendment_id TEXT PRIMARY KEY,
             visit_id TEXT NOT NULL REFERENCES visits (visit_id),
             author_id TEXT NOT NULL,
             carer_id TEXT NOT NULL,
             time TEXT NOT NULL,
             corrected_time INTEGER NOT NULL,
             reason TEXT NOT NULL,
             written_at INTEGER NOT NULL
         );
         CREATE INDEX amendments_by_visit ON amendments (visit_id);
         CREATE TABLE teams (
             team_id TEXT PRIMARY KEY,
             name TEXT NOT NULL
         );
         CREATE TABLE clients (
             client_id TEXT PRIMARY KEY,
             name TEXT NOT NULL,
             lat REAL,
             lon REAL,
             accuracy_m REAL,
             tag_ids TEXT NOT NULL DEFAULT ''
         );
         CREATE TABLE contracts (
             contract_id TEXT PRIMARY KEY,
             name TEXT NOT NULL,
             commissioner TEXT NOT NULL,
             model TEXT NOT NULL CHECK (model IN ('spot', 'framework')),
             rules TEXT NOT NULL
         );",
    )
}

/// Read through a memory map (no read syscall and copy per page: reports touch every page of a
/// month's rows) and keep a bounded page cache.
fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Every statement of the commit path stays prepared (rusqlite keeps 16 by default).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Address space, not memory: mapped pages are the OS's file cache, shared and reclaimable.
/// The bundled SQLite's ceiling (`SQLITE_MAX_MMAP_SIZE`, just under 2 GiB); a larger file reads
/// its remainder through ordinary reads.
const MMAP_BYTES: i64 = 0x7fff_0000;
/// Per connection (three: reads, the writer, reports). Reads go through the memory map, whose
/// pages are the OS's file cache, so SQLite's own cache holds little but written pages.
const CACHE_KIB: i64 = 16 << 10;

/// Each clock event and amendment carries its visit's planned start, kept equal on every commit,
/// so a report reads a period's events as one index range instead of one join probe per visit.
fn schema_v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE clock_events ADD COLUMN planned_start INTEGER NOT NULL DEFAULT 0;
         UPDATE clock_events SET planned_start = COALESCE(
             (SELECT v.planned_start FROM visits v WHERE v.visit_id = clock_events.visit_id), 0);
         CREATE INDEX clock_events_by_planned_start ON clock_events (planned_start);
         ALTER TABLE amendments ADD COLUMN planned_start INTEGER NOT NULL DEFAULT 0;
         UPDATE amendments SET planned_start = COALESCE(
             (SELECT v.planned_start FROM visits v WHERE v.visit_id = amendments.visit_id), 0);
         CREATE INDEX amendments_by_planned_start ON amendments (planned_start);",
    )
}

/// API tokens expire. Tokens issued before expiry existed get 90 days from the upgrade (the
/// default `--token-ttl-days`), not forever; indexes for shutting a person's account and for
/// a supervisor's view of clients.
fn schema_v3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
         UPDATE api_tokens SET expires_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 7776000000
             WHERE revoked_at IS NULL;
         CREATE INDEX api_tokens_by_person ON api_tokens (person_id);
         CREATE INDEX devices_by_person ON devices (person_id);
         CREATE INDEX enrolment_codes_by_person ON enrolment_codes (person_id);
         CREATE INDEX visits_by_client ON visits (client_id);",
    )
}

pub struct SqliteStore {
    /// Reads, and the rare writes outside the commit path (people, tokens, reference data).
    conn: Mutex<Connection>,
    /// A second, read-only connection for report queries: in WAL mode it reads while the writer
    /// goes on, so a long report never holds up phones' syncs. (Each query reads its own
    /// snapshot; a report's three queries are not one transaction.)
    reports: Mutex<Connection>,
    /// The commit path: see [`group_commit`].
    writer: group_commit::Writer,
}

impl SqliteStore {
    /// Open (creating if needed) and migrate. A damaged file is refused and left exactly where it
    /// is ([`sqlite::OnUnreadable::Refuse`]): the server never starts empty over it.
    pub fn open(path: &Path) -> Result<Self> {
        // FULL: a commit is on disk, power loss included, before anyone is told it happened. The
        // writer's groups share one fsync among every sync waiting (see `group_commit`).
        let conn = sqlite::open_with(path, MIGRATIONS, Durability::Full, sqlite::OnUnreadable::Refuse)?;
        tune(&conn)?;
        let write_conn = sqlite::open_with(path, MIGRATIONS, Durability::Full, sqlite::OnUnreadable::Refuse)?;
        tune(&write_conn)?;
        let writer = group_commit::Writer::start(write_conn)?;
        let reports = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reports.busy_timeout(std::time::Duration::from_secs(5))?;
        tune(&reports)?;
        Ok(Self {
            conn: Mutex::new(conn),
            reports: Mutex::new(reports),
            writer,
        })
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

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
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
        heads: heads
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
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
        flags: r.get(15)?,
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

impl ServerStore for SqliteStore {
    fn create_person(&self, p: &Person) -> Result<()> {
        self.write(|tx| {
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
        self.write(|tx| {
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
        self.write(|tx| {
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
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE token_hash = ?1",
                params![token_hash, at],
            )?;
            Ok(n > 0)
        })
    }

    fn revoke_api_tokens(&self, person: PersonId, at: Millis) -> Result<u64> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE person_id = ?1 AND revoked_at IS NULL",
                params![person.to_string(), at],
            )?;
            Ok(n as u64)
        })
    }

    fn deactivate_person(&self, person: PersonId, at: Millis) -> Result<bool> {
        self.write(|tx| {
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
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE enrolment_codes SET used_at = ?2 WHERE person_id = ?1 AND used_at IS NULL",
                params![person.to_string(), at],
            )?;
            Ok(n as u64)
        })
    }

    fn add_enrolment_code(&self, person: PersonId, code_hash: &str, expires_at: Millis) -> Result<()> {
        self.write(|tx| {
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
        self.write(|tx| {
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
        let conn = self.lock()?;
        // Read every time, not from memory: the command-line tools change tokens in this file
        // beside the running server, and that must take effect at once. Prepared once (every
        // request signs in).
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

    fn revoke_device(&self, device: DeviceId, at: Millis) -> Result<bool> {
        self.write(|tx| {
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
        let rows = stmt.query_map([], |r| {
            Ok(Device {
                id: column(r, 0)?,
                person_id: column(r, 1)?,
                name: r.get(2)?,
                enrolled_at: r.get(3)?,
                revoked_at: r.get(4)?,
                last_sync_at: r.get(5)?,
            })
        })?;
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
        false
    }

    fn commit_visit(&self, c: &VisitCommit) -> Result<()> {
        // Events and amendments take the commit's planned start, so they must be its visit's.
        let visit = c.visit.visit_id;
        if c.new_events.iter().any(|e| e.visit_id != visit)
            || c.new_amendments.iter().any(|a| a.visit_id != visit)
        {
            return Err(StoreError::Conflict(format!(
                "a commit to visit {visit} carries another visit's rows"
            )));
        }
        // Handed to the writer thread and answered once its group is durable (`group_commit`).
        let c = c.clone();
        self.writer.write(move |tx| {
            let c = &c;
            let v = &c.visit;
            let id = v.visit_id.to_string();
            if let Some(chunk) = &c.chunk {
                tx.prepare_cached("INSERT INTO doc_chunks (visit_id, chunk_hash, bytes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (visit_id, chunk_hash) DO NOTHING")?.execute(params![id, chunk.hash, chunk.bytes],
                )?;
            }
            let carers: Vec<String> = v.carers.iter().map(|c| c.to_string()).collect();
            let was_planned: Option<Millis> = tx
                .prepare_cached("SELECT planned_start FROM visits WHERE visit_id = ?1")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            tx.prepare_cached("INSERT INTO visits (visit_id, client_id, contract_id, carers, planned_start, planned_end, status,
                                     chargeable, heads, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (visit_id) DO UPDATE SET client_id = ?2, contract_id = ?3, carers = ?4, planned_start = ?5,
                     planned_end = ?6, status = ?7, chargeable = ?8, heads = ?9, updated_at = ?10")?.execute(params![
                    id,
                    v.client_id.to_string(),
                    v.contract_id.to_string(),
                    carers.join(","),
                    v.planned_start,
                    v.planned_end,
                    v.status.as_str(),
                    v.chargeable,
                    v.heads.join(","),
                    v.updated_at
                ],
            )?;
            // A reschedule moves the visit's events and amendments to its new period.
            let moved = was_planned.is_some_and(|at| at != v.planned_start);
            for table in ["clock_events", "amendments"].into_iter().filter(|_| moved) {
                tx.prepare_cached(&format!(
                    "UPDATE {table} SET planned_start = ?1 WHERE visit_id = ?2 AND planned_start <> ?1"
                ))?
                .execute(params![v.planned_start, id])?;
            }
            tx.prepare_cached("UPDATE assignments SET current = 0 WHERE visit_id = ?1")?.execute([&id])?;
            for carer in &carers {
                tx.prepare_cached("INSERT INTO assignments (visit_id, carer_id, current) VALUES (?1, ?2, 1)
                     ON CONFLICT (visit_id, carer_id) DO UPDATE SET current = 1")?.execute(params![id, carer],
                )?;
            }
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO clock_events ({EVENT_COLS}, planned_start)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT (event_id) DO NOTHING"
            ))?;
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
                    e.flags,
                    v.planned_start,
                ])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO amendments (amendment_id, visit_id, author_id, carer_id, time, corrected_time, reason,
                                         written_at, planned_start)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (amendment_id) DO NOTHING",
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
                    v.planned_start
                ])?;
            }
            if let Some((device, state)) = &c.sync_state {
                tx.prepare_cached("INSERT INTO sync_states (device_id, visit_id, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (device_id, visit_id) DO UPDATE SET state = ?3")?.execute(params![device.to_string(), id, state],
                )?;
                // The device's last sync, in the same transaction (not a second one per request).
                tx.prepare_cached("UPDATE devices SET last_sync_at = ?2 WHERE device_id = ?1")?
                    .execute(params![device.to_string(), v.updated_at])?;
            }
            Ok(())
        })
    }

    fn compact_visit(&self, visit: VisitId, merged: &[String], snapshot: &Chunk) -> Result<()> {
        self.write(|tx| {
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
        self.write(|tx| {
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
        self.write(|tx| {
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

    fn upsert_contract(&self, c: &Contract) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO contracts (contract_id, name, commissioner, model, rules) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (contract_id) DO UPDATE SET name = ?2, commissioner = ?3, model = ?4, rules = ?5",
                params![c.id.to_string(), c.name, c.commissioner, c.model.as_str(), c.rules.to_string()],
            )?;
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
            "SELECT {} FROM clock_events e WHERE e.planned_start >= ?1 AND e.planned_start < ?2",
            cols.join(", ")
        ))?;
        let rows = stmt.query_map(params![from, to], event_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn amendments_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<AmendmentRow>> {
        let conn = self.lock_reports()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.amendment_id, a.visit_id, a.author_id, a.carer_id, a.time, a.corrected_time, a.reason, a.written_at
             FROM amendments a WHERE a.planned_start >= ?1 AND a.planned_start < ?2",
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

#[cfg(test)]
mod tests {
    use super::*;

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
