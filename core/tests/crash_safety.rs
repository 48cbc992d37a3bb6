//! A phone that dies mid-write loses nothing it acknowledged (brief, section 7).
//!
//! The parent test re-executes this test binary as a child that imports visits and clocks in and
//! out of them in a tight loop, printing one `ACK` line for each operation only after the store
//! returned success. The parent kills the child with SIGKILL at a random moment, reopens the file,
//! and checks that every acknowledged operation is there, that SQLite's integrity check passes and
//! that the documents and the rows derived from them agree. Several rounds run against the same
//! file, so each child also starts from a file the previous one left mid-write.

use caresync_core::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set (to the database path) only in the child process.
const CHILD_ENV: &str = "CARESYNC_CRASH_CHILD_DB";
/// Set to reproduce a run: the parent prints the seed it used.
const SEED_ENV: &str = "CARESYNC_CRASH_SEED";
const CHILD_TEST: &str = "child_clocks_visits_until_killed";
const ROUNDS: usize = 7;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What the child acknowledged, one per line on stdout: `ACK <kind> <visit> <entry id>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ack {
    Visit(VisitId),
    Event(VisitId, EventId),
    Note(VisitId, NoteId),
    Outcome(VisitId, OutcomeId),
}

impl Ack {
    fn parse(line: &str) -> Option<Ack> {
        let mut words = line.strip_prefix("ACK ")?.split(' ');
        let kind = words.next()?;
        let visit: VisitId = words.next()?.parse().ok()?;
        let id = words.next();
        Some(match kind {
            "visit" => Ack::Visit(visit),
            "event" => Ack::Event(visit, id?.parse().ok()?),
            "note" => Ack::Note(visit, id?.parse().ok()?),
            "outcome" => Ack::Outcome(visit, id?.parse().ok()?),
            _ => return None,
        })
    }
}

/// The child: runs only when the parent set `CHILD_ENV`; otherwise an instant pass.
#[test]
fn child_clocks_visits_until_killed() -> TestResult {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return Ok(());
    };
    let store = PhoneStore::open(Path::new(&path))?;
    let me = store.identity()?.ok_or("the parent enrols the phone")?;
    let mut out = std::io::stdout().lock();
    let mut ack = |line: String| -> std::io::Result<()> {
        writeln!(out, "ACK {line}")?;
        out.flush()
    };
    // Runs until killed; the cap only guards against a parent that died without killing us.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let now = store.device_now();
        let schedule = Schedule {
            tasks: vec![test_kit::task("Lunch")],
            ..test_kit::schedule(vec![me.carer_id], now)
        };
        let task = schedule.tasks[0].id;
        let mut doc = VisitDocument::create(VisitId::new(), &schedule, &automerge::ActorId::random())?;
        let visit = store.import_visit(&doc.save())?;
        ack(format!("visit {visit} -"))?;
        let event = store.clock_in(visit, &ClockRequest::app())?;
        ack(format!("event {visit} {}", event.id))?;
        let note = store.add_note(visit, NoteCategory::Nutrition, "Ate most of the soup.")?;
        ack(format!("note {visit} {}", note.id))?;
        let outcome = store.record_task_outcome(visit, task, TaskResult::Done, None)?;
        ack(format!("outcome {visit} {}", outcome.id))?;
        let event = store.clock_out(visit, &ClockRequest::manual(ReasonCode::NoSignalAtDoor))?;
        ack(format!("event {visit} {}", event.id))?;
    }
    Err("the child was never killed".into())
}

/// xorshift64*: enough randomness for kill timings without a new dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
            });
        eprintln!("crash_safety seed: {seed} (set {SEED_ENV} to repeat)");
        Self(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

struct Round {
    acks: Vec<Ack>,
    /// Whether the child was still working when the kill landed (it always should be).
    killed_while_running: bool,
    /// What the child wrote to stderr, to explain a child that failed instead of being killed.
    child_stderr: String,
}

/// Start a child, let it work for a random while after its first acknowledgement, SIGKILL it.
fn run_and_kill(db: &Path, rng: &mut Rng) -> Result<Round, Box<dyn std::error::Error>> {
    let stderr_path = db.with_extension("child-stderr");
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, db)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    // Read on a thread so a full pipe never stalls the child, and so the parent sees the first ack.
    let (first_tx, first_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = Ack::parse(&line) {
                if acks.is_empty() {
                    let _ = first_tx.send(());
                }
                acks.push(ack);
            }
        }
        acks
    });
    let first = first_rx.recv_timeout(Duration::from_secs(20));
    // 0-250 ms of work: from a handful of operations to a few dozen, ending anywhere in one.
    std::thread::sleep(Duration::from_micros(rng.below(250_000)));
    let killed_while_running = child.try_wait()?.is_none();
    child.kill()?; // SIGKILL on Unix: no destructors, no SQLite cleanup.
    child.wait()?;
    let acks = reader.join().map_err(|_| "reader thread panicked")?;
    let child_stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    if first.is_err() {
        return Err(
            format!("the child acknowledged nothing within 20 s; its stderr:\n{child_stderr}").into(),
        );
    }
    Ok(Round {
        acks,
        killed_while_running,
        child_stderr,
    })
}

/// Everything acknowledged so far is in the reopened store, and the file is sound.
fn check_after_crash(db: &Path, acked: &BTreeSet<Ack>) -> TestResult {
    {
        let conn = rusqlite::Connection::open(db)?;
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(integrity, "ok");
    }
    let store = PhoneStore::open(db)?;
    assert_eq!(store.verify_derived_rows()?, Vec::<String>::new());
    // verify_derived_rows looks at event rows only; the visit rows must agree with their documents too.
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt =
        conn.prepare("SELECT visit_id, planned_start, planned_end, status, my_state FROM visits")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    for row in rows {
        let (id, start, end, status, my_state) = row?;
        let detail = store.visit(id.parse()?)?;
        let schedule = &detail.visit.schedule;
        assert_eq!(
            (start, end, status.as_str(), my_state.as_str()),
            (
                schedule.planned_start,
                schedule.planned_end,
                schedule.status.as_str(),
                detail.state.as_str()
            ),
            "visit {id}: row and document disagree"
        );
    }
    let on_phone: BTreeSet<VisitId> = store.visit_ids()?.into_iter().collect();
    for ack in acked {
        match ack {
            Ack::Visit(v) => assert!(on_phone.contains(v), "acknowledged visit {v} lost"),
            Ack::Event(v, id) => {
                let events = store.visit(*v)?.visit.events;
                assert!(events.iter().any(|e| e.id == *id), "acknowledged event {id} lost");
            }
            Ack::Note(v, id) => {
                let notes = store.visit(*v)?.visit.notes;
                assert!(notes.iter().any(|n| n.id == *id), "acknowledged note {id} lost");
            }
            Ack::Outcome(v, id) => {
                let outcomes = store.visit(*v)?.visit.task_outcomes;
                assert!(
                    outcomes.iter().any(|o| o.id == *id),
                    "acknowledged outcome {id} lost"
                );
            }
        }
    }
    // The derived rows hold at least every acknowledged clock event (more when a kill landed
    // between a commit and its acknowledgement).
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM clock_events", [], |r| r.get(0))?;
    let acked_events = acked.iter().filter(|a| matches!(a, Ack::Event(..))).count() as i64;
    assert!(
        rows >= acked_events,
        "{rows} event rows < {acked_events} acknowledged"
    );
    // Nothing acknowledged is reported as synced: every clocked visit is still in the outbox.
    let outbox: BTreeSet<VisitId> = store.outbox()?.into_iter().map(|e| e.visit_id).collect();
    for ack in acked {
        if let Ack::Event(v, _) = ack {
            assert!(
                outbox.contains(v),
                "visit {v} has unsynced events but is not in the outbox"
            );
        }
    }
    Ok(())
}

#[test]
fn acknowledged_operations_survive_sigkill() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db: PathBuf = dir.path().join("phone.db");
    {
        let store = PhoneStore::open(&db)?;
        store.set_identity(&DeviceIdentity {
            device_id: DeviceId::new(),
            carer_id: PersonId::new(),
            server_url: "http://127.0.0.1:9".into(),
            token: "t".into(),
        })?;
    }
    let mut rng = Rng::seeded();
    let mut acked = BTreeSet::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        let Round {
            acks,
            killed_while_running,
            child_stderr,
        } = run_and_kill(&db, &mut rng)?;
        assert!(
            killed_while_running,
            "round {round}: the child exited before it was killed; its stderr:\n{child_stderr}"
        );
        assert!(!acks.is_empty(), "round {round}: nothing acknowledged");
        acked.extend(acks);
        check_after_crash(&db, &acked)?;
    }
    let visits = acked.iter().filter(|a| matches!(a, Ack::Visit(_))).count();
    eprintln!(
        "{ROUNDS} kills, {} acknowledged operations on {visits} visits, {:?}",
        acked.len(),
        started.elapsed()
    );
    // The rounds did real work, not just startup.
    assert!(acked.len() >= ROUNDS * 2);
    Ok(())
}
