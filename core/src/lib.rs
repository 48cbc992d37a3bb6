//! caresync-core: the offline-first heart of the carer app.
//!
//! - [`domain`]: care-world types (visits, clock events, reason codes, roles).
//! - [`heads`]: a document's heads, in every form they travel in.
//! - [`visit_document`]: one Automerge document per visit, typed, with the audit the server's
//!   write rules judge incoming changes by.
//! - [`store`]: the phone's SQLite store; every carer action works offline.
//! - [`sqlite`]: the one way a SQLite file is opened and migrated (phone and server).
//! - [`protocol`], [`sync_client`], [`http_transport`]: the sync protocol's wire types, the
//!   transport-agnostic client, and its HTTP transport.
//! - [`metrics`]: the metric definitions (punctuality, billing, reconciliation) with thresholds as data.
//! - [`clock`]: device time and the offset to the server's trusted time.

pub mod clock;
pub mod domain;
pub mod heads;
pub mod http_transport;
pub mod metrics;
pub mod protocol;
pub mod sqlite;
pub mod store;
pub mod sync_client;
#[doc(hidden)]
#[doc(hidden)]
pub mod test_kit;
pub mod visit_document;

pub use clock::{ClockOffset, DeviceClock, ManualClock, SystemClock};
pub use domain::*;
pub use heads::Heads;
pub use store::{
    ClockRequest, DeviceIdentity, OutboxEntry, PhoneStore, RefusedChanges, StoreError, VisitDetail,
    VisitSummary,
};
pub use sync_client::{SyncClient, SyncError, SyncSummary, Transport, TransportError};
pub use visit_document::{
    Amendment, ClockEvent, DocumentError, Note, Schedule, Section, Task, TaskOutcome, Visit, VisitDocument,
    WriteAudit,
};
