//! Harness for end-to-end journeys: a real `caresync-server` process on an ephemeral loopback
//! port with its own data directory, the office driving its JSON API over HTTP, and phones built
//! on the real core store and sync client.

use caresync_core::clock::{DeviceClock, SystemClock};
use caresync_core::domain::*;
use caresync_core::http_transport::HttpTransport;
use caresync_core::protocol::*;
use caresync_core::sync_client::{self, SyncClient, Transport, TransportError};
use caresync_core::{PhoneStore, SyncError, SyncSummary, VisitDocument};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod pg;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The server binary of the profile the tests run in, built once per test run (`cargo build
/// --workspace --bins --profile <it>`; a no-op when it is up to date).
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Tests run from target/<profile>/deps/; binaries (the load generator) from target/<profile>/.
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().expect("exe dir").to_path_buf();
        let from_tests = dir.ends_with("deps");
        let profile_dir = if from_tests {
            dir.parent().expect("target dir").to_path_buf()
        } else {
            dir
        };
        let bin = profile_dir.join("caresync-server");
        if from_tests {
            // The profile these tests were built in (target/debug is `dev`; target/release and a
            // custom profile's folder carry its name), so `cargo test --release` runs a release
            // server it has just built, not a stale one beside a fresh debug build.
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(name) => name,
            };
            let status = Command::new(env!("CARGO"))
                .args(["build", "--workspace", "--bins", "--quiet", "--profile", profile])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build --workspace --bins failed");
        }
        assert!(
            bin.exists(),
            "no server binary at {} (build it: cargo build --workspace --bins, with the tests' profile)",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A running server process. Dropped: killed.
pub struct ServerProcess {
    child: Option<Child>,
    pub url: String,
    pub addr: String,
    pub data_dir: PathBuf,
    /// A PostgreSQL URL when the server stores there rather than in `data_dir`.
    pub database: Option<String>,
}

impl ServerProcess {
    /// Start on `listen` (e.g. `127.0.0.1:0`) with the data directory given.
    pub fn start(data_dir: &Path, listen: &str) -> TestResult<Self> {
        Self::start_with(data_dir, listen, None)
    }

    /// Start storing in PostgreSQL at `database` when given (`--database`).
    pub fn start_with(data_dir: &Path, listen: &str, database: Option<&str>) -> TestResult<Self> {
        Self::start_with_options(data_dir, listen, database, &[], &[])
    }

    /// Start with further `serve` settings given as environment variables (`CARESYNC_...`:
    /// timeouts, connection cap), the way a deployment sets them.
    pub fn start_with_env(
        data_dir: &Path,
        listen: &str,
        database: Option<&str>,
        env: &[(&str, &str)],
    ) -> TestResult<Self> {
        Self::start_with_options(data_dir, listen, database, &[], env)
    }

    /// `start_with`, with more `serve` options (e.g. `--alert-sweep-secs`).
    pub fn start_with_args(
        data_dir: &Path,
        listen: &str,
        database: Option<&str>,
        extra: &[&str],
    ) -> TestResult<Self> {
        Self::start_with_options(data_dir, listen, database, extra, &[])
    }

    /// `start_with`, with more `serve` options and environment variables.
    pub fn start_with_options(
        data_dir: &Path,
        listen: &str,
        database: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestResult<Self> {
        let mut cmd = Command::new(server_binary());
        cmd.args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra);
        if let Some(url) = database {
            cmd.args(["--database", url]);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .env("CARESYNC_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        let addr = url.trim_start_matches("http://").to_string();
        Ok(Self {
            child: Some(child),
            url: url.to_string(),
            addr,
            data_dir: data_dir.to_path_buf(),
            database: database.map(str::to_string),
        })
    }

    /// Restart on the same address and data directory (the phones keep their URL).
    pub fn restart(&mut self) -> TestResult {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::start_with(
                &self.data_dir.clone(),
                &self.addr.clone(),
                self.database.clone().as_deref(),
            ) {
                Ok(fresh) => {
                    *self = fresh;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart retry: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> TestResult<std::process::ExitStatus> {
        let mut c = self.child.take().ok_or("not running")?;
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        Ok(c.wait()?)
    }

    /// Run `caresync-server bootstrap` on this data directory; returns the office token.
    pub fn bootstrap(data_dir: &Path) -> TestResult<String> {
        Self::bootstrap_with(data_dir, None)
    }

    /// `bootstrap`, in PostgreSQL at `database` when given.
    pub fn bootstrap_with(data_dir: &Path, database: Option<&str>) -> TestResult<String> {
        let mut cmd = Command::new(server_binary());
        cmd.args(["bootstrap", "--data-dir"]).arg(data_dir);
        if let Some(url) = database {
            cmd.args(["--database", url]);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!("bootstrap failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let text = String::from_utf8(out.stdout)?;
        let token = text
            .lines()
            .find_map(|l| l.strip_prefix("office token: "))
            .ok_or("no token printed")?;
        Ok(token.trim().to_string())
    }
}

/// Run `caresync-server copy-to-postgres`; returns what it printed.
pub fn copy_to_postgres(data_dir: &Path, database: &str) -> TestResult<String> {
    let out = Command::new(server_binary())
        .args(["copy-to-postgres", "--data-dir"])
        .arg(data_dir)
        .args(["--database", database])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "copy-to-postgres failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh server with a bootstrapped office.
pub struct World {
    pub dir: tempfile::TempDir,
    pub server: ServerProcess,
    pub office: Office,
}

impl World {
    pub fn start() -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("server");
        let token = ServerProcess::bootstrap(&data)?;
        let server = ServerProcess::start(&data, "127.0.0.1:0")?;
        let office = Office::new(&server.url, &token);
        Ok(Self { dir, server, office })
    }

    /// A carer with an enrolled phone.
    pub fn carer_with_phone(&self, name: &str) -> TestResult<Phone> {
        self.carer_with_phone_speaking(name, phone_protocol())
    }

    /// A carer whose phone speaks sync protocol `protocol`.
    pub fn carer_with_phone_speaking(&self, name: &str, protocol: u32) -> TestResult<Phone> {
        let carer = self.office.create_person(name, "carer")?;
        let code = self.office.enrolment_code(carer)?;
        Phone::enrol_speaking(
            self.dir.path(),
            &self.server.url,
            &code,
            Arc::new(SystemClock),
            protocol,
        )
    }
}

/// Plain HTTP for the office API and for hand-made requests.
pub fn http() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// POST raw bytes; returns status and body.
pub fn post_raw(url: &str, path: &str, token: Option<&str>, body: &[u8]) -> TestResult<(u16, Vec<u8>)> {
    let mut req = http().post(&format!("{url}{path}")).header("content-type", CBOR);
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send(body)?;
    let status = resp.status().as_u16();
    let bytes = resp.body_mut().with_config().limit(64 << 20).read_to_vec()?;
    Ok((status, bytes))
}

pub struct Office {
    pub url: String,
    pub token: String,
    /// A client and a spot contract for visits whose client and contract don't matter.
    default_refs: OnceLock<(ClientId, ContractId)>,
}

impl Office {
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.to_string(),
            token: token.to_string(),
            default_refs: OnceLock::new(),
        }
    }

    pub fn create_client(&self, name: &str, location: Option<Location>) -> TestResult<ClientId> {
        let v = self.ok(
            "POST",
            "/api/v1/clients",
            Some(json!({"name": name, "location": location})),
        )?;
        Ok(v["id"].as_str().ok_or("no id")?.parse()?)
    }

    pub fn create_contract(&self, name: &str, model: &str, rules: Value) -> TestResult<ContractId> {
        let v = self.ok(
            "POST",
            "/api/v1/contracts",
            Some(json!({"name": name, "commissioner": "Testshire Council", "model": model, "rules": rules})),
        )?;
        Ok(v["id"].as_str().ok_or("no id")?.parse()?)
    }

    fn default_refs(&self) -> TestResult<(ClientId, ContractId)> {
        if let Some(refs) = self.default_refs.get() {
            return Ok(*refs);
        }
        let refs = (
            self.create_client("Test client", None)?,
            self.create_contract("Test spot", "spot", json!({}))?,
        );
        Ok(*self.default_refs.get_or_init(|| refs))
    }

    /// Create a visit for a given client and contract, `minutes` long.
    pub fn create_visit_for(
        &self,
        client: ClientId,
        contract: ContractId,
        carers: &[PersonId],
        start: Millis,
        minutes: i64,
    ) -> TestResult<VisitId> {
        let v = self.ok(
            "POST",
            "/api/v1/visits",
            Some(json!({"visits": [{
                "client_id": client,
                "contract_id": contract,
                "carers": carers,
                "planned_start": rfc3339(start),
                "planned_end": rfc3339(start + minutes * MINUTE_MS),
                "tasks": ["Medication prompt", "Breakfast"],
            }]})),
        )?;
        Ok(v["visit_ids"][0].as_str().ok_or("no visit id")?.parse()?)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> TestResult<(u16, Value)> {
        call_as(&self.url, &self.token, method, path, body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> TestResult<Value> {
        let (status, v) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: {status} {v}").into());
        }
        Ok(v)
    }

    pub fn create_person(&self, name: &str, role: &str) -> TestResult<PersonId> {
        let v = self.ok(
            "POST",
            "/api/v1/people",
            Some(json!({"name": name, "role": role})),
        )?;
        Ok(v["person"]["id"].as_str().ok_or("no id")?.parse()?)
    }

    pub fn enrolment_code(&self, person: PersonId) -> TestResult<String> {
        let v = self.ok("POST", &format!("/api/v1/people/{person}/enrolment-codes"), None)?;
        Ok(v["code"].as_str().ok_or("no code")?.to_string())
    }

    /// Create a 30-minute visit for `carers` starting at `start`.
    pub fn create_visit(&self, carers: &[PersonId], start: Millis) -> TestResult<VisitId> {
        let (client, contract) = self.default_refs()?;
        self.create_visit_for(client, contract, carers, start, 30)
    }

    pub fn visit(&self, id: VisitId) -> TestResult<Value> {
        self.ok("GET", &format!("/api/v1/visits/{id}"), None)
    }

    pub fn reschedule(&self, id: VisitId, start: Millis, end: Millis) -> TestResult<Value> {
        self.ok(
            "POST",
            &format!("/api/v1/visits/{id}/reschedule"),
            Some(json!({"planned_start": rfc3339(start), "planned_end": rfc3339(end)})),
        )
    }

    pub fn reassign(&self, id: VisitId, carers: &[PersonId]) -> TestResult<Value> {
        self.ok(
            "POST",
            &format!("/api/v1/visits/{id}/reassign"),
            Some(json!({ "carers": carers })),
        )
    }

    pub fn revoke(&self, device: DeviceId) -> TestResult<()> {
        self.ok("POST", &format!("/api/v1/devices/{device}/revoke"), None)
            .map(|_| ())
    }
}

pub fn call_as(
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> TestResult<(u16, Value)> {
    let agent = http();
    let full = format!("{url}{path}");
    let auth = format!("Bearer {token}");
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(&full).header("authorization", &auth).call()?,
        (_, Some(b)) => agent.post(&full).header("authorization", &auth).send_json(b)?,
        (_, None) => agent.post(&full).header("authorization", &auth).send_empty()?,
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, v))
}

/// An API answer without the `<name>_rfc3339` siblings the server adds beside each instant in
/// milliseconds (`sync-server/src/http/times.rs`): a visit's JSON as its document's own serde
/// form, to compare with a phone's. Only a sibling whose instant is beside it is removed.
pub fn without_rfc3339(v: &Value) -> Value {
    match v {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(name, _)| {
                    !name
                        .strip_suffix("_rfc3339")
                        .is_some_and(|instant| fields.contains_key(instant))
                })
                .map(|(name, field)| (name.clone(), without_rfc3339(field)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_rfc3339).collect()),
        other => other.clone(),
    }
}

pub fn rfc3339(t: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(t)
        .unwrap_or_default()
        .to_rfc3339()
}

pub fn now() -> Millis {
    caresync_core::clock::system_now()
}

/// A transport that records every request body and can be switched off (no signal).
pub struct RecordingTransport {
    inner: HttpTransport,
    pub sent: Mutex<Vec<Vec<u8>>>,
    pub offline: std::sync::atomic::AtomicBool,
}

impl Transport for RecordingTransport {
    fn post(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        if self.offline.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TransportError::Offline("no signal (test)".into()));
        }
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(body.clone());
        }
        self.inner.post(path, token, body)
    }
}

/// A carer's phone: a real store in its own directory and the real sync client.
pub struct Phone {
    pub store: Arc<PhoneStore>,
    pub client: SyncClient,
    pub transport: Arc<RecordingTransport>,
    pub carer: PersonId,
    pub device: DeviceId,
    pub token: String,
    pub path: PathBuf,
}

impl Phone {
    pub fn enrol(dir: &Path, url: &str, code: &str, clock: Arc<dyn DeviceClock>) -> TestResult<Self> {
        Self::enrol_speaking(dir, url, code, clock, phone_protocol())
    }

    /// A phone whose sync client speaks `protocol` (1 or 2).
    pub fn enrol_speaking(
        dir: &Path,
        url: &str,
        code: &str,
        clock: Arc<dyn DeviceClock>,
        protocol: u32,
    ) -> TestResult<Self> {
        let path = dir.join(format!("phone-{}.db", uuid::Uuid::new_v4()));
        let store = Arc::new(PhoneStore::open_with(&path, clock, chrono_tz_london())?);
        let transport = Arc::new(RecordingTransport {
            inner: HttpTransport::new(url),
            sent: Mutex::new(vec![]),
            offline: false.into(),
        });
        let id = sync_client::enrol(&store, transport.as_ref(), url, code, "test phone")?;
        let client = SyncClient::with_protocol(store.clone(), transport.clone(), protocol);
        Ok(Self {
            store,
            client,
            transport,
            carer: id.carer_id,
            device: id.device_id,
            token: id.token,
            path,
        })
    }

    pub fn sync(&self) -> Result<SyncSummary, SyncError> {
        self.client.sync_now()
    }

    pub fn set_offline(&self, offline: bool) {
        self.transport
            .offline
            .store(offline, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sorted hex heads of the phone's copy of a visit.
    pub fn heads(&self, visit: VisitId) -> TestResult<Vec<String>> {
        let mut doc = VisitDocument::load(&self.store.visit_bytes(visit)?)?;
        let mut heads: Vec<String> = doc.heads().iter().map(|h| h.to_string()).collect();
        heads.sort();
        Ok(heads)
    }
}

/// The sync protocol test phones speak: `CARESYNC_TEST_PROTOCOL` (1 or 2), else the newest. CI
/// runs the sync journeys once in each (scripts/test-all.sh), as a fleet mid-upgrade holds both.
pub fn phone_protocol() -> u32 {
    std::env::var("CARESYNC_TEST_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(caresync_core::protocol::v2::VERSION)
}

pub fn chrono_tz_london() -> chrono_tz::Tz {
    chrono_tz::Europe::London
}

/// Push a hand-made document (a forger's) for one visit through the sync endpoint with a fresh
/// sync state, the way a tampered phone would. Returns the last response.
pub fn push_document(
    url: &str,
    token: &str,
    visit: VisitId,
    doc: &mut automerge::AutoCommit,
) -> TestResult<SyncResponse> {
    use automerge::sync::{Message, State, SyncDoc};
    let mut state = State::new();
    let mut last = None;
    for _ in 0..6 {
        let Some(msg) = doc.sync().generate_sync_message(&mut state) else {
            break;
        };
        let req = SyncRequest {
            protocol: PROTOCOL_VERSION,
            device_time: now(),
            visits: vec![VisitMessage {
                visit_id: visit,
                message: msg.encode(),
            }],
            manifest_digest: None,
        };
        let (status, body) = post_raw(url, SYNC_PATH, Some(token), &to_cbor(&req))?;
        if status != 200 {
            return Err(format!("sync answered {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        let resp: SyncResponse = from_cbor(&body)?;
        let mut done = !resp.errors.is_empty();
        for m in &resp.visits {
            doc.sync()
                .receive_sync_message(&mut state, Message::decode(&m.message)?)?;
        }
        if resp.visits.is_empty() {
            done = true;
        }
        last = Some(resp);
        if done {
            break;
        }
    }
    last.ok_or_else(|| "nothing was sent".into())
}

/// Run a `caresync-server` subcommand (`deactivate`, `rotate-token`, ...) with arguments; returns
/// its standard output, or an error with its standard error.
pub fn server_command(args: &[&str]) -> TestResult<String> {
    let out = Command::new(server_binary()).args(args).output()?;
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Start a server whose log (at `warn`) goes to `log` instead of the test's own stderr.
pub fn start_server_logging_to(data_dir: &Path, log: &Path) -> TestResult<ServerProcess> {
    let mut child = Command::new(server_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("CARESYNC_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_string();
    Ok(ServerProcess {
        child: Some(child),
        addr: url.trim_start_matches("http://").to_string(),
        url,
        data_dir: data_dir.to_path_buf(),
        database: None,
    })
}
