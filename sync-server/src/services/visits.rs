//! Visit documents on the server: a bounded cache over the store, the one commit path every
//! change goes through (phones' sync messages and the office's edits), and the write rules.

use crate::services::alerts::{self, OversightSettings};
use crate::services::manifest::ManifestCache;
use crate::services::rules::{judge_device_changes, Judgement};
use crate::store::{
    AmendmentRow, Chunk, EventRow, Principal, ServerStore, StoreError, VisitCommit, VisitRow,
};
use automerge::sync::{Message, State as SyncState, SyncDoc};
use automerge::ActorId;
use caresync_core::domain::*;
use caresync_core::metrics::{EventFlag, EventFlags};
use caresync_core::protocol::{decode_sync_message, v2, VisitError, MAX_MESSAGE_BYTES};
use caresync_core::visit_document::{ChangeLabel, DocumentError, ScheduleChange, Visit, VisitDocument};
use caresync_core::Heads;
use hashlink::LinkedHashMap;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// Compact a visit's chunks into one snapshot once it has this many.
const COMPACT_AFTER_CHUNKS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VisitServiceError {
    #[error("no visit {0}")]
    UnknownVisit(VisitId),
    #[error("visit {0} already exists")]
    AlreadyExists(VisitId),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("visit {visit}: {source}")]
    Document { visit: VisitId, source: DocumentError },
    #[error("a lock was poisoned")]
    Poisoned,
    /// Outside the bounds in [`crate::services::validation`].
    #[error(transparent)]
    Rejected(#[from] crate::services::validation::Invalid),
}

type Result<T, E = VisitServiceError> = std::result::Result<T, E>;

/// The outcome of one visit's message in a protocol 1 sync request.
pub enum Ingested {
    Accepted {
        reply: Option<Vec<u8>>,
        new_changes: usize,
    },
    Refused(VisitError),
}

/// The outcome of one visit's push in a protocol 2 sync request.
pub enum Pushed {
    Accepted {
        /// The changes the phone lacks and the server's heads; `None` when the server holds
        /// exactly the phone's heads (or the carer is no longer on the visit).
        reply: Option<(Vec<Vec<u8>>, Heads)>,
        new_changes: usize,
    },
    Refused(VisitError),
}

/// What a phone sent for one visit, in either protocol.
enum Exchange {
    Message(Message),
    /// The changes and the phone's heads after them.
    Changes(Vec<automerge::Change>, Heads),
}

enum Answer {
    Message(Option<Vec<u8>>),
    Changes(Option<(Vec<Vec<u8>>, Heads)>),
}

enum Taken {
    Accepted { answer: Answer, new_changes: usize },
    Refused(VisitError),
}

/// What judging a phone's exchange decided: an answer with nothing to commit, or an answer to
/// give once the change is committed.
// Made once per push and moved once: boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Judged {
    Answered(Taken),
    Commit { taken: Taken, change: Change },
}

/// A change to commit: the document after it and its read, the heads before it, and what the
/// commit writes besides.
struct Change {
    copy: VisitDocument,
    after: Visit,
    before: Vec<automerge::ChangeHash>,
    extras: CommitExtras,
}

struct Cached {
    /// The stored document; `None` while it is taken for a phone's changes to be applied to it
    /// (cheaper than a fork and dropping the old document: 3 % of the server under load, and an
    /// empty placeholder in its place cost 0.6 % more). Put back when the result is committed
    /// or found to change nothing; if it is still out when the entry's lock is let go (a
    /// refusal, an error), the entry is dropped, to be loaded again from the store.
    doc: Option<VisitDocument>,
    /// `doc` read: kept with it so a write reads the document once, not before and after.
    visit: Visit,
    chunk_hashes: Vec<String>,
}

impl Cached {
    /// The document, unless it is taken (never so outside `take`, which puts it back or has the
    /// entry dropped).
    fn doc(&mut self) -> Result<&mut VisitDocument> {
        self.doc.as_mut().ok_or(VisitServiceError::Poisoned)
    }
}

type Entry = Arc<parking_lot::Mutex<Option<Cached>>>;

/// A visit's entry, locked. Owned, so that a phone's commit carries it to the store's writer
/// thread and lets it go there once the commit is durable and the cache holds the result
/// ([`VisitService::push_changes`]): nothing else reads or writes the visit's document between
/// the take and the commit's outcome, and nothing has to wait on the caller to let it go.
type Lease = parking_lot::ArcMutexGuard<parking_lot::RawMutex, Option<Cached>>;

/// What is left to do once a commit is durable, outside the visit's lock.
#[derive(Clone, Copy, Debug)]
struct Landed {
    visit: VisitId,
    now: Millis,
    /// The visit was due when committed and its commit did not review its alerts: they are
    /// reviewed after.
    due: bool,
    /// Its chunks piled up to [`COMPACT_AFTER_CHUNKS`].
    compact: bool,
}

/// A bounded map of recently used visit documents. Each entry has its own lock, so two phones
/// syncing the same visit are serialised while different visits proceed in parallel.
///
/// Kept in order of use, least recent first, so making room looks at the oldest entries only:
/// scanning every entry for the oldest was 3 % of the server's time under the load generator,
/// whose visits outnumber the cache.
struct DocCache {
    capacity: usize,
    entries: LinkedHashMap<VisitId, Entry>,
}

impl DocCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: LinkedHashMap::new(),
        }
    }

    /// The visit's entry, and the one evicted to make room for it: the caller drops that after
    /// letting go of the cache, since freeing a document's op set is not quick.
    fn entry(&mut self, visit: VisitId) -> (Entry, Option<Entry>) {
        if let Some(entry) = self.entries.to_back(&visit) {
            return (entry.clone(), None);
        }
        let mut evicted = None;
        if self.entries.len() >= self.capacity {
            // Evict the least recently used entry that nobody is holding (one being synced is
            // held by its caller; it stays, and is evicted later).
            let victim = self
                .entries
                .iter()
                .find(|(_, e)| Arc::strong_count(e) == 1)
                .map(|(id, _)| *id);
            evicted = victim.and_then(|id| self.entries.remove(&id));
        }
        let entry: Entry = Arc::new(parking_lot::Mutex::new(None));
        self.entries.insert(visit, entry.clone());
        (entry, evicted)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What a commit writes besides the document and its visit row.
#[derive(Default)]
struct CommitExtras {
    sync_state: Option<(DeviceId, Option<Vec<u8>>)>,
    new_events: Vec<caresync_core::ClockEvent>,
    /// Events accepted from a carer reassigned since writing them.
    reassigned: Vec<EventId>,
    new_amendments: Vec<AmendmentRow>,
    /// Concerns a carer's phone just wrote, raised in the commit's transaction.
    raise: Vec<crate::store::alerts::AlertRecord>,
    /// The new changes already encoded (by the audit), with the heads they lead to: the chunk
    /// when the copy still stands at those heads.
    encoded: Option<(Vec<automerge::ChangeHash>, Vec<u8>)>,
}

pub struct VisitService {
    store: Arc<dyn ServerStore>,
    cache: Mutex<DocCache>,
    /// This process's Automerge actor for the office's and supervisors' edits.
    actor: ActorId,
    /// Deadlines of the alerts raised as visits are committed.
    oversight: Arc<OversightSettings>,
    /// Carers' manifests, kept exact by every commit here (shared with the writer thread, where
    /// a phone's commit lands).
    manifests: Arc<ManifestCache>,
}

/// Carers whose manifests are kept in memory (embedded store only): about 15 KiB each for a
/// carer with 150 visits in the sync window.
pub const MANIFEST_CACHE: usize = 1_000;

fn chunk_of(bytes: Vec<u8>) -> Chunk {
    Chunk {
        hash: hex::encode(Sha256::digest(&bytes)),
        bytes,
    }
}

impl VisitService {
    pub fn new(store: Arc<dyn ServerStore>, cache_capacity: usize) -> Self {
        Self {
            cache: Mutex::new(DocCache::new(cache_capacity)),
            actor: ActorId::random(),
            oversight: Arc::default(),
            manifests: Arc::new(ManifestCache::new(!store.shared_by_instances(), MANIFEST_CACHE)),
            store,
        }
    }

    pub fn manifests(&self) -> &ManifestCache {
        &self.manifests
    }

    /// With the agency's alert deadlines (`--ack-within`).
    pub fn with_oversight(mut self, settings: Arc<OversightSettings>) -> Self {
        self.oversight = settings;
        self
    }

    pub fn cached_documents(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn entry(&self, visit: VisitId) -> Result<Entry> {
        let (entry, evicted) = self
            .cache
            .lock()
            .map_err(|_| VisitServiceError::Poisoned)?
            .entry(visit);
        // Freed here, with the cache's lock already let go (a drop under it was about 1 % of the
        // server under the load generator, every other sync waiting on the lock meanwhile).
        drop(evicted);
        Ok(entry)
    }

    /// The visit's entry, locked and holding its document: loaded from the store if the cache
    /// let it go, caught up with other instances' chunks if it is shared.
    fn lease(&self, visit: VisitId) -> Result<Lease> {
        Ok(self.lease_merging(visit)?.0)
    }

    /// [`VisitService::lease`], and whether catching up merged another instance's chunks into
    /// the cached document.
    fn lease_merging(&self, visit: VisitId) -> Result<(Lease, bool)> {
        let mut merged = false;
        let entry = self.entry(visit)?;
        let mut lease = lock_visit(&entry);
        drop(entry);
        if lease.is_none() {
            let chunks = self.store.visit_chunks(visit)?;
            if chunks.is_empty() {
                return Err(VisitServiceError::UnknownVisit(visit));
            }
            let mut all = Vec::with_capacity(chunks.iter().map(|c| c.bytes.len()).sum());
            for c in &chunks {
                all.extend_from_slice(&c.bytes);
            }
            let doc =
                VisitDocument::load(&all).map_err(|source| VisitServiceError::Document { visit, source })?;
            let read = doc
                .read()
                .map_err(|source| VisitServiceError::Document { visit, source })?;
            *lease = Some(Cached {
                doc: Some(doc),
                visit: read,
                chunk_hashes: chunks.into_iter().map(|c| c.hash).collect(),
            });
        } else if let Some(cached) = lease.as_mut() {
            // Another server instance on the same database may have written since.
            merged = self.catch_up(visit, cached)?;
        }
        Ok((lease, merged))
    }

    /// Run `f` on the visit's document under its lock, loading it from the store if needed.
    fn with_doc<T>(&self, visit: VisitId, f: impl FnOnce(&mut Cached) -> Result<T>) -> Result<T> {
        let mut lease = self.lease(visit)?;
        let out = f(lease.as_mut().ok_or(VisitServiceError::Poisoned)?);
        let_go_if_taken(&mut lease);
        out
    }

    /// Merge into the cached document any chunks the store holds that it has not seen (written
    /// by another instance sharing the database), and take the store's chunk list as the one a
    /// later compaction may replace. One cheap query when nothing changed. Returns whether
    /// anything was merged.
    fn catch_up(&self, visit: VisitId, cached: &mut Cached) -> Result<bool> {
        if !self.store.shared_by_instances() {
            return Ok(false);
        }
        let stored = self.store.visit_chunk_hashes(visit)?;
        if stored == cached.chunk_hashes {
            return Ok(false);
        }
        let unseen: Vec<String> = stored
            .iter()
            .filter(|h| !cached.chunk_hashes.contains(h))
            .cloned()
            .collect();
        if !unseen.is_empty() {
            for chunk in self.store.visit_chunks(visit)? {
                if unseen.contains(&chunk.hash) {
                    cached
                        .doc()?
                        .automerge()
                        .load_incremental(&chunk.bytes)
                        .map_err(|e| VisitServiceError::Document {
                            visit,
                            source: e.into(),
                        })?;
                }
            }
        }
        cached.chunk_hashes = stored;
        if !unseen.is_empty() {
            cached.visit = cached
                .doc()?
                .read()
                .map_err(|source| VisitServiceError::Document { visit, source })?;
        }
        Ok(!unseen.is_empty())
    }

    pub fn read(&self, visit: VisitId) -> Result<Visit> {
        self.with_doc(visit, |c| Ok(c.visit.clone()))
    }

    pub fn schedule_history(&self, visit: VisitId) -> Result<Vec<ScheduleChange>> {
        self.with_doc(visit, |c| {
            c.doc()?
                .schedule_history()
                .map_err(|source| VisitServiceError::Document { visit, source })
        })
    }

    pub fn heads(&self, visit: VisitId) -> Result<Heads> {
        self.with_doc(visit, |c| Ok(Heads::from(c.doc()?.heads())))
    }

    /// The office creates a visit document.
    pub fn create(
        &self,
        visit: VisitId,
        schedule: &caresync_core::Schedule,
        author: PersonId,
        now: Millis,
    ) -> Result<VisitRow> {
        validate_schedule(schedule)?;
        let entry = self.entry(visit)?;
        let mut guard = lock_visit(&entry);
        if guard.is_some() || !self.store.visit_chunks(visit)?.is_empty() {
            return Err(VisitServiceError::AlreadyExists(visit));
        }
        let label = ChangeLabel {
            author_id: author,
            at: now,
            what: "created".into(),
        };
        let mut doc = VisitDocument::create_by(visit, schedule, &self.actor, &label)
            .map_err(|source| VisitServiceError::Document { visit, source })?;
        let chunk = chunk_of(doc.save());
        let read = doc
            .read()
            .map_err(|source| VisitServiceError::Document { visit, source })?;
        let row = project(visit, &read, &mut doc, now);
        self.store.commit_visit(&VisitCommit {
            visit: row.clone(),
            chunk: Some(chunk.clone()),
            new_events: vec![],
            new_amendments: vec![],
            sync_state: None,
        })?;
        self.manifests.committed(&[], &row);
        *guard = Some(Cached {
            doc: Some(doc),
            visit: read,
            chunk_hashes: vec![chunk.hash],
        });
        Ok(row)
    }

    /// An office or supervisor edit: `edit` changes a copy; if it succeeds the copy is committed.
    pub fn edit(
        &self,
        visit: VisitId,
        now: Millis,
        edit: impl FnOnce(&mut VisitDocument, &Visit) -> Result<()>,
    ) -> Result<Visit> {
        let actor = self.actor.clone();
        let mut lease = self.lease(visit)?;
        let cached = lease.as_mut().ok_or(VisitServiceError::Poisoned)?;
        let before = cached.doc()?.heads();
        let mut copy = cached.doc()?.fork().with_actor(&actor);
        let current = cached.visit.clone();
        edit(&mut copy, &current)?;
        let after = copy
            .read()
            .map_err(|source| VisitServiceError::Document { visit, source })?;
        // What changed keeps to the bounds; what did not is left alone, so a visit stored
        // before the bounds existed can still be cancelled, noted and amended.
        crate::services::validation::schedule_change(&current.schedule, &after.schedule)?;
        let new_amendments = copy_amendments(visit, &mut copy, &before)?;
        let change = Change {
            copy,
            after: after.clone(),
            before,
            extras: CommitExtras {
                new_amendments,
                ..Default::default()
            },
        };
        let (reply, landed) = std::sync::mpsc::sync_channel(1);
        self.commit(visit, lease, change, now, move |l| {
            let _ = reply.send(l);
        });
        self.after_commit(wait(&landed)?)?;
        Ok(after)
    }

    /// A phone's protocol 1 sync message for one visit: judged on a copy, persisted only if every
    /// change is allowed, answered with the server's own message.
    pub fn ingest(&self, who: &Principal, visit: VisitId, message: &[u8], now: Millis) -> Result<Ingested> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Ok(Ingested::Refused(too_large(visit, message.len())));
        }
        let message = match decode_sync_message(message) {
            Ok(message) => message,
            Err(e) => {
                return Ok(Ingested::Refused(refusal(
                    visit,
                    "malformed_message",
                    e.to_string(),
                )))
            }
        };
        Ok(
            match self.take_here(who, visit, Exchange::Message(message), now)? {
                Taken::Accepted {
                    answer: Answer::Message(reply),
                    new_changes,
                } => Ingested::Accepted { reply, new_changes },
                Taken::Accepted { .. } => unreachable!("a sync message is answered with one"),
                Taken::Refused(error) => Ingested::Refused(error),
            },
        )
    }

    /// A phone's protocol 2 push for one visit: its raw changes and, when they do not imply them,
    /// its heads ([`v2::Push`]). Judged and persisted as [`VisitService::ingest`] does; answered
    /// with the changes the phone lacks and the server's heads, or nothing when the server holds
    /// exactly the phone's heads. A push that brings nothing new commits nothing.
    pub fn ingest_changes(
        &self,
        who: &Principal,
        visit: VisitId,
        changes: &[Vec<u8>],
        heads: Option<Heads>,
        now: Millis,
    ) -> Result<Pushed> {
        Ok(match push_exchange(visit, changes, heads) {
            Ok(exchange) => pushed(self.take_here(who, visit, exchange, now)?),
            Err(refused) => refused,
        })
    }

    /// [`VisitService::ingest_changes`] for an async caller on the embedded store: the push is
    /// judged here, and its commit awaited while the store's writer makes it durable (with no
    /// thread waiting on it). The phone's answer comes only once its changes are on disk. If this
    /// future is dropped meanwhile, the commit still lands and the cache still takes it; only
    /// what follows a commit is skipped (the alert review, which the sweep makes good, and a
    /// compaction, which the visit's next commit does). On a store other instances write the
    /// commit runs here, blocking: call [`VisitService::ingest_changes`] on a blocking thread.
    pub async fn push_changes(
        self: Arc<Self>,
        who: &Principal,
        visit: VisitId,
        changes: &[Vec<u8>],
        heads: Option<Heads>,
        now: Millis,
    ) -> Result<Pushed> {
        let exchange = match push_exchange(visit, changes, heads) {
            Ok(exchange) => exchange,
            Err(refused) => return Ok(refused),
        };
        let (reply, landed) = tokio::sync::oneshot::channel();
        let (taken, committing) = self.take(who, visit, exchange, now, move |l| {
            let _ = reply.send(l);
        })?;
        if committing {
            let landed = landed.await.map_err(|_| dropped_commit())??;
            if landed.due || landed.compact || self.store.shared_by_instances() {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.after_commit(landed))
                    .await
                    .map_err(|e| {
                        VisitServiceError::Store(StoreError::Conflict(format!("after a commit: {e}")))
                    })??;
            }
        }
        Ok(pushed(taken))
    }

    /// [`VisitService::take`], waiting on this thread for the commit and what follows it.
    fn take_here(&self, who: &Principal, visit: VisitId, exchange: Exchange, now: Millis) -> Result<Taken> {
        let (reply, landed) = std::sync::mpsc::sync_channel(1);
        let (taken, committing) = self.take(who, visit, exchange, now, move |l| {
            let _ = reply.send(l);
        })?;
        if committing {
            self.after_commit(wait(&landed)?)?;
        }
        Ok(taken)
    }

    /// Both protocols' one path: apply what the phone sent to the visit's document, judge what
    /// it did, answer, and hand the commit to the store. Returns the answer and whether a commit
    /// is in flight: if so, `landed` is told its outcome once it is durable (on the store's
    /// writer thread for the embedded store), and the visit's lock goes with it until then;
    /// otherwise `landed` is dropped. The phone may be answered only once `landed` says `Ok`.
    fn take(
        &self,
        who: &Principal,
        visit: VisitId,
        exchange: Exchange,
        now: Millis,
        landed: impl FnOnce(Result<Landed>) + Send + 'static,
    ) -> Result<(Taken, bool)> {
        let refused =
            |code: &str, message: String| Ok((Taken::Refused(refusal(visit, code, message)), false));
        let Some(device) = who.device_id else {
            return refused("not_a_device", "only enrolled devices sync".into());
        };
        let mut lease = match self.lease(visit) {
            Ok(lease) => lease,
            Err(VisitServiceError::UnknownVisit(_)) => {
                return refused("unknown_visit", "no such visit".into())
            }
            Err(e) => return Err(e),
        };
        let cached = lease.as_mut().ok_or(VisitServiceError::Poisoned)?;
        match self.judge(who, device, visit, cached, exchange, now) {
            Ok(Judged::Commit { taken, change }) => {
                self.commit(visit, lease, change, now, landed);
                Ok((taken, true))
            }
            Ok(Judged::Answered(taken)) => {
                let_go_if_taken(&mut lease);
                Ok((taken, false))
            }
            Err(e) => {
                let_go_if_taken(&mut lease);
                Err(e)
            }
        }
    }

    /// Apply what the phone sent to the cached document (taken out of the cache meanwhile; put
    /// back when nothing is to be committed, left out on a refusal), judge it, and say what to
    /// answer and what to commit.
    fn judge(
        &self,
        who: &Principal,
        device: DeviceId,
        visit: VisitId,
        cached: &mut Cached,
        mut exchange: Exchange,
        now: Millis,
    ) -> Result<Judged> {
        let refuse =
            |code: &str, message: String| Ok(Judged::Answered(Taken::Refused(refusal(visit, code, message))));
        let carer = who.person.id;
        let assigned_now = cached.visit.schedule.carers.contains(&carer);
        if !assigned_now && !self.store.was_ever_assigned(visit, carer)? {
            return refuse("not_assigned", "this visit is not assigned to this carer".into());
        }
        let before = cached.doc()?.heads();
        let mut copy = cached.doc.take().ok_or(VisitServiceError::Poisoned)?;
        let mut sync_state = None;
        // A push's changes the document did not hold: what the audit looks at.
        let mut pushed_new = None;
        let applied = match &mut exchange {
            Exchange::Message(message) => {
                let mut state = match self.store.sync_state(device, visit)? {
                    Some(bytes) => SyncState::decode(&bytes).unwrap_or_default(),
                    None => SyncState::new(),
                };
                let applied = copy
                    .automerge()
                    .sync()
                    .receive_sync_message(&mut state, message.clone())
                    .map_err(|e| format!("changes could not be applied: {e}"));
                sync_state = Some(state);
                applied
            }
            Exchange::Changes(changes, _) => {
                apply_changes(&mut copy, std::mem::take(changes)).map(|new| pushed_new = Some(new))
            }
        };
        if let Err(message) = applied {
            let code = if message.starts_with(MISSING) {
                "missing_changes"
            } else {
                "malformed_message"
            };
            return refuse(code, message);
        }
        // The document was readable before this message, so whatever no longer reads as the
        // schema says came with it: that visit's `invalid_entry`, never an error for the
        // whole request (the commit_path fuzz target found both ways in).
        let unreadable = |e: DocumentError| {
            refuse(
                "invalid_entry",
                format!("the changes leave an entry that cannot be read: {e}"),
            )
        };
        let audit = match &pushed_new {
            Some(new) => copy.audit_changes(&before, new, Some(&cached.visit)),
            None => copy.audit_since(&before),
        };
        let audit = match audit {
            Ok(audit) => audit,
            Err(e) => return unreadable(e),
        };
        // The one read of the document this message produced, for the rules and the
        // projection alike (nothing new: the cached read stands).
        let after = if audit.change_hashes.is_empty() {
            cached.visit.clone()
        } else {
            match copy.read_after(&cached.visit, &audit) {
                Ok(after) => after,
                Err(e) => return unreadable(e),
            }
        };
        let mut flagged = Vec::new();
        if !audit.change_hashes.is_empty() {
            match judge_device_changes(who, device, &audit, &mut copy, &after) {
                Ok(Judgement::Allowed { reassigned_events }) => flagged = reassigned_events,
                Ok(Judgement::Refused { code, reason }) => return refuse(code, reason),
                Err(VisitServiceError::Document { source, .. }) => return unreadable(source),
                Err(e) => return Err(e),
            }
        }
        let answer = match (exchange, sync_state.as_mut()) {
            (Exchange::Message(_), Some(state)) => Answer::Message(
                if assigned_now {
                    copy.automerge().sync().generate_sync_message(state)
                } else {
                    // Taken off the visit: what they wrote while assigned is accepted, but
                    // nothing of the document goes back, only an acknowledgement of the heads
                    // both sides share.
                    acknowledgement(visit, &mut copy, state)?
                }
                .map(|m| m.encode()),
            ),
            (Exchange::Changes(_, phone_heads), _) => Answer::Changes(if assigned_now {
                changes_for(&mut copy, &phone_heads)
            } else {
                // Taken off the visit: the phone hears only that its changes are held.
                None
            }),
            (Exchange::Message(_), None) => unreachable!("a sync message has a state"),
        };
        let new_changes = audit.change_hashes.len();
        if new_changes == 0 && sync_state.is_none() {
            // Protocol 2 keeps no state per device: nothing new is nothing to write.
            cached.doc = Some(copy);
            return Ok(Judged::Answered(Taken::Accepted { answer, new_changes }));
        }
        let extras = CommitExtras {
            sync_state: Some((device, sync_state.map(|s| s.encode()))),
            new_events: audit.new_events,
            reassigned: flagged,
            new_amendments: vec![],
            raise: alerts::concerns(
                &self.oversight,
                visit,
                &who.person,
                &audit.new_notes,
                &audit.new_task_outcomes,
                now,
            ),
            encoded: Some((audit.heads_after, audit.changes)),
        };
        Ok(Judged::Commit {
            taken: Taken::Accepted { answer, new_changes },
            change: Change {
                copy,
                after,
                before,
                extras,
            },
        })
    }

    /// The one commit path: new chunk + projection + sync state in one store transaction. Once
    /// it is durable the cache takes the copy and its read (the `Visit` the caller already read
    /// from it, so the projection does not read again), the carers' manifests learn of it, the
    /// visit's lock is let go, and `landed` is told; if it fails, the cached document is let go
    /// (to be loaded again from the store) and `landed` hears the error. What is left (catching
    /// up with other instances, alerts, compaction) is [`VisitService::after_commit`]'s.
    fn commit(
        &self,
        visit: VisitId,
        mut lease: Lease,
        change: Change,
        now: Millis,
        landed: impl FnOnce(Result<Landed>) + Send + 'static,
    ) {
        let Change {
            mut copy,
            after: read,
            before,
            extras,
        } = change;
        let after = copy.heads();
        let chunk = (after != before).then(|| {
            chunk_of(match extras.encoded {
                Some((heads, bytes)) if heads == after => bytes,
                _ => copy.automerge().save_after(&before),
            })
        });
        let row = project(visit, &read, &mut copy, now);
        let events: Vec<EventRow> = extras
            .new_events
            .iter()
            .map(|e| event_row(visit, e, now, extras.reassigned.contains(&e.id)))
            .collect();
        // A visit already due may raise or close alerts by this change (a late clock-in closes a
        // missed alert): reviewed in the commit's own transaction where the store can, else
        // after it (`after_commit`).
        let due = row.planned_start <= now;
        let review = (due && self.store.reviews_in_commit()).then(|| crate::store::CommitReview {
            settings: self.oversight.clone(),
            now,
        });
        let review_after = due && review.is_none();
        let chunk_hash = chunk.as_ref().map(|c| c.hash.clone());
        let commit = VisitCommit {
            visit: row.clone(),
            chunk,
            new_events: events,
            new_amendments: extras.new_amendments,
            sync_state: extras.sync_state,
        };
        let manifests = self.manifests.clone();
        let then = move |stored: crate::store::Result<()>| {
            let outcome = match (stored, lease.as_mut()) {
                (Ok(()), Some(cached)) => {
                    manifests.committed(&cached.visit.schedule.carers, &row);
                    cached.doc = Some(copy);
                    cached.visit = read;
                    if let Some(hash) = chunk_hash {
                        if !cached.chunk_hashes.contains(&hash) {
                            cached.chunk_hashes.push(hash);
                        }
                    }
                    Ok(Landed {
                        visit,
                        now,
                        due: review_after,
                        compact: cached.chunk_hashes.len() >= COMPACT_AFTER_CHUNKS,
                    })
                }
                (Ok(()), None) => Err(VisitServiceError::Poisoned),
                (Err(e), _) => {
                    *lease = None;
                    Err(e.into())
                }
            };
            // Let go before telling, so a sync of the same visit waiting on the lock goes on at
            // once, whoever is told.
            drop(lease);
            landed(outcome);
        };
        self.store
            .commit_visit_then(commit, extras.raise, review, Box::new(then));
    }

    /// What a durable commit leaves to do, under the visit's lock again where it needs the
    /// document: on a store other instances write, merge their chunks and project again; on a
    /// visit already due, review its alerts; compact when its chunks pile up.
    fn after_commit(&self, landed: Landed) -> Result<()> {
        let Landed {
            visit,
            now,
            due,
            compact,
        } = landed;
        if self.store.shared_by_instances() {
            // Another instance may have committed to this visit between our read and our write:
            // its chunk and events are stored (chunks are keyed by hash, events insert-once), but
            // the visit row we just wrote was projected without its change. Merge and project
            // again until no unseen chunk remains; whoever writes the row last has seen every
            // chunk. (Manifests are held only where no other instance writes.)
            let (mut lease, mut merged) = self.lease_merging(visit)?;
            let cached = lease.as_mut().ok_or(VisitServiceError::Poisoned)?;
            for _ in 0..8 {
                if !merged {
                    break;
                }
                let doc = cached.doc.as_mut().ok_or(VisitServiceError::Poisoned)?;
                self.store.commit_visit(&VisitCommit {
                    visit: project(visit, &cached.visit, doc, now),
                    chunk: None,
                    new_events: vec![],
                    new_amendments: vec![],
                    sync_state: None,
                })?;
                merged = self.catch_up(visit, cached)?;
            }
        }
        // A visit already due may raise or close alerts by this change (a late clock-in closes
        // a missed alert). The change is stored whatever happens here; the sweep catches up.
        if due {
            if let Err(e) = alerts::review_visit(self.store.as_ref(), &self.oversight, visit, now) {
                tracing::warn!(%visit, error = %e, "alert review after a commit failed; the sweep will retry");
            }
        }
        if compact {
            let mut lease = self.lease(visit)?;
            let cached = lease.as_mut().ok_or(VisitServiceError::Poisoned)?;
            // Another commit may have compacted meanwhile.
            if cached.chunk_hashes.len() >= COMPACT_AFTER_CHUNKS {
                let snapshot = chunk_of(cached.doc()?.save());
                self.store.compact_visit(visit, &cached.chunk_hashes, &snapshot)?;
                cached.chunk_hashes = vec![snapshot.hash];
            }
        }
        Ok(())
    }
}

/// Wait on this thread for a commit handed to the store.
fn wait(landed: &std::sync::mpsc::Receiver<Result<Landed>>) -> Result<Landed> {
    landed.recv().map_err(|_| dropped_commit())?
}

fn dropped_commit() -> VisitServiceError {
    VisitServiceError::Store(StoreError::Conflict(
        "the commit was dropped before its outcome was known".into(),
    ))
}

/// A protocol 2 push's changes, parsed, with the phone's heads; or its refusal.
fn push_exchange(
    visit: VisitId,
    changes: &[Vec<u8>],
    heads: Option<Heads>,
) -> std::result::Result<Exchange, Pushed> {
    let size: usize = changes.iter().map(Vec::len).sum();
    if size > MAX_MESSAGE_BYTES {
        return Err(Pushed::Refused(too_large(visit, size)));
    }
    let mut parsed = Vec::with_capacity(changes.len());
    for bytes in changes {
        match v2::parse_change(bytes) {
            Ok(change) => parsed.push(change),
            Err(e) => {
                return Err(Pushed::Refused(refusal(
                    visit,
                    "malformed_message",
                    format!("not an Automerge change: {e}"),
                )))
            }
        }
    }
    let phone_heads = heads.unwrap_or_else(|| v2::implied_heads(&parsed));
    Ok(Exchange::Changes(parsed, phone_heads))
}

/// A push's outcome, from what its take answered.
fn pushed(taken: Taken) -> Pushed {
    match taken {
        Taken::Accepted {
            answer: Answer::Changes(reply),
            new_changes,
        } => Pushed::Accepted { reply, new_changes },
        Taken::Accepted { .. } => unreachable!("changes are answered with changes"),
        Taken::Refused(error) => Pushed::Refused(error),
    }
}

/// Drop the cached document if it is still taken (a refusal, an error): the next use loads it
/// again from the store, where only committed state is.
fn let_go_if_taken(lease: &mut Lease) {
    if lease.as_ref().is_some_and(|c| c.doc.is_none()) {
        **lease = None;
    }
}

/// How a refusal for changes whose dependencies the server lacks starts (`missing_changes`).
const MISSING: &str = "the changes depend on";

/// Apply a protocol 2 push to the copy. Every change must be applied: one whose dependencies the
/// server lacks would wait in Automerge's queue and be lost with the copy, so the push is refused
/// (`missing_changes`) and the phone sends everything it has. Returns the pushed changes the
/// copy did not hold before, in the order pushed: exactly what was applied since its heads.
fn apply_changes(
    copy: &mut VisitDocument,
    changes: Vec<automerge::Change>,
) -> std::result::Result<Vec<automerge::Change>, String> {
    let hashes: Vec<automerge::ChangeHash> = changes.iter().map(automerge::Change::hash).collect();
    let doc = copy.automerge();
    // Nothing is queued in a copy of a committed document, so the pushed hashes it reports
    // missing are the ones it does not hold.
    let mut unheld = doc.get_missing_deps(&hashes);
    let new: Vec<automerge::Change> = changes
        .iter()
        .filter(|c| {
            // Taken out once seen: a change pushed twice is new once.
            let at = unheld.iter().position(|h| *h == c.hash());
            at.map(|i| unheld.swap_remove(i)).is_some()
        })
        .cloned()
        .collect();
    v2::apply_changes(doc, changes)?;
    // Missing dependencies of any change still queued (a lookup in the change graph; asking for
    // each change by hash would rebuild it from the op set, 8 % of an ingest).
    if !doc.get_missing_deps(&hashes).is_empty() {
        return Err(format!(
            "{MISSING} changes this server does not hold; send the visit's changes again from the start"
        ));
    }
    Ok(new)
}

/// What a phone holding `phone_heads` lacks of `doc`, and `doc`'s heads; nothing when it holds them.
fn changes_for(doc: &mut VisitDocument, phone_heads: &Heads) -> Option<(Vec<Vec<u8>>, Heads)> {
    let ours = Heads::from(doc.heads());
    if ours == *phone_heads {
        return None;
    }
    let doc = doc.automerge();
    // Heads the server does not hold (a parked visit's refused changes) say nothing of what the
    // phone lacks; the rest bound it.
    let unknown = doc.get_missing_deps(phone_heads.as_slice());
    let known: Vec<automerge::ChangeHash> = phone_heads
        .as_slice()
        .iter()
        .copied()
        .filter(|h| !unknown.contains(h))
        .collect();
    let changes = doc
        .get_changes(&known)
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    Some((changes, ours))
}

fn refusal(visit: VisitId, code: &str, message: String) -> VisitError {
    VisitError {
        visit_id: visit,
        code: code.into(),
        message,
    }
}

fn too_large(visit: VisitId, size: usize) -> VisitError {
    refusal(
        visit,
        "message_too_large",
        format!("message of {size} bytes exceeds {MAX_MESSAGE_BYTES}"),
    )
}

/// A reply carrying no change: generated from the document as it stood at the heads the phone and
/// the server now share, so its heads acknowledge the phone's changes and nothing newer is offered.
fn acknowledgement(
    visit: VisitId,
    doc: &mut VisitDocument,
    state: &mut SyncState,
) -> Result<Option<Message>> {
    let mut shared =
        doc.automerge()
            .fork_at(&state.shared_heads)
            .map_err(|e| VisitServiceError::Document {
                visit,
                source: e.into(),
            })?;
    let message = shared.sync().generate_sync_message(state);
    Ok(message)
}

/// Lock a visit's cache entry. A panic while it was held (a bug, or a message a library chokes
/// on) may have left its document taken out; rather than refuse the visit until a restart, drop
/// the entry's contents, which are loaded again from the store (only committed state is there).
fn lock_visit(entry: &Entry) -> Lease {
    let mut lease = entry.lock_arc();
    if lease.as_ref().is_some_and(|c| c.doc.is_none()) {
        tracing::warn!(
            "a visit's document was left out of the cache by a panic; reloading it from the store"
        );
        *lease = None;
    }
    lease
}

/// Amendments added since `before`, as rows (only office and supervisors write them, through `edit`).
fn copy_amendments(
    visit: VisitId,
    copy: &mut VisitDocument,
    before: &[automerge::ChangeHash],
) -> Result<Vec<AmendmentRow>> {
    let audit = copy
        .audit_since(before)
        .map_err(|source| VisitServiceError::Document { visit, source })?;
    Ok(audit
        .new_amendments
        .iter()
        .map(|a| AmendmentRow {
            amendment_id: a.id,
            visit_id: visit,
            author_id: a.author_id,
            carer_id: a.carer_id,
            time: a.time,
            corrected_time: a.corrected_time,
            reason: a.reason,
            written_at: a.written_at,
        })
        .collect())
}

fn validate_schedule(s: &caresync_core::Schedule) -> Result<()> {
    if s.planned_end <= s.planned_start {
        return Err(VisitServiceError::Invalid(
            "planned end must be after planned start".into(),
        ));
    }
    if s.carers.is_empty() || s.carers.len() > 2 {
        return Err(VisitServiceError::Invalid(
            "a visit has one carer, or two for a double-up".into(),
        ));
    }
    if s.carers.len() == 2 && s.carers[0] == s.carers[1] {
        return Err(VisitServiceError::Invalid(
            "a double-up needs two different carers".into(),
        ));
    }
    crate::services::validation::schedule(s)?;
    Ok(())
}

/// The visit row of `doc`, given `v`, the document read.
pub(crate) fn project(visit: VisitId, v: &Visit, doc: &mut VisitDocument, now: Millis) -> VisitRow {
    VisitRow {
        visit_id: visit,
        client_id: v.schedule.client_id,
        contract_id: v.schedule.contract_id,
        carers: v.schedule.carers.clone(),
        planned_start: v.schedule.planned_start,
        planned_end: v.schedule.planned_end,
        status: v.schedule.status,
        chargeable: v.schedule.chargeable,
        heads: Heads::from(doc.heads()),
        updated_at: now,
    }
}

/// The time-trust flags stored with an event row at receipt (brief, section 4), by the one
/// definition in `caresync_core::metrics`; reports re-derive them under each contract's rules.
pub fn time_trust_flags(e: &caresync_core::ClockEvent, received_at: Millis) -> EventFlags {
    caresync_core::metrics::time_trust_flags(e, Some(received_at), &Default::default()).into()
}

fn event_row(
    visit: VisitId,
    e: &caresync_core::ClockEvent,
    received_at: Millis,
    reassigned: bool,
) -> EventRow {
    let mut flags = time_trust_flags(e, received_at);
    if reassigned {
        flags.insert(EventFlag::ReassignedBeforeSync);
    }
    EventRow {
        event_id: e.id,
        visit_id: visit,
        carer_id: e.carer_id,
        device_id: e.device_id,
        kind: e.kind,
        device_time: e.device_time,
        clock_offset_ms: e.clock_offset_ms,
        offset_measured_at: e.offset_measured_at,
        trusted_time: e.trusted_time(),
        received_at,
        method: e.method,
        reason: e.reason,
        location: e.location,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(n: u128) -> VisitId {
        VisitId(uuid::Uuid::from_u128(n))
    }

    const NOW: Millis = 1_795_000_000_000;

    /// A carer's phone with a replica of one visit the server holds (not yet due).
    struct Phone {
        _dir: tempfile::TempDir,
        sqlite: Arc<crate::store::sqlite::SqliteStore>,
        store: Arc<dyn ServerStore>,
        visits: Arc<VisitService>,
        carer: Principal,
        visit: VisitId,
        doc: VisitDocument,
        /// The heads the server holds.
        shared: Vec<automerge::ChangeHash>,
    }

    fn phone() -> Phone {
        phone_planned(NOW + HOUR_MS)
    }

    fn phone_planned(start: Millis) -> Phone {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("server.db")).expect("open"));
        let store: Arc<dyn ServerStore> = sqlite.clone();
        let person = crate::store::Person {
            id: PersonId::new(),
            name: "Ann".into(),
            role: Role::Carer,
            team_id: None,
            active: true,
        };
        store.create_person(&person).expect("person");
        let visits = Arc::new(VisitService::new(store.clone(), 100));
        let visit = VisitId::new();
        let schedule = caresync_core::test_kit::schedule(vec![person.id], start);
        visits
            .create(visit, &schedule, PersonId::new(), NOW)
            .expect("create");
        let bytes: Vec<u8> = store
            .visit_chunks(visit)
            .expect("chunks")
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect();
        let mut doc = VisitDocument::load(&bytes).expect("load");
        let shared = doc.heads();
        Phone {
            _dir: dir,
            sqlite,
            store,
            visits,
            carer: Principal {
                person,
                device_id: Some(DeviceId::new()),
            },
            visit,
            doc,
            shared,
        }
    }

    impl Phone {
        /// A clock event written on the phone, and the changes since the last ones returned.
        fn clock(&mut self, kind: ClockKind) -> (EventId, Vec<Vec<u8>>) {
            let id = EventId::new();
            self.doc
                .append_event(&caresync_core::ClockEvent {
                    id,
                    kind,
                    carer_id: self.carer.person.id,
                    device_id: self.carer.device_id.expect("a device"),
                    device_time: NOW,
                    clock_offset_ms: Some(0),
                    offset_measured_at: Some(NOW),
                    method: ClockMethod::App,
                    reason: None,
                    location: None,
                    tag_id: None,
                })
                .expect("clock");
            let changes = self
                .doc
                .automerge()
                .get_changes(&self.shared)
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect();
            self.shared = self.doc.heads();
            (id, changes)
        }
    }

    /// Poll once, as an async thread would before it goes on to other requests.
    fn poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    /// `changes` pushed as the sync handler does and polled once: judged, its commit in flight
    /// (the caller holds the writer).
    fn push_in_flight<'a>(
        p: &'a Phone,
        changes: &'a [Vec<u8>],
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = Result<Pushed>> + 'a>> {
        let mut push = Box::pin(
            p.visits
                .clone()
                .push_changes(&p.carer, p.visit, changes, None, NOW),
        );
        assert!(
            poll_once(push.as_mut()).is_pending(),
            "judged, and waiting on the writer"
        );
        push
    }

    fn accepted(pushed: Pushed) -> usize {
        match pushed {
            Pushed::Accepted { new_changes, .. } => new_changes,
            Pushed::Refused(e) => panic!("refused: {} {}", e.code, e.message),
        }
    }

    /// A phone that hangs up while its push's commit is in flight: the commit still lands,
    /// the cache holds it, and nothing reads the visit in between.
    #[test]
    fn a_push_dropped_while_its_commit_is_in_flight_still_lands() {
        let mut p = phone();
        let (event, changes) = p.clock(ClockKind::ClockIn);
        let hold = p.sqlite.hold_writer();
        drop(push_in_flight(&p, &changes));
        drop(hold);
        // The visit's lock went with the commit: this read waits until it has landed.
        let read = p.visits.read(p.visit).expect("read");
        assert!(
            read.events.iter().any(|e| e.id == event),
            "the cache holds the commit"
        );
        assert!(
            p.store
                .events_for_visit(p.visit)
                .expect("events")
                .iter()
                .any(|e| e.event_id == event),
            "the store holds it"
        );
        assert_eq!(
            p.store.visit_row(p.visit).expect("row").expect("a row").heads,
            Heads::from(p.shared.clone()),
            "the visit row is the committed document's"
        );
    }

    /// A second push to a visit whose first push is still being committed waits for it: the
    /// clock-out's change depends on the clock-in's, so taken from a cache without it (or from
    /// the store before it landed) it would be refused as `missing_changes`.
    #[test]
    fn a_push_waits_for_the_commit_in_flight_on_its_visit() {
        let mut p = phone();
        let (_, clock_in) = p.clock(ClockKind::ClockIn);
        let (clock_out_event, clock_out) = p.clock(ClockKind::ClockOut);
        let hold = p.sqlite.hold_writer();
        let mut first = push_in_flight(&p, &clock_in);
        let second = std::thread::spawn({
            let (visits, carer, visit) = (p.visits.clone(), p.carer.clone(), p.visit);
            move || visits.ingest_changes(&carer, visit, &clock_out, None, NOW)
        });
        // Time for the clock-out to be taken, were the visit's lock let go before the clock-in
        // landed; it cannot be answered before the writer is released.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !second.is_finished(),
            "the clock-out waited for the clock-in's commit"
        );
        drop(hold);
        assert_eq!(accepted(second.join().expect("joined").expect("pushed")), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let first = loop {
            if let std::task::Poll::Ready(out) = poll_once(first.as_mut()) {
                break out;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the first push never landed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(accepted(first.expect("pushed")), 1);
        let read = p.visits.read(p.visit).expect("read");
        assert_eq!(read.events.len(), 2);
        assert!(read.events.iter().any(|e| e.id == clock_out_event));
    }

    /// A clock-in at a visit already due is reviewed in its own commit: the alert it ends is
    /// closed in the same transaction, and nothing else is written.
    #[test]
    fn a_due_visits_alerts_are_reviewed_in_its_commit() {
        let mut p = phone_planned(NOW - 2 * HOUR_MS);
        let settings = OversightSettings::default();
        let before = alerts::review_visit(p.store.as_ref(), &settings, p.visit, NOW).expect("review");
        assert!(
            !before.raised.is_empty(),
            "a visit two hours past with no clock-in raises an alert"
        );
        let open = |p: &Phone| {
            p.store
                .alerts(&crate::store::alerts::AlertQuery {
                    open_only: true,
                    visit: Some(p.visit),
                    ..Default::default()
                })
                .expect("alerts")
                .into_iter()
                .map(|a| a.alert_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(open(&p), before.raised);

        let (_, changes) = p.clock(ClockKind::ClockIn);
        let writes = p.sqlite.group_commit_counts().writes;
        assert_eq!(
            accepted(
                p.visits
                    .ingest_changes(&p.carer, p.visit, &changes, None, NOW)
                    .expect("pushed")
            ),
            1
        );
        assert_eq!(
            p.sqlite.group_commit_counts().writes - writes,
            1,
            "the review wrote in the commit's own write"
        );
        let now_open = open(&p);
        for alert in &before.raised {
            assert!(!now_open.contains(alert), "the clock-in closed {alert}");
        }
    }

    #[test]
    fn the_document_cache_evicts_the_least_recently_used_entry_nobody_holds() {
        let mut cache = DocCache::new(3);
        let first = cache.entry(visit(1)).0;
        drop(cache.entry(visit(2)).0);
        drop(cache.entry(visit(3)).0);
        // 1 is the oldest but held (a sync is using it); 2 was used again after 3.
        drop(cache.entry(visit(2)).0);
        let (fourth, evicted) = cache.entry(visit(4));
        assert_eq!(cache.len(), 3);
        assert!(
            cache.entries.contains_key(&visit(1)),
            "a held entry is never evicted"
        );
        assert!(
            cache.entries.contains_key(&visit(2)),
            "used again, so not the least recent"
        );
        assert!(!cache.entries.contains_key(&visit(3)));
        // The evicted entry is handed back, to be dropped outside the cache's lock.
        assert!(evicted.is_some_and(|e| Arc::strong_count(&e) == 1));
        // An entry handed out again is the same one (one lock per visit).
        assert!(Arc::ptr_eq(&fourth, &cache.entry(visit(4)).0));
        drop((first, fourth));
        drop(cache.entry(visit(5)).0);
        assert!(
            !cache.entries.contains_key(&visit(1)),
            "released, it is now the oldest"
        );
        assert_eq!(cache.len(), 3);
    }
}
