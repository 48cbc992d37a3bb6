//! Shared pieces of the fuzz targets: a real server fixture (embedded SQLite store, visit service)
//! with a visit document the office created, and the phone's side of a sync: a replica of that
//! document, a byte-driven program of edits on it, and the sync message the core would send.
//!
//! The edit program is the structured mutation strategy of the commit-path target: libFuzzer's
//! byte mutations of Automerge change chunks mostly break their checksums, so besides raw bytes
//! the target reads its input as a list of edits (real appends through `VisitDocument`, and raw
//! Automerge puts, inserts, deletes and text splices anywhere in the document), commits them on
//! the phone's replica and sends the resulting valid changes through the server's real path.

use automerge::sync::{Message, State as SyncState, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ChangeHash, ObjId, ObjType, Prop, ReadDoc, ScalarValue, ROOT};
use caresync_core::domain::*;
use caresync_core::sync_client::primed;
use caresync_core::visit_document::{
    Amendment, ChangeLabel, ClockEvent, Note, Schedule, Task, TaskOutcome, VisitDocument,
};
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::{Chunk, Person, Principal, ServerStore, VisitCommit, VisitRow};
use std::sync::Arc;

/// A fixed "now" so runs are reproducible.
pub const NOW: Millis = 1_795_000_000_000;

/// Fixed ids: the same input means the same thing on every run.
fn id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | n)
}

/// The people and the office-made visit every input is judged against.
pub struct World {
    pub carer: PersonId,
    pub other_carer: PersonId,
    pub office: PersonId,
    pub device: DeviceId,
    pub other_device: DeviceId,
    pub task: TaskId,
    pub schedule: Schedule,
    /// The visit as the office created it (one change), saved.
    pub created: Vec<u8>,
    /// The office's later reassignment of the visit to `other_carer`, saved after `created`.
    pub reassignment: Vec<u8>,
}

impl World {
    pub fn new() -> Self {
        let carer = PersonId(id(1));
        let other_carer = PersonId(id(2));
        let office = PersonId(id(3));
        let task = TaskId(id(4));
        let schedule = Schedule {
            client_id: ClientId(id(5)),
            contract_id: ContractId(id(6)),
            carers: vec![carer],
            planned_start: NOW + HOUR_MS,
            planned_end: NOW + HOUR_MS + 30 * MINUTE_MS,
            tasks: vec![Task {
                id: task,
                title: "Medication prompt".into(),
            }],
            status: VisitStatus::Scheduled,
            cancel_reason: None,
            chargeable: None,
        };
        let office_actor = ActorId::from(&[0x0f_u8; 16][..]);
        let label = |what: &str| ChangeLabel {
            author_id: office,
            at: NOW - DAY_MS,
            what: what.into(),
        };
        let mut doc = VisitDocument::create_by(VisitId(id(7)), &schedule, &office_actor, &label("created"))
            .expect("the fixture visit is valid");
        let created = doc.save();
        let before = doc.heads();
        let mut moved = schedule.clone();
        moved.carers = vec![other_carer];
        doc.update_schedule_by(&moved, &label("reassigned"))
            .expect("the fixture reassignment is valid");
        let reassignment = doc.automerge().save_after(&before);
        Self {
            carer,
            other_carer,
            office,
            device: DeviceId(id(8)),
            other_device: DeviceId(id(9)),
            task,
            schedule,
            created,
            reassignment,
        }
    }

    /// The carer's phone's replica: the visit as it was when the phone last synced (before any
    /// reassignment), written by the phone's own actor.
    pub fn phone_replica(&self) -> VisitDocument {
        VisitDocument::load(&self.created)
            .expect("the fixture visit loads")
            .with_actor(&ActorId::from(&[0xca_u8; 16][..]))
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// The message the core's sync client sends for a visit it holds: primed with the heads it
/// shared with the server, carrying every change made since.
pub fn phone_message(phone: &mut VisitDocument, shared: Vec<ChangeHash>) -> Option<Vec<u8>> {
    let mut state = SyncState::new();
    state.shared_heads = shared;
    let mut state = primed(state);
    phone
        .automerge()
        .sync()
        .generate_sync_message(&mut state)
        .map(Message::encode)
}

/// The same primed message with `changes` replaced by raw bytes (one chunk).
pub fn message_with_raw_changes(phone: &mut VisitDocument, raw: &[u8]) -> Vec<u8> {
    let shared = phone.heads();
    let mut state = SyncState::new();
    state.shared_heads = shared.clone();
    let mut state = primed(state);
    let mut message = phone
        .automerge()
        .sync()
        .generate_sync_message(&mut state)
        .unwrap_or(Message {
            heads: shared,
            need: vec![],
            have: vec![],
            changes: Vec::<Vec<u8>>::new().into(),
            flags: None,
            version: automerge::sync::MessageVersion::V2,
        });
    message.changes = vec![raw.to_vec()].into();
    message.encode()
}

/// Reads the fuzzer's bytes as small numbers and strings; runs dry as zeros.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn pick<'t, T>(&mut self, from: &'t [T]) -> &'t T {
        &from[self.byte() as usize % from.len()]
    }
    pub fn int(&mut self) -> i64 {
        let mut b = [0u8; 8];
        for x in b.iter_mut() {
            *x = self.byte();
        }
        i64::from_le_bytes(b)
    }
    /// A time near the visit, or anywhere at all.
    pub fn time(&mut self) -> Millis {
        match self.byte() % 4 {
            0 => self.int(),
            k => NOW + HOUR_MS + (self.byte() as i64 - 128) * MINUTE_MS * k as i64,
        }
    }
    pub fn text(&mut self) -> String {
        let len = self.byte() as usize % 24;
        let take = len.min(self.0.len());
        let (head, rest) = self.0.split_at(take);
        self.0 = rest;
        String::from_utf8_lossy(head).into_owned()
    }
}

/// Field names of the document and its entries, for raw writes to hit what the audit reads.
const KEYS: &[&str] = &[
    "id",
    "kind",
    "carer_id",
    "device_id",
    "device_time",
    "clock_offset_ms",
    "offset_measured_at",
    "method",
    "reason",
    "location",
    "lat",
    "lon",
    "accuracy_m",
    "tag_id",
    "author_id",
    "author_role",
    "written_at",
    "category",
    "text",
    "task_id",
    "result",
    "note",
    "recorded_at",
    "time",
    "corrected_time",
    "comment",
    "schema_version",
    "visit_id",
    "schedule",
    "events",
    "notes",
    "task_outcomes",
    "amendments",
    "carers",
    "planned_start",
    "planned_end",
    "status",
    "tasks",
    "client_id",
    "contract_id",
    "cancel_reason",
    "chargeable",
    "unknown",
];

/// Wire values of the domain's enums.
const WORDS: &[&str] = &[
    "clock_in",
    "clock_out",
    "app",
    "gps",
    "qr",
    "nfc",
    "manual",
    "carer",
    "supervisor",
    "office",
    "general",
    "wellbeing",
    "medication",
    "concern",
    "done",
    "not_done",
    "refused",
    "scheduled",
    "cancelled",
    "clock_in_time",
    "",
    "forgot_phone",
];

/// One byte-driven edit program on the phone's replica. Errors from Automerge (a bad index, a
/// wrong object type) skip that edit; the program then goes on.
pub fn run_program(world: &World, phone: &mut VisitDocument, input: &mut Bytes) {
    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        let op = input.byte() % 12;
        let _ = match op {
            0 => append_event(world, phone, input),
            1 => append_note(world, phone, input),
            2 => {
                let outcome = TaskOutcome {
                    id: OutcomeId(id(0x100 + input.byte() as u128)),
                    task_id: if input.byte().is_multiple_of(2) {
                        world.task
                    } else {
                        TaskId(id(0x200))
                    },
                    carer_id: *input.pick(&[world.carer, world.other_carer]),
                    result: *input.pick(TaskResult::ALL),
                    note: (input.byte().is_multiple_of(2)).then(|| input.text()),
                    recorded_at: input.time(),
                };
                phone.append_task_outcome(&outcome).map(drop)
            }
            3 => {
                let amendment = Amendment {
                    id: AmendmentId(id(0x300 + input.byte() as u128)),
                    author_id: world.carer,
                    author_role: *input.pick(Role::ALL),
                    carer_id: world.carer,
                    time: *input.pick(AmendedTime::ALL),
                    corrected_time: input.time(),
                    reason: *input.pick(ReasonCode::ALL),
                    comment: None,
                    written_at: input.time(),
                };
                phone.append_amendment(&amendment).map(drop)
            }
            4 => {
                let mut schedule = world.schedule.clone();
                match input.byte() % 3 {
                    0 => schedule.planned_end = input.time(),
                    1 => schedule.carers.push(world.other_carer),
                    _ => schedule.status = VisitStatus::Cancelled,
                }
                phone.update_schedule(&schedule).map(drop)
            }
            5..=10 => {
                raw_edit(world, phone.automerge(), op, input);
                Ok(())
            }
            _ => {
                phone.automerge().commit();
                Ok(())
            }
        };
    }
    phone.automerge().commit();
}

fn append_event(
    world: &World,
    phone: &mut VisitDocument,
    input: &mut Bytes,
) -> Result<(), caresync_core::visit_document::DocumentError> {
    let flags = input.byte();
    let event = ClockEvent {
        id: EventId(id(0x400 + input.byte() as u128)),
        kind: *input.pick(ClockKind::ALL),
        carer_id: if flags & 1 == 0 {
            world.carer
        } else {
            world.other_carer
        },
        device_id: if flags & 2 == 0 {
            world.device
        } else {
            world.other_device
        },
        device_time: input.time(),
        clock_offset_ms: (flags & 4 == 0).then(|| input.int() >> (input.byte() % 64)),
        offset_measured_at: (flags & 8 == 0).then(|| input.time()),
        method: *input.pick(ClockMethod::ALL),
        reason: (flags & 16 == 0).then(|| *input.pick(ReasonCode::ALL)),
        location: (flags & 32 == 0).then(|| Location {
            lat: f64::from(input.byte() as i8) * 1.7,
            lon: f64::from(input.byte() as i8) * 1.7,
            accuracy_m: f64::from(input.byte()),
        }),
        tag_id: (flags & 64 == 0).then(|| input.text()),
    };
    phone.append_event(&event).map(drop)
}

fn append_note(
    world: &World,
    phone: &mut VisitDocument,
    input: &mut Bytes,
) -> Result<(), caresync_core::visit_document::DocumentError> {
    let flags = input.byte();
    let mut text = input.text();
    if flags & 1 == 1 {
        // Around the length limit: MAX_NOTE_CHARS - 1 ..= MAX_NOTE_CHARS + 1 characters.
        let target = MAX_NOTE_CHARS - 1 + (flags as usize >> 1) % 3;
        text = "é".repeat(target);
    }
    let note = Note {
        id: NoteId(id(0x500 + input.byte() as u128)),
        author_id: if flags & 2 == 0 {
            world.carer
        } else {
            world.other_carer
        },
        author_role: *input.pick(Role::ALL),
        written_at: input.time(),
        category: *input.pick(NoteCategory::ALL),
        text,
    };
    phone.append_note(&note).map(drop)
}

/// An object of the document reached by walking a few props from the root.
fn some_object(doc: &AutoCommit, input: &mut Bytes) -> ObjId {
    let mut obj = ROOT;
    for _ in 0..(input.byte() % 4) {
        let next = match doc.object_type(&obj) {
            Ok(ObjType::Map) | Ok(ObjType::Table) => {
                let key = *input.pick(KEYS);
                doc.get(&obj, key).ok().flatten()
            }
            // A text object holds characters, never objects; and automerge 0.12 panics on `get`
            // of a character that carries an increment (docs/security.md), which the simulated
            // phone can write. The server never calls `get` on text.
            Ok(ObjType::Text) => None,
            Ok(ObjType::List) => {
                let len = doc.length(&obj);
                if len == 0 {
                    None
                } else {
                    doc.get(&obj, input.byte() as usize % len).ok().flatten()
                }
            }
            Err(_) => None,
        };
        match next {
            Some((automerge::Value::Object(_), child)) => obj = child,
            _ => break,
        }
    }
    obj
}

fn scalar(world: &World, input: &mut Bytes) -> ScalarValue {
    match input.byte() % 12 {
        0 => ScalarValue::Str(input.pick(WORDS).to_string().into()),
        1 => ScalarValue::Str(world.carer.to_string().into()),
        2 => ScalarValue::Str(world.device.to_string().into()),
        3 => ScalarValue::Str(input.text().into()),
        4 => ScalarValue::Int(input.int()),
        5 => ScalarValue::Uint(input.int() as u64),
        6 => ScalarValue::F64(f64::from_bits(input.int() as u64)),
        7 => ScalarValue::Boolean(input.byte().is_multiple_of(2)),
        8 => ScalarValue::Null,
        9 => ScalarValue::Timestamp(input.time()),
        10 => ScalarValue::counter(input.int()),
        _ => ScalarValue::Bytes(input.text().into_bytes()),
    }
}

fn raw_edit(world: &World, doc: &mut AutoCommit, op: u8, input: &mut Bytes) {
    let obj = some_object(doc, input);
    let kind_of_obj = doc.object_type(&obj);
    let is_map = matches!(kind_of_obj, Ok(ObjType::Map) | Ok(ObjType::Table));
    let is_text = matches!(kind_of_obj, Ok(ObjType::Text));
    let len = doc.length(&obj);
    let index = if len == 0 {
        0
    } else {
        input.byte() as usize % (len + 1)
    };
    let key = *input.pick(KEYS);
    let kind = *input.pick(&[ObjType::Map, ObjType::List, ObjType::Text]);
    let value = scalar(world, input);
    let _ = match (op, is_map) {
        (5, true) => doc.put(&obj, key, value),
        // automerge 0.12 panics on a local put by index into a text object whose character
        // there is not a plain insertion ("cant convert op into a value"; docs/security.md).
        // caresync never writes text that way, and a hostile phone's changes reach the server
        // as bytes, not as local calls, so the harness replaces the character instead.
        (5, false) if is_text => {
            let text = match &value {
                ScalarValue::Str(s) => s.to_string(),
                _ => "x".to_string(),
            };
            doc.splice_text(&obj, index.min(len.saturating_sub(1)), 1, &text)
        }
        (5, false) => doc.put(&obj, index.min(len.saturating_sub(1)), value),
        (6, true) => doc.put_object(&obj, key, kind).map(drop),
        (6, false) => doc.insert_object(&obj, index, kind).map(|entry| {
            // A plausible-looking entry: a few fields under real names.
            for _ in 0..(input.byte() % 8) {
                let (k, v) = (*input.pick(KEYS), scalar(world, input));
                if kind == ObjType::Map {
                    let _ = doc.put(&entry, k, v);
                }
            }
        }),
        (7, true) => doc.delete(&obj, key),
        (7, false) if len > 0 => doc.delete(&obj, index.min(len - 1)),
        (8, false) => doc.insert(&obj, index, value),
        (9, _) => {
            let text = input.text();
            doc.splice_text(&obj, index, (input.byte() % 3) as isize, &text)
        }
        (10, true) => doc.increment(&obj, key, input.int() >> 40),
        (10, false) if len > 0 => doc.increment(&obj, Prop::Seq(index.min(len - 1)), 1),
        _ => Ok(()),
    };
}

/// A real server's storage and visit service in a temporary directory (on tmpfs when there is
/// one), with the world's people, and fresh copies of the world's visit to judge inputs against.
pub struct Server {
    _dir: tempfile::TempDir,
    pub store: Arc<dyn ServerStore>,
    pub visits: caresync_server::services::visits::VisitService,
    pub carer: Principal,
    next_visit: u128,
}

fn chunk_of(bytes: &[u8]) -> Chunk {
    Chunk {
        hash: format!("{:x}", fxhash(bytes)),
        bytes: bytes.to_vec(),
    }
}

/// The store only needs chunk hashes to be distinct per distinct chunk; a cheap one will do.
fn fxhash(bytes: &[u8]) -> u128 {
    let mut h: u128 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ *b as u128).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h
}

impl Server {
    pub fn new(world: &World) -> Self {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let store: Arc<dyn ServerStore> =
            Arc::new(SqliteStore::open(&dir.path().join("server.db")).expect("the store opens"));
        let person = |id: PersonId, role: Role| Person {
            id,
            name: format!("{role}"),
            role,
            team_id: None,
            active: true,
        };
        let carer = person(world.carer, Role::Carer);
        store.create_person(&carer).expect("carer");
        store
            .create_person(&person(world.other_carer, Role::Carer))
            .expect("other carer");
        store
            .create_person(&person(world.office, Role::Office))
            .expect("office");
        Self {
            _dir: dir,
            visits: caresync_server::services::visits::VisitService::new(store.clone(), 16),
            store,
            carer: Principal {
                person: carer,
                device_id: Some(world.device),
            },
            next_visit: 0,
        }
    }

    /// A new visit holding the world's document: as created, or created and then reassigned
    /// away from the carer (whose offline changes the server then judges by their history).
    pub fn new_visit(&mut self, world: &World, reassigned: bool) -> VisitId {
        self.next_visit += 1;
        let visit = VisitId(uuid::Uuid::from_u128(
            0x0f00_0000_0000_4000_8000_0000_0000_0000 | self.next_visit,
        ));
        let mut row = VisitRow {
            visit_id: visit,
            client_id: world.schedule.client_id,
            contract_id: world.schedule.contract_id,
            carers: world.schedule.carers.clone(),
            planned_start: world.schedule.planned_start,
            planned_end: world.schedule.planned_end,
            status: world.schedule.status,
            chargeable: None,
            heads: Default::default(),
            updated_at: NOW,
        };
        let commit = |row: &VisitRow, bytes: &[u8]| VisitCommit {
            visit: row.clone(),
            chunk: Some(chunk_of(bytes)),
            new_events: vec![],
            new_amendments: vec![],
            sync_state: None,
        };
        self.store
            .commit_visit(&commit(&row, &world.created))
            .expect("commit the visit");
        if reassigned {
            row.carers = vec![world.other_carer];
            self.store
                .commit_visit(&commit(&row, &world.reassignment))
                .expect("commit the reassignment");
        }
        visit
    }
}
