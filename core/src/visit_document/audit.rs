//! The audit of incoming changes: what a set of changes did to a visit's document (sections
//! touched, existing entries edited, new entries typed), for the server's write rules.

use super::{reader, Amendment, ClockEvent, DocumentError, Note, Section, TaskOutcome, Visit, VisitDocument};
use automerge::{legacy, ChangeHash, ObjId, ObjType, Prop, ReadDoc};
use std::collections::{BTreeSet, HashMap, HashSet};

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
    /// The audited changes, encoded as `save_after(before)` would encode them (the server
    /// stores them as the visit's new chunk without encoding them again), and the heads they
    /// lead to.
    pub changes: Vec<u8>,
    pub heads_after: Vec<ChangeHash>,
    /// All the changes did was append the new entries at the end of their lists (no violation,
    /// no other section, nothing placed before an existing entry): the document's read after
    /// them is its read before with the new entries added ([`VisitDocument::read_after`]).
    pub appended_only: bool,
}

impl VisitDocument {
    /// Inspect everything that changed since `before` (heads this replica had before it received
    /// a message): which sections were written, whether anything existing was edited, and the
    /// new list entries, typed.
    pub fn audit_since(&mut self, before: &[ChangeHash]) -> Result<WriteAudit, DocumentError> {
        let changes = self.doc.get_changes(before);
        self.audit_changes(before, &changes, None)
    }

    /// [`Self::audit_since`] when the caller already holds the changes applied since `before`
    /// (a protocol 2 push, less those the document held): Automerge rebuilds each change from
    /// its op set to list them, a quarter of the audit's cost. `changes` must be exactly those.
    ///
    /// With `read_before`, the document's read at `before`, the new entries of a list are looked
    /// for after the entries it held, and checked against its ids, instead of reading every
    /// entry's id: a clock-in costs the same however long the visit.
    pub fn audit_changes(
        &mut self,
        before: &[ChangeHash],
        changes: &[automerge::Change],
        read_before: Option<&Visit>,
    ) -> Result<WriteAudit, DocumentError> {
        let after = self.doc.get_heads();
        let mut audit = WriteAudit {
            change_hashes: changes.iter().map(|c| c.hash()).collect(),
            changes: changes.iter().flat_map(|c| c.raw_bytes()).copied().collect(),
            heads_after: after.clone(),
            ..Default::default()
        };
        if changes.is_empty() {
            audit.appended_only = true;
            return Ok(audit);
        }
        // Every op of the audited changes, against the object it writes to. Objects the changes
        // create are placed as they are made (a change's op ids run from its `start_op`); any
        // other object is an existing one, placed by its path from the root.
        let sections = self.section_objects();
        let mut created: HashMap<ObjId, Place> = HashMap::new();
        // Maps inserted into each section's list.
        let mut made: HashMap<Section, usize> = HashMap::new();
        for change in changes {
            let expanded = change.decode();
            for (i, op) in expanded.operations.iter().enumerate() {
                let place = match &op.obj {
                    legacy::ObjectId::Root => {
                        // A write at the root: only the creation of the document may do that.
                        audit.touched.insert(Section::Root);
                        if !before.is_empty() {
                            audit
                                .violations
                                .push(format!("root of the document rewritten ({})", describe(op)));
                        }
                        Place::root_key(&op.key)
                    }
                    legacy::ObjectId::Id(legacy::OpId(counter, actor)) => {
                        let obj = ObjId::Id(*counter, actor.clone(), usize::MAX);
                        let place = match created.get(&obj) {
                            Some(place) => place.clone(),
                            None => self.place_of(&obj, &sections)?,
                        };
                        audit_op(&place, op, &mut audit);
                        let makes_a_map = matches!(op.action, legacy::OpType::Make(ObjType::Map));
                        if let Place::Section {
                            section,
                            is_section: true,
                            ..
                        } = &place
                        {
                            if makes_a_map {
                                *made.entry(*section).or_default() += 1;
                            }
                        }
                        place.inside()
                    }
                };
                if matches!(op.action, legacy::OpType::Make(_)) {
                    let id = ObjId::Id(
                        expanded.start_op.get() + i as u64,
                        expanded.actor_id.clone(),
                        usize::MAX,
                    );
                    created.insert(id, place);
                }
            }
        }
        if !audit.violations.is_empty() {
            return Ok(audit);
        }
        // Typed new entries: those whose map object was created by the audited changes.
        let mut at_the_end = audit.touched.iter().all(|s| Section::LISTS.contains(s));
        for section in Section::LISTS {
            if !audit.touched.contains(&section) {
                continue;
            }
            let Some(list) = sections
                .iter()
                .find(|(_, s)| **s == section)
                .map(|(id, _)| id.clone())
            else {
                return Err(DocumentError::Malformed(format!("no {} section", section.key())));
            };
            if let Some(read) = read_before {
                let before_ids = list_ids(
                    section,
                    &read.events,
                    &read.notes,
                    &read.task_outcomes,
                    &read.amendments,
                );
                let made = made.get(&section).copied().unwrap_or(0);
                if self.audit_tail(section, &list, before_ids, made, &created, &mut audit)? {
                    continue;
                }
            }
            let mut seen_ids = HashSet::new();
            let mut new_seen = false;
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
                if created.contains_key(&obj) {
                    reader::audit_entry(&self.doc, section, item.index, &obj, &mut audit)?;
                    new_seen = true;
                } else if new_seen {
                    // An existing entry after a new one: the new one went into the middle
                    // (a phone that had not seen the latest entries).
                    at_the_end = false;
                }
            }
        }
        audit.appended_only = at_the_end && audit.violations.is_empty();
        Ok(audit)
    }

    /// The document's read after audited changes, given its read before them (`before`, of the
    /// heads the audit started from): that read with the audit's new entries appended when that
    /// is all the changes did ([`WriteAudit::appended_only`]), else a whole read. A phone's
    /// clock-in no longer costs a read of the whole visit.
    pub fn read_after(&self, before: &Visit, audit: &WriteAudit) -> Result<Visit, DocumentError> {
        if !audit.appended_only {
            return self.read();
        }
        let mut after = before.clone();
        after.events.extend(audit.new_events.iter().cloned());
        after.notes.extend(audit.new_notes.iter().cloned());
        after
            .task_outcomes
            .extend(audit.new_task_outcomes.iter().cloned());
        after.amendments.extend(audit.new_amendments.iter().cloned());
        Ok(after)
    }

    /// The new entries of a list section when they are exactly the `made` items after the
    /// entries the read before held (`before_ids`): typed into `audit`, their ids checked against
    /// those. False, with nothing added, when the list holds anything else there (an entry of
    /// another phone's placed after a new one, a new entry placed before an old one).
    fn audit_tail(
        &self,
        section: Section,
        list: &ObjId,
        before_ids: Vec<uuid::Uuid>,
        made: usize,
        created: &HashMap<ObjId, Place>,
        audit: &mut WriteAudit,
    ) -> Result<bool, DocumentError> {
        let start = before_ids.len();
        if self.doc.length(list) != start + made {
            return Ok(false);
        }
        let tail: Vec<(usize, ObjId)> = self
            .doc
            .list_range(list, start..)
            .map(|item| (item.index, item.id()))
            .collect();
        if tail.iter().any(|(_, obj)| !created.contains_key(obj)) {
            return Ok(false);
        }
        let typed_before = audit.typed(section).len();
        for (index, obj) in &tail {
            reader::audit_entry(&self.doc, section, *index, obj, audit)?;
        }
        let mut seen: HashSet<uuid::Uuid> = before_ids.into_iter().collect();
        for id in audit.typed(section).split_off(typed_before) {
            if !seen.insert(id) {
                audit
                    .violations
                    .push(format!("duplicate {} id {id}", section.key()));
            }
        }
        Ok(true)
    }

    /// The section objects by id (a section the document lacks is left out): one pass over the
    /// root's keys, where a lookup per section cost four times as much.
    fn section_objects(&self) -> HashMap<ObjId, Section> {
        self.doc
            .map_range(automerge::ROOT, ..)
            .filter(|item| matches!(item.value, automerge::ValueRef::Object(_)))
            .filter_map(|item| Section::from_key(&item.key).map(|s| (item.id(), s)))
            .collect()
    }

    /// Where an object that existed before the audited changes lives: its section (by the root
    /// key above it), and whether it is the section object itself.
    fn place_of(&self, obj: &ObjId, sections: &HashMap<ObjId, Section>) -> Result<Place, DocumentError> {
        if let Some(section) = sections.get(obj) {
            return Ok(Place::Section {
                section: *section,
                is_section: true,
                created_here: false,
            });
        }
        // Parents run from the object up to the root: the last names the root key.
        let top = self.doc.parents(obj)?.last();
        Ok(match top.map(|p| p.prop) {
            Some(Prop::Map(key)) => match Section::from_key(&key) {
                Some(section) => Place::Section {
                    section,
                    is_section: false,
                    created_here: false,
                },
                None => Place::Unknown(key),
            },
            _ => Place::Unknown(String::new()),
        })
    }
}

/// Where an op writes, for the append-only rule.
#[derive(Clone, Debug)]
enum Place {
    /// Inside a section: the section object itself, or an object within it.
    Section {
        section: Section,
        is_section: bool,
        /// Made by the audited changes, so free to be filled in.
        created_here: bool,
    },
    /// Under a root key that names no section.
    Unknown(String),
}

impl Place {
    /// Where an object made at this root key lives.
    fn root_key(key: &legacy::Key) -> Place {
        let legacy::Key::Map(key) = key else {
            return Place::Unknown(String::new());
        };
        match Section::from_key(key) {
            Some(section) => Place::Section {
                section,
                is_section: true,
                created_here: true,
            },
            None => Place::Unknown(key.to_string()),
        }
    }

    /// Where an object made inside this place lives.
    fn inside(self) -> Place {
        match self {
            Place::Section { section, .. } => Place::Section {
                section,
                is_section: false,
                created_here: true,
            },
            unknown => unknown,
        }
    }
}

/// The append-only rule for one op on an object below the root.
fn audit_op(place: &Place, op: &legacy::Op, audit: &mut WriteAudit) {
    let (section, is_section, created_here) = match place {
        Place::Unknown(key) => {
            audit.touched.insert(Section::Root);
            audit.violations.push(format!("unknown section {key:?}"));
            return;
        }
        Place::Section {
            section,
            is_section,
            created_here,
        } => (*section, *is_section, *created_here),
    };
    audit.touched.insert(section);
    if section == Section::Schedule || created_here {
        return;
    }
    // An existing object inside a list section: only inserting at the list itself is allowed.
    if !(is_section && op.insert) {
        audit.violations.push(format!(
            "existing {} entry changed ({}); the list is append-only",
            section.key(),
            describe(op)
        ));
    }
}

fn describe(op: &legacy::Op) -> &'static str {
    match (&op.action, &op.key) {
        (_, _) if op.insert => "insert",
        (legacy::OpType::Put(_) | legacy::OpType::Make(_), legacy::Key::Map(_)) => "put",
        (legacy::OpType::Put(_) | legacy::OpType::Make(_), legacy::Key::Seq(_)) => "overwrite",
        (legacy::OpType::Increment(_), _) => "increment",
        (legacy::OpType::Delete, _) => "delete",
        _ => "edit",
    }
}

/// The ids of a list section's entries, in order (none for the other sections).
fn list_ids(
    section: Section,
    events: &[ClockEvent],
    notes: &[Note],
    outcomes: &[TaskOutcome],
    amendments: &[Amendment],
) -> Vec<uuid::Uuid> {
    match section {
        Section::Events => events.iter().map(|e| e.id.0).collect(),
        Section::Notes => notes.iter().map(|n| n.id.0).collect(),
        Section::TaskOutcomes => outcomes.iter().map(|o| o.id.0).collect(),
        Section::Amendments => amendments.iter().map(|a| a.id.0).collect(),
        Section::Root | Section::Schedule => Vec::new(),
    }
}

impl WriteAudit {
    /// The ids of the new entries typed so far in a list section.
    fn typed(&self, section: Section) -> Vec<uuid::Uuid> {
        list_ids(
            section,
            &self.new_events,
            &self.new_notes,
            &self.new_task_outcomes,
            &self.new_amendments,
        )
    }
}
