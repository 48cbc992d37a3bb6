use super::*;
use std::collections::BTreeSet;

pub use crate::test_kit::schedule;

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
    let json = oracle_json(&doc.doc, &ROOT, ObjType::Map)?;
    serde_json::from_value(json).map_err(|e| DocumentError::Malformed(e.to_string()))
}

/// The document as JSON for the oracle, like `automerge::AutoSerde` but keeping the document's
/// rules that JSON would otherwise lose:
/// - a null field is an absent one (serde refuses a null where a list has a default; the
///   typed reader reads it as absent);
/// - a byte string is no field's value: AutoSerde renders it as an array of numbers, which serde
///   reads as an empty list or even as a struct (`[0, 0]` as a location), so here it becomes an
///   object with a key no type has, which every field refuses and unknown keys ignore.
fn oracle_json(
    doc: &AutoCommit,
    obj: &automerge::ObjId,
    kind: ObjType,
) -> Result<serde_json::Value, DocumentError> {
    use automerge::{ScalarValueRef as S, ValueRef};
    use serde_json::Value as J;
    let value = |value: ValueRef<'_>, id: automerge::ObjId| -> Result<Option<J>, DocumentError> {
        Ok(Some(match value {
            ValueRef::Object(kind) => oracle_json(doc, &id, kind)?,
            ValueRef::Scalar(s) => match s {
                S::Null => return Ok(None),
                S::Str(s) => J::from(s.as_ref()),
                S::Int(i) | S::Counter(i) | S::Timestamp(i) => J::from(i),
                S::Uint(u) => J::from(u),
                S::F64(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
                S::Boolean(b) => J::from(b),
                S::Bytes(_) | S::Unknown { .. } => serde_json::json!({ "\u{0}not a value": true }),
            },
        }))
    };
    Ok(match kind {
        ObjType::Map | ObjType::Table => {
            let mut map = serde_json::Map::new();
            for item in doc.map_range(obj, ..) {
                let id = item.id();
                if let Some(v) = value(item.value, id)? {
                    map.insert(item.key.to_string(), v);
                }
            }
            J::Object(map)
        }
        ObjType::List => {
            let mut items = Vec::new();
            for item in doc.list_range(obj, ..) {
                let id = item.id();
                items.push(value(item.value, id)?.unwrap_or(J::Null));
            }
            J::Array(items)
        }
        ObjType::Text => J::from(doc.text(obj)?),
    })
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

/// The audit as it was first written, from Automerge's diff of the document between the heads
/// (what the changes did, visibly): the sections touched and whether anything breaks the
/// append-only rule. The op audit must never be more lenient than this.
fn audit_by_diff(doc: &mut VisitDocument, before: &[ChangeHash]) -> (BTreeSet<Section>, Vec<String>) {
    use automerge::PatchAction;
    let after = doc.doc.get_heads();
    let new_hashes: std::collections::HashSet<ChangeHash> =
        doc.doc.get_changes(before).iter().map(|c| c.hash()).collect();
    let (mut touched, mut violations) = (BTreeSet::new(), Vec::new());
    for patch in doc.doc.diff(before, &after) {
        let section = match patch.path.first() {
            None => {
                touched.insert(Section::Root);
                if !before.is_empty() {
                    violations.push("root".to_string());
                }
                continue;
            }
            Some((_, Prop::Map(key))) => match Section::from_key(key) {
                Some(s) => s,
                None => {
                    touched.insert(Section::Root);
                    violations.push(format!("unknown {key}"));
                    continue;
                }
            },
            Some((_, Prop::Seq(_))) => {
                violations.push("root is not a map".into());
                continue;
            }
        };
        touched.insert(section);
        let created_here = doc
            .doc
            .hash_for_opid(&patch.obj)
            .is_some_and(|h| new_hashes.contains(&h));
        if section == Section::Schedule || created_here {
            continue;
        }
        if !(patch.path.len() == 1 && matches!(patch.action, PatchAction::Insert { .. })) {
            violations.push(format!("existing {}", section.key()));
        }
    }
    (touched, violations)
}

/// A new entry that reuses an existing entry's id is a violation, whether the audit reads every
/// entry's id or looks after the entries the read before held.
#[test]
fn a_new_entry_reusing_an_existing_id_is_a_violation() -> Result<(), DocumentError> {
    let carer = PersonId::new();
    let mut base = VisitDocument::create(VisitId::new(), &schedule(vec![carer], 0), &office())?;
    full_visit(&mut base, carer)?;
    let (before, read_before) = (base.heads(), base.read()?);
    let mut again = event(carer, ClockKind::ClockOut, 50);
    again.id = read_before.events[0].id;
    let mut phone = base.fork();
    phone.append_event(&again)?;
    let mut copy = base.fork();
    copy.merge(&mut phone)?;
    let changes = copy.doc.get_changes(&before);
    for audit in [
        copy.audit_changes(&before, &changes, None)?,
        copy.audit_changes(&before, &changes, Some(&read_before))?,
    ] {
        assert!(
            audit
                .violations
                .iter()
                .any(|v| v.starts_with("duplicate events id")),
            "{:?}",
            audit.violations
        );
        assert!(!audit.appended_only);
    }
    Ok(())
}

/// An honest append by a carer, of each kind of entry.
fn honest_append(doc: &mut VisitDocument, carer: PersonId, kind: u8) -> Result<ChangeHash, DocumentError> {
    match kind % 4 {
        0 => doc.append_event(&event(carer, ClockKind::ClockIn, 40)),
        1 => doc.append_note(&Note {
            id: NoteId::new(),
            author_id: carer,
            author_role: Role::Carer,
            written_at: 41,
            category: NoteCategory::General,
            text: "Had breakfast".into(),
        }),
        2 => doc.append_task_outcome(&TaskOutcome {
            id: OutcomeId::new(),
            task_id: TaskId::new(),
            carer_id: carer,
            result: TaskResult::Done,
            note: None,
            recorded_at: 42,
        }),
        _ => doc.append_amendment(&Amendment {
            id: AmendmentId::new(),
            author_id: carer,
            author_role: Role::Supervisor,
            carer_id: carer,
            time: AmendedTime::ClockIn,
            corrected_time: 43,
            reason: ReasonCode::ForgotToClock,
            comment: Some("Called in".into()),
            written_at: 44,
        }),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Honest appends and random writes (over fields, entries, sections and the root) pushed to
    /// a copy: the op audit touches every section the diff audit sees, and flags every push the
    /// diff audit flags. A push of honest appends only is read the same by both, flags nothing,
    /// and types exactly the appended entries.
    #[test]
    fn op_audit_is_never_more_lenient_than_the_diff_audit(
        appends in proptest::collection::vec(0..4_u8, 0..4),
        writes in proptest::collection::vec(
            (0..KEYS.len(), 0..6_usize, any_scalar(), 0..4_u8),
            0..4,
        ),
        fresh_schedule in proptest::prelude::any::<bool>(),
        interleaved in proptest::prelude::any::<bool>(),
    ) {
        let fail = |e: DocumentError| proptest::test_runner::TestCaseError::fail(e.to_string());
        let carer = PersonId::new();
        let mut base = VisitDocument::create(VisitId::new(), &schedule(vec![carer], 0), &office())
            .map_err(fail)?;
        full_visit(&mut base, carer).map_err(fail)?;
        let mut phone = base.fork();
        // Another phone's entry the pushing phone has not seen, on the server before the push:
        // the push's entries may then land before it, and the read after is no longer the read
        // before plus them.
        if interleaved {
            let mut other = base.fork();
            honest_append(&mut other, carer, 0).map_err(fail)?;
            base.merge(&mut other).map_err(fail)?;
        }
        let before = base.heads();
        let read_before = base.read().map_err(fail)?;
        for kind in &appends {
            honest_append(&mut phone, carer, *kind).map_err(fail)?;
        }
        if fresh_schedule {
            let mut s = phone.read().map_err(fail)?.schedule;
            s.planned_start += 60_000;
            s.carers.push(PersonId::new());
            phone.update_schedule(&s).map_err(fail)?;
        }
        for (key, target, value, how) in &writes {
            let obj = match target {
                0 => ROOT,
                1 => phone.section(Section::Schedule).ok().unwrap_or(ROOT),
                n => {
                    let section = Section::LISTS[(n - 2) % 4];
                    match phone.section(section) {
                        Ok(list) => match phone.doc.get(&list, 0) {
                            Ok(Some((automerge::Value::Object(_), entry))) if how % 2 == 0 => entry,
                            _ => list,
                        },
                        Err(_) => ROOT,
                    }
                }
            };
            let key = KEYS[*key];
            let _ = match (phone.doc.object_type(&obj), how) {
                (Ok(ObjType::Map), 0) => phone.doc.delete(&obj, key),
                (Ok(ObjType::Map), 1) => phone.doc.put_object(&obj, key, ObjType::Map).map(|_| ()),
                (Ok(ObjType::Map), _) => phone.doc.put(&obj, key, value.clone()),
                (Ok(_), 0) => phone.doc.delete(&obj, 0),
                (Ok(_), 1) => phone.doc.insert_object(&obj, 0, ObjType::Map).map(|_| ()),
                (Ok(_), _) => phone.doc.put(&obj, 0, value.clone()),
                (Err(e), _) => Err(e),
            };
            phone.doc.commit();
        }
        let mut copy = base.fork();
        copy.merge(&mut phone).map_err(fail)?;
        let (diff_touched, diff_violations) = audit_by_diff(&mut copy, &before);
        let audit = copy.audit_since(&before);
        // The server's path: new entries looked for after the ones the read before held.
        let changes = copy.doc.get_changes(&before);
        let by_tail = copy.audit_changes(&before, &changes, Some(&read_before));
        match (&audit, &by_tail) {
            (Ok(whole), Ok(tail)) => {
                proptest::prop_assert_eq!(&whole.touched, &tail.touched);
                proptest::prop_assert_eq!(whole.violations.is_empty(), tail.violations.is_empty());
                proptest::prop_assert_eq!(whole.appended_only, tail.appended_only);
                if whole.violations.is_empty() {
                    proptest::prop_assert_eq!(&whole.new_events, &tail.new_events);
                    proptest::prop_assert_eq!(&whole.new_notes, &tail.new_notes);
                    proptest::prop_assert_eq!(&whole.new_task_outcomes, &tail.new_task_outcomes);
                    proptest::prop_assert_eq!(&whole.new_amendments, &tail.new_amendments);
                }
            }
            (Err(_), Err(_)) => {}
            _ => proptest::prop_assert!(false, "whole {:?} vs tail {:?}", audit.as_ref().err(), by_tail.as_ref().err()),
        }
        let audit = match audit {
            Ok(audit) => audit,
            // A malformed new entry is refused outright: stricter than any violation.
            Err(DocumentError::Malformed(_)) => return Ok(()),
            Err(e) => return Err(fail(e)),
        };
        proptest::prop_assert!(
            audit.touched.is_superset(&diff_touched),
            "op audit touched {:?}, diff audit {:?}", audit.touched, diff_touched
        );
        proptest::prop_assert!(
            diff_violations.is_empty() || !audit.violations.is_empty(),
            "the diff audit flags {diff_violations:?}; the op audit flags nothing"
        );
        // The read after, from the read before and the audit, is the document's whole read.
        if let (Ok(whole), Ok(derived)) = (copy.read(), copy.read_after(&read_before, &audit)) {
            proptest::prop_assert_eq!(derived, whole, "appended only: {}", audit.appended_only);
        }
        if writes.is_empty() && !interleaved && !fresh_schedule {
            proptest::prop_assert!(audit.appended_only);
        }
        if writes.is_empty() {
            let mut sections: BTreeSet<Section> =
                appends.iter().map(|k| Section::LISTS[usize::from(*k)]).collect();
            if fresh_schedule {
                sections.insert(Section::Schedule);
            }
            proptest::prop_assert_eq!(&audit.touched, &diff_touched);
            proptest::prop_assert_eq!(&audit.touched, &sections);
            proptest::prop_assert!(audit.violations.is_empty(), "{:?}", audit.violations);
            let typed = audit.new_events.len()
                + audit.new_notes.len()
                + audit.new_task_outcomes.len()
                + audit.new_amendments.len();
            proptest::prop_assert_eq!(typed, appends.len());
        }
    }
}
