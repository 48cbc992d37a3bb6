//! The server's storage, behind one trait so an embedded SQLite and a PostgreSQL implementation
//! can both run the same conformance tests.
//!
//! Documents are kept as append-only change chunks keyed by the hash of their bytes (so replaying
//! a chunk is harmless), compacted now and then into a snapshot that replaces exactly the chunks
//! it merged. Methods are blocking; handlers call them on tokio's blocking pool.

pub mod alerts;
pub mod client_sums;
pub mod copy;
pub mod facts;
pub mod postgres;
pub(crate) mod sign_in_cache;
pub mod sqlite;

use caresync_core::domain::*;
use caresync_core::Heads;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error(transparent)]
    Open(#[from] caresync_core::sqlite::OpenError),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store's lock was poisoned")]
    Poisoned,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Told the outcome of [`ServerStore::commit_visit_then`].
pub type CommitReply = Box<dyn FnOnce(Result<()>) + Send>;

/// A due visit's alert review, run in its commit's transaction by a store that
/// [`ServerStore::reviews_in_commit`].
pub struct CommitReview {
    pub settings: std::sync::Arc<crate::services::alerts::OversightSettings>,
    /// The review's instant (the commit's).
    pub now: Millis,
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: PersonId,
    pub name: String,
    pub role: Role,
    pub team_id: Option<TeamId>,
    pub active: bool,
}

/// Who is calling, resolved from a bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub person: Person,
    /// Set when the token belongs to an enrolled phone rather than a person's API token.
    pub device_id: Option<DeviceId>,
}

/// A presented token as stored, even if revoked or expired, so sign-in can say which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    pub principal: Principal,
    /// When the token (or the phone it belongs to) was revoked.
    pub revoked_at: Option<Millis>,
    /// When an API token stops working (`None`: phones' device tokens, which do not expire).
    pub expires_at: Option<Millis>,
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub person_id: PersonId,
    pub name: String,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub enrolled_at: Millis,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub revoked_at: Option<Millis>,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub last_sync_at: Option<Millis>,
}

/// One stored piece of a visit document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// sha256 of `bytes`, hex.
    pub hash: String,
    pub bytes: Vec<u8>,
}

/// A clock event as the server projects it for reports (append-only: never updated once stored,
/// so `received_at` is when the server first saw it).
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub event_id: EventId,
    pub visit_id: VisitId,
    pub carer_id: PersonId,
    pub device_id: DeviceId,
    pub kind: ClockKind,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub device_time: Millis,
    pub clock_offset_ms: Option<i64>,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub offset_measured_at: Option<Millis>,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub trusted_time: Millis,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub received_at: Millis,
    pub method: ClockMethod,
    pub reason: Option<ReasonCode>,
    pub location: Option<Location>,
    /// Time trust and `reassigned_before_sync`; a comma-joined text column and JSON string.
    #[schema(value_type = String, example = "clock_skew,future_time")]
    pub flags: caresync_core::metrics::EventFlags,
}

/// The rows derived from a visit document, rewritten with every accepted change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitRow {
    pub visit_id: VisitId,
    pub client_id: ClientId,
    pub contract_id: ContractId,
    pub carers: Vec<PersonId>,
    pub planned_start: Millis,
    pub planned_end: Millis,
    pub status: VisitStatus,
    pub chargeable: Option<bool>,
    pub heads: Heads,
    pub updated_at: Millis,
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub id: ClientId,
    pub name: String,
    /// Where the client lives, for "location verified".
    pub location: Option<Location>,
    /// QR/NFC tags in the client's home.
    #[serde(default)]
    pub tag_ids: Vec<String>,
}

/// A contract with a commissioner; its rules (thresholds, KPI targets, billing) are stored as the
/// JSON of `caresync_core::metrics::ContractRules`.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    pub id: ContractId,
    pub name: String,
    pub commissioner: String,
    pub model: CommissioningModel,
    #[schema(value_type = caresync_core::metrics::ContractRules)]
    pub rules: serde_json::Value,
}

/// An amendment of an actual time, projected for reports (append-only, like the document's list).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmendmentRow {
    pub amendment_id: AmendmentId,
    pub visit_id: VisitId,
    pub author_id: PersonId,
    pub carer_id: PersonId,
    pub time: AmendedTime,
    pub corrected_time: Millis,
    pub reason: ReasonCode,
    pub written_at: Millis,
}

/// A dashboard sign-in. The browser's cookie carries a random id; the store keeps only its hash,
/// so a copy of the database cannot be used to sign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub id_hash: String,
    pub person_id: PersonId,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// Everything one accepted change to a visit writes, in one transaction.
#[derive(Clone, Debug)]
pub struct VisitCommit {
    pub visit: VisitRow,
    /// New change bytes (absent when a message carried nothing new).
    pub chunk: Option<Chunk>,
    /// New clock events (inserted if not already present).
    pub new_events: Vec<EventRow>,
    /// New amendments (inserted if not already present).
    pub new_amendments: Vec<AmendmentRow>,
    /// The device whose sync this is (its last sync is recorded in the same transaction), with
    /// its protocol 1 sync state for this visit (protocol 2 keeps none on the server).
    pub sync_state: Option<(DeviceId, Option<Vec<u8>>)>,
}

/// The alert reads and writes a review makes ([`crate::services::alerts::review_facts`]): the
/// store's own, or those of a commit's transaction in progress (the embedded store reviews a due
/// visit's alerts in the commit that changed it, [`ServerStore::reviews_in_commit`]).
pub trait AlertWrites {
    /// Insert an alert with its "raised" history entry, unless one with the same (visit, kind,
    /// carer, subject) exists. True if this call raised it.
    fn raise_alert(&self, alert: &alerts::AlertRecord, entry: &alerts::AlertEntry) -> Result<bool>;
    fn alert(&self, id: AlertId) -> Result<Option<alerts::AlertRecord>>;
    /// Write an alert's new standing and append its history entries, if its version is still
    /// `expected_version`; false (nothing written) if someone else changed it first.
    fn update_alert(
        &self,
        alert: &alerts::AlertRecord,
        expected_version: u32,
        entries: &[alerts::AlertEntry],
    ) -> Result<bool>;
}

pub trait ServerStore: AlertWrites + Send + Sync + 'static {
    /// How many commits of the sync path went through the store's shared writer and in how many
    /// transactions, if it groups them (the embedded store does; `/metrics`).
    fn group_commits(&self) -> Option<sqlite::group_commit::Counts> {
        None
    }
    // ---- people, devices, tokens -----------------------------------------------------------
    fn create_person(&self, person: &Person) -> Result<()>;
    fn person(&self, id: PersonId) -> Result<Option<Person>>;
    fn people(&self) -> Result<Vec<Person>>;
    /// A person's API token (office and supervisors use these; phones use device tokens).
    fn add_api_token(
        &self,
        person: PersonId,
        token_hash: &str,
        created_at: Millis,
        expires_at: Option<Millis>,
    ) -> Result<()>;
    /// In one transaction: revoke the person's live API tokens and add a new one. False (and
    /// nothing changed) if there is no such active person.
    fn rotate_api_token(
        &self,
        person: PersonId,
        token_hash: &str,
        created_at: Millis,
        expires_at: Option<Millis>,
    ) -> Result<bool>;
    /// Revoke one API token by its hash; false if unknown. A second revocation keeps the first time.
    fn revoke_api_token(&self, token_hash: &str, at: Millis) -> Result<bool>;
    /// Revoke every live API token of a person; returns how many.
    fn revoke_api_tokens(&self, person: PersonId, at: Millis) -> Result<u64>;
    /// In one transaction: mark the person inactive and revoke their API tokens, their phones and
    /// their unused enrolment codes, so nothing of theirs works from the next request (and
    /// nothing comes back if they are made active again). False if no such person.
    fn deactivate_person(&self, person: PersonId, at: Millis) -> Result<bool>;
    /// Whose code this is, whether or not it is still usable (to count failures against them).
    fn enrolment_code_owner(&self, code_hash: &str) -> Result<Option<PersonId>>;
    /// Spend every unused enrolment code of a person (after too many failures); returns how many.
    fn lock_enrolment_codes(&self, person: PersonId, at: Millis) -> Result<u64>;
    fn add_enrolment_code(&self, person: PersonId, code_hash: &str, expires_at: Millis) -> Result<()>;
    /// Atomically use a one-time code and enrol a device with its token. `None` if the code is
    /// unknown, used or expired.
    fn redeem_enrolment_code(
        &self,
        code_hash: &str,
        now: Millis,
        device: DeviceId,
        device_name: &str,
        token_hash: &str,
    ) -> Result<Option<PersonId>>;
    /// The token as stored (an enrolled phone's or a person's API token), revoked or not.
    fn sign_in(&self, token_hash: &str) -> Result<Option<SignIn>>;
    /// [`Self::sign_in`] when it can be answered from memory without blocking (a cached row that
    /// still stands); `None` means ask [`Self::sign_in`] on a blocking thread.
    fn sign_in_from_memory(&self, _token_hash: &str) -> Option<SignIn> {
        None
    }
    /// Who holds a token that is not revoked (expiry and the person's being active are for the
    /// caller to judge: see `services::people::authenticate`).
    fn principal_for_token(&self, token_hash: &str) -> Result<Option<Principal>> {
        Ok(self
            .sign_in(token_hash)?
            .filter(|s| s.revoked_at.is_none())
            .map(|s| s.principal))
    }
    /// Returns false if no such device.
    fn revoke_device(&self, device: DeviceId, at: Millis) -> Result<bool>;
    fn devices(&self) -> Result<Vec<Device>>;
    fn device_synced(&self, device: DeviceId, at: Millis) -> Result<()>;

    // ---- visit documents ------------------------------------------------------------------
    /// All chunks of a visit, oldest first; empty if the visit does not exist.
    fn visit_chunks(&self, visit: VisitId) -> Result<Vec<Chunk>>;
    /// The hashes of a visit's chunks, oldest first: a cheap check whether another server
    /// instance has written to the visit since this one last read it.
    fn visit_chunk_hashes(&self, visit: VisitId) -> Result<Vec<String>>;
    fn commit_visit(&self, commit: &VisitCommit) -> Result<()> {
        self.commit_visit_raising(commit, &[])
    }
    /// Commit a change and, in the same transaction, raise the alerts it gives rise to (a
    /// concern a carer wrote): each raised at most once (see [`alerts`]).
    fn commit_visit_raising(&self, commit: &VisitCommit, raise: &[alerts::AlertRecord]) -> Result<()>;
    /// [`ServerStore::commit_visit_raising`] without waiting for it: `then` is told the outcome
    /// once the commit is durable (or failed), on whichever thread learns it. The embedded
    /// store queues the commit for its writer's next group and returns at once, so a caller on
    /// an async thread need not block on the group's `fsync`; `then` runs on the writer thread
    /// and must be quick and must not write to the store. By default, the commit runs here.
    fn commit_visit_then(
        &self,
        commit: VisitCommit,
        raise: Vec<alerts::AlertRecord>,
        review: Option<CommitReview>,
        then: CommitReply,
    ) {
        debug_assert!(review.is_none() || self.reviews_in_commit());
        then(self.commit_visit_raising(&commit, &raise))
    }
    /// Whether [`ServerStore::commit_visit_then`] reviews a due visit's alerts in the commit's
    /// own transaction when given a [`CommitReview`] (the embedded store: its writer's
    /// connection holds the pages the commit just wrote, and the alerts are raised or closed
    /// with the change that caused them). Otherwise the caller reviews after the commit.
    fn reviews_in_commit(&self) -> bool {
        false
    }
    /// Whether other server instances may write this store's visit documents (PostgreSQL), so a
    /// cached document must be checked against the stored chunks before each use. The embedded
    /// store belongs to one process.
    fn shared_by_instances(&self) -> bool {
        true
    }
    /// Replace exactly the `merged` chunks with one snapshot; chunks written meanwhile stay.
    fn compact_visit(&self, visit: VisitId, merged: &[String], snapshot: &Chunk) -> Result<()>;
    fn sync_state(&self, device: DeviceId, visit: VisitId) -> Result<Option<Vec<u8>>>;

    // ---- projections ----------------------------------------------------------------------
    fn visit_row(&self, visit: VisitId) -> Result<Option<VisitRow>>;
    /// Visits a carer is assigned to now, planned to start in `[from, to)`.
    fn visits_for_carer(&self, carer: PersonId, from: Millis, to: Millis) -> Result<Vec<VisitRow>>;
    /// Whether the carer was ever assigned to the visit (offline clock-ins survive reassignment).
    fn was_ever_assigned(&self, visit: VisitId, carer: PersonId) -> Result<bool>;
    fn events_for_visit(&self, visit: VisitId) -> Result<Vec<EventRow>>;
    /// The carers now assigned to any visit of a client (a supervisor's scope reaches the client
    /// through them).
    fn client_carers(&self, client: ClientId) -> Result<Vec<PersonId>>;
    fn count_events(&self) -> Result<u64>;

    // ---- reference data ---------------------------------------------------------------------
    fn create_team(&self, team: &Team) -> Result<()>;
    fn teams(&self) -> Result<Vec<Team>>;
    fn upsert_client(&self, client: &Client) -> Result<()>;
    fn client(&self, id: ClientId) -> Result<Option<Client>>;
    fn clients(&self) -> Result<Vec<Client>>;
    /// Create or change a contract. A change of rules is kept with `at` (reports `as_of` earlier
    /// use the rules before it) and its visits' facts are judged again from `at`.
    fn upsert_contract_at(&self, contract: &Contract, at: Millis) -> Result<()>;
    fn upsert_contract(&self, contract: &Contract) -> Result<()> {
        self.upsert_contract_at(contract, caresync_core::clock::system_now())
    }
    fn contract(&self, id: ContractId) -> Result<Option<Contract>>;
    fn contracts(&self) -> Result<Vec<Contract>>;

    // ---- report queries over projections ------------------------------------------------------
    /// Visits planned to start in `[from, to)`.
    fn visits_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<VisitRow>>;
    /// Clock events of the visits planned to start in `[from, to)`.
    fn events_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<EventRow>>;
    /// Amendments of the visits planned to start in `[from, to)`.
    fn amendments_planned_between(&self, from: Millis, to: Millis) -> Result<Vec<AmendmentRow>>;

    // ---- dashboard sessions (the web pages) ---------------------------------------------------
    /// Store a new session; sessions expired at `now` are removed on the way.
    fn create_web_session(&self, session: &WebSession, now: Millis) -> Result<()>;
    /// The session with this id hash, whether or not it has expired (the caller decides).
    fn web_session(&self, id_hash: &str) -> Result<Option<WebSession>>;
    /// Sign-out: the session is gone; ending an unknown one is harmless.
    fn end_web_session(&self, id_hash: &str) -> Result<()>;

    /// Everything one report reads, from the per-visit facts, in one read transaction.
    fn report_snapshot(&self, query: &facts::SnapshotQuery) -> Result<facts::ReportSnapshot>;

    // ---- alerts (oversight) -------------------------------------------------------------------
    /// Alerts by raising time, oldest first.
    fn alerts(&self, query: &alerts::AlertQuery) -> Result<Vec<alerts::AlertRecord>>;
    fn alert_history(&self, id: AlertId) -> Result<Vec<alerts::AlertEntry>>;
    /// Take or renew a named lease until `until` (true), unless another holder has it past `now`.
    /// The time-driven alert sweep holds one so several instances do not repeat each other's work.
    fn claim_lease(&self, name: &str, holder: &str, now: Millis, until: Millis) -> Result<bool>;
    /// Open a reconciliation escalation unless one exists for its (contract, client, week).
    fn open_escalation(&self, e: &alerts::Escalation) -> Result<bool>;
    fn escalations(&self) -> Result<Vec<alerts::Escalation>>;
    /// In one transaction: record the contact and mark the escalation it names raised (once;
    /// false and nothing written if it was already raised or does not exist).
    fn raise_escalation(&self, contact: &alerts::CommissionerContact) -> Result<bool>;
    fn add_commissioner_contact(&self, contact: &alerts::CommissionerContact) -> Result<()>;
    fn commissioner_contacts(&self) -> Result<Vec<alerts::CommissionerContact>>;
}
