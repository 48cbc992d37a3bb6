//! The phone's side of sync: transport-agnostic rounds of batched per-visit exchanges.
//!
//! A session starts from the heads each visit last shared with the server (persisted per visit),
//! sends the visits with unacknowledged local changes or with news in the server's manifest,
//! applies the server's replies to the *current* documents, and stops when nothing is left to say.
//! It speaks protocol version 2 ([`crate::protocol::v2`]: raw changes since the shared heads,
//! answered with what the phone lacks) and falls back to version 1 (Automerge sync messages) for
//! good when a server refuses version 2 (docs/protocol.md).
//!
//! A visit whose message the server refused is parked ([`PhoneStore::refused_changes`]): its
//! changes stay on the phone and are not sent again (they would be refused again, and every later
//! change of that visit builds on them), but the phone still pulls the server's news for it, with
//! messages made from the document as the server last acknowledged it.

use crate::clock::ClockOffset;
use crate::domain::*;
use crate::heads::Heads;
use crate::protocol::*;
use crate::store::{DeviceIdentity, PhoneStore, RefusedChanges, StoreError};
use automerge::sync::State as SyncState;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Rounds per session before giving up (the common case is one or two).
pub const MAX_ROUNDS: usize = 8;
/// Message bytes gathered into one request before the rest wait for the next round: with at most
/// one [`MAX_MESSAGE_BYTES`] message past it, a request stays under [`MAX_REQUEST_BYTES`].
const BATCH_BUDGET_BYTES: usize = MAX_REQUEST_BYTES / 2;

/// Carries request bytes to the server and brings back its answer. HTTP ships with the core
/// ([`crate::http_transport::HttpTransport`]); tests may use anything that reaches a real server.
pub trait Transport: Send + Sync {
    /// POST `body` to `path` with an optional bearer token; the answer's body on success.
    fn post(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Result<Vec<u8>, TransportError>;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The server could not be reached: the phone is offline. Nothing was lost; try later.
    #[error("server unreachable: {0}")]
    Offline(String),
    /// 401: the token is unknown, expired or revoked.
    #[error("not authorised: {}", .0.message)]
    Unauthorized(Problem),
    /// 403: authenticated, but not allowed.
    #[error("forbidden: {}", .0.message)]
    Forbidden(Problem),
    /// Any other refusal, with the server's problem body.
    #[error("server refused ({status}): {}", .problem.message)]
    Rejected { status: u16, problem: Problem },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server answered with something that is not a sync response: {0}")]
    BadResponse(String),
    #[error("server speaks protocol {found}; this phone speaks {PROTOCOL_VERSION}")]
    ProtocolMismatch { found: u32 },
}

/// What one session did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncSummary {
    pub rounds: u32,
    /// Visit messages sent and received (counted per message).
    pub messages_sent: u32,
    pub messages_received: u32,
    /// Distinct visits that sent or received anything.
    pub visits_sent: u32,
    pub visits_received: u32,
    pub errors: Vec<VisitError>,
    pub server_time: Option<Millis>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Visits dropped from the phone because the server no longer lists them for this carer.
    pub visits_removed: u32,
    /// Unacknowledged local changes left after the session, not counting refused ones.
    pub pending_after: u32,
    /// Visits parked with changes the server refused, after the session.
    pub refused_after: u32,
}

/// Enrol this phone with a one-time code from the office; stores the identity and clock offset.
pub fn enrol(
    store: &PhoneStore,
    transport: &dyn Transport,
    server_url: &str,
    code: &str,
    device_name: &str,
) -> Result<DeviceIdentity, SyncError> {
    let sent_at = store.device_now();
    let body = to_cbor(&EnrolRequest {
        code: code.trim().to_string(),
        device_name: device_name.to_string(),
    });
    let answer = transport.post(ENROL_PATH, None, body)?;
    let resp: EnrolResponse = from_cbor(&answer).map_err(|e| SyncError::BadResponse(e.to_string()))?;
    let identity = DeviceIdentity {
        device_id: resp.device_id,
        carer_id: resp.carer_id,
        server_url: server_url.to_string(),
        token: resp.token,
    };
    store.set_identity(&identity)?;
    store.set_clock_offset(ClockOffset::measure(
        sent_at,
        store.device_now(),
        resp.server_time,
    ))?;
    Ok(identity)
}

/// The sync client for one phone store. `sync_now` is blocking (run it on a background thread);
/// concurrent calls are serialised, and the UI may keep writing to the store meanwhile.
pub struct SyncClient {
    store: Arc<PhoneStore>,
    transport: Arc<dyn Transport>,
    session: Mutex<()>,
    /// The protocol this client speaks: [`v2::VERSION`] until a server refuses it, then 1.
    protocol: AtomicU32,
}

impl SyncClient {
    pub fn new(store: Arc<PhoneStore>, transport: Arc<dyn Transport>) -> Self {
        Self::with_protocol(store, transport, v2::VERSION)
    }

    /// A client speaking `protocol` (1 or 2) from the start: for tests of mixed fleets, and for a
    /// phone that must talk to a server not yet upgraded.
    pub fn with_protocol(store: Arc<PhoneStore>, transport: Arc<dyn Transport>, protocol: u32) -> Self {
        Self {
            store,
            transport,
            session: Mutex::new(()),
            protocol: AtomicU32::new(protocol.clamp(PROTOCOL_VERSION, v2::VERSION)),
        }
    }

    /// The protocol the next session speaks.
    pub fn protocol(&self) -> u32 {
        self.protocol.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Arc<PhoneStore> {
        &self.store
    }

    /// Changes the server refused, per visit, with its reasons (kept, not re-sent).
    pub fn refused_changes(&self) -> Result<Vec<RefusedChanges>, SyncError> {
        Ok(self.store.refused_changes()?)
    }

    /// One session: version 2 unless a server refused it, then version 1.
    pub fn sync_now(&self) -> Result<SyncSummary, SyncError> {
        let _one_at_a_time = self.session.lock().map_err(|_| StoreError::Poisoned)?;
        let identity = self.store.identity()?.ok_or(StoreError::NotEnrolled)?;
        if self.protocol() >= v2::VERSION {
            match self.session_v2(&identity) {
                // A server that predates version 2 reads its body as a malformed version 1 one.
                Err(SyncError::Transport(TransportError::Rejected { status: 400, problem }))
                    if problem.code == "unsupported_protocol" || problem.code == "malformed_request" =>
                {
                    tracing::warn!(code = %problem.code, "the server refused sync protocol 2; speaking 1");
                    self.protocol.store(PROTOCOL_VERSION, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.session_v1(&identity)
    }

    /// A protocol 2 session ([`v2`]): rounds of pushes of raw changes, answered with what the
    /// phone lacks. The same parking, batching and manifest handling as version 1.
    fn session_v2(&self, identity: &DeviceIdentity) -> Result<SyncSummary, SyncError> {
        let mut summary = SyncSummary::default();
        let mut refused: HashSet<VisitId> = HashSet::new();
        let mut parked = self.store.parked_visits()?;
        // Visits the server said lack changes it should hold: sent whole once in this session.
        let mut sent_whole: HashSet<VisitId> = HashSet::new();
        let (mut sent, mut received) = (BTreeSet::new(), BTreeSet::new());
        let mut to_send: BTreeSet<VisitId> = self.store.outbox()?.into_iter().map(|e| e.visit_id).collect();
        let mut manifest_seen = None;

        for round in 0..MAX_ROUNDS {
            let mut batch = Vec::new();
            let mut claimed: HashMap<VisitId, Heads> = HashMap::new();
            let mut batch_bytes = 0usize;
            for &visit_id in &to_send {
                if refused.contains(&visit_id)
                    || batch.len() >= MAX_VISITS_PER_REQUEST
                    || batch_bytes >= BATCH_BUDGET_BYTES
                {
                    continue;
                }
                let (push, heads) = self.store.push_for(visit_id, parked.contains(&visit_id))?;
                let size: usize = push.changes.iter().map(Vec::len).sum();
                if size > MAX_MESSAGE_BYTES {
                    refused.insert(visit_id);
                    self.refused_locally(visit_id, size, &mut parked, &mut summary)?;
                    continue;
                }
                batch_bytes += size;
                claimed.insert(visit_id, heads);
                batch.push(push);
            }
            // The first round always goes out: it fetches the server's time and manifest.
            if batch.is_empty() && round > 0 {
                break;
            }
            let mut next: BTreeSet<VisitId> = to_send
                .iter()
                .copied()
                .filter(|v| !claimed.contains_key(v) && !refused.contains(v))
                .collect();
            summary.messages_sent += batch.len() as u32;
            sent.extend(claimed.keys().copied());
            let local_heads = self.store.visit_heads()?;
            let digest = v2::short_digest(
                local_heads
                    .iter()
                    .filter(|(id, _)| !claimed.contains_key(id))
                    .map(|(id, h)| (*id, h)),
            );
            let body = v2::encode(&v2::Request {
                device_time: self.store.device_now(),
                visits: batch,
                manifest_digest: Some(digest),
            });
            summary.bytes_up += body.len() as u64;
            let sent_at = self.store.device_now();
            let answer = self.transport.post(SYNC_PATH, Some(&identity.token), body)?;
            let received_at = self.store.device_now();
            summary.bytes_down += answer.len() as u64;
            summary.rounds += 1;
            let response: v2::Response =
                v2::decode(&answer).map_err(|e| SyncError::BadResponse(e.to_string()))?;
            self.store
                .set_clock_offset(ClockOffset::measure(sent_at, received_at, response.server_time))?;
            summary.server_time = Some(response.server_time);

            for error in response.errors {
                let error = VisitError::from(error);
                claimed.remove(&error.visit_id);
                if error.code == "missing_changes" && sent_whole.insert(error.visit_id) {
                    // The server lost what it once acknowledged (restored from a backup, say):
                    // send the whole visit in the next round rather than park it.
                    self.store.forget_shared(error.visit_id)?;
                    next.insert(error.visit_id);
                    continue;
                }
                next.remove(&error.visit_id);
                self.refused_by_server(error, &mut refused, &mut parked, &mut summary)?;
            }
            let mut pulls: HashMap<VisitId, v2::Pull> =
                response.visits.into_iter().map(|p| (p.visit_id, p)).collect();
            for (visit_id, heads) in claimed {
                // No pull: the server holds exactly what the phone sent (or the carer is off the
                // visit and hears nothing more of it).
                let (changes, shared) = match pulls.remove(&visit_id) {
                    Some(pull) => {
                        let changes: Result<Vec<_>, _> =
                            pull.changes.iter().map(|c| v2::parse_change(c)).collect();
                        match changes {
                            Ok(changes) => (changes, pull.heads.unwrap_or(heads)),
                            Err(e) => {
                                // One visit's unreadable answer is that visit's error only.
                                refused.insert(visit_id);
                                next.remove(&visit_id);
                                summary.errors.push(VisitError {
                                    visit_id,
                                    code: "malformed_message".into(),
                                    message: format!("the server's changes could not be read: {e}"),
                                });
                                continue;
                            }
                        }
                    }
                    None => (vec![], heads),
                };
                if !changes.is_empty() {
                    summary.messages_received += 1;
                    received.insert(visit_id);
                }
                self.store.take_pull(visit_id, changes, &shared)?;
            }
            // Written while the request was in flight: goes in the next round.
            next.extend(
                self.store
                    .outbox()?
                    .into_iter()
                    .map(|e| e.visit_id)
                    .filter(|v| sent.contains(v) && !refused.contains(v)),
            );
            self.follow_manifest(
                response.manifest.into_iter().map(|e| (e.visit_id, e.heads)),
                response.manifest_complete,
                |v| sent.contains(v) || refused.contains(v),
                &mut next,
                &mut manifest_seen,
            )?;
            to_send = next;
        }
        self.finish(summary, manifest_seen, sent.len(), received.len())
    }

    /// A protocol 1 session: rounds of batched Automerge sync messages.
    fn session_v1(&self, identity: &DeviceIdentity) -> Result<SyncSummary, SyncError> {
        let mut summary = SyncSummary::default();
        let mut states: HashMap<VisitId, SyncState> = HashMap::new();
        // Refused in this session (not asked again in it), and parked across sessions.
        let mut refused: HashSet<VisitId> = HashSet::new();
        let mut parked = self.store.parked_visits()?;
        let (mut sent, mut received) = (BTreeSet::new(), BTreeSet::new());
        let mut to_send: BTreeSet<VisitId> = self.store.outbox()?.into_iter().map(|e| e.visit_id).collect();
        let mut manifest_seen = None;

        for round in 0..MAX_ROUNDS {
            let mut batch = Vec::new();
            let mut batch_bytes = 0usize;
            for &visit_id in &to_send {
                if refused.contains(&visit_id)
                    || batch.len() >= MAX_VISITS_PER_REQUEST
                    || batch_bytes >= BATCH_BUDGET_BYTES
                {
                    continue;
                }
                let state = match states.get_mut(&visit_id) {
                    Some(s) => s,
                    None => {
                        let s = primed(self.store.persisted_sync_state(visit_id)?.unwrap_or_default());
                        states.entry(visit_id).or_insert(s)
                    }
                };
                let generated = if parked.contains(&visit_id) {
                    self.store.generate_pull_message(visit_id, state)?
                } else {
                    self.store.generate_message(visit_id, state)?
                };
                if let Some(msg) = generated {
                    let message = msg.encode();
                    if message.len() > MAX_MESSAGE_BYTES {
                        refused.insert(visit_id);
                        self.refused_locally(visit_id, message.len(), &mut parked, &mut summary)?;
                        continue;
                    }
                    batch_bytes += message.len();
                    batch.push(VisitMessage { visit_id, message });
                }
            }
            // The first round always goes out: it fetches the server's time and manifest.
            if batch.is_empty() && round > 0 {
                break;
            }
            let deferred: BTreeSet<VisitId> = to_send
                .iter()
                .copied()
                .filter(|v| !batch.iter().any(|m| m.visit_id == *v))
                .collect();
            summary.messages_sent += batch.len() as u32;
            sent.extend(batch.iter().map(|m| m.visit_id));
            // What the phone knows of every visit it is not sending: if the server agrees, it
            // leaves them out of the manifest.
            let local_heads = self.store.visit_heads()?;
            let in_batch: HashSet<VisitId> = batch.iter().map(|m| m.visit_id).collect();
            let digest = manifest_digest(
                local_heads
                    .iter()
                    .filter(|(id, _)| !in_batch.contains(id))
                    .map(|(id, h)| (*id, h)),
            );
            let request = SyncRequest {
                protocol: PROTOCOL_VERSION,
                device_time: self.store.device_now(),
                visits: batch,
                manifest_digest: Some(digest),
            };
            let body = to_cbor(&request);
            summary.bytes_up += body.len() as u64;
            let sent_at = self.store.device_now();
            let answer = self.transport.post(SYNC_PATH, Some(&identity.token), body)?;
            let received_at = self.store.device_now();
            summary.bytes_down += answer.len() as u64;
            summary.rounds += 1;
            let response: SyncResponse =
                from_cbor(&answer).map_err(|e| SyncError::BadResponse(e.to_string()))?;
            if response.protocol != PROTOCOL_VERSION {
                return Err(SyncError::ProtocolMismatch {
                    found: response.protocol,
                });
            }
            self.store
                .set_clock_offset(ClockOffset::measure(sent_at, received_at, response.server_time))?;
            summary.server_time = Some(response.server_time);

            let mut next: BTreeSet<VisitId> = deferred.into_iter().filter(|v| !refused.contains(v)).collect();
            for error in response.errors {
                next.remove(&error.visit_id);
                self.refused_by_server(error, &mut refused, &mut parked, &mut summary)?;
            }
            for reply in response.visits {
                // One visit's unreadable reply is that visit's error, never the whole session's.
                let message = match decode_sync_message(&reply.message) {
                    Ok(message) => message,
                    Err(e) => {
                        refused.insert(reply.visit_id);
                        next.remove(&reply.visit_id);
                        summary.errors.push(VisitError {
                            visit_id: reply.visit_id,
                            code: "malformed_message".into(),
                            message: format!("the server's message could not be read: {e}"),
                        });
                        continue;
                    }
                };
                let state = states.entry(reply.visit_id).or_default();
                self.store.receive_message(reply.visit_id, state, message)?;
                summary.messages_received += 1;
                received.insert(reply.visit_id);
                // Answer only if there is more than an acknowledgement to say (changes or needs);
                // a parked visit's answer would carry its refused changes, so it has none.
                if parked.contains(&reply.visit_id) {
                    continue;
                }
                if let Some(peek) = self.store.generate_message(reply.visit_id, &mut state.clone())? {
                    if !peek.changes.is_empty() || !peek.need.is_empty() {
                        next.insert(reply.visit_id);
                    }
                }
            }
            self.follow_manifest(
                response.manifest.into_iter().map(|e| (e.visit_id, e.heads)),
                response.manifest_complete,
                |v| states.contains_key(v) || refused.contains(v),
                &mut next,
                &mut manifest_seen,
            )?;
            to_send = next;
        }
        self.finish(summary, manifest_seen, sent.len(), received.len())
    }

    /// A visit whose changes are over [`MAX_MESSAGE_BYTES`]: the server would refuse them, so
    /// saying so here keeps the request small and the changes on the phone. The others go on.
    fn refused_locally(
        &self,
        visit_id: VisitId,
        size: usize,
        parked: &mut HashSet<VisitId>,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        let error = VisitError {
            visit_id,
            code: "message_too_large".into(),
            message: format!("message of {size} bytes exceeds {MAX_MESSAGE_BYTES}"),
        };
        if self.store.record_refusal(visit_id, &error.code, &error.message)? {
            parked.insert(visit_id);
        }
        summary.errors.push(error);
        Ok(())
    }

    /// The server refused a visit and persisted nothing of it: park the visit with the reason,
    /// unless it already is (a refused pull keeps the refusal of the changes).
    fn refused_by_server(
        &self,
        error: VisitError,
        refused: &mut HashSet<VisitId>,
        parked: &mut HashSet<VisitId>,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        refused.insert(error.visit_id);
        if !parked.contains(&error.visit_id)
            && self
                .store
                .record_refusal(error.visit_id, &error.code, &error.message)?
        {
            parked.insert(error.visit_id);
        }
        summary.errors.push(error);
        Ok(())
    }

    /// Ask next round for each visit whose server heads differ from the phone's, unless `handled`
    /// in this session; remember the carer's whole scope when the manifest is complete.
    fn follow_manifest(
        &self,
        manifest: impl Iterator<Item = (VisitId, Heads)>,
        complete: bool,
        handled: impl Fn(&VisitId) -> bool,
        next: &mut BTreeSet<VisitId>,
        manifest_seen: &mut Option<HashSet<VisitId>>,
    ) -> Result<(), SyncError> {
        let local_heads = self.store.visit_heads()?;
        let mut scope = HashSet::new();
        for (visit_id, heads) in manifest {
            if local_heads.get(&visit_id) != Some(&heads) && !handled(&visit_id) {
                next.insert(visit_id);
            }
            scope.insert(visit_id);
        }
        if complete {
            *manifest_seen = Some(scope);
        }
        Ok(())
    }

    /// After the last round: let go of visits out of scope, note the sync, count what is left.
    fn finish(
        &self,
        mut summary: SyncSummary,
        manifest_seen: Option<HashSet<VisitId>>,
        sent: usize,
        received: usize,
    ) -> Result<SyncSummary, SyncError> {
        if let Some(scope) = manifest_seen {
            summary.visits_removed = self.store.remove_out_of_scope(&scope)? as u32;
        }
        if summary.rounds > 0 && summary.errors.is_empty() {
            self.store.set_last_sync_at(self.store.device_now())?;
        }
        summary.visits_sent = sent as u32;
        summary.visits_received = received as u32;
        summary.pending_after = self.store.pending_count()?;
        summary.refused_after = self.store.refused_changes()?.len() as u32;
        Ok(summary)
    }
}

/// A session's starting state. Automerge's opening message only advertises heads, so changes
/// would wait for a second round trip; but the server certainly holds the heads both sides last
/// shared, so tell the state so and the first message carries every change since then.
pub fn primed(mut state: SyncState) -> SyncState {
    let shared = state.shared_heads.clone();
    state.their_heads = Some(shared.clone());
    state.their_need = Some(vec![]);
    state.their_have = Some(vec![automerge::sync::Have {
        last_sync: shared,
        bloom: Default::default(),
    }]);
    state
}
