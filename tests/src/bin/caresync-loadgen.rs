//! Load generator: N simulated phones (the core's real store and sync client, in temporary
//! directories) enrol, pull a morning's visits, clock in and out with notes and sync against a
//! caresync-server process over loopback. Reports accepted clock events per second, sync latency
//! percentiles, bytes on the wire per clock event, and the server's peak memory and CPU time.
//!
//! `--mode both` runs the workload twice on fresh servers: first with the real delta sync, then a
//! naive baseline in which every sync uploads every change of every visit the phone holds, and
//! prints the ratio.
//!
//!     caresync-loadgen --phones 500 --visits 4 --seconds 20 --threads 32 --mode both
//!
//! `--postgres N` stores in a private PostgreSQL cluster instead, with N server instances in
//! front of it and the phones spread across them (phone i syncs with instance i mod N); the
//! server CPU reported is the instances' and the cluster's together.

use automerge::sync::{Have, State, SyncDoc};
use caresync_core::domain::*;
use caresync_core::protocol::*;
use caresync_core::visit_document::VisitDocument;
use caresync_core::{ClockRequest, SyncClient};
use caresync_tests::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    phones: usize,
    visits: usize,
    seconds: u64,
    threads: usize,
    mode: String,
    /// Target total phone actions per second across all phones (0 = as fast as possible).
    rate: f64,
    /// Server instances in front of a PostgreSQL cluster (0: one instance, embedded SQLite).
    postgres: usize,
    /// Clients (each with its own contract) the visits are spread over; 1 (every visit for one
    /// client on one contract, as the earlier rounds measured) unless told.
    clients: usize,
    /// Every visit already due when the run starts (planned within the last ten minutes), as a
    /// carer's visit is when they clock in: each commit is then followed by the visit's alert
    /// review. Without it, visits are an hour apart from half an hour ago, so almost none is due.
    due: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        phones: 100,
        visits: 4,
        seconds: 15,
        threads: 16,
        mode: "both".into(),
        rate: 0.0,
        postgres: 0,
        clients: 1,
        due: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--phones" => a.phones = value()?.parse().map_err(|e| format!("--phones: {e}"))?,
            "--visits" => a.visits = value()?.parse().map_err(|e| format!("--visits: {e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--threads" => a.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--rate" => a.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--mode" => a.mode = value()?,
            "--postgres" => a.postgres = value()?.parse().map_err(|e| format!("--postgres: {e}"))?,
            "--clients" => a.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--due" => a.due = true,
            // The phones' sync protocol (the test kit reads it when it enrols a phone).
            "--protocol" => std::env::set_var("CARESYNC_TEST_PROTOCOL", value()?),
            "-h" | "--help" => {
                println!("caresync-loadgen [--phones N] [--visits N] [--seconds S] [--threads T] [--rate OPS] [--mode delta|whole|both] [--postgres INSTANCES] [--protocol 1|2] [--clients N] [--due]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !["delta", "whole", "both"].contains(&a.mode.as_str()) {
        return Err("--mode is delta, whole or both".into());
    }
    Ok(a)
}

#[derive(Debug, Default, Clone)]
struct Figures {
    clock_events: u64,
    syncs: u64,
    rounds: u64,
    failed_syncs: u64,
    /// From the start to the last accepted clock event.
    busy_seconds: f64,
    seconds: f64,
    latencies_ms: Vec<f64>,
    bytes_up: u64,
    bytes_down: u64,
    server_peak_rss_kib: u64,
    /// Heap and stacks at the end (RSS minus mapped database pages, which the OS can drop).
    server_anon_kib: u64,
    server_cpu_s: f64,
    /// The embedded store's writer: transactions committed and writes in them (`/metrics`).
    commit_groups: u64,
    commit_writes: u64,
}

impl Figures {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * p).round() as usize]
    }

    fn print(&self, label: &str) {
        let per_event = |b: u64| b as f64 / self.clock_events.max(1) as f64;
        println!("== {label} ==");
        println!(
            "  clock events accepted      {} in {:.1} s = {:.0}/s",
            self.clock_events,
            self.busy_seconds,
            self.clock_events as f64 / self.busy_seconds
        );
        println!(
            "  syncs                      {} ({} failed, {:.2} round trips each)",
            self.syncs,
            self.failed_syncs,
            self.rounds as f64 / self.syncs.max(1) as f64
        );
        println!(
            "  sync latency ms            p50 {:.1}  p95 {:.1}  p99 {:.1}",
            self.percentile(0.50),
            self.percentile(0.95),
            self.percentile(0.99)
        );
        println!(
            "  bytes per clock event      up {:.0}  down {:.0}  total {:.0}",
            per_event(self.bytes_up),
            per_event(self.bytes_down),
            per_event(self.bytes_up + self.bytes_down)
        );
        println!(
            "  server peak RSS            {:.1} MiB (anonymous at end {:.1} MiB)",
            self.server_peak_rss_kib as f64 / 1024.0,
            self.server_anon_kib as f64 / 1024.0
        );
        println!(
            "  server CPU time            {:.1} s ({:.2} cores busy)",
            self.server_cpu_s,
            self.server_cpu_s / self.busy_seconds
        );
        if self.commit_groups > 0 {
            println!(
                "  server CPU per clock event {:.3} ms; {:.2} writes per commit ({} commits)",
                self.server_cpu_s * 1e3 / self.clock_events.max(1) as f64,
                self.commit_writes as f64 / self.commit_groups as f64,
                self.commit_groups
            );
        } else {
            println!(
                "  server CPU per clock event {:.3} ms",
                self.server_cpu_s * 1e3 / self.clock_events.max(1) as f64
            );
        }
    }
}

/// Peak resident memory (KiB) and user+system CPU seconds of a process, from /proc.
fn process_usage(pid: u32) -> (u64, f64) {
    let rss = status_kib(pid, "VmHWM:");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (rss, ticks / 100.0)
}

/// One `... kB` field of /proc/<pid>/status.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Every change of a visit, as a sync message to a peer assumed to have nothing: what a naive
/// "upload the whole document" design sends.
fn whole_document_message(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut doc = VisitDocument::load(bytes).map_err(|e| e.to_string())?;
    let mut state = State::new();
    state.their_heads = Some(vec![]);
    state.their_need = Some(vec![]);
    state.their_have = Some(vec![Have::default()]);
    let msg = doc
        .automerge()
        .sync()
        .generate_sync_message(&mut state)
        .ok_or("nothing to send")?;
    Ok(msg.encode())
}

/// The servers a run talks to: one with the embedded store, or N sharing a PostgreSQL cluster.
struct Servers {
    _dir: tempfile::TempDir,
    instances: Vec<ServerProcess>,
    office: Office,
    cluster: Option<caresync_tests::pg::PgCluster>,
}

impl Servers {
    fn start(postgres: usize) -> TestResult<Self> {
        if postgres == 0 {
            let world = World::start()?;
            return Ok(Self {
                _dir: world.dir,
                instances: vec![world.server],
                office: world.office,
                cluster: None,
            });
        }
        let dir = tempfile::tempdir()?;
        let cluster = caresync_tests::pg::PgCluster::start();
        let url = cluster.create_database();
        let token = ServerProcess::bootstrap_with(&dir.path().join("bootstrap"), Some(&url))?;
        let instances = (0..postgres)
            .map(|i| ServerProcess::start_with(&dir.path().join(format!("s{i}")), "127.0.0.1:0", Some(&url)))
            .collect::<TestResult<Vec<_>>>()?;
        let office = Office::new(&instances[0].url, &token);
        Ok(Self {
            _dir: dir,
            instances,
            office,
            cluster: Some(cluster),
        })
    }

    /// Peak RSS of the largest instance (KiB), and the CPU seconds of the instances and the
    /// PostgreSQL cluster's processes together.
    fn usage(&self) -> (u64, f64) {
        let mut peak = 0;
        let mut cpu = 0.0;
        for pid in self.instances.iter().filter_map(|s| s.pid()) {
            let (rss, s) = process_usage(pid);
            peak = peak.max(rss);
            cpu += s;
        }
        if let Some(postmaster) = self.cluster.as_ref().and_then(|c| c.postmaster_pid()) {
            cpu += process_usage(postmaster).1;
            for child in children_of(postmaster) {
                cpu += process_usage(child).1;
            }
        }
        (peak, cpu)
    }

    /// The embedded store writers' transactions and the writes in them, summed over instances
    /// (zeros on PostgreSQL, which does not group commits).
    fn commits(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for s in &self.instances {
            let Ok(text) = caresync_tests::http()
                .get(&format!("{}/metrics", s.url))
                .call()
                .and_then(|mut r| r.body_mut().read_to_string())
            else {
                continue;
            };
            let counter = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total.0 += counter("caresync_store_commit_groups_total");
            total.1 += counter("caresync_store_commit_writes_total");
        }
        total
    }
}

/// Processes whose parent is `parent` (PostgreSQL's backends and workers).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After the command name in parentheses: state, then the parent's pid.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

fn run(a: &Args, whole: bool) -> TestResult<Figures> {
    let servers = Servers::start(a.postgres)?;
    let office = &servers.office;
    let mut books = Vec::with_capacity(a.clients.max(1));
    for c in 0..a.clients.max(1) {
        books.push((
            office.create_client(&format!("Load client {c}"), None)?,
            office.create_contract(&format!("Load contract {c}"), "spot", json!({}))?,
        ));
    }
    // Phones' stores on tmpfs where there is one: the phones' fsyncs are not what is measured.
    let phone_dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")?
    } else {
        tempfile::tempdir()?
    };
    // Due: ten seconds apart from ten minutes ago, so every clock-in is on time (within the
    // default grace) and each commit's review has little to raise.
    let (start, apart) = if a.due {
        (now() - 10 * MINUTE_MS, 10_000)
    } else {
        (now() - 30 * MINUTE_MS, HOUR_MS)
    };
    eprintln!("setting up {} phones with {} visits each...", a.phones, a.visits);
    let mut phones = Vec::with_capacity(a.phones);
    for i in 0..a.phones {
        let carer = office.create_person(&format!("Load carer {i}"), "carer")?;
        let code = office.enrolment_code(carer)?;
        let visits: Vec<serde_json::Value> = (0..a.visits)
            .map(|k| {
                // Each carer's round goes from client to client, as a real one does.
                let (client, contract) = &books[(i * a.visits + k) % books.len()];
                json!({"client_id": client, "contract_id": contract, "carers": [carer],
                       "planned_start": rfc3339(start + k as i64 * apart),
                       "planned_end": rfc3339(start + k as i64 * apart + 30 * MINUTE_MS), "tasks": ["Care"]})
            })
            .collect();
        let (status, body) = office.call("POST", "/api/v1/visits", Some(json!({ "visits": visits })))?;
        if status != 201 {
            return Err(format!("creating visits: {status} {body}").into());
        }
        let url = &servers.instances[i % servers.instances.len()].url;
        let phone = Phone::enrol(phone_dir.path(), url, &code, Arc::new(caresync_core::SystemClock))?;
        phone.sync()?;
        phones.push(Mutex::new(LoadPhone {
            phone,
            url: url.clone(),
            step: AtomicU64::new(0),
        }));
    }
    let (_, cpu_before) = servers.usage();
    let commits_before = servers.commits();
    eprintln!(
        "running for {} s ({} mode)...",
        a.seconds,
        if whole { "whole-document baseline" } else { "delta" }
    );
    if !whole {
        eprintln!("phones speak sync protocol {}", caresync_tests::phone_protocol());
    }

    let phones = Arc::new(phones);
    let stop = Arc::new(AtomicBool::new(false));
    let clock_events = Arc::new(AtomicU64::new(0));
    let next_phone = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let per_action = if a.rate > 0.0 {
        Some(Duration::from_secs_f64(a.threads as f64 / a.rate))
    } else {
        None
    };
    let mut workers = Vec::new();
    for _ in 0..a.threads {
        let (phones, stop, clock_events, next_phone) = (
            phones.clone(),
            stop.clone(),
            clock_events.clone(),
            next_phone.clone(),
        );
        workers.push(std::thread::spawn(move || -> Figures {
            let mut f = Figures::default();
            while !stop.load(Relaxed) {
                let t0 = Instant::now();
                let i = next_phone.fetch_add(1, Relaxed) as usize % phones.len();
                let Ok(phone) = phones[i].try_lock() else { continue };
                let Ok(ids) = phone.store.visit_ids() else {
                    continue;
                };
                // The next thing this carer does: clock in to the next visit, or note and clock
                // out of the one in progress (the phone's own state says which).
                let step = phone.step.fetch_add(1, Relaxed) as usize;
                let Some(id) = ids.get((step / 2) % ids.len().max(1)) else {
                    continue;
                };
                let clocked = if step.is_multiple_of(2) {
                    phone.store.clock_in(*id, &ClockRequest::app()).is_ok()
                } else {
                    let _ = phone
                        .store
                        .add_note(*id, NoteCategory::General, "All well, tea made.");
                    phone.store.clock_out(*id, &ClockRequest::app()).is_ok()
                };
                if !clocked {
                    // This phone's morning is done.
                    continue;
                }
                let sync_started = Instant::now();
                let ok = if whole {
                    whole_sync(&phone.url, &phone, &ids, &mut f)
                } else {
                    delta_sync(&phone.client, &mut f)
                };
                f.latencies_ms.push(sync_started.elapsed().as_secs_f64() * 1e3);
                f.syncs += 1;
                if ok {
                    clock_events.fetch_add(1, Relaxed);
                    f.busy_seconds = f.busy_seconds.max(started.elapsed().as_secs_f64());
                } else {
                    f.failed_syncs += 1;
                }
                if let Some(pace) = per_action {
                    std::thread::sleep(pace.saturating_sub(t0.elapsed()));
                }
            }
            f
        }));
    }
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Relaxed);
    let mut total = Figures::default();
    for w in workers {
        let f = w.join().map_err(|_| "worker panicked")?;
        total.syncs += f.syncs;
        total.rounds += f.rounds;
        total.busy_seconds = total.busy_seconds.max(f.busy_seconds);
        total.failed_syncs += f.failed_syncs;
        total.bytes_up += f.bytes_up;
        total.bytes_down += f.bytes_down;
        total.latencies_ms.extend(f.latencies_ms);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.clock_events = clock_events.load(Relaxed);
    let (rss, cpu_after) = servers.usage();
    total.server_peak_rss_kib = rss;
    total.server_anon_kib = servers
        .instances
        .iter()
        .filter_map(|s| s.pid())
        .map(|pid| status_kib(pid, "RssAnon:"))
        .max()
        .unwrap_or(0);
    total.server_cpu_s = cpu_after - cpu_before;
    let commits_after = servers.commits();
    total.commit_groups = commits_after.0 - commits_before.0;
    total.commit_writes = commits_after.1 - commits_before.1;
    Ok(total)
}

struct LoadPhone {
    phone: Phone,
    /// The instance this phone syncs with.
    url: String,
    step: AtomicU64,
}

impl std::ops::Deref for LoadPhone {
    type Target = Phone;
    fn deref(&self) -> &Phone {
        &self.phone
    }
}

fn delta_sync(client: &SyncClient, f: &mut Figures) -> bool {
    match client.sync_now() {
        Ok(s) => {
            f.bytes_up += s.bytes_up;
            f.bytes_down += s.bytes_down;
            f.rounds += u64::from(s.rounds);
            s.errors.is_empty()
        }
        Err(_) => false,
    }
}

fn whole_sync(url: &str, phone: &Phone, ids: &[VisitId], f: &mut Figures) -> bool {
    let mut visits = Vec::new();
    for id in ids {
        let Ok(bytes) = phone.store.visit_bytes(*id) else {
            return false;
        };
        let Ok(message) = whole_document_message(&bytes) else {
            return false;
        };
        visits.push(VisitMessage {
            visit_id: *id,
            message,
        });
    }
    let body = to_cbor(&SyncRequest {
        protocol: PROTOCOL_VERSION,
        device_time: now(),
        visits,
        manifest_digest: None,
    });
    f.bytes_up += body.len() as u64;
    match post_raw(url, SYNC_PATH, Some(&phone.token), &body) {
        Ok((200, answer)) => {
            f.bytes_down += answer.len() as u64;
            f.rounds += 1;
            from_cbor::<SyncResponse>(&answer).is_ok_and(|r| r.errors.is_empty())
        }
        _ => false,
    }
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("caresync-loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "caresync-loadgen: {} phones x {} visits over {} client(s), {} threads, {} s per mode, rate {}, {}",
        a.phones,
        a.visits,
        a.clients.max(1),
        a.threads,
        a.seconds,
        if a.rate > 0.0 {
            format!("{} actions/s", a.rate)
        } else {
            "unlimited".into()
        },
        match a.postgres {
            0 => "embedded SQLite".to_string(),
            n => format!("PostgreSQL behind {n} instance(s)"),
        }
    );
    let mut results = Vec::new();
    for (mode, whole) in [("delta", false), ("whole", true)] {
        if a.mode != "both" && a.mode != mode {
            continue;
        }
        match run(&a, whole) {
            Ok(f) => {
                f.print(if whole {
                    "baseline: whole documents every sync"
                } else {
                    "caresync delta sync"
                });
                results.push((whole, f));
            }
            Err(e) => {
                eprintln!("caresync-loadgen: {mode}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if let [(false, d), (true, w)] = results.as_slice() {
        let bytes = |f: &Figures| (f.bytes_up + f.bytes_down) as f64 / f.clock_events.max(1) as f64;
        let rate = |f: &Figures| f.clock_events as f64 / f.busy_seconds;
        println!("== ratio (baseline / delta) ==");
        println!("  bytes per clock event      {:.1}x", bytes(w) / bytes(d));
        println!("  clock events per second    {:.2}x", rate(w) / rate(d));
        println!(
            "  p99 sync latency           {:.2}x",
            w.percentile(0.99) / d.percentile(0.99)
        );
        println!(
            "  server CPU per clock event {:.2}x",
            (w.server_cpu_s / w.clock_events.max(1) as f64) / (d.server_cpu_s / d.clock_events.max(1) as f64)
        );
    }
    std::process::ExitCode::SUCCESS
}
