//! The phone's store: one SQLite file holding each visit's Automerge bytes and the rows derived
//! from them, written together in one transaction. Everything a carer does works offline.
//!
//! One concept per file:
//!
//! - `schema`: the numbered migrations.
//! - `identity`: who this phone is, and its clock offset to the server.
//! - `queries`: the day's list and one visit's detail.
//! - `actions`: what the carer does (clock in and out, notes, task outcomes).
//! - `visit_rows`: a visit's bytes and derived rows, and the one write transaction every change
//!   (a carer's action, a sync message, an import) goes through.
//! - `sync`: messages to and from the server, heads for the manifest, imports.
//! - `outbox`, `refusals`: what waits to be sent, and what the server refused.
//! - `retention`: what the phone lets go of.

mod actions;
mod identity;
mod outbox;
mod queries;
mod refusals;
mod retention;
mod schema;
mod sync;
mod visit_rows;

pub use actions::ClockRequest;
pub use identity::{DeviceIdentity, OFFSET_FRESH_FOR_MS};
pub use outbox::OutboxEntry;
pub use queries::{local_day_bounds, VisitDetail, VisitSummary};
pub use refusals::RefusedChanges;
#[doc(hidden)]
pub use schema::MIGRATIONS;

use crate::clock::{DeviceClock, SystemClock};
use crate::domain::*;
use crate::sqlite::{self, Durability, OpenError};
use crate::visit_document::*;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no visit {0} on this phone")]
    UnknownVisit(VisitId),
    #[error("visit {0} is not assigned to this carer")]
    NotAssigned(VisitId),
    #[error("visit {0} was cancelled")]
    VisitCancelled(VisitId),
    #[error("already clocked in to visit {0}")]
    AlreadyClockedIn(VisitId),
    #[error("not clocked in to visit {0}")]
    NotClockedIn(VisitId),
    #[error("already clocked out of visit {0}")]
    AlreadyClockedOut(VisitId),
    #[error("a manual clock needs a reason code")]
    ManualNeedsReason,
    #[error("location is out of range")]
    InvalidLocation,
    #[error("a note cannot be empty")]
    EmptyNote,
    #[error("a note can be at most {MAX_NOTE_CHARS} characters; this one has {0}")]
    NoteTooLong(usize),
    #[error("visit {visit} has no task {task}")]
    UnknownTask { visit: VisitId, task: TaskId },
    #[error("this phone is not enrolled")]
    NotEnrolled,
    #[error("visit {visit}: {source}")]
    Document { visit: VisitId, source: DocumentError },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's lock was poisoned by a panic in another thread")]
    Poisoned,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The phone's durable store. Cheap to share between threads (`Arc<PhoneStore>`): every operation
/// is one transaction under one lock, so a sync and a clock-in never overwrite each other.
pub struct PhoneStore {
    conn: Mutex<Connection>,
    /// Locked only while `conn` is held.
    docs: Mutex<visit_rows::DocumentCache>,
    clock: Arc<dyn DeviceClock>,
    tz: chrono_tz::Tz,
}

impl std::fmt::Debug for PhoneStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneStore")
            .field("tz", &self.tz)
            .finish_non_exhaustive()
    }
}

impl PhoneStore {
    /// Open with the system clock and the default agency time zone (Europe/London).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Arc::new(SystemClock), chrono_tz::Europe::London)
    }

    pub fn open_with(path: &Path, clock: Arc<dyn DeviceClock>, tz: chrono_tz::Tz) -> Result<Self> {
        let conn = sqlite::open(path, MIGRATIONS, Durability::Full)?;
        Ok(Self {
            conn: Mutex::new(conn),
            docs: Mutex::default(),
            clock,
            tz,
        })
    }

    pub fn device_now(&self) -> Millis {
        self.clock.now()
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

#[cfg(test)]
mod tests;
