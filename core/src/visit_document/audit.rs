//! The audit of incoming changes: what a set of changes did to a visit's document (sections
//! touched, existing entries edited, new entries typed), for the server's write rules.

use super::{reader, Amendment, ClockEvent, DocumentError, Note, Section, TaskOutcome, VisitDocument};
use automerge::{AutoCommit, ChangeHash, ObjId, ObjType, PatchAction, Prop, ReadDoc};
use std::collections::{BTreeSet, HashSet};

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
}

impl VisitDocument {
    /// Inspect everything that changed since `before` (heads this replica had before it received
    /// a message): which sections were written, whether anything existing was edited, and the
    /// new list entries, typed.
    pub fn audit_since(&mut self, before: &[ChangeHash]) -> Result<WriteAudit, DocumentError> {
        let changes = self.doc.get_changes(before);
        self.audit_changes(before, &changes)
    }

    /// [`Self::audit_since`] when the caller already holds the changes applied since `before`
    /// (a protocol 2 push, less those the document held): Automerge rebuilds each change from
    /// its op set to list them, a quarter of the audit's cost. `changes` must be exactly those.
    pub fn audit_changes(
        &mut self,
        before: &[ChangeHash],
        changes: &[automerge::Change],
    ) -> Result<WriteAudit, DocumentError> {
        let after = self.doc.get_heads();
        let new_hashes: HashSet<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
        let mut audit = WriteAudit {
            change_hashes: changes.iter().map(|c| c.hash()).collect(),
            changes: changes.iter().flat_map(|c| c.raw_bytes()).copied().collect(),
            heads_after: after.clone(),
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
