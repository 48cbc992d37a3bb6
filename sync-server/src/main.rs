//! `caresync-server serve` runs the sync server; `bootstrap` creates the first office account;
//! `copy-to-postgres` moves an embedded store into PostgreSQL; `deactivate`, `revoke-token` and
//! `rotate-token` shut accounts and replace tokens without the API (e.g. the last office token
//! was lost or leaked); `recover` sets a damaged embedded database aside (and puts a backup in its
//! place) when the operator says so.

use caresync_core::domain::Role;
use caresync_core::sqlite::OpenError;
use caresync_server::http::serve::ConnectionLimits;
use caresync_server::services::people;
use caresync_server::store::copy::copy_sqlite_to_postgres;
use caresync_server::store::postgres::PostgresStore;
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::{ServerStore, StoreError};
use caresync_server::{router, AppState};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc rather than glibc's malloc: under glibc the demo's server held 850 MB of anonymous
/// memory for a live heap that never exceeded 90 MB (heaptrack), freed memory kept by the
/// per-thread arenas of tokio's blocking pool (docs/performance.md, issue 15).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "caresync-server",
    version,
    about = "caresync sync server and office API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve phones and the office.
    Serve {
        /// Address to listen on (port 0 picks a free port; the chosen address is printed).
        #[arg(long, env = "CARESYNC_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory holding the embedded database.
        #[arg(long, env = "CARESYNC_DATA_DIR", default_value = "caresync-data")]
        data_dir: PathBuf,
        /// A PostgreSQL URL (postgres://user@host:port/db) to store in instead of the embedded
        /// database; several instances may share one.
        #[arg(long, env = "CARESYNC_DATABASE")]
        database: Option<String>,
        /// Seed a demo provider and play two weeks of visits through simulated phones.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        tokens: TokenTtl,
        #[command(flatten)]
        limits: ClientLimits,
        #[command(flatten)]
        oversight: Oversight,
        #[command(flatten)]
        memory: MemoryLimits,
    },
    /// Create the first office account and print its API token (shown once).
    Bootstrap {
        #[arg(long, env = "CARESYNC_DATA_DIR", default_value = "caresync-data")]
        data_dir: PathBuf,
        #[arg(long, env = "CARESYNC_DATABASE")]
        database: Option<String>,
        #[arg(long, default_value = "Office")]
        name: String,
        #[command(flatten)]
        tokens: TokenTtl,
    },
    /// Shut a person's account: their API tokens, phones and unused enrolment codes stop at once.
    Deactivate {
        #[arg(long, env = "CARESYNC_DATA_DIR", default_value = "caresync-data")]
        data_dir: PathBuf,
        #[arg(long, env = "CARESYNC_DATABASE")]
        database: Option<String>,
        /// The person's id.
        #[arg(long)]
        person: String,
    },
    /// Revoke API tokens: one token given itself (read from standard input with `--token -`),
    /// or every token of a person.
    RevokeToken {
        #[arg(long, env = "CARESYNC_DATA_DIR", default_value = "caresync-data")]
        data_dir: PathBuf,
        #[arg(long, env = "CARESYNC_DATABASE")]
        database: Option<String>,
        #[arg(long, conflicts_with = "person", required_unless_present = "person")]
        token: Option<String>,
        #[arg(long)]
        person: Option<String>,
    },
    /// Issue a new API token for an office person or supervisor (printed once); their earlier
    /// tokens stop at once.
    RotateToken {
        #[arg(long, env = "CARESYNC_DATA_DIR", default_value = "caresync-data")]
        data_dir: PathBuf,
        #[arg(long, env = "CARESYNC_DATABASE")]
        database: Option<String>,
        #[arg(long)]
        person: String,
        #[command(flatten)]
        tokens: TokenTtl,
    },
    /// Set a damaged embedded database aside (renamed, never deleted), optionally restoring a
    /// backup in its place. Stop the server first. A database that is not damaged is left alone.
    Recover {
        #[arg(long, env = "CARESYNC_DATA_DIR", default_value = "caresync-data")]
        data_dir: PathBuf,
        /// A backup (from `sqlite3 caresync.db ".backup FILE"`) to put in the damaged one's place;
        /// without it the next start begins an empty provider.
        #[arg(long)]
        restore: Option<PathBuf>,
    },
    /// Copy the embedded store in a data directory into PostgreSQL (stop the server first).
    /// Running it again is harmless: rows already copied are updated or left alone.
    CopyToPostgres {
        #[arg(long, env = "CARESYNC_DATA_DIR", default_value = "caresync-data")]
        data_dir: PathBuf,
        #[arg(long, env = "CARESYNC_DATABASE")]
        database: String,
    },
}

#[derive(clap::Args)]
struct TokenTtl {
    /// How long new office and supervisor API tokens work, in days (fractions allowed).
    #[arg(long, env = "CARESYNC_TOKEN_TTL_DAYS", default_value_t = 90.0)]
    token_ttl_days: f64,
}

impl TokenTtl {
    fn millis(&self) -> Result<i64, String> {
        let days = self.token_ttl_days;
        if !(days > 0.0 && days <= 3650.0) {
            return Err(format!(
                "--token-ttl-days must be more than 0 and at most 3650, not {days}"
            ));
        }
        Ok((days * caresync_core::domain::DAY_MS as f64).round().max(1.0) as i64)
    }
}

fn person_id(s: &str) -> Result<caresync_core::domain::PersonId, String> {
    s.trim().parse().map_err(|_| format!("{s:?} is not a person id"))
}

/// What the server's own caches may hold (docs/performance.md, "Memory").
#[derive(clap::Args)]
struct MemoryLimits {
    /// Visit documents kept in memory, least recently used evicted (about 25 KiB each).
    #[arg(long, env = "CARESYNC_DOCUMENT_CACHE", default_value_t = caresync_server::http::DOCUMENT_CACHE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    document_cache: usize,
}

/// What slow, idle or numerous clients may hold (docs/security.md).
#[derive(clap::Args)]
struct ClientLimits {
    /// Seconds a request's headers may take to arrive in full, from their first byte.
    #[arg(long, env = "CARESYNC_HEADER_TIMEOUT_SECS", default_value_t = caresync_server::http::serve::HEADER_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,
    /// Seconds a connection with no request in progress is kept open (keep-alive), from its
    /// opening or its last response.
    #[arg(long, env = "CARESYNC_IDLE_TIMEOUT_SECS", default_value_t = caresync_server::http::serve::IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// Seconds a request's body may take to arrive in full once its headers have (else 408).
    #[arg(long, env = "CARESYNC_BODY_TIMEOUT_SECS", default_value_t = caresync_server::http::BODY_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,
    /// Connections open at once; further ones are closed as they arrive until one ends. Keep
    /// the process's open-file limit (ulimit -n) above this.
    #[arg(long, env = "CARESYNC_MAX_CONNECTIONS", default_value_t = caresync_server::http::serve::MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
}

/// PostgreSQL when a URL is given, else the embedded store in the data directory. Called outside
/// the tokio runtime: the blocking PostgreSQL client runs its own.
fn open_store(data_dir: &Path, database: Option<&str>) -> Result<Arc<dyn ServerStore>, String> {
    if let Some(url) = database {
        let store =
            PostgresStore::open(url).map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let store = SqliteStore::open(&data_dir.join("caresync.db")).map_err(|e| match e {
        StoreError::Open(OpenError::Unreadable { .. }) => damaged_help(&e, data_dir),
        other => other.to_string(),
    })?;
    Ok(Arc::new(store))
}

/// The refusal to start over a damaged database, with the ways out.
fn damaged_help(e: &dyn std::fmt::Display, data_dir: &Path) -> String {
    let dir = data_dir.display();
    format!(
        "{e}\n\
         The server will not start over a damaged database (it would serve an empty provider).\n\
         First copy {dir} somewhere safe. Then either put your latest backup in its place:\n    \
         caresync-server recover --data-dir {dir} --restore /backups/caresync-YYYY-MM-DD.db\n\
         or, with no backup, set the damaged file aside and start an empty provider:\n    \
         caresync-server recover --data-dir {dir}\n\
         (docs/deployment.md, \"A damaged database\")"
    )
}

fn recover(data_dir: &Path, restore: Option<&Path>) -> Result<(), String> {
    let path = data_dir.join("caresync.db");
    if !path.exists() {
        return Err(format!("no embedded database at {}", path.display()));
    }
    let Some(problem) = SqliteStore::damage(&path) else {
        return Err(format!(
            "{} opens and passes its integrity check: nothing to recover, nothing changed",
            path.display()
        ));
    };
    if let Some(backup) = restore {
        if !backup.is_file() {
            return Err(format!("no backup file at {}; nothing changed", backup.display()));
        }
        if let Some(bad) = SqliteStore::damage(backup) {
            return Err(format!(
                "the backup {} is damaged too ({bad}); nothing changed",
                backup.display()
            ));
        }
    }
    let moved = caresync_core::sqlite::move_aside(&path)
        .map_err(|e| format!("cannot move {} aside: {e}; nothing changed", path.display()))?;
    println!(
        "{} is damaged ({problem}); moved it aside to {}",
        path.display(),
        moved.display()
    );
    match restore {
        Some(backup) => {
            std::fs::copy(backup, &path).map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e} (the damaged file is at {})",
                    backup.display(),
                    path.display(),
                    moved.display()
                )
            })?;
            println!(
                "restored {} as {}; start the server",
                backup.display(),
                path.display()
            );
            println!("anything recorded after that backup was taken is not in it");
        }
        None => println!(
            "the next start begins an empty provider and prints a new office token; \
             phones enrolled before must be enrolled again"
        ),
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CARESYNC_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            database,
            demo,
            tokens,
            limits,
            oversight,
            memory,
        } => tokens.millis().and_then(|ttl| {
            let settings = oversight.settings()?;
            serve(
                listen,
                &data_dir,
                database.as_deref(),
                demo,
                ServeSettings {
                    token_ttl_ms: ttl,
                    limits: &limits,
                    oversight: settings,
                    memory: &memory,
                },
            )
        }),
        Command::Bootstrap {
            data_dir,
            database,
            name,
            tokens,
        } => tokens
            .millis()
            .and_then(|ttl| bootstrap(&data_dir, database.as_deref(), &name, ttl)),
        Command::Deactivate {
            data_dir,
            database,
            person,
        } => deactivate(&data_dir, database.as_deref(), &person),
        Command::RevokeToken {
            data_dir,
            database,
            token,
            person,
        } => revoke_token(
            &data_dir,
            database.as_deref(),
            token.as_deref(),
            person.as_deref(),
        ),
        Command::RotateToken {
            data_dir,
            database,
            person,
            tokens,
        } => tokens
            .millis()
            .and_then(|ttl| rotate_token(&data_dir, database.as_deref(), &person, ttl)),
        Command::CopyToPostgres { data_dir, database } => copy_to_postgres(&data_dir, &database),
        Command::Recover { data_dir, restore } => recover(&data_dir, restore.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caresync-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn copy_to_postgres(data_dir: &Path, database: &str) -> Result<(), String> {
    let path = data_dir.join("caresync.db");
    if !path.exists() {
        return Err(format!("no embedded store at {}", path.display()));
    }
    let from = SqliteStore::open(&path).map_err(|e| e.to_string())?;
    let to =
        PostgresStore::open(database).map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?;
    let report =
        copy_sqlite_to_postgres(&from, &to).map_err(|e| format!("copy failed, nothing written: {e}"))?;
    for (table, rows) in report {
        println!("{table}: {rows} rows");
    }
    println!("copied {} into PostgreSQL", path.display());
    Ok(())
}

fn deactivate(data_dir: &Path, database: Option<&str>, person: &str) -> Result<(), String> {
    let person = person_id(person)?;
    let store = open_store(data_dir, database)?;
    if !people::deactivate(store.as_ref(), person, caresync_core::clock::system_now())
        .map_err(|e| e.to_string())?
    {
        return Err(format!("no person {person}"));
    }
    println!("deactivated {person}: their tokens, phones and unused codes are revoked");
    Ok(())
}

fn revoke_token(
    data_dir: &Path,
    database: Option<&str>,
    token: Option<&str>,
    person: Option<&str>,
) -> Result<(), String> {
    let store = open_store(data_dir, database)?;
    let now = caresync_core::clock::system_now();
    match (token, person) {
        (Some(token), _) => {
            let token = if token == "-" {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
                line
            } else {
                token.to_string()
            };
            if !people::revoke_token(store.as_ref(), &token, now).map_err(|e| e.to_string())? {
                return Err("no such API token".into());
            }
            println!("token revoked");
        }
        (None, Some(person)) => {
            let person = person_id(person)?;
            if store.person(person).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("no person {person}"));
            }
            let n = store.revoke_api_tokens(person, now).map_err(|e| e.to_string())?;
            println!("revoked {n} token(s) of {person}");
        }
        (None, None) => return Err("give --token or --person".into()),
    }
    Ok(())
}

fn rotate_token(data_dir: &Path, database: Option<&str>, person: &str, ttl_ms: i64) -> Result<(), String> {
    let person = person_id(person)?;
    let store = open_store(data_dir, database)?;
    let issued = people::rotate_token(store.as_ref(), person, caresync_core::clock::system_now(), ttl_ms)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no active office person or supervisor {person}"))?;
    let expires = chrono::DateTime::from_timestamp_millis(issued.expires_at).unwrap_or_default();
    println!("token: {}", issued.token);
    println!("expires: {}", expires.to_rfc3339());
    Ok(())
}

fn bootstrap(data_dir: &Path, database: Option<&str>, name: &str, ttl_ms: i64) -> Result<(), String> {
    let store = open_store(data_dir, database)?;
    let (person, token) = people::create_person_with_token_ttl(
        store.as_ref(),
        name,
        Role::Office,
        None,
        caresync_core::clock::system_now(),
        ttl_ms,
    )
    .map_err(|e| e.to_string())?;
    println!("office person: {}", person.id);
    println!("office token: {}", token.unwrap_or_default());
    Ok(())
}

/// Alert deadlines and the time-driven sweep (docs/oversight.md).
#[derive(clap::Args)]
struct Oversight {
    /// Minutes to acknowledge an alert before it escalates to the office, per kind, as
    /// `kind=minutes` pairs (e.g. `missed=15,concern=30`); kinds not named keep their defaults.
    #[arg(long, env = "CARESYNC_ACK_WITHIN", default_value = "")]
    ack_within: String,
    /// Seconds between passes of the alert sweep (raise as time passes, close, escalate).
    #[arg(long, env = "CARESYNC_ALERT_SWEEP_SECS", default_value_t = 60.0)]
    alert_sweep_secs: f64,
    /// Bank holidays (not working days for escalation deadlines), comma-separated YYYY-MM-DD.
    #[arg(long, env = "CARESYNC_BANK_HOLIDAYS", default_value = "")]
    bank_holidays: String,
}

impl Oversight {
    fn settings(&self) -> Result<caresync_server::services::alerts::OversightSettings, String> {
        if !(self.alert_sweep_secs.is_finite()
            && self.alert_sweep_secs >= 0.1
            && self.alert_sweep_secs <= 3600.0)
        {
            return Err("--alert-sweep-secs must be between 0.1 and 3600".into());
        }
        let mut s = caresync_server::services::alerts::OversightSettings::default()
            .with_ack_minutes(&self.ack_within)
            .map_err(|e| format!("--ack-within: {e}"))?
            .with_bank_holidays(&self.bank_holidays)
            .map_err(|e| format!("--bank-holidays: {e}"))?;
        s.sweep_every_ms = (self.alert_sweep_secs * 1000.0).round() as i64;
        Ok(s)
    }
}

/// Run the alert sweep every `sweep_every_ms` until the process ends. Each instance tries;
/// the store's lease lets one at a time do a pass.
fn spawn_alert_sweep(state: &AppState) {
    let store = state.store.clone();
    let settings = state.oversight.clone();
    let holder = uuid::Uuid::new_v4().to_string();
    let tz = state.tz;
    tokio::spawn(async move {
        let every = std::time::Duration::from_millis(settings.sweep_every_ms.max(100) as u64);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (store, settings, holder) = (store.clone(), settings.clone(), holder.clone());
            let pass = tokio::task::spawn_blocking(move || {
                let now = caresync_core::clock::system_now();
                let swept =
                    caresync_server::services::alerts::sweep(store.as_ref(), &settings, &holder, now)?;
                if swept.ran {
                    // Reconciliation mismatches of the last two complete weeks (each opened once).
                    caresync_server::services::escalations::open_for_mismatches(
                        store.as_ref(),
                        &settings,
                        tz,
                        now,
                        2,
                    )?;
                }
                Ok::<_, caresync_server::store::StoreError>(swept)
            })
            .await;
            match pass {
                Ok(Ok(s)) if s.raised + s.closed + s.escalated > 0 => {
                    tracing::info!(
                        raised = s.raised,
                        closed = s.closed,
                        escalated = s.escalated,
                        "alert sweep"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "alert sweep failed; next pass retries"),
                Err(e) => tracing::warn!(error = %e, "alert sweep panicked; next pass retries"),
            }
        }
    });
}

/// What `serve` is told beyond where to listen and store.
struct ServeSettings<'a> {
    token_ttl_ms: i64,
    limits: &'a ClientLimits,
    oversight: caresync_server::services::alerts::OversightSettings,
    memory: &'a MemoryLimits,
}

fn serve(
    listen: SocketAddr,
    data_dir: &Path,
    database: Option<&str>,
    demo: bool,
    settings: ServeSettings<'_>,
) -> Result<(), String> {
    let ServeSettings {
        token_ttl_ms,
        limits,
        oversight,
        memory,
    } = settings;
    let store = open_store(data_dir, database)?;
    let has_office = store
        .people()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|p| p.role == Role::Office);
    if !has_office {
        // A fresh data directory: the main job must work with no other set-up.
        let (person, token) = people::create_person_with_token_ttl(
            store.as_ref(),
            "Office",
            Role::Office,
            None,
            caresync_core::clock::system_now(),
            token_ttl_ms,
        )
        .map_err(|e| e.to_string())?;
        eprintln!("first start: created office account {}", person.id);
        eprintln!("office token (shown once): {}", token.unwrap_or_default());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Handlers run on the blocking pool and at most MAX_IN_FLIGHT at once; tokio's default of
        // 512 threads would only add idle stacks and malloc arenas.
        .max_blocking_threads(caresync_server::http::MAX_BLOCKING_THREADS)
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // Tests and scripts read this line to find the port.
        println!("listening on http://{addr}");
        tracing::info!(%addr, data_dir = %data_dir.display(), "caresync-server serving");
        let mut state = AppState::new(store).with_oversight(oversight);
        state.visits = std::sync::Arc::new(
            caresync_server::services::visits::VisitService::new(state.store.clone(), memory.document_cache)
                .with_oversight(state.oversight.clone()),
        );
        state.token_ttl_ms = token_ttl_ms;
        state.body_timeout = std::time::Duration::from_secs(limits.body_timeout_secs);
        let connection_limits = ConnectionLimits {
            header_timeout: std::time::Duration::from_secs(limits.header_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(limits.idle_timeout_secs),
            max_connections: limits.max_connections,
        };
        spawn_alert_sweep(&state);
        if demo {
            // The demo plays two weeks back; let phones see all of it.
            state.scope_back_ms = (caresync_server::demo::DEMO_DAYS + 1) * caresync_core::domain::DAY_MS;
            let (st, url, dir) = (
                state.clone(),
                format!("http://{addr}"),
                data_dir.join("demo-phones"),
            );
            std::thread::spawn(move || run_demo(&st, &url, &dir));
        }
        caresync_server::http::serve::serve(listener, router(state), connection_limits, shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn run_demo(state: &AppState, url: &str, phones_dir: &Path) {
    let now = caresync_core::clock::system_now();
    match state.store.visits_planned_between(
        now - 30 * caresync_core::domain::DAY_MS,
        now + caresync_core::domain::DAY_MS,
    ) {
        Ok(v) if !v.is_empty() => {
            println!("demo: this data directory already holds visits; serving them as they are");
            return;
        }
        Err(e) => {
            eprintln!("demo: {e}");
            return;
        }
        Ok(_) => {}
    }
    println!(
        "demo: seeding a provider and playing {} days through simulated phones...",
        caresync_server::demo::demo_days()
    );
    let started = std::time::Instant::now();
    let ready = |accounts: &caresync_server::demo::DemoAccounts| {
        println!(
            "\n{}(the demo is playing: Today and the figures fill in as it goes)\n",
            caresync_server::demo::sign_in_links(url, accounts)
        );
    };
    match caresync_server::demo::run_with(state, url, phones_dir, ready) {
        Ok(summary) => {
            println!(
                "demo: {} visits, {} clock events from {} phones, played in {:.1} s",
                summary.visits,
                summary.clock_events,
                summary.phones,
                started.elapsed().as_secs_f64()
            );
            let accounts = caresync_server::demo::DemoAccounts {
                office_token: summary.office_token.clone(),
                supervisor_tokens: summary.supervisor_tokens.clone(),
            };
            println!("\n{}", caresync_server::demo::sign_in_links(url, &accounts));
            println!("office token: {}", summary.office_token);
            for (name, token) in &summary.supervisor_tokens {
                println!("{name} token: {token}");
            }
            let from = summary.first_day;
            let to = from + chrono::Duration::days(summary.days);
            println!("\nTry the API (with -H 'Authorization: Bearer <office token>'):");
            println!("  {url}/api/openapi.json");
            println!("  {url}/api/v1/reports/punctuality?from={from}&to={to}&group_by=commissioning_model&period=week");
            println!(
                "  {url}/api/v1/reports/punctuality.csv?from={from}&to={to}&group_by=contract&period=week"
            );
            println!("  {url}/api/v1/reports/kpi?from={from}&to={to}");
            println!("  {url}/api/v1/reports/reconciliation?from={from}&to={to}");
            println!("  {url}/api/v1/reports/continuity?from={from}&to={to}");
            println!("  {url}/api/v1/alerts");
            match caresync_server::services::reports::demo_table(state.store.as_ref(), state.tz, from, to) {
                Ok(table) => println!("\n{table}"),
                Err(e) => eprintln!("demo: report failed: {e}"),
            }
        }
        Err(e) => eprintln!("demo failed: {e}"),
    }
}
