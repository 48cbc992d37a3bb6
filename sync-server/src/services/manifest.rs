//! The manifest in a phone's sync answer: the heads of its carer's visits in scope, so the phone
//! learns of new, changed and no-longer-its visits. Usually only the visits the phone sent; all of
//! them when the phone's digest of the rest disagrees with ours, or a visit it sent left its scope.

use crate::store::{ServerStore, StoreError};
use caresync_core::domain::*;
use caresync_core::protocol::{manifest_digest, ManifestEntry};
use std::collections::HashSet;

/// The manifest's entries and whether they are the whole of the carer's scope.
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
    pub complete: bool,
}

/// The manifest for `carer`'s visits planned in `from..to`, given the visits the phone sent
/// (`sent`) and its digest of the others (`phone_digest`).
pub fn for_carer(
    store: &dyn ServerStore,
    carer: PersonId,
    from: Millis,
    to: Millis,
    sent: &HashSet<VisitId>,
    phone_digest: Option<&str>,
) -> Result<Manifest, StoreError> {
    let in_scope = store.visits_for_carer(carer, from, to)?;
    // If the phone's view of every visit it did not send agrees with ours, only the visits it
    // sent need their (new) heads; otherwise it gets the whole manifest.
    let ours = manifest_digest(
        in_scope
            .iter()
            .filter(|r| !sent.contains(&r.visit_id))
            .map(|r| (r.visit_id, &r.heads)),
    );
    // A visit sent but no longer in scope (reassigned, out of the window) needs the whole
    // manifest too, so the phone can let it go.
    let all_in_scope = sent.iter().all(|id| in_scope.iter().any(|r| r.visit_id == *id));
    let complete = phone_digest != Some(ours.as_str()) || !all_in_scope;
    let entries = in_scope
        .iter()
        .filter(|r| complete || sent.contains(&r.visit_id))
        .map(|row| ManifestEntry {
            visit_id: row.visit_id,
            heads: row.heads.clone(),
        })
        .collect();
    Ok(Manifest { entries, complete })
}

/// Record that a device synced when no accepted change did it already.
pub fn device_synced(store: &dyn ServerStore, device: DeviceId, at: Millis) -> Result<(), StoreError> {
    store.device_synced(device, at)
}
