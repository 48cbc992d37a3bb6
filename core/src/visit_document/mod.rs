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

mod reader;

use crate::domain::*;
use automerge::transaction::Transactable;
use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjId, ObjType, PatchAction, Prop, ReadDoc, ScalarValue, ROOT,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashSet};

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub client_id: ClientId,
    pub contract_id: ContractId,
    /// One carer, or two for a double-up.
    pub carers: Vec<PersonId>,
    pub planned_start: Millis,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockEvent {
    pub id: EventId,
    pub kind: ClockKind,
    pub carer_id: PersonId,
    pub device_id: DeviceId,
    /// The phone's wall clock when the carer tapped.
    pub device_time: Millis,
    /// Server minus device, as last measured before the tap; absent if never measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// Device time at which that offset was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub id: NoteId,
    pub author_id: PersonId,
    pub author_role: Role,
    /// Device time when written (plus the offset then known, where one was).
    pub written_at: Millis,
    pub category: NoteCategory,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub id: OutcomeId,
    pub task_id: TaskId,
    pub carer_id: PersonId,
    pub result: TaskResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub recorded_at: Millis,
}

/// A correction of an actual time by the office or a supervisor. The original event is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Amendment {
    pub id: AmendmentId,
    pub author_id: PersonId,
    pub author_role: Role,
    /// Whose time is corrected (matters for double-ups).
    pub carer_id: PersonId,
    pub time: AmendedTime,
    pub corrected_time: Millis,
    pub reason: ReasonCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub written_at: Millis,
}

/// The whole visit, read from its document.
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

/// What a set of incoming changes did to a document, for the server's write rules.
#[derive(Debug, Default, Clone)]
pub struct WriteAudit {
    /// Sections with any change at all.
    pub touched: BTreeSet<Section>,
    /// Structural breaches no author may commit: editing or deleting an existing list entry,
    /// replacing a section, writing an unknown key.
    pub violations: Vec<String>,
    pub new_events: Vec<ClockEvent>,
    pub new_notes: Vec<Note>,
    pub new_task_outcomes: Vec<TaskOutcome>,
    pub new_amendments: Vec<Amendment>,
    /// Hashes of the audited changes.
    pub change_hashes: Vec<ChangeHash>,
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

    /// Inspect everything that changed since `before` (heads this replica had before it received
    /// a message): which sections were written, whether anything existing was edited, and the
    /// new list entries, typed.
    pub fn audit_since(&mut self, before: &[ChangeHash]) -> Result<WriteAudit, DocumentError> {
        let after = self.doc.get_heads();
        let changes = self.doc.get_changes(before);
        let new_hashes: HashSet<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
        let mut audit = WriteAudit {
            change_hashes: changes.iter().map(|c| c.hash()).collect(),
            ..Default::default()
        };
        if new_hashes.is_empty() {
            return Ok(audit);
        }
        let created_here =
            |doc: &AutoCommit, obj: &ObjId| doc.hash_for_opid(obj).is_some_and(|h| new_hashes.contains(&h));
        let patches = self.doc.diff(before, &after);
        for patch in &patches {
            let section = match patch.path.first() {
                None => {
                    // A write at the root: only the creation of the document may do that.
                    audit.touched.insert(Section::Root);
                    if !before.is_empty() {
                        audit.violations.push(format!(
                            "root of the document rewritten ({})",
                            describe(&patch.action)
                        ));
                    }
                    continue;
                }
                Some((_, Prop::Map(key))) => match Section::from_key(key) {
                    Some(s) => s,
                    None => {
                        audit.touched.insert(Section::Root);
                        audit.violations.push(format!("unknown section {key:?}"));
                        continue;
                    }
                },
                Some((_, Prop::Seq(_))) => {
                    audit.violations.push("root is not a map".into());
                    continue;
                }
            };
            audit.touched.insert(section);
            if section == Section::Schedule || created_here(&self.doc, &patch.obj) {
                continue;
            }
            // An existing object inside a list section: only inserting at the list itself is allowed.
            let is_section_list = patch.path.len() == 1;
            let is_insert = matches!(patch.action, PatchAction::Insert { .. });
            if !(is_section_list && is_insert) {
                audit.violations.push(format!(
                    "existing {} entry changed ({}); the list is append-only",
                    section.key(),
                    describe(&patch.action)
                ));
            }
        }
        if !audit.violations.is_empty() {
            return Ok(audit);
        }
        // Typed new entries: those whose map object was created by the audited changes.
        for section in Section::LISTS {
            if !audit.touched.contains(&section) {
                continue;
            }
            let list = self.section(section)?;
            let mut seen_ids = HashSet::new();
            for item in self.doc.list_range(&list, ..) {
                let obj = item.id();
                if !matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
                    return Err(DocumentError::Malformed("list entry is not a map".into()));
                }
                let entry_id = reader::raw_id(&self.doc, &obj)?;
                if !seen_ids.insert(entry_id.clone()) {
                    let shown = entry_id.as_deref().unwrap_or("null");
                    audit
                        .violations
                        .push(format!("duplicate {} id {shown}", section.key()));
                }
                if created_here(&self.doc, &obj) {
                    reader::audit_entry(&self.doc, section, item.index, &obj, &mut audit)?;
                }
            }
        }
        Ok(audit)
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

fn describe(action: &PatchAction) -> &'static str {
    match action {
        PatchAction::PutMap { .. } => "put",
        PatchAction::PutSeq { .. } => "overwrite",
        PatchAction::Insert { .. } => "insert",
        PatchAction::SpliceText { .. } => "text edit",
        PatchAction::Increment { .. } => "increment",
        PatchAction::DeleteMap { .. } | PatchAction::DeleteSeq { .. } => "delete",
        _ => "edit",
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
pub(crate) mod tests {
    use super::*;

    pub fn schedule(carers: Vec<PersonId>, start: Millis) -> Schedule {
        Schedule {
            client_id: ClientId::new(),
            contract_id: ContractId::new(),
            carers,
            planned_start: start,
            planned_end: start + 30 * MINUTE_MS,
            tasks: vec![Task {
                id: TaskId::new(),
                title: "Medication prompt".into(),
            }],
            status: VisitStatus::Scheduled,
            cancel_reason: None,
            chargeable: None,
        }
    }

    pub fn event(carer: PersonId, kind: ClockKind, at: Millis) -> ClockEvent {
        ClockEvent {
            id: EventId::new(),
            kind,
            carer_id: carer,
            device_id: DeviceId::new(),
            device_time: at,
            clock_offset_ms: Some(1500),
            offset_measured_at: Some(at - 1000),
            method: ClockMethod::App,
            reason: None,
            location: Some(Location {
                lat: 51.5,
                lon: -0.12,
                accuracy_m: 8.5,
            }),
            tag_id: None,
        }
    }

    fn office() -> ActorId {
        ActorId::random()
    }

    #[test]
    fn create_read_round_trip() -> Result<(), DocumentError> {
        let carer = PersonId::new();
        let id = VisitId::new();
        let sched = schedule(vec![carer], 1_700_000_000_000);
        let mut doc = VisitDocument::create(id, &sched, &office())?;
        let ev = event(carer, ClockKind::ClockIn, 1_700_000_060_000);
        doc.append_event(&ev)?;
        let bytes = doc.save();
        let visit = VisitDocument::load(&bytes)?.read()?;
        assert_eq!(visit.visit_id, id);
        assert_eq!(visit.schedule, sched);
        assert_eq!(visit.events, vec![ev]);
        assert_eq!(visit.carer_state(carer), CarerVisitState::InProgress);
        Ok(())
    }

    #[test]
    fn unknown_schema_and_garbage_are_errors() -> Result<(), DocumentError> {
        assert!(matches!(
            VisitDocument::load(b"not automerge"),
            Err(DocumentError::Automerge(_))
        ));
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "schema_version", 99_u64)?;
        let bytes = doc.save();
        assert!(matches!(
            VisitDocument::load(&bytes),
            Err(DocumentError::UnknownSchema { found: 99 })
        ));
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "schema_version", 1_u64)?;
        doc.put(ROOT, "schedule", "a string")?;
        let bytes = doc.save();
        assert!(matches!(
            VisitDocument::load(&bytes),
            Err(DocumentError::Malformed(_))
        ));
        Ok(())
    }

    #[test]
    fn audit_sees_appends_and_edits() -> Result<(), DocumentError> {
        let carer = PersonId::new();
        let mut office_doc = VisitDocument::create(VisitId::new(), &schedule(vec![carer], 0), &office())?;
        let before = office_doc.heads();

        // An honest append.
        let mut phone = office_doc.fork();
        let ev = event(carer, ClockKind::ClockIn, 10);
        phone.append_event(&ev)?;
        let mut copy = office_doc.fork();
        copy.merge(&mut phone)?;
        let audit = copy.audit_since(&before)?;
        assert!(audit.violations.is_empty(), "{:?}", audit.violations);
        assert_eq!(audit.touched, BTreeSet::from([Section::Events]));
        assert_eq!(audit.new_events, vec![ev]);

        // Editing an existing event is a violation.
        let mid = copy.heads();
        let mut forger = copy.fork();
        let events = forger.section(Section::Events)?;
        let (_, first) = forger
            .doc
            .get(&events, 0)?
            .ok_or(DocumentError::Malformed("none".into()))?;
        forger.doc.put(&first, "device_time", 99_i64)?;
        forger.doc.commit();
        let mut copy2 = copy.fork();
        copy2.merge(&mut forger)?;
        let audit = copy2.audit_since(&mid)?;
        assert!(!audit.violations.is_empty());

        // Schedule edits are reported as the schedule section.
        let mut office2 = copy.fork();
        let mut s = office2.read()?.schedule;
        s.planned_start += 15 * MINUTE_MS;
        office2.update_schedule(&s)?;
        let audit = office2.audit_since(&mid)?;
        assert_eq!(audit.touched, BTreeSet::from([Section::Schedule]));
        assert!(audit.violations.is_empty());
        Ok(())
    }

    #[test]
    fn concurrent_schedule_edits_of_different_fields_both_survive() -> Result<(), DocumentError> {
        let (a, b) = (PersonId::new(), PersonId::new());
        let mut base = VisitDocument::create(VisitId::new(), &schedule(vec![a], 0), &office())?;
        let mut one = base.fork();
        let mut two = base.fork();
        let mut s1 = one.read()?.schedule;
        s1.planned_start = 60_000;
        one.update_schedule(&s1)?;
        let mut s2 = two.read()?.schedule;
        s2.carers = vec![b];
        two.update_schedule(&s2)?;
        one.merge(&mut two)?;
        let merged = one.read()?.schedule;
        assert_eq!(merged.planned_start, 60_000);
        assert_eq!(merged.carers, vec![b]);
        Ok(())
    }

    /// The reader this build replaced: the whole document through `AutoSerde` into JSON, then
    /// serde. Kept as the oracle the typed reader must agree with.
    fn read_via_json(doc: &VisitDocument) -> Result<Visit, DocumentError> {
        let version = match doc.doc.get(ROOT, "schema_version")? {
            Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Uint(v) => *v,
                ScalarValue::Int(v) if *v >= 0 => *v as u64,
                _ => return Err(DocumentError::Malformed("schema_version is not a number".into())),
            },
            _ => return Err(DocumentError::Malformed("no schema_version".into())),
        };
        if version > SCHEMA_VERSION {
            return Err(DocumentError::UnknownSchema { found: version });
        }
        let json = serde_json::to_value(automerge::AutoSerde::from(&doc.doc))
            .map_err(|e| DocumentError::Malformed(e.to_string()))?;
        serde_json::from_value(json).map_err(|e| DocumentError::Malformed(e.to_string()))
    }

    fn full_visit(doc: &mut VisitDocument, carer: PersonId) -> Result<(), DocumentError> {
        doc.append_event(&event(carer, ClockKind::ClockIn, 10))?;
        let mut bare = event(carer, ClockKind::ClockOut, 20);
        (bare.clock_offset_ms, bare.offset_measured_at, bare.location) = (None, None, None);
        bare.method = ClockMethod::Manual;
        bare.reason = Some(ReasonCode::AppFault);
        bare.tag_id = Some("04:A2".into());
        doc.append_event(&bare)?;
        doc.append_note(&Note {
            id: NoteId::new(),
            author_id: carer,
            author_role: Role::Carer,
            written_at: 15,
            category: NoteCategory::Concern,
            text: "Fell last night; bruise on left arm — GP informed ✓".into(),
        })?;
        doc.append_task_outcome(&TaskOutcome {
            id: OutcomeId::new(),
            task_id: TaskId::new(),
            carer_id: carer,
            result: TaskResult::Refused,
            note: Some("Did not want lunch".into()),
            recorded_at: 16,
        })?;
        doc.append_amendment(&Amendment {
            id: AmendmentId::new(),
            author_id: PersonId::new(),
            author_role: Role::Supervisor,
            carer_id: carer,
            time: AmendedTime::ClockOut,
            corrected_time: 25,
            reason: ReasonCode::ForgotToClock,
            comment: None,
            written_at: 30,
        })?;
        Ok(())
    }

    #[test]
    fn typed_reader_agrees_with_the_json_reader() -> Result<(), DocumentError> {
        let carer = PersonId::new();
        let mut sched = schedule(vec![carer, PersonId::new()], 1_700_000_000_000);
        sched.status = VisitStatus::Cancelled;
        sched.cancel_reason = Some("Client in hospital".into());
        sched.chargeable = Some(false);
        let mut doc = VisitDocument::create(VisitId::new(), &sched, &office())?;
        full_visit(&mut doc, carer)?;
        let typed = doc.read()?;
        assert_eq!(typed, read_via_json(&doc)?);
        assert_eq!(typed.events.len(), 2);
        assert_eq!(doc.read_schedule()?, sched);
        assert_eq!(doc.read_events()?, typed.events);
        Ok(())
    }

    #[test]
    fn load_checks_the_shape_not_the_entries() -> Result<(), DocumentError> {
        let carer = PersonId::new();
        let mut doc = VisitDocument::create(VisitId::new(), &schedule(vec![carer], 0), &office())?;
        // An event with a field of the wrong type: loading succeeds, reading names the field.
        let events = doc.section(Section::Events)?;
        let bad = doc.doc.insert_object(&events, 0, ObjType::Map)?;
        doc.doc.put(&bad, "id", EventId::new().to_string())?;
        doc.doc.put(&bad, "device_time", "yesterday")?;
        doc.doc.commit();
        let bytes = doc.save();
        let loaded = VisitDocument::load(&bytes)?;
        match loaded.read() {
            Err(DocumentError::Malformed(m)) => assert!(m.starts_with("events[0]."), "{m}"),
            other => panic!("expected a malformed error, got {other:?}"),
        }
        assert!(loaded.read_schedule().is_ok());
        assert!(matches!(loaded.read_events(), Err(DocumentError::Malformed(_))));
        // A section of the wrong kind is a shape error, found by load.
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "schema_version", 1_u64)?;
        doc.put(ROOT, "visit_id", VisitId::new().to_string())?;
        doc.put_object(ROOT, "schedule", ObjType::Map)?;
        for key in ["events", "notes", "task_outcomes"] {
            doc.put_object(ROOT, key, ObjType::List)?;
        }
        doc.put_object(ROOT, "amendments", ObjType::Map)?;
        assert!(matches!(
            VisitDocument::load(&doc.save()),
            Err(DocumentError::Malformed(m)) if m.contains("amendments")
        ));
        Ok(())
    }

    #[test]
    fn long_values_are_not_repeated_in_errors() -> Result<(), DocumentError> {
        let mut doc = VisitDocument::create(VisitId::new(), &schedule(vec![PersonId::new()], 0), &office())?;
        let notes = doc.section(Section::Notes)?;
        let bad = doc.doc.insert_object(&notes, 0, ObjType::Map)?;
        let secret = "private health detail ".repeat(20);
        doc.doc.put(&bad, "id", EventId::new().to_string())?;
        doc.doc.put(&bad, "category", secret.as_str())?;
        doc.doc.commit();
        let Err(DocumentError::Malformed(message)) = doc.read() else {
            panic!("expected a malformed error");
        };
        assert!(message.len() < 120, "{message}");
        Ok(())
    }

    /// A random scalar of any Automerge type, to put where a field belongs.
    fn any_scalar() -> impl proptest::strategy::Strategy<Value = ScalarValue> {
        use proptest::prelude::*;
        prop_oneof![
            Just(ScalarValue::Null),
            any::<bool>().prop_map(ScalarValue::Boolean),
            any::<i64>().prop_map(ScalarValue::Int),
            any::<u64>().prop_map(ScalarValue::Uint),
            any::<f64>().prop_map(ScalarValue::F64),
            any::<i64>().prop_map(ScalarValue::Timestamp),
            "[a-z_]{0,12}".prop_map(|s| ScalarValue::Str(s.into())),
            Just(ScalarValue::Str(PersonId::new().to_string().into())),
            Just(ScalarValue::Str("clock_in".into())),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(ScalarValue::Bytes),
        ]
    }

    const KEYS: &[&str] = &[
        "schema_version",
        "visit_id",
        "schedule",
        "events",
        "notes",
        "task_outcomes",
        "amendments",
        "id",
        "kind",
        "carer_id",
        "device_id",
        "device_time",
        "clock_offset_ms",
        "method",
        "reason",
        "location",
        "lat",
        "tag_id",
        "text",
        "category",
        "author_role",
        "carers",
        "planned_start",
        "status",
        "chargeable",
        "tasks",
        "title",
        "result",
        "time",
        "comment",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// A well-formed visit, then random writes anywhere in it (scalars over fields, objects of
        /// the wrong kind, deletions): the typed reader never panics, and it reads exactly what the
        /// JSON reader read, or both refuse.
        #[test]
        fn random_documents_read_like_json_or_fail_cleanly(
            writes in proptest::collection::vec(
                (0..KEYS.len(), 0..6_usize, any_scalar(), 0..4_u8),
                0..6,
            )
        ) {
            let carer = PersonId::new();
            let mut doc = VisitDocument::create(VisitId::new(), &schedule(vec![carer], 0), &office())
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            full_visit(&mut doc, carer).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            for (key, target, value, how) in writes {
                // Pick an object: the root, the schedule, or an entry of a section.
                let obj = match target {
                    0 => ROOT,
                    1 => doc.section(Section::Schedule).ok().unwrap_or(ROOT),
                    n => {
                        let section = Section::LISTS[(n - 2) % 4];
                        match doc.section(section) {
                            Ok(list) => match doc.doc.get(&list, 0) {
                                Ok(Some((automerge::Value::Object(_), entry))) => entry,
                                _ => list,
                            },
                            Err(_) => ROOT,
                        }
                    }
                };
                let key = KEYS[key];
                let _ = match (doc.doc.object_type(&obj), how) {
                    (Ok(ObjType::Map), 0) => doc.doc.delete(&obj, key),
                    (Ok(ObjType::Map), 1) => doc.doc.put_object(&obj, key, ObjType::List).map(|_| ()),
                    (Ok(ObjType::Map), 2) => doc.doc.put_object(&obj, key, ObjType::Text).map(|_| ()),
                    (Ok(ObjType::Map), _) => doc.doc.put(&obj, key, value),
                    (Ok(_), 0) => doc.doc.delete(&obj, 0),
                    (Ok(_), _) => doc.doc.insert(&obj, 0, value),
                    (Err(e), _) => Err(e),
                };
                doc.doc.commit();
            }
            let typed = doc.read();
            let json = read_via_json(&doc);
            match (&typed, &json) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                // The typed reader is allowed to be more lenient only where JSON lost
                // information (a float field written as an integer is the same number).
                _ => proptest::prop_assert!(false, "typed {typed:?} vs json {json:?}"),
            }
            // Loading saved bytes never panics, whatever was written.
            let _ = VisitDocument::load(&doc.save()).map(|d| d.read());
        }
    }
}
