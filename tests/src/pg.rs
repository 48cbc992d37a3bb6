//! A private PostgreSQL cluster for a test: `initdb` into a temporary directory, `pg_ctl start` on
//! a free loopback port with its socket in that directory, stopped (by the postmaster's pid file)
//! when dropped. Missing binaries are a failure with a clear message, never a silent skip: CI
//! installs them (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    next_db: std::sync::atomic::AtomicUsize,
}

/// Where `initdb` and `pg_ctl` live: the Debian layout first, then PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    if let Some(newest) = dirs.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Start a fresh cluster. Panics, saying how to fix it, if PostgreSQL is not installed.
    pub fn start() -> Self {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH; \
                 install them with `apt-get install -y postgresql` (.ci/run does this)"
            )
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("pgdata");
        std::fs::create_dir(&data).expect("create pgdata");
        // initdb refuses to run as root; the package's `postgres` user owns the cluster then.
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            chmod(dir.path(), "755");
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot chown {} to the postgres user", data.display());
        }
        let cluster = Self {
            _dir: dir,
            data,
            bin,
            port: free_port(),
            as_postgres_user,
            next_db: 0.into(),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.port,
            cluster.data.display()
        );
        let log = cluster.data.join("server.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &cluster.data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        );
        cluster
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The postmaster's process id (from its pid file), for measuring the cluster's CPU.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of a database (which need not exist yet; see `create_database`).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("caresync_{n}");
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test cluster: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.url(&name)
    }
}

fn chmod(path: &Path, mode: &str) {
    let _ = Command::new("chmod").arg(mode).arg(path).status();
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // The postmaster's pid is the first line of postmaster.pid; SIGINT is a fast shutdown.
        let pid_file = self.data.join("postmaster.pid");
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Some(pid) = text.lines().next().map(str::trim) {
                let _ = Command::new("kill").args(["-INT", pid]).status();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while pid_file.exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
}
