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

type Entry = Arc<Mutex<Option<Cached>>>;

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
        let entry: Entry = Arc::new(Mutex::new(None));
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
    /// Carers' manifests, kept exact by every commit here.
    manifests: ManifestCache,
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
            manifests: ManifestCache::new(!store.shared_by_instances(), MANIFEST_CACHE),
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

    /// Run `f` on the visit's document under its lock, loading it from the store if needed.
    fn with_doc<T>(&self, visit: VisitId, f: impl FnOnce(&mut Cached) -> Result<T>) -> Result<T> {
        let entry = self.entry(visit)?;
        let mut guard = lock_visit(&entry);
        if guard.is_none() {
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
            *guard = Some(Cached {
                doc: Some(doc),
                visit: read,
                chunk_hashes: chunks.into_iter().map(|c| c.hash).collect(),
            });
        } else if let Some(cached) = guard.as_mut() {
            // Another server instance on the same database may have written since.
            self.catch_up(visit, cached)?;
        }
        let cached = guard.as_mut().ok_or(VisitServiceError::Poisoned)?;
        let out = f(cached);
        if guard.as_ref().is_some_and(|c| c.doc.is_none()) {
            *guard = None;
        }
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
        self.with_doc(visit, |cached| {
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
            self.commit(
                visit,
                cached,
                (copy, after.clone()),
                &before,
                now,
                CommitExtras {
                    new_amendments,
                    ..Default::default()
                },
            )?;
            Ok(after)
        })
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
        Ok(match self.take(who, visit, Exchange::Message(message), now)? {
            Taken::Accepted {
                answer: Answer::Message(reply),
                new_changes,
            } => Ingested::Accepted { reply, new_changes },
            Taken::Accepted { .. } => unreachable!("a sync message is answered with one"),
            Taken::Refused(error) => Ingested::Refused(error),
        })
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
        let size: usize = changes.iter().map(Vec::len).sum();
        if size > MAX_MESSAGE_BYTES {
            return Ok(Pushed::Refused(too_large(visit, size)));
        }
        let mut parsed = Vec::with_capacity(changes.len());
        for bytes in changes {
            match v2::parse_change(bytes) {
                Ok(change) => parsed.push(change),
                Err(e) => {
                    return Ok(Pushed::Refused(refusal(
                        visit,
                        "malformed_message",
                        format!("not an Automerge change: {e}"),
                    )))
                }
            }
        }
        let phone_heads = heads.unwrap_or_else(|| v2::implied_heads(&parsed));
        Ok(
            match self.take(who, visit, Exchange::Changes(parsed, phone_heads), now)? {
                Taken::Accepted {
                    answer: Answer::Changes(reply),
                    new_changes,
                } => Pushed::Accepted { reply, new_changes },
                Taken::Accepted { .. } => unreachable!("changes are answered with changes"),
                Taken::Refused(error) => Pushed::Refused(error),
            },
        )
    }

    /// Both protocols' one path: apply what the phone sent to a copy of the visit, judge what it
    /// did, answer, and commit.
    fn take(&self, who: &Principal, visit: VisitId, mut exchange: Exchange, now: Millis) -> Result<Taken> {
        let refuse = |code: &str, message: String| Ok(Taken::Refused(refusal(visit, code, message)));
        let Some(device) = who.device_id else {
            return refuse("not_a_device", "only enrolled devices sync".into());
        };
        let carer = who.person.id;
        let result = self.with_doc(visit, |cached| {
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
                return Ok(Taken::Accepted { answer, new_changes });
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
            self.commit(visit, cached, (copy, after), &before, now, extras)?;
            Ok(Taken::Accepted { answer, new_changes })
        });
        match result {
            Err(VisitServiceError::UnknownVisit(_)) => refuse("unknown_visit", "no such visit".into()),
            other => other,
        }
    }

    /// The one commit path: new chunk + projection + sync state in one store transaction, then
    /// the cache takes the copy and its read (the `Visit` the caller already read from it, so
    /// the projection does not read again). Compacts when chunks pile up.
    fn commit(
        &self,
        visit: VisitId,
        cached: &mut Cached,
        (mut copy, read): (VisitDocument, Visit),
        before: &[automerge::ChangeHash],
        now: Millis,
        extras: CommitExtras,
    ) -> Result<()> {
        let after = copy.heads();
        let chunk = (after != before).then(|| {
            chunk_of(match extras.encoded {
                Some((heads, bytes)) if heads == after => bytes,
                _ => copy.automerge().save_after(before),
            })
        });
        let row = project(visit, &read, &mut copy, now);
        let events: Vec<EventRow> = extras
            .new_events
            .iter()
            .map(|e| event_row(visit, e, now, extras.reassigned.contains(&e.id)))
            .collect();
        let due = row.planned_start <= now;
        let commit = VisitCommit {
            visit: row,
            chunk: chunk.clone(),
            new_events: events,
            new_amendments: extras.new_amendments,
            sync_state: extras.sync_state,
        };
        self.store.commit_visit_raising(&commit, &extras.raise)?;
        self.manifests
            .committed(&cached.visit.schedule.carers, &commit.visit);
        cached.doc = Some(copy);
        cached.visit = read;
        if let Some(chunk) = chunk {
            if !cached.chunk_hashes.contains(&chunk.hash) {
                cached.chunk_hashes.push(chunk.hash);
            }
        }
        // Another instance may have committed to this visit between our read and our write: its
        // chunk and events are stored (chunks are keyed by hash, events insert-once), but the
        // visit row we just wrote was projected without its change. Merge and project again
        // until no unseen chunk remains; whoever writes the row last has seen every chunk.
        for _ in 0..8 {
            let before = cached.visit.schedule.carers.clone();
            if !self.catch_up(visit, cached)? {
                break;
            }
            let doc = cached.doc.as_mut().ok_or(VisitServiceError::Poisoned)?;
            let row = project(visit, &cached.visit, doc, now);
            self.store.commit_visit(&VisitCommit {
                visit: row.clone(),
                chunk: None,
                new_events: vec![],
                new_amendments: vec![],
                sync_state: None,
            })?;
            self.manifests.committed(&before, &row);
        }
        // A visit already due may raise or close alerts by this change (a late clock-in closes
        // a missed alert). The change is stored whatever happens here; the sweep catches up.
        if due {
            if let Err(e) = alerts::review_visit(self.store.as_ref(), &self.oversight, visit, now) {
                tracing::warn!(%visit, error = %e, "alert review after a commit failed; the sweep will retry");
            }
        }
        if cached.chunk_hashes.len() >= COMPACT_AFTER_CHUNKS {
            let snapshot = chunk_of(cached.doc()?.save());
            self.store.compact_visit(visit, &cached.chunk_hashes, &snapshot)?;
            cached.chunk_hashes = vec![snapshot.hash];
        }
        Ok(())
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
/// on) poisons the lock; rather than refuse the visit until a restart, drop the cached document,
/// which the next step reloads from the store (only committed state is there).
fn lock_visit(entry: &Entry) -> std::sync::MutexGuard<'_, Option<Cached>> {
    entry.lock().unwrap_or_else(|poisoned| {
        tracing::warn!("a visit's lock was poisoned by a panic; reloading it from the store");
        entry.clear_poison();
        let mut guard = poisoned.into_inner();
        *guard = None;
        guard
    })
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
