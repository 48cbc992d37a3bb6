//! The store's schema: numbered `.sql` files in `core/migrations/`, stepped by
//! `PRAGMA user_version` (see `crate::sqlite`). Never edit a released step; add the next one.

use crate::migration;
use crate::sqlite::{self, Migration};

/// Schema steps; index `i` moves the file from version `i` to `i + 1`. Public so a test can build a
/// file at an older version and migrate it (`core/tests/migration.rs`).
#[doc(hidden)]
pub const MIGRATIONS: &[Migration] = &[
    migration!("migrations", "0001_device_visits_and_events"),
    migration!("migrations", "0002_outbox_and_sync_state"),
    migration!("migrations", "0003_refused_changes"),
];

const _: () = assert!(sqlite::numbered_in_order(MIGRATIONS));
