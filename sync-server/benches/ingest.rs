//! Ingesting a batch of phone sync messages: the server's half of a sync, without HTTP.
//!
//! Each message is what a phone sends after a visit: a clock-in, a clock-out and a note appended
//! to a document it shares with the server, as protocol 2's raw changes (`INGEST_PROTOCOL=2`, the
//! default) or in one primed protocol 1 sync message (`INGEST_PROTOCOL=1`), as the core's sync
//! client sends them. The server decodes it, applies it to a copy, checks every change against the write
//! rules, and commits the new chunk, the projected rows and the device's sync state in one SQLite
//! transaction, as in production.
//!
//! Run: `cargo bench -p caresync-server --bench ingest`
//!
//! Instructions per clock event, repeatable on a noisy machine: with `INGEST_COUNT=N` the bench
//! skips Criterion, prepares N messages (2 clock events each) and ingests them in
//! `ingest_counted`, the only function callgrind counts:
//!
//!     INGEST_COUNT=200 valgrind --tool=callgrind --toggle-collect='*ingest_counted*' \
//!         --toggle-collect='*commit_group*' target/release/deps/ingest-<hash>
//!
//! (`commit_group` is the SQLite writer thread's share, which runs outside the calling thread
//! since group commit.) The writer also commits the N visits the office creates to prepare the
//! messages, so run once more with `INGEST_SETUP_ONLY=1` (the same preparation, nothing
//! ingested) and divide the difference of the two totals by 2N.

use automerge::sync::{Message, State as SyncState, SyncDoc};
use automerge::ActorId;
use caresync_core::domain::*;
use caresync_core::sync_client::primed;
use caresync_core::visit_document::{ClockEvent, Note, Schedule, Task, VisitDocument};
use caresync_server::services::visits::{Ingested, Pushed, VisitService};
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;

const NOW: Millis = 1_795_000_000_000;

struct Server {
    _dir: tempfile::TempDir,
    store: Arc<dyn ServerStore>,
    visits: VisitService,
    carer: Principal,
    office: PersonId,
    /// The phones' protocol: `INGEST_PROTOCOL` (1 or 2; 2 unless told).
    protocol: u32,
}

fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ServerStore> =
        Arc::new(SqliteStore::open(&dir.path().join("server.db")).expect("open"));
    let person = Person {
        id: PersonId::new(),
        name: "Ann".into(),
        role: Role::Carer,
        team_id: None,
        active: true,
    };
    store.create_person(&person).expect("person");
    Server {
        _dir: dir,
        // The production cache capacity (http::AppState).
        visits: VisitService::new(store.clone(), 10_000),
        store,
        carer: Principal {
            person,
            device_id: Some(DeviceId::new()),
        },
        office: PersonId::new(),
        protocol: std::env::var("INGEST_PROTOCOL")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(2),
    }
}

/// `n` new visits the office created, and for each the message the carer's phone sends after it.
fn batch(s: &Server, n: usize) -> Vec<(VisitId, Sent)> {
    let carer = s.carer.person.id;
    let device = s.carer.device_id.expect("device");
    let phone = ActorId::random();
    (0..n)
        .map(|k| {
            let visit = VisitId::new();
            let start = NOW + k as i64 * HOUR_MS;
            let schedule = Schedule {
                client_id: ClientId::new(),
                contract_id: ContractId::new(),
                carers: vec![carer],
                planned_start: start,
                planned_end: start + 30 * MINUTE_MS,
                tasks: vec![Task {
                    id: TaskId::new(),
                    title: "Medication prompt".into(),
                }],
                status: VisitStatus::Scheduled,
                cancel_reason: None,
                chargeable: None,
            };
            s.visits.create(visit, &schedule, s.office, NOW).expect("create");
            // The phone holds what it received on an earlier sync.
            let bytes: Vec<u8> = s
                .store
                .visit_chunks(visit)
                .expect("chunks")
                .into_iter()
                .flat_map(|c| c.bytes)
                .collect();
            let mut doc = VisitDocument::load(&bytes).expect("load").with_actor(&phone);
            let shared = doc.heads();
            for (kind, at) in [
                (ClockKind::ClockIn, start + 120_000),
                (ClockKind::ClockOut, start + 1_900_000),
            ] {
                doc.append_event(&ClockEvent {
                    id: EventId::new(),
                    kind,
                    carer_id: carer,
                    device_id: device,
                    device_time: at,
                    clock_offset_ms: Some(350),
                    offset_measured_at: Some(at - HOUR_MS),
                    method: ClockMethod::Nfc,
                    reason: None,
                    location: Some(Location {
                        lat: 51.5,
                        lon: -0.12,
                        accuracy_m: 9.0,
                    }),
                    tag_id: Some("NFC-1001".into()),
                })
                .expect("event");
            }
            doc.append_note(&Note {
                id: NoteId::new(),
                author_id: carer,
                author_role: Role::Carer,
                written_at: start + 1_800_000,
                category: NoteCategory::General,
                text: "Lunch eaten, medication taken, in good spirits.".into(),
            })
            .expect("note");
            if s.protocol == 2 {
                let changes = doc
                    .automerge()
                    .get_changes(&shared)
                    .iter()
                    .map(|c| c.raw_bytes().to_vec())
                    .collect();
                return (visit, Sent::Changes(changes));
            }
            let mut state = SyncState::new();
            state.shared_heads = shared;
            let mut state = primed(state);
            let message: Message = doc
                .automerge()
                .sync()
                .generate_sync_message(&mut state)
                .expect("message");
            (visit, Sent::Message(message.encode()))
        })
        .collect()
}

/// What a phone sends for one visit: a protocol 1 sync message or protocol 2's raw changes.
#[derive(Clone)]
enum Sent {
    Message(Vec<u8>),
    Changes(Vec<Vec<u8>>),
}

fn ingest_all(s: &Server, batch: &[(VisitId, Sent)]) -> usize {
    batch
        .iter()
        .map(|(visit, sent)| match sent {
            Sent::Message(message) => {
                match s.visits.ingest(&s.carer, *visit, message, NOW).expect("ingest") {
                    Ingested::Accepted { new_changes, .. } => new_changes,
                    Ingested::Refused(e) => panic!("refused: {e:?}"),
                }
            }
            Sent::Changes(changes) => {
                match s
                    .visits
                    .ingest_changes(&s.carer, *visit, changes, None, NOW)
                    .expect("ingest")
                {
                    Pushed::Accepted { new_changes, .. } => new_changes,
                    Pushed::Refused(e) => panic!("refused: {e:?}"),
                }
            }
        })
        .sum()
}

/// The part of `INGEST_COUNT` mode that callgrind counts (see the module comment).
#[inline(never)]
fn ingest_counted(s: &Server, batch: &[(VisitId, Sent)]) -> usize {
    ingest_all(s, batch)
}

fn benches(c: &mut Criterion) {
    if let Some(n) = std::env::var("INGEST_COUNT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let s = server();
        // Warm what a running server has warm (prepared statements, the writer).
        let warm = batch(&s, 3);
        ingest_all(&s, &warm);
        let messages = batch(&s, n);
        if std::env::var_os("INGEST_SETUP_ONLY").is_some() {
            println!("prepared {n} messages, ingested none");
            return;
        }
        let changes = ingest_counted(&s, &messages);
        assert_eq!(changes, 3 * n, "three changes per visit");
        println!("ingested {n} messages, {} clock events", 2 * n);
        return;
    }
    let s = server();
    // Sanity: a batch is accepted whole, and a replay adds nothing.
    let check = batch(&s, 3);
    assert_eq!(ingest_all(&s, &check), 3 * 3, "three changes per visit");
    assert_eq!(ingest_all(&s, &check), 0, "a replay carries nothing new");
    assert_eq!(s.store.count_events().expect("count"), 6);

    let mut g = c.benchmark_group("ingest");
    for n in [1usize, 10, 50] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("new_visit_messages/{n}"), |b| {
            b.iter_batched(
                || batch(&s, n),
                |batch| ingest_all(&s, &batch),
                BatchSize::PerIteration,
            )
        });
    }
    // Eight phones' syncs at once, as the server's blocking pool runs them: what group commit
    // shares (one transaction and fsync for the commits that arrive together).
    g.throughput(Throughput::Elements(48));
    g.bench_function("concurrent_messages/8x6", |b| {
        b.iter_batched(
            || batch(&s, 48),
            |batch| {
                std::thread::scope(|scope| {
                    let workers: Vec<_> = batch
                        .chunks(6)
                        .map(|slice| scope.spawn(|| ingest_all(&s, slice)))
                        .collect();
                    workers
                        .into_iter()
                        .map(|w| w.join().expect("worker"))
                        .sum::<usize>()
                })
            },
            BatchSize::PerIteration,
        )
    });
    let replay = batch(&s, 10);
    ingest_all(&s, &replay);
    g.throughput(Throughput::Elements(10));
    g.bench_function("replayed_messages/10", |b| b.iter(|| ingest_all(&s, &replay)));
    g.finish();
}

criterion_group!(ingest_benches, benches);
criterion_main!(ingest_benches);
