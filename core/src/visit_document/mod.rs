//! One Automerge document per scheduled visit: typed reading and writing, and the audit of incoming
//! changes that the server's write rules are judged on.
//!
//! Layout (schema version 1), every section created by the office when the visit is created, so
//! concurrent writers never race to create the same list:
//!
//! ```text
//! { schema_version: 1, visit_id,
//!   schedule:      { client_id, contract_id, carers: [..], planned_start, planned_end, tasks: [..],
//!                    status, cancel_reason?, chargeable? },
//!   events:        [ClockEvent..]   append-only
//!   notes:         [Note..]         append-only
//!   task_outcomes: [TaskOutcome..]  append-only; the latest per task and carer wins
//!   amendments:    [Amendment..]    append-only; never deleted }
//! ```
//!
//! List entries are maps whose scalar fields are written once, in the change that inserts them.

mod audit;
mod reader;

pub use audit::WriteAudit;

use crate::domain::*;
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, ROOT};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The schema this build writes and the newest it can read.
pub const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("visit document is malformed: {0}")]
    Malformed(String),
    #[error("visit document has schema version {found}; this build reads up to {SCHEMA_VERSION}")]
    UnknownSchema { found: u64 },
    /// Boxed: an `AutomergeError` is large, and every store result carries this type.
    #[error("visit document could not be decoded: {0}")]
    Automerge(Box<automerge::AutomergeError>),
}

impl From<automerge::AutomergeError> for DocumentError {
    fn from(e: automerge::AutomergeError) -> Self {
        DocumentError::Automerge(Box::new(e))
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub client_id: ClientId,
    pub contract_id: ContractId,
    /// One carer, or two for a double-up.
    pub carers: Vec<PersonId>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub planned_start: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub planned_end: Millis,
    #[serde(default)]
    pub tasks: Vec<Task>,
    pub status: VisitStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chargeable: Option<bool>,
}

impl Schedule {
    pub fn duration_ms(&self) -> Millis {
        self.planned_end - self.planned_start
    }

    pub fn is_cancelled(&self) -> bool {
        self.status == VisitStatus::Cancelled
    }
}

/// A clock-in or clock-out, as the phone recorded it. The trusted time is derived, never stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockEvent {
    pub id: EventId,
    pub kind: ClockKind,
    pub carer_id: PersonId,
    pub device_id: DeviceId,
    /// The phone's wall clock when the carer tapped.
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub device_time: Millis,
    /// Server minus device, as last measured before the tap; absent if never measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// Device time at which that offset was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, format = "epoch-ms"))]
    pub offset_measured_at: Option<Millis>,
    pub method: ClockMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The QR/NFC tag read, for those methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_id: Option<String>,
}

impl ClockEvent {
    /// Device time corrected by the offset known when the event was recorded.
    pub fn trusted_time(&self) -> Millis {
        self.device_time.saturating_add(self.clock_offset_ms.unwrap_or(0))
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub id: NoteId,
    pub author_id: PersonId,
    pub author_role: Role,
    /// Device time when written (plus the offset then known, where one was).
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub written_at: Millis,
    pub category: NoteCategory,
    pub text: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub id: OutcomeId,
    pub task_id: TaskId,
    pub carer_id: PersonId,
    pub result: TaskResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub recorded_at: Millis,
}

/// A correction of an actual time by the office or a supervisor. The original event is kept.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Amendment {
    pub id: AmendmentId,
    pub author_id: PersonId,
    pub author_role: Role,
    /// Whose time is corrected (matters for double-ups).
    pub carer_id: PersonId,
    pub time: AmendedTime,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub corrected_time: Millis,
    pub reason: ReasonCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, format = "epoch-ms"))]
    pub written_at: Millis,
}

/// The whole visit, read from its document.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    pub schema_version: u64,
    pub visit_id: VisitId,
    pub schedule: Schedule,
    pub events: Vec<ClockEvent>,
    pub notes: Vec<Note>,
    pub task_outcomes: Vec<TaskOutcome>,
    pub amendments: Vec<Amendment>,
}

impl Visit {
    pub fn events_of(&self, carer: PersonId) -> impl Iterator<Item = &ClockEvent> {
        self.events.iter().filter(move |e| e.carer_id == carer)
    }

    pub fn clock_in_of(&self, carer: PersonId) -> Option<&ClockEvent> {
        self.events_of(carer)
            .filter(|e| e.kind == ClockKind::ClockIn)
            .min_by_key(|e| e.trusted_time())
    }

    pub fn clock_out_of(&self, carer: PersonId) -> Option<&ClockEvent> {
        self.events_of(carer)
            .filter(|e| e.kind == ClockKind::ClockOut)
            .max_by_key(|e| e.trusted_time())
    }

    /// The carer's view of this visit on their phone.
    pub fn carer_state(&self, carer: PersonId) -> CarerVisitState {
        carer_state(&self.schedule, &self.events, carer)
    }

    /// Latest outcome per task for this carer (lists are append-only; a later entry supersedes).
    pub fn latest_outcome(&self, task: TaskId) -> Option<&TaskOutcome> {
        self.task_outcomes
            .iter()
            .filter(|o| o.task_id == task)
            .max_by_key(|o| o.recorded_at)
    }
}

/// A carer's view of a visit on their phone, from its schedule and clock events alone (what the
/// phone reads for a write, without the visit's notes and outcomes).
pub fn carer_state(schedule: &Schedule, events: &[ClockEvent], carer: PersonId) -> CarerVisitState {
    let has = |kind| events.iter().any(|e| e.carer_id == carer && e.kind == kind);
    if schedule.is_cancelled() {
        CarerVisitState::Cancelled
    } else if has(ClockKind::ClockOut) {
        CarerVisitState::Done
    } else if has(ClockKind::ClockIn) {
        CarerVisitState::InProgress
    } else {
        CarerVisitState::Upcoming
    }
}

/// Who made a schedule change, when, and what kind it was; kept in the change's message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLabel {
    pub author_id: PersonId,
    pub at: Millis,
    /// `created`, `rescheduled`, `reassigned`, `cancelled`, ...
    pub what: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleChange {
    pub label: ChangeLabel,
    pub schedule: Schedule,
}

fn commit_options(label: Option<&ChangeLabel>) -> automerge::transaction::CommitOptions {
    let mut options = automerge::transaction::CommitOptions::default();
    if let Some(label) = label {
        if let Ok(message) = serde_json::to_string(label) {
            options = options.with_message(message).with_time(label.at);
        }
    }
    options
}

/// The document's sections, each with one kind of writer (brief, section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// `schema_version`, `visit_id`, and the section objects themselves.
    Root,
    Schedule,
    Events,
    Notes,
    TaskOutcomes,
    Amendments,
}

impl Section {
    fn from_key(key: &str) -> Option<Section> {
        Some(match key {
            "schedule" => Section::Schedule,
            "events" => Section::Events,
            "notes" => Section::Notes,
            "task_outcomes" => Section::TaskOutcomes,
            "amendments" => Section::Amendments,
            _ => return None,
        })
    }

    pub fn key(self) -> &'static str {
        match self {
            Section::Root => "",
            Section::Schedule => "schedule",
            Section::Events => "events",
            Section::Notes => "notes",
            Section::TaskOutcomes => "task_outcomes",
            Section::Amendments => "amendments",
        }
    }

    const LISTS: [Section; 4] = [
        Section::Events,
        Section::Notes,
        Section::TaskOutcomes,
        Section::Amendments,
    ];
}

/// A visit's Automerge document with typed accessors.
pub struct VisitDocument {
    doc: AutoCommit,
}

impl std::fmt::Debug for VisitDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisitDocument").finish_non_exhaustive()
    }
}

impl VisitDocument {
    /// The office creates a visit: every section exists from the first change.
    pub fn create(visit_id: VisitId, schedule: &Schedule, actor: &ActorId) -> Result<Self, DocumentError> {
        Self::create_labelled(visit_id, schedule, actor, None)
    }

    /// Create, recording who did it and when in the change itself (for the visit's timeline).
    pub fn create_by(
        visit_id: VisitId,
        schedule: &Schedule,
        actor: &ActorId,
        label: &ChangeLabel,
    ) -> Result<Self, DocumentError> {
        Self::create_labelled(visit_id, schedule, actor, Some(label))
    }

    fn create_labelled(
        visit_id: VisitId,
        schedule: &Schedule,
        actor: &ActorId,
        label: Option<&ChangeLabel>,
    ) -> Result<Self, DocumentError> {
        let mut doc = AutoCommit::new().with_actor(actor.clone());
        doc.put(ROOT, "schema_version", SCHEMA_VERSION)?;
        doc.put(ROOT, "visit_id", visit_id.to_string())?;
        let sched = doc.put_object(ROOT, "schedule", ObjType::Map)?;
        write_map(&mut doc, &sched, &to_json(schedule)?)?;
        for section in Section::LISTS {
            doc.put_object(ROOT, section.key(), ObjType::List)?;
        }
        doc.commit_with(commit_options(label));
        let this = Self { doc };
        this.read()?;
        Ok(this)
    }

    /// Load saved bytes and check the document's shape: a schema this build knows, a visit id,
    /// every section of the right kind. Entries are read (and checked) by whoever reads them, so
    /// loading does not grow with a visit's history.
    pub fn load(bytes: &[u8]) -> Result<Self, DocumentError> {
        let doc = AutoCommit::load(bytes)?;
        reader::check_shape(&doc)?;
        Ok(Self { doc })
    }

    /// Load saved bytes without checking the content (for sync, where a replica may be empty).
    pub fn load_unchecked(bytes: &[u8]) -> Result<Self, DocumentError> {
        Ok(Self {
            doc: AutoCommit::load(bytes)?,
        })
    }

    /// An empty replica that will be filled by sync.
    pub fn empty() -> Self {
        Self {
            doc: AutoCommit::new(),
        }
    }

    pub fn with_actor(mut self, actor: &ActorId) -> Self {
        self.doc.set_actor(actor.clone());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.doc.is_empty()
    }

    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    pub fn fork(&mut self) -> Self {
        Self { doc: self.doc.fork() }
    }

    pub fn merge(&mut self, other: &mut VisitDocument) -> Result<(), DocumentError> {
        self.doc.merge(&mut other.doc)?;
        Ok(())
    }

    /// Read the whole visit, typed, straight from the document. Malformed content and unknown
    /// schemas are errors, never panics.
    pub fn read(&self) -> Result<Visit, DocumentError> {
        reader::visit(&self.doc)
    }

    /// Read only the schedule.
    pub fn read_schedule(&self) -> Result<Schedule, DocumentError> {
        reader::schedule(&self.doc)
    }

    /// Read only the clock events (not the notes, outcomes or amendments).
    pub fn read_events(&self) -> Result<Vec<ClockEvent>, DocumentError> {
        reader::events(&self.doc)
    }

    pub fn visit_id(&self) -> Result<VisitId, DocumentError> {
        match self.doc.get(ROOT, "visit_id")? {
            Some((v, _)) => v
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| DocumentError::Malformed("visit_id is not a uuid".into())),
            None => Err(DocumentError::Malformed("no visit_id".into())),
        }
    }

    pub fn append_event(&mut self, event: &ClockEvent) -> Result<ChangeHash, DocumentError> {
        self.append(Section::Events, event)
    }

    pub fn append_note(&mut self, note: &Note) -> Result<ChangeHash, DocumentError> {
        self.append(Section::Notes, note)
    }

    pub fn append_task_outcome(&mut self, outcome: &TaskOutcome) -> Result<ChangeHash, DocumentError> {
        self.append(Section::TaskOutcomes, outcome)
    }

    pub fn append_amendment(&mut self, amendment: &Amendment) -> Result<ChangeHash, DocumentError> {
        self.append(Section::Amendments, amendment)
    }

    /// Office edit of the schedule: only keys whose value differs are written, so concurrent
    /// edits of different fields (a reschedule and a reassignment) both survive.
    pub fn update_schedule(&mut self, schedule: &Schedule) -> Result<Option<ChangeHash>, DocumentError> {
        self.update_schedule_labelled(schedule, None)
    }

    /// A schedule edit that records who made it, when and what kind it was (for the timeline).
    pub fn update_schedule_by(
        &mut self,
        schedule: &Schedule,
        label: &ChangeLabel,
    ) -> Result<Option<ChangeHash>, DocumentError> {
        self.update_schedule_labelled(schedule, Some(label))
    }

    fn update_schedule_labelled(
        &mut self,
        schedule: &Schedule,
        label: Option<&ChangeLabel>,
    ) -> Result<Option<ChangeHash>, DocumentError> {
        let current = self.read_schedule()?;
        let sched = self.section(Section::Schedule)?;
        let (old, new) = (to_json(&current)?, to_json(schedule)?);
        let (Json::Object(old), Json::Object(new)) = (old, new) else {
            return Err(DocumentError::Malformed("schedule is not a map".into()));
        };
        for (key, value) in &new {
            if old.get(key) != Some(value) {
                put_json(&mut self.doc, &sched, Prop::Map(key.clone()), value)?;
            }
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            self.doc.delete(&sched, key.as_str())?;
        }
        if self.doc.pending_ops() == 0 {
            return Ok(None);
        }
        Ok(self.doc.commit_with(commit_options(label)))
    }

    /// Every labelled schedule change (creation, reschedule, reassignment, cancellation), in the
    /// order they were made, with the schedule as it stood right after each.
    pub fn schedule_history(&mut self) -> Result<Vec<ScheduleChange>, DocumentError> {
        let labelled: Vec<(ChangeHash, ChangeLabel)> = self
            .doc
            .get_changes(&[])
            .iter()
            .filter_map(|c| {
                let label = serde_json::from_str::<ChangeLabel>(c.message()?).ok()?;
                Some((c.hash(), label))
            })
            .collect();
        let mut out = Vec::with_capacity(labelled.len());
        for (hash, label) in labelled {
            if let Some(schedule) = self.schedule_at(&[hash])? {
                out.push(ScheduleChange { label, schedule });
            }
        }
        out.sort_by_key(|c| c.label.at);
        Ok(out)
    }

    fn append<T: Serialize>(&mut self, section: Section, entry: &T) -> Result<ChangeHash, DocumentError> {
        let list = self.section(section)?;
        let len = self.doc.length(&list);
        let obj = self.doc.insert_object(&list, len, ObjType::Map)?;
        write_map(&mut self.doc, &obj, &to_json(entry)?)?;
        self.doc
            .commit()
            .ok_or_else(|| DocumentError::Malformed("append produced no change".into()))
    }

    fn section(&self, section: Section) -> Result<ObjId, DocumentError> {
        match self.doc.get(ROOT, section.key())? {
            Some((automerge::Value::Object(_), id)) => Ok(id),
            _ => Err(DocumentError::Malformed(format!("no {} section", section.key()))),
        }
    }

    /// The schedule as it stood at the given heads (for judging changes made offline).
    pub fn schedule_at(&mut self, heads: &[ChangeHash]) -> Result<Option<Schedule>, DocumentError> {
        let forked = self.doc.fork_at(heads)?;
        reader::schedule_if_any(&forked)
    }

    /// The dependencies (parent heads) of a change in this document.
    pub fn change_deps(&mut self, hash: &ChangeHash) -> Option<Vec<ChangeHash>> {
        self.doc.get_change_by_hash(hash).map(|c| c.deps().to_vec())
    }

    pub fn change_actor(&mut self, hash: &ChangeHash) -> Option<ActorId> {
        self.doc.get_change_by_hash(hash).map(|c| c.actor_id().clone())
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Json, DocumentError> {
    serde_json::to_value(value).map_err(|e| DocumentError::Malformed(e.to_string()))
}

fn write_map(doc: &mut AutoCommit, obj: &ObjId, value: &Json) -> Result<(), DocumentError> {
    let Json::Object(map) = value else {
        return Err(DocumentError::Malformed("expected a map".into()));
    };
    for (key, v) in map {
        put_json(doc, obj, Prop::Map(key.clone()), v)?;
    }
    Ok(())
}

/// Write a JSON value at `prop` of `obj`: maps and arrays become Automerge objects, the rest scalars.
fn put_json(doc: &mut AutoCommit, obj: &ObjId, prop: Prop, value: &Json) -> Result<(), DocumentError> {
    let insert = |doc: &mut AutoCommit, kind: ObjType| -> Result<ObjId, automerge::AutomergeError> {
        match &prop {
            Prop::Map(k) => doc.put_object(obj, k.as_str(), kind),
            Prop::Seq(i) => doc.insert_object(obj, *i, kind),
        }
    };
    let scalar = match value {
        Json::Object(_) => {
            let child = insert(doc, ObjType::Map)?;
            return write_map(doc, &child, value);
        }
        Json::Array(items) => {
            let child = insert(doc, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                put_json(doc, &child, Prop::Seq(i), item)?;
            }
            return Ok(());
        }
        Json::Null => ScalarValue::Null,
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ScalarValue::Int(i),
            (None, Some(f)) => ScalarValue::F64(f),
            _ => return Err(DocumentError::Malformed(format!("number out of range: {n}"))),
        },
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
    };
    match prop {
        Prop::Map(k) => doc.put(obj, k.as_str(), scalar)?,
        Prop::Seq(i) => doc.insert(obj, i, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
