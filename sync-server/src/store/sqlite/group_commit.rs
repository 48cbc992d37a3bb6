//! Group commit: one thread owns the store's only writing SQLite connection; concurrent syncs,
//! and the office's and the sweep's rarer writes, hand it their writes over a channel and wait.
//! It takes what is queued, runs every write in one transaction, commits once (one fsync under
//! `synchronous = FULL` for the whole group), and only then answers each caller. So no phone is
//! answered before its changes are on disk, and under load the cost of that fsync is shared by
//! every sync that arrived meanwhile.
//!
//! A write that fails gets its own error and the rest of its group still commits: the group's
//! transaction is rolled back and each of its writes runs again alone, in its own transaction
//! (writes are closures that can run twice). Failures are rare (a bug, a full disk), so the common
//! path pays for no savepoint: a savepoint per write made SQLite copy every page a write touched
//! to a sub-journal, 8 % of the server's time under the load generator. If the group's commit
//! itself fails, every write in it gets an error and nothing of the group is stored.

use super::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// At most this many writes share one transaction, so one group's latency stays bounded.
const MAX_GROUP: usize = 256;

/// One queued write: run inside the group's transaction, answered once the group's fate is known.
trait Pending: Send {
    /// Runs the write; false if it failed (and its transaction must be rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// `group` is the outcome of the commit of the transaction the write last ran in.
    fn answer(self: Box<Self>, group: std::result::Result<(), String>);
}

struct Write<T, F, R> {
    work: F,
    out: Option<Result<T>>,
    /// Told the write's fate, on the writer's thread.
    reply: R,
}

impl<T, F, R> Pending for Write<T, F, R>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T> + Send,
    R: FnOnce(Result<T>) + Send,
{
    /// Runs (again, after its group was rolled back) the write; the last run's result stands.
    fn run(&mut self, conn: &Connection) -> bool {
        let work = &mut self.work;
        // A panicking write must not take the writer (and every later sync) down with it.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Conflict("a write panicked".into())));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn answer(self: Box<Self>, group: std::result::Result<(), String>) {
        let out = match (self.out, group) {
            // Its own failure, whatever became of the others.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Err(cause)) | (None, Err(cause)) => Err(StoreError::Conflict(format!(
                "the shared commit failed, nothing of this write is stored: {cause}"
            ))),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(StoreError::Conflict("a write was never run".into())),
        };
        // A panicking reply must not take the writer down either.
        let reply = self.reply;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reply(out))).is_err() {
            tracing::error!("a write's reply panicked on the writer thread");
        }
    }
}

/// How many writes went through the writer, in how many transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: u64,
    pub writes: u64,
    pub groups: u64,
    /// Groups rolled back because one of their writes failed, whose writes then ran alone.
    pub retried: u64,
}

#[derive(Default)]
struct Counters {
    /// Handed to the writer so far (answered or not).
    queued: AtomicU64,
    writes: AtomicU64,
    groups: AtomicU64,
    retried: AtomicU64,
}

pub(crate) struct Writer {
    queue: Mutex<Option<Sender<Box<dyn Pending>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Self> {
        let (queue, jobs) = channel::<Box<dyn Pending>>();
        let counters = Arc::new(Counters::default());
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let counters = counters.clone();
                move || run(conn, jobs, &counters)
            })
            .map_err(|e| StoreError::Conflict(format!("could not start the writer thread: {e}")))?;
        Ok(Self {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
            counters,
        })
    }

    /// Run `work` in the next group's transaction and return its result once that group is
    /// durable (or the error that kept it from being stored). `work` runs twice when another
    /// write of its group fails (see the module's comment): it must not act outside `conn`.
    pub(crate) fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        self.submit(work, move |out| {
            // The caller may have gone (a panicked thread); nothing to tell then.
            let _ = reply.send(out);
        });
        answer
            .recv()
            .map_err(|_| StoreError::Conflict("the writer thread stopped before answering".into()))?
    }

    /// Queue `work` for the next group and return at once; `reply` is called on the writer's
    /// thread with its result once the group is durable (or with the error that kept it from
    /// being stored), or here if the writer has stopped. It must be quick: the rest of the group
    /// is answered after it. Dropped unanswered only if the thread dies mid-group.
    pub(crate) fn submit<T, F, R>(&self, work: F, reply: R)
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
        R: FnOnce(Result<T>) + Send + 'static,
    {
        let pending: Box<dyn Pending> = Box::new(Write {
            work,
            out: None,
            reply,
        });
        let pending = match self.queue.lock() {
            Ok(queue) => match queue.as_ref() {
                Some(q) => match q.send(pending) {
                    Ok(()) => {
                        self.counters.queued.fetch_add(1, Relaxed);
                        return;
                    }
                    Err(std::sync::mpsc::SendError(pending)) => pending,
                },
                None => pending,
            },
            Err(_) => pending,
        };
        pending.answer(Err("the writer thread has stopped".into()));
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            queued: self.counters.queued.load(Relaxed),
            writes: self.counters.writes.load(Relaxed),
            groups: self.counters.groups.load(Relaxed),
            retried: self.counters.retried.load(Relaxed),
        }
    }
}

impl Drop for Writer {
    /// Close the queue and wait for the thread to answer what is left and close its connection.
    fn drop(&mut self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

fn run(mut conn: Connection, jobs: Receiver<Box<dyn Pending>>, counters: &Counters) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let outcomes = commit_group(&mut conn, &mut group, counters);
        counters.groups.fetch_add(1, Relaxed);
        counters.writes.fetch_add(group.len() as u64, Relaxed);
        for (pending, outcome) in group.into_iter().zip(outcomes) {
            pending.answer(outcome);
        }
    }
}

/// The group in one transaction; if a write fails, each write again in its own. The outcome of
/// the commit each write last ran in. (Never inlined: callgrind counts the ingest bench's
/// writer-thread share by this name.)
#[inline(never)]
fn commit_group(
    conn: &mut Connection,
    group: &mut [Box<dyn Pending>],
    counters: &Counters,
) -> Vec<std::result::Result<(), String>> {
    let failed = |e: rusqlite::Error, writes: usize| {
        tracing::error!(writes, error = %e, "group commit failed");
        e.to_string()
    };
    if group.len() > 1 {
        match together(conn, group) {
            Ok(true) => return vec![Ok(()); group.len()],
            Ok(false) => {
                counters.retried.fetch_add(1, Relaxed);
            }
            Err(e) => return vec![Err(failed(e, group.len())); group.len()],
        }
    }
    group
        .iter_mut()
        .map(|pending| alone(conn, pending.as_mut()).map_err(|e| failed(e, 1)))
        .collect()
}

/// Every write in one transaction, committed if all succeed (true); rolled back at the first
/// that fails (false).
fn together(conn: &mut Connection, group: &mut [Box<dyn Pending>]) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for pending in group.iter_mut() {
        if !pending.run(&tx) {
            tx.rollback()?;
            return Ok(false);
        }
    }
    tx.commit()?;
    Ok(true)
}

/// One write in its own transaction: committed if it succeeds, rolled back if not.
fn alone(conn: &mut Connection, pending: &mut dyn Pending) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if pending.run(&tx) {
        tx.commit()
    } else {
        tx.rollback()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::SqliteStore;
    use crate::store::*;
    use caresync_core::domain::*;
    use std::sync::mpsc::channel;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn commit(visit: VisitId, device: DeviceId) -> VisitCommit {
        let carer = PersonId::new();
        VisitCommit {
            visit: VisitRow {
                visit_id: visit,
                client_id: ClientId::new(),
                contract_id: ContractId::new(),
                carers: vec![carer],
                planned_start: 1_000_000,
                planned_end: 2_000_000,
                status: VisitStatus::Scheduled,
                chargeable: None,
                heads: Default::default(),
                updated_at: 5,
            },
            chunk: Some(Chunk {
                hash: format!("hash-{visit}"),
                bytes: visit.to_string().into_bytes(),
            }),
            new_events: vec![EventRow {
                event_id: EventId::new(),
                visit_id: visit,
                carer_id: carer,
                device_id: device,
                kind: ClockKind::ClockIn,
                device_time: 1_000_000,
                clock_offset_ms: None,
                offset_measured_at: None,
                trusted_time: 1_000_000,
                received_at: 1_000_001,
                method: ClockMethod::App,
                reason: None,
                location: None,
                flags: Default::default(),
            }],
            new_amendments: vec![],
            sync_state: Some((device, Some(vec![7; 8]))),
        }
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A reply that panics on the writer's thread (a bug in what a caller does once its commit is
    /// durable) neither stops the writer nor undoes the write.
    #[test]
    fn a_panicking_reply_leaves_the_writer_running() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("server.db"))?;
        let (first, second, device) = (VisitId::new(), VisitId::new(), DeviceId::new());
        store.commit_visit_then(
            commit(first, device),
            vec![],
            None,
            Box::new(|_| panic!("a reply's bug, on purpose")),
        );
        store.commit_visit(&commit(second, device))?;
        assert!(store.visit_row(first)?.is_some(), "the first write is stored");
        assert!(store.visit_row(second)?.is_some(), "the writer went on");
        Ok(())
    }

    /// Syncs that arrive while the writer is busy are committed together in one transaction,
    /// each answered only after it; one failing write is rolled back alone; everything answered
    /// as stored is in the file when it is opened again.
    #[test]
    fn concurrent_commits_share_a_transaction_and_fail_alone() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("server.db");
        let store = Arc::new(SqliteStore::open(&path)?);

        // Hold the writer inside a group until every other write is queued behind it.
        let (started, is_started) = channel();
        let (release, released) = channel::<()>();
        let blocker = std::thread::spawn({
            let store = store.clone();
            move || {
                store.writer.write(move |_| {
                    let _ = started.send(());
                    let _ = released.recv();
                    Ok(())
                })
            }
        });
        is_started
            .recv()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;

        let device = DeviceId::new();
        let visits: Vec<VisitId> = (0..20).map(|_| VisitId::new()).collect();
        let committers: Vec<_> = visits
            .iter()
            .map(|visit| {
                let (store, c) = (store.clone(), commit(*visit, device));
                std::thread::spawn(move || store.commit_visit(&c))
            })
            .collect();
        let team = TeamId::new();
        let failing = std::thread::spawn({
            let store = store.clone();
            move || {
                store.writer.write(move |tx| {
                    tx.execute(
                        "INSERT INTO teams (team_id, name) VALUES (?1, 'Doomed')",
                        [team.to_string()],
                    )?;
                    Err::<(), _>(StoreError::Conflict("refused after writing".into()))
                })
            }
        });
        wait_until("every write is queued", || {
            store.group_commit_counts().queued == 22
        });
        assert_eq!(
            store.group_commit_counts().writes,
            0,
            "nothing answered while the writer is held"
        );
        release.send(()).map_err(|e| StoreError::Corrupt(e.to_string()))?;

        blocker.join().map_err(|_| StoreError::Poisoned)??;
        for committer in committers {
            committer.join().map_err(|_| StoreError::Poisoned)??;
        }
        let failed = failing.join().map_err(|_| StoreError::Poisoned)?;
        assert!(matches!(failed, Err(StoreError::Conflict(ref m)) if m == "refused after writing"));
        let counts = store.group_commit_counts();
        assert_eq!(counts.writes, 22);
        assert_eq!(
            counts.groups, 2,
            "the blocker alone, then the 21 queued behind it together"
        );
        assert_eq!(
            counts.retried, 1,
            "the failing write sent its group's writes to run alone"
        );

        drop(store);
        let reopened = SqliteStore::open(&path)?;
        for visit in &visits {
            assert!(reopened.visit_row(*visit)?.is_some(), "visit {visit} lost");
            assert_eq!(reopened.visit_chunks(*visit)?.len(), 1);
            assert_eq!(reopened.events_for_visit(*visit)?.len(), 1);
            assert_eq!(reopened.sync_state(device, *visit)?, Some(vec![7; 8]));
        }
        assert_eq!(reopened.count_events()?, 20);
        assert!(reopened.teams()?.is_empty(), "the failed write was rolled back");
        Ok(())
    }

    /// Writes queued together run once each in one transaction; when one of them fails, the
    /// others run again, alone, and are stored once.
    #[test]
    fn a_group_runs_each_write_once_unless_one_fails() -> Result<()> {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = Arc::new(SqliteStore::open(&dir.path().join("server.db"))?);
        for fail in [false, true] {
            let before = store.group_commit_counts();
            let (started, is_started) = channel();
            let (release, released) = channel::<()>();
            let blocker = std::thread::spawn({
                let store = store.clone();
                move || {
                    store.writer.write(move |_| {
                        let _ = started.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                }
            });
            is_started
                .recv()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let runs = Arc::new(AtomicUsize::new(0));
            let teams: Vec<TeamId> = (0..4).map(|_| TeamId::new()).collect();
            let writers: Vec<_> = teams
                .iter()
                .enumerate()
                .map(|(k, team)| {
                    let (store, runs, team) = (store.clone(), runs.clone(), *team);
                    std::thread::spawn(move || {
                        store.writer.write(move |tx| {
                            runs.fetch_add(1, SeqCst);
                            tx.execute(
                                "INSERT INTO teams (team_id, name) VALUES (?1, 'Team')",
                                [team.to_string()],
                            )?;
                            if fail && k == 1 {
                                return Err(StoreError::Conflict("refused after writing".into()));
                            }
                            Ok(())
                        })
                    })
                })
                .collect();
            wait_until("the writes are queued", || {
                store.group_commit_counts().queued == before.queued + 5
            });
            release.send(()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            blocker.join().map_err(|_| StoreError::Poisoned)??;
            let results: Vec<Result<()>> = writers
                .into_iter()
                .map(|w| w.join().map_err(|_| StoreError::Poisoned))
                .collect::<Result<_>>()?;
            let after = store.group_commit_counts();
            let stored: Vec<TeamId> = store.teams()?.iter().map(|t| t.id).collect();
            if fail {
                assert!(results[1].is_err() && results.iter().filter(|r| r.is_ok()).count() == 3);
                // Those queued up to the failing one ran in the group; all four then ran alone.
                assert!((4 + 1..=4 + 4).contains(&runs.load(SeqCst)), "{runs:?}");
                assert_eq!(after.retried, before.retried + 1);
                assert!(!stored.contains(&teams[1]), "the failed write was rolled back");
                for (k, team) in teams.iter().enumerate().filter(|(k, _)| *k != 1) {
                    assert!(stored.contains(team), "write {k} lost");
                }
            } else {
                assert!(results.iter().all(Result::is_ok));
                assert_eq!(runs.load(SeqCst), 4, "each write ran once");
                assert_eq!(after.retried, before.retried);
                assert!(teams.iter().all(|t| stored.contains(t)));
            }
        }
        Ok(())
    }

    /// A write alone in its group runs without a savepoint: when it fails, what it wrote before
    /// failing goes with the rolled-back transaction, and the next write commits as usual.
    #[test]
    fn a_write_alone_that_fails_leaves_nothing() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("server.db");
        let store = SqliteStore::open(&path)?;
        let failed = store.writer.write(|tx| {
            tx.execute(
                "INSERT INTO teams (team_id, name) VALUES (?1, 'Doomed')",
                [TeamId::new().to_string()],
            )?;
            Err::<(), _>(StoreError::Conflict("refused after writing".into()))
        });
        assert!(matches!(failed, Err(StoreError::Conflict(ref m)) if m == "refused after writing"));
        let visit = VisitId::new();
        store.commit_visit(&commit(visit, DeviceId::new()))?;
        assert_eq!(
            store.group_commit_counts().groups,
            2,
            "each write alone in its group"
        );
        drop(store);
        let reopened = SqliteStore::open(&path)?;
        assert!(reopened.teams()?.is_empty(), "the failed write was rolled back");
        assert!(reopened.visit_row(visit)?.is_some());
        Ok(())
    }

    /// A write that panics is answered with an error and the writer goes on serving.
    #[test]
    fn a_panicking_write_leaves_the_writer_running() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let store = SqliteStore::open(&dir.path().join("server.db"))?;
        let panicked = store
            .writer
            .write(|_| -> Result<()> { panic!("a bug in a write") });
        assert!(matches!(panicked, Err(StoreError::Conflict(_))));
        let visit = VisitId::new();
        store.commit_visit(&commit(visit, DeviceId::new()))?;
        assert!(store.visit_row(visit)?.is_some());
        Ok(())
    }
}
