//! The manifest in a phone's sync answer: the heads of its carer's visits in scope, so the phone
//! learns of new, changed and no-longer-its visits. Usually only the visits the phone sent; all of
//! them when the phone's digest of the rest disagrees with ours, or a visit it sent left its scope.

use crate::store::{ServerStore, StoreError, VisitRow};
use caresync_core::domain::*;
use caresync_core::protocol::{manifest_digest, v2, ManifestEntry};
use caresync_core::Heads;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// The manifest's entries and whether they are the whole of the carer's scope.
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
    pub complete: bool,
}

/// The manifest for `carer`'s visits planned in `from..to`, given the visits the phone sent
/// (`sent`) and its digest of the others (`phone_digest`), from `cache` when it holds them.
pub fn for_carer(
    store: &dyn ServerStore,
    cache: &ManifestCache,
    carer: PersonId,
    (from, to): (Millis, Millis),
    sent: &HashSet<VisitId>,
    phone_digest: Option<&str>,
) -> Result<Manifest, StoreError> {
    // Worked out on the rows where they are held: only the entries answered are copied.
    cache.with_rows_memo(store, carer, from, to, |in_scope, memo| {
        // If the phone's view of every visit it did not send agrees with ours, only the visits
        // it sent need their (new) heads; otherwise it gets the whole manifest.
        let ours = digest_of_the_others(in_scope, sent, memo, &cache.digests);
        // A visit sent but no longer in scope (reassigned, out of the window) needs the whole
        // manifest too, so the phone can let it go.
        let all_in_scope = sent.iter().all(|id| in_scope.iter().any(|r| r.visit_id == *id));
        // Protocol 2 sends the digest's first half (`v2::DIGEST_BYTES`), as hex here.
        let agrees = phone_digest.is_some_and(|d| d.len() >= 2 * v2::DIGEST_BYTES && ours.starts_with(d));
        let complete = !agrees || !all_in_scope;
        let entries = in_scope
            .iter()
            .filter(|r| complete || sent.contains(&r.visit_id))
            .map(|r| ManifestEntry {
                visit_id: r.visit_id,
                heads: r.heads.clone(),
            })
            .collect();
        Manifest { entries, complete }
    })
}

/// The digest of the visits in scope but those the phone sent, from `memo` when it still holds
/// (else worked out, counted in `computed`, and remembered there for a sync of at most one visit).
fn digest_of_the_others(
    in_scope: &[Row],
    sent: &HashSet<VisitId>,
    memo: &mut Option<Memo>,
    computed: &AtomicU64,
) -> String {
    let others = || in_scope.iter().filter(|r| !sent.contains(&r.visit_id));
    let left_out = match sent.len() {
        0 => None,
        1 => sent.iter().next().copied(),
        // Phones send one visit at a time; a batch is worked out and not remembered.
        _ => {
            computed.fetch_add(1, Relaxed);
            return manifest_digest(others().map(|r| (r.visit_id, &r.heads)));
        }
    };
    let mut ids = others().map(|r| r.visit_id);
    let first = ids.next();
    let (last, count) = ids.fold((first, usize::from(first.is_some())), |(_, n), id| {
        (Some(id), n + 1)
    });
    let signature = (count, first, last);
    if let Some(m) = memo
        .as_ref()
        .filter(|m| m.left_out == left_out && m.others == signature)
    {
        return m.digest.clone();
    }
    computed.fetch_add(1, Relaxed);
    let digest = manifest_digest(others().map(|r| (r.visit_id, &r.heads)));
    *memo = Some(Memo {
        left_out,
        others: signature,
        digest: digest.clone(),
    });
    digest
}

/// A carer's last digest of the visits in scope but one (the visit a phone sent), kept with the
/// held rows. A phone clocks in and then out of the same visit, so its next sync usually leaves
/// out the same visit: at 200 visits a carer, writing and hashing the others' lines on every
/// sync was 8 % of the server.
///
/// It stands while no commit touched another of the carer's visits ([`ManifestCache::committed`]
/// drops it) and the window holds the same others: with the rows unchanged but for the visit left
/// out, the others in a window are the rows between its first and last other, so those two and
/// the count tell a window that slid.
struct Memo {
    left_out: Option<VisitId>,
    /// How many others, the first and the last, in planned order.
    others: (usize, Option<VisitId>, Option<VisitId>),
    digest: String,
}

/// One visit of a carer's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub visit_id: VisitId,
    pub planned_start: Millis,
    pub heads: Heads,
}

/// Each carer's manifest rows, kept in memory so a sync does not query them. Only for a store no
/// other process writes (the embedded one): every commit of this process passes through
/// [`ManifestCache::committed`], which keeps the rows exact. With PostgreSQL another instance's
/// commits would not, so there every manifest is read from the database.
///
/// An entry holds a wider window than a sync asks for ([`AHEAD_SLACK_MS`] beyond the horizon),
/// so visits coming into the horizon as time passes are already in it; it is read again once
/// that slack is used up. At most `capacity` carers are kept (about 100 bytes a visit: a carer
/// with 150 visits in the window is 15 KiB).
pub struct ManifestCache {
    inner: Option<Mutex<Inner>>,
    capacity: usize,
    /// Digests worked out rather than taken from a [`Memo`] (for tests and diagnostics).
    digests: AtomicU64,
}

/// How far beyond the horizon an entry reads, and so how long it serves a sliding window.
pub const AHEAD_SLACK_MS: Millis = 60 * 60 * 1000;

#[derive(Default)]
struct Inner {
    carers: HashMap<PersonId, Held>,
    /// Counts answers, to tell which carer was served longest ago.
    tick: u64,
    /// Bumped by every commit touching the carer: a read that overlapped one does not keep its
    /// (possibly older) rows.
    epochs: HashMap<PersonId, u64>,
}

struct Held {
    from: Millis,
    to: Millis,
    rows: Vec<Row>,
    /// [`Inner::tick`] when it last answered.
    used: u64,
    digest: Option<Memo>,
}

impl ManifestCache {
    /// `enabled` only when this process is the store's only writer.
    pub fn new(enabled: bool, capacity: usize) -> Self {
        Self {
            inner: enabled.then(|| Mutex::new(Inner::default())),
            capacity: capacity.max(1),
            digests: AtomicU64::new(0),
        }
    }

    /// The carer's visits planned in `[from, to)`, by planned start.
    pub fn rows(
        &self,
        store: &dyn ServerStore,
        carer: PersonId,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<Row>, StoreError> {
        self.with_rows(store, carer, from, to, <[Row]>::to_vec)
    }

    /// `f` of the carer's visits planned in `[from, to)`, by planned start: on the held rows
    /// themselves (under the cache's lock, so `f` must be quick) when they are held.
    pub fn with_rows<T>(
        &self,
        store: &dyn ServerStore,
        carer: PersonId,
        from: Millis,
        to: Millis,
        f: impl FnOnce(&[Row]) -> T,
    ) -> Result<T, StoreError> {
        self.with_rows_memo(store, carer, from, to, |rows, _| f(rows))
    }

    /// As [`ManifestCache::with_rows`], with the carer's [`Memo`], kept with their rows (a
    /// throwaway one when the rows are not held).
    fn with_rows_memo<T>(
        &self,
        store: &dyn ServerStore,
        carer: PersonId,
        from: Millis,
        to: Millis,
        f: impl FnOnce(&[Row], &mut Option<Memo>) -> T,
    ) -> Result<T, StoreError> {
        let read = |from, to| -> Result<Vec<Row>, StoreError> {
            let mut rows: Vec<Row> = store
                .visits_for_carer(carer, from, to)?
                .into_iter()
                .map(|v| Row {
                    visit_id: v.visit_id,
                    planned_start: v.planned_start,
                    heads: v.heads,
                })
                .collect();
            rows.sort_by_key(|r| (r.planned_start, r.visit_id));
            Ok(rows)
        };
        let Some(inner) = &self.inner else {
            return Ok(f(&read(from, to)?, &mut None));
        };
        let epoch = {
            let mut inner = inner.lock().map_err(|_| StoreError::Poisoned)?;
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(held) = inner.carers.get_mut(&carer) {
                if held.from <= from && to <= held.to {
                    held.used = tick;
                    return Ok(f(in_window(&held.rows, from, to), &mut held.digest));
                }
            }
            inner.epochs.get(&carer).copied().unwrap_or(0)
        };
        let (held_from, held_to) = (from, to.saturating_add(AHEAD_SLACK_MS));
        let rows = read(held_from, held_to)?;
        let mut digest = None;
        let answer = f(in_window(&rows, from, to), &mut digest);
        let mut inner = inner.lock().map_err(|_| StoreError::Poisoned)?;
        if inner.epochs.get(&carer).copied().unwrap_or(0) == epoch {
            if inner.carers.len() >= self.capacity && !inner.carers.contains_key(&carer) {
                // The carer served longest ago makes room (a scan: at most `capacity` entries,
                // and only when a carer's rows are read, not when they are answered).
                let victim = inner.carers.iter().min_by_key(|(_, h)| h.used).map(|(c, _)| *c);
                if let Some(victim) = victim {
                    inner.carers.remove(&victim);
                }
            }
            let used = inner.tick;
            inner.carers.insert(
                carer,
                Held {
                    from: held_from,
                    to: held_to,
                    rows,
                    used,
                    digest,
                },
            );
        }
        Ok(answer)
    }

    /// A visit's row was committed: `before` are the carers it had, `row` what it is now. Call
    /// after the commit, for every commit.
    pub fn committed(&self, before: &[PersonId], row: &VisitRow) {
        let Some(inner) = &self.inner else { return };
        let Ok(mut inner) = inner.lock() else { return };
        for carer in before.iter().chain(&row.carers) {
            *inner.epochs.entry(*carer).or_default() += 1;
            let Some(held) = inner.carers.get_mut(carer) else {
                continue;
            };
            // A digest leaving out this very visit still stands; any other is now stale.
            if held
                .digest
                .as_ref()
                .is_some_and(|m| m.left_out != Some(row.visit_id))
            {
                held.digest = None;
            }
            held.rows.retain(|r| r.visit_id != row.visit_id);
            if row.carers.contains(carer) && (held.from..held.to).contains(&row.planned_start) {
                let at = held
                    .rows
                    .partition_point(|r| (r.planned_start, r.visit_id) < (row.planned_start, row.visit_id));
                held.rows.insert(
                    at,
                    Row {
                        visit_id: row.visit_id,
                        planned_start: row.planned_start,
                        heads: row.heads.clone(),
                    },
                );
            }
        }
    }

    /// Manifest digests worked out so far, rather than taken from a carer's last (for tests and
    /// diagnostics).
    pub fn digests_computed(&self) -> u64 {
        self.digests.load(Relaxed)
    }

    /// Carers whose manifests are held (for tests and diagnostics).
    pub fn held(&self) -> usize {
        self.inner
            .as_ref()
            .and_then(|i| i.lock().ok().map(|i| i.carers.len()))
            .unwrap_or(0)
    }
}

/// The rows planned in `[from, to)` of rows sorted by planned start: a slice of them.
fn in_window(rows: &[Row], from: Millis, to: Millis) -> &[Row] {
    let start = rows.partition_point(|r| r.planned_start < from);
    let end = rows.partition_point(|r| r.planned_start < to);
    &rows[start..end.max(start)]
}

/// Record that a device synced when no accepted change did it already.
pub fn device_synced(store: &dyn ServerStore, device: DeviceId, at: Millis) -> Result<(), StoreError> {
    store.device_synced(device, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::VisitCommit;

    fn row(carers: Vec<PersonId>, planned_start: Millis, head: u8) -> VisitRow {
        VisitRow {
            visit_id: VisitId::new(),
            client_id: ClientId::new(),
            contract_id: ContractId::new(),
            carers,
            planned_start,
            planned_end: planned_start + 3_600_000,
            status: VisitStatus::Scheduled,
            chargeable: None,
            heads: Heads::from_bytes(&[[head; 32]]),
            updated_at: 1,
        }
    }

    fn store_row(store: &SqliteStore, row: &VisitRow) -> Result<(), StoreError> {
        store.commit_visit(&VisitCommit {
            visit: row.clone(),
            chunk: None,
            new_events: vec![],
            new_amendments: vec![],
            sync_state: None,
        })
    }

    /// An empty embedded store in a directory of its own (kept while the handle lives).
    fn fresh_store() -> Result<(tempfile::TempDir, SqliteStore), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("server.db"))?;
        Ok((dir, store))
    }

    fn ids(rows: &[Row]) -> Vec<VisitId> {
        rows.iter().map(|r| r.visit_id).collect()
    }

    /// Once read, a carer's manifest is answered from memory, and the commits reported to the
    /// cache (new visits, reassignments, new heads, moves) keep it equal to the store's.
    #[test]
    fn held_manifests_follow_every_reported_commit() -> Result<(), StoreError> {
        let (_dir, store) = fresh_store()?;
        let cache = ManifestCache::new(true, 10);
        let (a, b) = (PersonId::new(), PersonId::new());
        let window = (0, 10_000_000);
        let rows = |carer| cache.rows(&store, carer, window.0, window.1);
        let truth = |carer| -> Result<Vec<VisitId>, StoreError> {
            Ok(store
                .visits_for_carer(carer, window.0, window.1)?
                .into_iter()
                .map(|v| v.visit_id)
                .collect())
        };

        let first = row(vec![a], 2_000_000, 1);
        store_row(&store, &first)?;
        cache.committed(&[], &first);
        assert_eq!(ids(&rows(a)?), vec![first.visit_id]);
        assert_eq!(cache.held(), 1);

        // Written behind the cache's back: not seen, so the answer came from memory.
        let unreported = row(vec![a], 3_000_000, 2);
        store_row(&store, &unreported)?;
        assert_eq!(ids(&rows(a)?), vec![first.visit_id]);
        cache.committed(&[], &unreported);
        assert_eq!(ids(&rows(a)?), truth(a)?);

        // An earlier visit lands in planned order.
        let earlier = row(vec![a], 1_000_000, 3);
        store_row(&store, &earlier)?;
        cache.committed(&[], &earlier);
        assert_eq!(
            ids(&rows(a)?),
            vec![earlier.visit_id, first.visit_id, unreported.visit_id]
        );

        // Reassigned from a to b: gone from a's, in b's.
        let moved = VisitRow {
            carers: vec![b],
            ..first.clone()
        };
        store_row(&store, &moved)?;
        cache.committed(&first.carers, &moved);
        assert_eq!(ids(&rows(a)?), truth(a)?);
        assert_eq!(ids(&rows(b)?), vec![first.visit_id]);

        // New heads, and a new planned start inside the window.
        let changed = VisitRow {
            heads: Heads::from_bytes(&[[9; 32]]),
            planned_start: 500_000,
            ..unreported.clone()
        };
        store_row(&store, &changed)?;
        cache.committed(&unreported.carers, &changed);
        let held = rows(a)?;
        assert_eq!(ids(&held), truth(a)?);
        assert_eq!(held[0].heads, changed.heads);

        // Moved out of the window: still assigned, no longer in the manifest.
        let later = VisitRow {
            planned_start: 20_000_000,
            ..changed.clone()
        };
        store_row(&store, &later)?;
        cache.committed(&changed.carers, &later);
        assert_eq!(ids(&rows(a)?), truth(a)?);
        assert_eq!(ids(&rows(a)?), vec![earlier.visit_id]);

        // A narrower window is cut from the held rows.
        assert!(cache.rows(&store, a, 1_500_000, 10_000_000)?.is_empty());
        Ok(())
    }

    /// When full, the carer served longest ago makes room; a carer served since stays.
    #[test]
    fn a_full_cache_lets_go_of_the_carer_served_longest_ago() -> Result<(), StoreError> {
        let (_dir, store) = fresh_store()?;
        let cache = ManifestCache::new(true, 2);
        let (a, b, c) = (PersonId::new(), PersonId::new(), PersonId::new());
        let window = (0, 10_000_000);
        for carer in [a, b, a, c] {
            cache.rows(&store, carer, window.0, window.1)?;
        }
        assert_eq!(cache.held(), 2);
        // a was served after b: a visit of a's written behind the cache's back is not seen (a is
        // held), one of b's is (b was let go and is read again).
        let (for_a, for_b) = (row(vec![a], 2_000_000, 1), row(vec![b], 2_000_000, 2));
        store_row(&store, &for_a)?;
        store_row(&store, &for_b)?;
        assert!(cache.rows(&store, a, window.0, window.1)?.is_empty(), "a is held");
        assert_eq!(
            ids(&cache.rows(&store, b, window.0, window.1)?),
            vec![for_b.visit_id]
        );
        Ok(())
    }

    /// A carer's digest of their visits but the one a phone sent is remembered while no commit
    /// touches another of their visits and the window holds the same others; a phone holding an
    /// older view of the others always hears so.
    #[test]
    fn a_remembered_digest_stands_only_while_the_other_visits_do() -> Result<(), StoreError> {
        let (_dir, store) = fresh_store()?;
        let cache = ManifestCache::new(true, 10);
        let a = PersonId::new();
        let visits = [
            row(vec![a], 1_000_000, 1),
            row(vec![a], 2_000_000, 2),
            row(vec![a], 3_000_000, 3),
        ];
        for v in &visits {
            store_row(&store, v)?;
            cache.committed(&[], v);
        }
        let commit = |v: &VisitRow, head: u8| -> Result<VisitRow, StoreError> {
            let changed = VisitRow {
                heads: Heads::from_bytes(&[[head; 32]]),
                ..v.clone()
            };
            store_row(&store, &changed)?;
            cache.committed(&v.carers, &changed);
            Ok(changed)
        };
        // What a phone in step with the store sends: its digest of the visits it did not send.
        let phone = |sent: &HashSet<VisitId>, window: (Millis, Millis)| -> Result<String, StoreError> {
            let rows = store.visits_for_carer(a, window.0, window.1)?;
            Ok(manifest_digest(
                rows.iter()
                    .filter(|r| !sent.contains(&r.visit_id))
                    .map(|r| (r.visit_id, &r.heads)),
            ))
        };
        let complete = |sent: &HashSet<VisitId>, window, digest: &str| -> Result<bool, StoreError> {
            Ok(for_carer(&store, &cache, a, window, sent, Some(digest))?.complete)
        };
        let window = (0, 10_000_000);
        let first: HashSet<VisitId> = [visits[0].visit_id].into();
        let seen = phone(&first, window)?;
        assert!(!complete(&first, window, &seen)?, "agrees");
        assert_eq!(cache.digests_computed(), 1);

        // A commit to the visit left out: the others' digest stands, taken from memory.
        commit(&visits[0], 10)?;
        assert!(!complete(&first, window, &seen)?);
        assert_eq!(cache.digests_computed(), 1, "remembered");

        // A commit to another visit: the phone's view of the others is behind, and hears so.
        commit(&visits[1], 11)?;
        assert!(complete(&first, window, &seen)?, "the phone's digest is stale");
        assert_eq!(cache.digests_computed(), 2);
        let seen = phone(&first, window)?;
        assert!(!complete(&first, window, &seen)?);
        assert_eq!(cache.digests_computed(), 2);

        // The window slides past the second visit: fewer others, another digest.
        let later = (2_500_000, 10_000_000);
        let third: HashSet<VisitId> = [visits[2].visit_id].into();
        assert!(complete(&third, later, &seen)?);
        assert!(!complete(&third, later, &phone(&third, later)?)?);
        let computed = cache.digests_computed();
        let slid = (1_500_000, 10_000_000);
        assert!(
            complete(&third, slid, &phone(&third, later)?)?,
            "the second visit is back in"
        );
        assert_eq!(cache.digests_computed(), computed + 1);

        // Another visit left out, or none: worked out again.
        let none = HashSet::new();
        assert!(!complete(&none, window, &phone(&none, window)?)?);
        assert_eq!(cache.digests_computed(), computed + 2);
        Ok(())
    }

    /// Off (a store other processes write): every manifest is read from the store.
    #[test]
    fn a_disabled_cache_always_reads_the_store() -> Result<(), StoreError> {
        let (_dir, store) = fresh_store()?;
        let cache = ManifestCache::new(false, 10);
        let a = PersonId::new();
        assert!(cache.rows(&store, a, 0, 10_000_000)?.is_empty());
        let unreported = row(vec![a], 2_000_000, 1);
        store_row(&store, &unreported)?;
        assert_eq!(
            ids(&cache.rows(&store, a, 0, 10_000_000)?),
            vec![unreported.visit_id]
        );
        assert_eq!(cache.held(), 0);
        Ok(())
    }
}
