//! The one way caresync opens a SQLite file: WAL, foreign keys, a busy timeout, and migrations
//! stepped by `PRAGMA user_version` inside one immediate transaction.
//!
//! A file SQLite reports as corrupt or not a database is never deleted. The phone moves it aside
//! ([`OnUnreadable::MoveAside`]): it may hold unsynced clock-ins, and the phone must go on working;
//! the error says where it went. The server refuses to open it ([`OnUnreadable::Refuse`]) and
//! leaves it where it is: an empty server would look like a provider that lost everything, so
//! recovering is the operator's explicit step. Any other failure (a lock held too long, a full
//! disk, a file from a newer build) leaves the file where it is.

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Rust run after a step's SQL, in the same transaction, for data the SQL cannot write itself (a
/// backfill that needs the domain's rules).
pub type SqliteStep = fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>;

/// One schema step: a numbered `.sql` file (`migrations/0003_refused_changes.sql`), embedded in
/// the binary, and optionally Rust run after it (`Step` is the backend's transaction hook; SQLite's
/// by default). The number that starts the name is the schema version the step leads to; a
/// backend's steps are numbered 1, 2, 3... in order (see [`numbered_in_order`]). Never edit a
/// released step; add the next one.
pub struct Migration<Step = SqliteStep> {
    pub name: &'static str,
    pub sql: &'static str,
    pub then: Option<Step>,
}

impl<Step> Migration<Step> {
    /// The schema version this step leads to: the number its name starts with.
    pub const fn version(&self) -> i64 {
        let bytes = self.name.as_bytes();
        let (mut n, mut i) = (0, 0);
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            n = n * 10 + (bytes[i] - b'0') as i64;
            i += 1;
        }
        n
    }
}

/// Whether step `i` is numbered `i + 1`, for a compile-time check beside each table of steps:
/// `const _: () = assert!(sqlite::numbered_in_order(MIGRATIONS));`
pub const fn numbered_in_order<Step>(steps: &[Migration<Step>]) -> bool {
    let mut i = 0;
    while i < steps.len() {
        if steps[i].version() != i as i64 + 1 {
            return false;
        }
        i += 1;
    }
    true
}

/// A [`Migration`] from `<crate>/<dir>/<name>.sql`, embedded with `include_str!`, optionally with
/// a Rust step run after its SQL: `migration!("migrations/sqlite", "0005_visit_facts", then judge)`.
#[macro_export]
macro_rules! migration {
    ($dir:literal, $name:literal) => {
        $crate::sqlite::Migration {
            name: $name,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $name, ".sql")),
            then: None,
        }
    };
    ($dir:literal, $name:literal, then $step:expr) => {
        $crate::sqlite::Migration {
            name: $name,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $name, ".sql")),
            then: Some($step),
        }
    };
}

/// How hard to push each commit to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: survives a process crash; the last commits may roll back on power loss.
    Normal,
    /// `synchronous = FULL`: every commit is on disk when it returns (the phone: a clock-in is evidence).
    Full,
}

/// What to do with a file SQLite calls corrupt or not a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUnreadable {
    /// Rename it (and its `-wal`/`-shm`) aside and fail; the next open starts afresh. The phone.
    MoveAside,
    /// Fail and leave it exactly as it is ([`OpenError::Unreadable`]). The server.
    Refuse,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database {path} is damaged ({cause}); it was left untouched")]
    Unreadable { path: PathBuf, cause: String },
    #[error("database {path} could not be opened ({cause}); it was moved aside to {moved_to}")]
    MovedAside {
        path: PathBuf,
        moved_to: PathBuf,
        cause: String,
    },
    #[error("database {path} could not be opened ({cause}) and could not be moved aside: {io}")]
    Unusable {
        path: PathBuf,
        cause: String,
        io: String,
    },
    #[error(
        "database {path} has schema version {found}, newer than this build's {supported}; left untouched"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Open (creating if needed) and migrate, moving an unreadable file aside (the phone's way).
/// Migration `i` takes the schema from version `i` to `i + 1`.
pub fn open(path: &Path, migrations: &[Migration], durability: Durability) -> Result<Connection, OpenError> {
    open_with(path, migrations, durability, OnUnreadable::MoveAside)
}

/// [`open`], choosing what happens to a file SQLite calls corrupt or not a database.
pub fn open_with(
    path: &Path,
    migrations: &[Migration],
    durability: Durability,
    on_unreadable: OnUnreadable,
) -> Result<Connection, OpenError> {
    match try_open(path, migrations, durability) {
        Ok(conn) => Ok(conn),
        Err(e) if !says_file_is_unreadable(&e) => Err(e),
        Err(e) => {
            let cause = e.to_string();
            if !path.exists() {
                return Err(e);
            }
            if on_unreadable == OnUnreadable::Refuse {
                tracing::error!(path = %path.display(), %cause, "database damaged; left untouched");
                return Err(OpenError::Unreadable {
                    path: path.to_path_buf(),
                    cause,
                });
            }
            match move_aside(path) {
                Ok(moved_to) => {
                    tracing::error!(path = %path.display(), moved_to = %moved_to.display(), %cause, "database moved aside");
                    Err(OpenError::MovedAside {
                        path: path.to_path_buf(),
                        moved_to,
                        cause,
                    })
                }
                Err(io) => Err(OpenError::Unusable {
                    path: path.to_path_buf(),
                    cause,
                    io: io.to_string(),
                }),
            }
        }
    }
}

/// Rename a database file and its `-wal`/`-shm` to `<name>.unreadable-<UTC time>[...]`, beside it;
/// returns the new path of the main file. Nothing is deleted.
pub fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let moved_to = aside_path(path);
    std::fs::rename(path, &moved_to)?;
    for suffix in ["-wal", "-shm"] {
        let side = with_suffix(path, suffix);
        if side.exists() {
            // The main file is what matters; a side file left behind is recreated by SQLite.
            let _ = std::fs::rename(&side, with_suffix(&moved_to, suffix));
        }
    }
    Ok(moved_to)
}

/// Only a file SQLite itself calls corrupt or not a database is moved aside. A busy lock, a full
/// disk or an I/O error says nothing about the file, and moving a live database away would hide
/// every unsynced clock-in in it behind a fresh, empty one.
fn says_file_is_unreadable(e: &OpenError) -> bool {
    matches!(
        e,
        OpenError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn try_open(path: &Path, migrations: &[Migration], durability: Durability) -> Result<Connection, OpenError> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    plan_once(&conn)?;
    // journal_mode returns a row; reading it also proves the file is a database.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Sqlite(rusqlite::Error::InvalidQuery));
    }
    conn.execute_batch(match durability {
        Durability::Normal => "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        Durability::Full => "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    })?;
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

/// Keep each prepared statement's plan. Without the query planner stability guarantee SQLite
/// 3.54 lets a plan depend on a bound value (`col = ?` terms are weighed by whether the value is
/// 0 or 1), and rusqlite clears a cached statement's bindings when it is reused, which expires
/// such a statement: every reuse re-parsed and re-planned its SQL (about 70,000 instructions,
/// three times per server commit). No plan here depends on values: there are no statistics
/// tables and no `LIKE` over an index.
pub fn plan_once(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<(), OpenError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = migrations.len() as i64;
    if version > supported {
        return Err(OpenError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported,
        });
    }
    for step in migrations.iter().skip(version as usize) {
        tx.execute_batch(step.sql)?;
        if let Some(then) = step.then {
            then(&tx)?;
        }
        tx.pragma_update(None, "user_version", step.version())?;
    }
    tx.commit()?;
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut candidate = with_suffix(path, &format!(".unreadable-{stamp}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = with_suffix(path, &format!(".unreadable-{stamp}-{n}"));
        n += 1;
    }
    candidate
}

/// The schema as `sqlite_master` describes it, for comparing a migrated database with a fresh one.
pub fn schema_fingerprint(conn: &Connection) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = Migration {
        name: "0001_t",
        sql: "CREATE TABLE t (x INTEGER)",
        then: None,
    };
    const V2_NOOP: Migration = Migration {
        name: "0002_nothing",
        sql: "",
        then: None,
    };

    /// A statement taken from rusqlite's cache is reused as prepared, whatever was bound to it
    /// last time: the commit paths run the same few statements thousands of times a second.
    #[test]
    fn a_cached_statement_is_not_prepared_again_on_reuse() -> Result<(), Box<dyn std::error::Error>> {
        use rusqlite::StatementStatus;
        let dir = tempfile::tempdir()?;
        let conn = open(
            &dir.path().join("t.db"),
            &[Migration {
                name: "0001_events",
                sql: "CREATE TABLE events (visit_id TEXT NOT NULL, at INTEGER);
                      CREATE INDEX events_by_visit ON events (visit_id);",
                then: None,
            }],
            Durability::Full,
        )?;
        // The shape of the server's reads of a visit's events: an equality on an indexed text
        // column, in insertion order.
        const SQL: &str = "SELECT at FROM events WHERE visit_id = ?1 ORDER BY rowid";
        for visit in ["a", "b", "c", "d"] {
            conn.execute("INSERT INTO events (visit_id, at) VALUES (?1, 1)", [visit])?;
            let mut stmt = conn.prepare_cached(SQL)?;
            let n = stmt.query_map([visit], |r| r.get::<_, i64>(0))?.count();
            assert_eq!(n, 1);
            assert_eq!(
                stmt.get_status(StatementStatus::RePrepare),
                0,
                "reusing the statement for {visit} parsed and planned it again"
            );
        }
        Ok(())
    }

    #[test]
    fn garbage_file_is_moved_aside_not_deleted() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("phone.db");
        std::fs::write(
            &path,
            b"this is not a database, but it might be someone's evidence....................",
        )?;
        let err = open(&path, &[V1], Durability::Full)
            .err()
            .ok_or("opened garbage")?;
        let OpenError::MovedAside { moved_to, .. } = &err else {
            return Err(format!("{err}").into());
        };
        assert!(moved_to.exists());
        assert!(err.to_string().contains(&moved_to.display().to_string()));
        assert!(std::fs::read(moved_to)?.starts_with(b"this is not a database"));
        // The next open starts afresh.
        let conn = open(&path, &[V1], Durability::Full)?;
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(v, 1);
        Ok(())
    }

    #[test]
    fn refusing_leaves_a_garbage_file_exactly_as_it_was() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("server.db");
        let garbage = b"this is not a database, but it is a provider's whole history.....".repeat(10);
        std::fs::write(&path, &garbage)?;
        for _ in 0..2 {
            let err = open_with(&path, &[V1], Durability::Normal, OnUnreadable::Refuse)
                .err()
                .ok_or("opened garbage")?;
            assert!(matches!(err, OpenError::Unreadable { .. }), "{err}");
            assert_eq!(std::fs::read(&path)?, garbage);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["server.db".to_string()]);
        Ok(())
    }

    #[test]
    fn newer_schema_is_left_alone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.db");
        drop(open(&path, &[V1, V2_NOOP], Durability::Normal)?);
        let err = open(&path, &[V1], Durability::Normal)
            .err()
            .ok_or("opened newer")?;
        assert!(matches!(
            err,
            OpenError::TooNew {
                found: 2,
                supported: 1,
                ..
            }
        ));
        assert!(path.exists());
        Ok(())
    }

    #[test]
    fn a_busy_database_is_an_error_and_stays_where_it_is() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("phone.db");
        let mut holder = open(&path, &[V1], Durability::Full)?;
        holder.execute("INSERT INTO t (x) VALUES (1)", [])?;
        // Another connection (a sync worker, say) holds the write lock past the busy timeout.
        let tx = holder.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let err = open(&path, &[V1], Durability::Full)
            .err()
            .ok_or("opened while locked")?;
        assert!(
            matches!(&err, OpenError::Sqlite(_)),
            "a healthy database was treated as unreadable: {err}"
        );
        tx.rollback()?;
        // Still the same file, holding its row, and no copy was made.
        let rows: i64 =
            open(&path, &[V1], Durability::Full)?.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
        assert_eq!(rows, 1);
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("unreadable"))
            .collect();
        assert_eq!(names, Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn a_corrupt_database_is_moved_aside() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("phone.db");
        drop(open(&path, &[V1], Durability::Full)?);
        // Keep the 100-byte header (a database by its magic) and wreck the schema page behind it.
        let mut bytes = std::fs::read(&path)?;
        for b in bytes.iter_mut().skip(100).take(3_000) {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes)?;
        let err = open(&path, &[V1], Durability::Full)
            .err()
            .ok_or("opened a corrupt file")?;
        assert!(matches!(err, OpenError::MovedAside { .. }), "{err}");
        Ok(())
    }
}
