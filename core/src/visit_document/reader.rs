//! Typed reading straight from the Automerge document: each map is walked once (`map_range`) and
//! its fields converted to the domain types, with no JSON in between. Anything that does not fit
//! (a missing field, a number where text belongs, an unknown wire name) is a
//! [`DocumentError::Malformed`] naming where it was found; never a panic.
//!
//! The rules are those the serde types had when documents were read through JSON: unknown keys
//! are ignored, an optional field may be absent or null, integers may be stored signed or
//! unsigned, a float may be stored as an integer, and text may be a string or a text object.

use super::{
    Amendment, ClockEvent, DocumentError, Note, Schedule, Section, Task, TaskOutcome, Visit, WriteAudit,
    SCHEMA_VERSION,
};
use crate::domain::*;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValueRef, ValueRef, ROOT};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Where a value sits in the document, for error messages (`events[2].device_time`).
#[derive(Clone, Copy)]
struct At<'p> {
    what: &'p str,
    index: Option<usize>,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}]", self.what),
            None => f.write_str(self.what),
        }
    }
}

enum Field<'a> {
    Scalar(ScalarValueRef<'a>),
    Object(ObjType, ObjId),
}

/// A map object's fields, gathered in one pass.
struct Fields<'a, 'p> {
    doc: &'a AutoCommit,
    at: At<'p>,
    fields: Vec<(Cow<'a, str>, Field<'a>)>,
}

impl<'a, 'p> Fields<'a, 'p> {
    fn of(doc: &'a AutoCommit, obj: &ObjId, at: At<'p>) -> Self {
        let fields = doc
            .map_range(obj, ..)
            .map(|item| {
                let field = match item.value {
                    ValueRef::Object(kind) => Field::Object(kind, item.id()),
                    ValueRef::Scalar(s) => Field::Scalar(s),
                };
                (item.key, field)
            })
            .collect();
        Self { doc, at, fields }
    }

    fn malformed(&self, key: &str, problem: &str) -> DocumentError {
        DocumentError::Malformed(format!("{}.{key} {problem}", self.at))
    }

    /// The field, or `None` if absent or null.
    fn get(&self, key: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, f)| f)
            .filter(|f| !matches!(f, Field::Scalar(ScalarValueRef::Null)))
    }

    fn required(&self, key: &str) -> Result<&Field<'a>, DocumentError> {
        self.get(key).ok_or_else(|| self.malformed(key, "is missing"))
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, DocumentError> {
        match self.get(key) {
            None => Ok(None),
            Some(Field::Scalar(ScalarValueRef::Str(s))) => Ok(Some(s.to_string())),
            Some(Field::Object(ObjType::Text, id)) => Ok(Some(self.doc.text(id)?)),
            Some(_) => Err(self.malformed(key, "is not text")),
        }
    }

    fn str(&self, key: &str) -> Result<String, DocumentError> {
        self.opt_str(key)?
            .ok_or_else(|| self.malformed(key, "is missing"))
    }

    fn opt_parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, DocumentError> {
        // Ids and wire names are short strings: parse them without copying.
        if let Some(Field::Scalar(ScalarValueRef::Str(s))) = self.get(key) {
            return s
                .parse()
                .map(Some)
                .map_err(|_| self.malformed(key, &format!("has an unknown value {:?}", truncated(s))));
        }
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| self.malformed(key, &format!("has an unknown value {:?}", truncated(&s)))),
        }
    }

    fn parse<T: FromStr>(&self, key: &str) -> Result<T, DocumentError> {
        self.opt_parse(key)?
            .ok_or_else(|| self.malformed(key, "is missing"))
    }

    fn opt_int(&self, key: &str) -> Result<Option<i64>, DocumentError> {
        match self.get(key) {
            None => Ok(None),
            Some(Field::Scalar(
                ScalarValueRef::Int(i) | ScalarValueRef::Counter(i) | ScalarValueRef::Timestamp(i),
            )) => Ok(Some(*i)),
            Some(Field::Scalar(ScalarValueRef::Uint(u))) => i64::try_from(*u)
                .map(Some)
                .map_err(|_| self.malformed(key, "is out of range")),
            Some(_) => Err(self.malformed(key, "is not an integer")),
        }
    }

    fn int(&self, key: &str) -> Result<i64, DocumentError> {
        self.opt_int(key)?
            .ok_or_else(|| self.malformed(key, "is missing"))
    }

    fn float(&self, key: &str) -> Result<f64, DocumentError> {
        match self.required(key)? {
            Field::Scalar(ScalarValueRef::F64(f)) => Ok(*f),
            Field::Scalar(ScalarValueRef::Uint(u)) => Ok(*u as f64),
            Field::Scalar(
                ScalarValueRef::Int(i) | ScalarValueRef::Counter(i) | ScalarValueRef::Timestamp(i),
            ) => Ok(*i as f64),
            _ => Err(self.malformed(key, "is not a number")),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, DocumentError> {
        match self.get(key) {
            None => Ok(None),
            Some(Field::Scalar(ScalarValueRef::Boolean(b))) => Ok(Some(*b)),
            Some(_) => Err(self.malformed(key, "is not true or false")),
        }
    }

    fn object(&self, key: &str, kind: ObjType) -> Result<Option<&ObjId>, DocumentError> {
        match self.get(key) {
            None => Ok(None),
            Some(Field::Object(k, id)) if *k == kind => Ok(Some(id)),
            Some(_) => Err(self.malformed(key, &format!("is not a {}", kind_name(kind)))),
        }
    }

    /// A list of strings parsed one by one (the schedule's carers).
    fn parsed_list<T: FromStr>(&self, key: &str) -> Result<Vec<T>, DocumentError> {
        let list = self
            .object(key, ObjType::List)?
            .ok_or_else(|| self.malformed(key, "is missing"))?;
        self.doc
            .list_range(list, ..)
            .map(|item| match item.value {
                ValueRef::Scalar(ScalarValueRef::Str(s)) => s
                    .parse()
                    .map_err(|_| self.malformed(key, &format!("has an unknown value {:?}", truncated(&s)))),
                _ => Err(self.malformed(key, &format!("[{}] is not text", item.index))),
            })
            .collect()
    }
}

fn kind_name(kind: ObjType) -> &'static str {
    match kind {
        ObjType::Map | ObjType::Table => "map",
        ObjType::List => "list",
        ObjType::Text => "text",
    }
}

/// Error messages name values, but never repeat a long one (it could be care-note text).
fn truncated(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Each entry type knows its fields.
trait FromFields: Sized {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError>;
}

impl FromFields for Location {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError> {
        Ok(Location {
            lat: f.float("lat")?,
            lon: f.float("lon")?,
            accuracy_m: f.float("accuracy_m")?,
        })
    }
}

impl FromFields for Task {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError> {
        Ok(Task {
            id: f.parse("id")?,
            title: f.str("title")?,
        })
    }
}

impl FromFields for Schedule {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError> {
        let tasks = match f.object("tasks", ObjType::List)? {
            Some(list) => read_list(f.doc, list, "schedule.tasks")?,
            None => Vec::new(),
        };
        Ok(Schedule {
            client_id: f.parse("client_id")?,
            contract_id: f.parse("contract_id")?,
            carers: f.parsed_list("carers")?,
            planned_start: f.int("planned_start")?,
            planned_end: f.int("planned_end")?,
            tasks,
            status: f.parse("status")?,
            cancel_reason: f.opt_str("cancel_reason")?,
            chargeable: f.opt_bool("chargeable")?,
        })
    }
}

impl FromFields for ClockEvent {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError> {
        let location = match f.object("location", ObjType::Map)? {
            Some(obj) => Some(Location::from_fields(&Fields::of(
                f.doc,
                obj,
                At {
                    what: &format!("{}.location", f.at),
                    index: None,
                },
            ))?),
            None => None,
        };
        Ok(ClockEvent {
            id: f.parse("id")?,
            kind: f.parse("kind")?,
            carer_id: f.parse("carer_id")?,
            device_id: f.parse("device_id")?,
            device_time: f.int("device_time")?,
            clock_offset_ms: f.opt_int("clock_offset_ms")?,
            offset_measured_at: f.opt_int("offset_measured_at")?,
            method: f.parse("method")?,
            reason: f.opt_parse("reason")?,
            location,
            tag_id: f.opt_str("tag_id")?,
        })
    }
}

impl FromFields for Note {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError> {
        Ok(Note {
            id: f.parse("id")?,
            author_id: f.parse("author_id")?,
            author_role: f.parse("author_role")?,
            written_at: f.int("written_at")?,
            category: f.parse("category")?,
            text: f.str("text")?,
        })
    }
}

impl FromFields for TaskOutcome {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError> {
        Ok(TaskOutcome {
            id: f.parse("id")?,
            task_id: f.parse("task_id")?,
            carer_id: f.parse("carer_id")?,
            result: f.parse("result")?,
            note: f.opt_str("note")?,
            recorded_at: f.int("recorded_at")?,
        })
    }
}

impl FromFields for Amendment {
    fn from_fields(f: &Fields<'_, '_>) -> Result<Self, DocumentError> {
        Ok(Amendment {
            id: f.parse("id")?,
            author_id: f.parse("author_id")?,
            author_role: f.parse("author_role")?,
            carer_id: f.parse("carer_id")?,
            time: f.parse("time")?,
            corrected_time: f.int("corrected_time")?,
            reason: f.parse("reason")?,
            comment: f.opt_str("comment")?,
            written_at: f.int("written_at")?,
        })
    }
}

/// Every entry of a list of maps, typed.
fn read_list<T: FromFields>(doc: &AutoCommit, list: &ObjId, what: &str) -> Result<Vec<T>, DocumentError> {
    doc.list_range(list, ..)
        .map(|item| {
            let obj = item.id();
            read_entry(doc, item.index, item.value, obj, what)
        })
        .collect()
}

fn read_entry<T: FromFields>(
    doc: &AutoCommit,
    index: usize,
    value: ValueRef<'_>,
    obj: ObjId,
    what: &str,
) -> Result<T, DocumentError> {
    let at = At {
        what,
        index: Some(index),
    };
    match value {
        ValueRef::Object(ObjType::Map) => T::from_fields(&Fields::of(doc, &obj, at)),
        _ => Err(DocumentError::Malformed(format!("{at} is not a map"))),
    }
}

/// The document's root, checked for the schema version before anything else is trusted.
struct Root<'a> {
    fields: Fields<'a, 'static>,
    version: u64,
}

impl<'a> Root<'a> {
    fn fields(doc: &'a AutoCommit) -> Fields<'a, 'static> {
        Fields::of(
            doc,
            &ROOT,
            At {
                what: "root",
                index: None,
            },
        )
    }

    fn of(doc: &'a AutoCommit) -> Result<Self, DocumentError> {
        let fields = Self::fields(doc);
        let version = match fields.get("schema_version") {
            Some(Field::Scalar(ScalarValueRef::Uint(v))) => *v,
            Some(Field::Scalar(ScalarValueRef::Int(v))) if *v >= 0 => *v as u64,
            Some(_) => return Err(DocumentError::Malformed("schema_version is not a number".into())),
            None => return Err(DocumentError::Malformed("no schema_version".into())),
        };
        if version > SCHEMA_VERSION {
            return Err(DocumentError::UnknownSchema { found: version });
        }
        Ok(Self { fields, version })
    }

    fn section(&self, key: &str, kind: ObjType) -> Result<&ObjId, DocumentError> {
        self.fields
            .object(key, kind)?
            .ok_or_else(|| DocumentError::Malformed(format!("no {key} section")))
    }

    fn schedule(&self) -> Result<Schedule, DocumentError> {
        let obj = self.section("schedule", ObjType::Map)?;
        Schedule::from_fields(&Fields::of(
            self.fields.doc,
            obj,
            At {
                what: "schedule",
                index: None,
            },
        ))
    }

    fn list<T: FromFields>(&self, key: &'static str) -> Result<Vec<T>, DocumentError> {
        read_list(self.fields.doc, self.section(key, ObjType::List)?, key)
    }
}

/// The whole visit.
pub(super) fn visit(doc: &AutoCommit) -> Result<Visit, DocumentError> {
    let root = Root::of(doc)?;
    Ok(Visit {
        schema_version: root.version,
        visit_id: root.fields.parse("visit_id")?,
        schedule: root.schedule()?,
        events: root.list("events")?,
        notes: root.list("notes")?,
        task_outcomes: root.list("task_outcomes")?,
        amendments: root.list("amendments")?,
    })
}

/// Only the schedule (what the office wrote).
pub(super) fn schedule(doc: &AutoCommit) -> Result<Schedule, DocumentError> {
    Root::of(doc)?.schedule()
}

/// The schedule, if the document has one yet (a replica at early heads may not, nor a schema
/// version).
pub(super) fn schedule_if_any(doc: &AutoCommit) -> Result<Option<Schedule>, DocumentError> {
    let root = Root {
        fields: Root::fields(doc),
        version: SCHEMA_VERSION,
    };
    match root.fields.object("schedule", ObjType::Map)? {
        Some(_) => root.schedule().map(Some),
        None => Ok(None),
    }
}

/// Only the clock events.
pub(super) fn events(doc: &AutoCommit) -> Result<Vec<ClockEvent>, DocumentError> {
    Root::of(doc)?.list("events")
}

/// The document's shape without its entries: a known schema, a visit id, every section of the
/// right kind. What `load` checks; constant cost however long the visit's history.
pub(super) fn check_shape(doc: &AutoCommit) -> Result<(), DocumentError> {
    let root = Root::of(doc)?;
    root.fields.parse::<VisitId>("visit_id")?;
    root.section("schedule", ObjType::Map)?;
    for key in ["events", "notes", "task_outcomes", "amendments"] {
        root.section(key, ObjType::List)?;
    }
    Ok(())
}

/// A list entry the audited changes created, typed into the audit's list for its section.
pub(super) fn audit_entry(
    doc: &AutoCommit,
    section: Section,
    index: usize,
    obj: &ObjId,
    audit: &mut WriteAudit,
) -> Result<(), DocumentError> {
    let at = At {
        what: section.key(),
        index: Some(index),
    };
    let fields = Fields::of(doc, obj, at);
    match section {
        Section::Events => audit.new_events.push(ClockEvent::from_fields(&fields)?),
        Section::Notes => audit.new_notes.push(Note::from_fields(&fields)?),
        Section::TaskOutcomes => audit.new_task_outcomes.push(TaskOutcome::from_fields(&fields)?),
        Section::Amendments => audit.new_amendments.push(Amendment::from_fields(&fields)?),
        Section::Root | Section::Schedule => {}
    }
    Ok(())
}

/// An entry's `id` as written, whatever its type, to spot duplicates (`None` if it has none).
pub(super) fn raw_id(doc: &AutoCommit, obj: &ObjId) -> Result<Option<String>, DocumentError> {
    Ok(match doc.get(obj, "id")? {
        Some((automerge::Value::Scalar(s), _)) => Some(s.to_string()),
        Some((automerge::Value::Object(_), id)) => Some(id.to_string()),
        None => None,
    })
}
