//! The move from the embedded store to PostgreSQL: every table, row by row, in one PostgreSQL
//! transaction. Rows already there are updated (mutable rows) or left alone (append-only rows:
//! chunks, clock events, amendments), so running the copy again is harmless.

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{Result, StoreError};
use ::postgres::types::ToSql;
use rusqlite::types::ValueRef;

#[derive(Clone, Copy)]
enum Col {
    Text,
    Int,
    Real,
    Bool,
    Blob,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    key: &'static [&'static str],
    /// Append-only rows keep what PostgreSQL already has; the rest take the embedded values.
    append_only: bool,
    order_by: &'static str,
}

use Col::*;

/// Parents before children, so foreign keys hold row by row.
const TABLES: &[Table] = &[
    Table {
        name: "people",
        columns: &[
            ("person_id", Text),
            ("name", Text),
            ("role", Text),
            ("team_id", Text),
            ("active", Bool),
        ],
        key: &["person_id"],
        append_only: false,
        order_by: "person_id",
    },
    Table {
        name: "teams",
        columns: &[("team_id", Text), ("name", Text)],
        key: &["team_id"],
        append_only: false,
        order_by: "team_id",
    },
    Table {
        name: "clients",
        columns: &[
            ("client_id", Text),
            ("name", Text),
            ("lat", Real),
            ("lon", Real),
            ("accuracy_m", Real),
            ("tag_ids", Text),
        ],
        key: &["client_id"],
        append_only: false,
        order_by: "client_id",
    },
    Table {
        name: "contracts",
        columns: &[
            ("contract_id", Text),
            ("name", Text),
            ("commissioner", Text),
            ("model", Text),
            ("rules", Text),
        ],
        key: &["contract_id"],
        append_only: false,
        order_by: "contract_id",
    },
    Table {
        name: "api_tokens",
        columns: &[
            ("token_hash", Text),
            ("person_id", Text),
            ("created_at", Int),
            ("revoked_at", Int),
            ("expires_at", Int),
        ],
        key: &["token_hash"],
        append_only: false,
        order_by: "token_hash",
    },
    Table {
        name: "enrolment_codes",
        columns: &[
            ("code_hash", Text),
            ("person_id", Text),
            ("expires_at", Int),
            ("used_at", Int),
        ],
        key: &["code_hash"],
        append_only: false,
        order_by: "code_hash",
    },
    Table {
        name: "devices",
        columns: &[
            ("device_id", Text),
            ("person_id", Text),
            ("name", Text),
            ("token_hash", Text),
            ("enrolled_at", Int),
            ("revoked_at", Int),
            ("last_sync_at", Int),
        ],
        key: &["device_id"],
        append_only: false,
        order_by: "device_id",
    },
    Table {
        name: "doc_chunks",
        columns: &[("visit_id", Text), ("chunk_hash", Text), ("bytes", Blob)],
        key: &["visit_id", "chunk_hash"],
        append_only: true,
        order_by: "seq",
    },
    Table {
        name: "sync_states",
        columns: &[("device_id", Text), ("visit_id", Text), ("state", Blob)],
        key: &["device_id", "visit_id"],
        append_only: false,
        order_by: "device_id, visit_id",
    },
    Table {
        name: "visits",
        columns: &[
            ("visit_id", Text),
            ("client_id", Text),
            ("contract_id", Text),
            ("carers", Text),
            ("planned_start", Int),
            ("planned_end", Int),
            ("status", Text),
            ("chargeable", Bool),
            ("heads", Text),
            ("updated_at", Int),
        ],
        key: &["visit_id"],
        append_only: false,
        order_by: "visit_id",
    },
    Table {
        name: "assignments",
        columns: &[("visit_id", Text), ("carer_id", Text), ("current", Bool)],
        key: &["visit_id", "carer_id"],
        append_only: false,
        order_by: "visit_id, carer_id",
    },
    Table {
        name: "clock_events",
        columns: &[
            ("event_id", Text),
            ("visit_id", Text),
            ("carer_id", Text),
            ("device_id", Text),
            ("kind", Text),
            ("device_time", Int),
            ("clock_offset_ms", Int),
            ("offset_measured_at", Int),
            ("trusted_time", Int),
            ("received_at", Int),
            ("method", Text),
            ("reason", Text),
            ("lat", Real),
            ("lon", Real),
            ("accuracy_m", Real),
            ("flags", Text),
        ],
        key: &["event_id"],
        append_only: true,
        order_by: "event_id",
    },
    Table {
        name: "amendments",
        columns: &[
            ("amendment_id", Text),
            ("visit_id", Text),
            ("author_id", Text),
            ("carer_id", Text),
            ("time", Text),
            ("corrected_time", Int),
            ("reason", Text),
            ("written_at", Int),
        ],
        key: &["amendment_id"],
        append_only: true,
        order_by: "amendment_id",
    },
    Table {
        name: "contract_rules",
        columns: &[("contract_id", Text), ("valid_from", Int), ("rules", Text)],
        key: &["contract_id", "valid_from"],
        append_only: true,
        order_by: "contract_id, valid_from",
    },
];

/// How many rows of each table the copy read from the embedded store.
pub type CopyReport = Vec<(&'static str, u64)>;

fn value(v: ValueRef<'_>, col: Col, table: &str, name: &str) -> Result<Box<dyn ToSql + Sync>> {
    let bad = || StoreError::Corrupt(format!("{table}.{name}: unexpected value {v:?}"));
    Ok(match (col, v) {
        (Text, ValueRef::Null) => Box::new(None::<String>),
        (Text, ValueRef::Text(t)) => Box::new(String::from_utf8(t.to_vec()).map_err(|_| bad())?),
        (Int, ValueRef::Null) => Box::new(None::<i64>),
        (Int, ValueRef::Integer(i)) => Box::new(i),
        (Real, ValueRef::Null) => Box::new(None::<f64>),
        (Real, ValueRef::Real(f)) => Box::new(f),
        (Real, ValueRef::Integer(i)) => Box::new(i as f64),
        (Bool, ValueRef::Null) => Box::new(None::<bool>),
        (Bool, ValueRef::Integer(i)) => Box::new(i != 0),
        (Blob, ValueRef::Blob(b)) => Box::new(b.to_vec()),
        _ => return Err(bad()),
    })
}

/// Copy every row of `from` into `to` in one PostgreSQL transaction (all or nothing). Run it with
/// the embedded server stopped, so nothing is written to the source meanwhile.
pub fn copy_sqlite_to_postgres(from: &SqliteStore, to: &PostgresStore) -> Result<CopyReport> {
    let source = from.connection()?;
    let mut client = to.client()?;
    let mut tx = client.transaction()?;
    let mut report = Vec::new();
    for table in TABLES {
        let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let on_conflict = if table.append_only {
            "DO NOTHING".to_string()
        } else {
            let sets: Vec<String> = names
                .iter()
                .filter(|n| !table.key.contains(n))
                .map(|n| format!("{n} = EXCLUDED.{n}"))
                .collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        };
        let insert = tx.prepare(&format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
            table.name,
            names.join(", "),
            placeholders.join(", "),
            table.key.join(", "),
        ))?;
        let mut stmt = source.prepare(&format!(
            "SELECT {} FROM {} ORDER BY {}",
            names.join(", "),
            table.name,
            table.order_by
        ))?;
        let mut rows = stmt.query([])?;
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            let mut params = Vec::with_capacity(names.len());
            for (i, (name, col)) in table.columns.iter().enumerate() {
                params.push(value(row.get_ref(i)?, *col, table.name, name)?);
            }
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
            tx.execute(&insert, &refs)?;
            n += 1;
        }
        report.push((table.name, n));
    }
    // Facts are judged again from the copied rows (one version each, as a backfill does).
    super::postgres::judge_visits_without_facts(&mut tx)?;
    tx.commit()?;
    Ok(report)
}
