//! A damaged server database: the real server process refuses to start, says how to recover and
//! leaves the file byte for byte as it was, however often it is started; `recover` is the only
//! thing that moves it, and `recover --restore` brings back the provider from a backup.

use caresync_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Start `serve` and wait up to ten seconds for it to exit. `None` if it was still running (then
/// it is killed): it started serving.
fn start_briefly(data_dir: &Path) -> TestResult<Option<(i32, String)>> {
    let mut child = Command::new(server_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("CARESYNC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            let out = child.wait_with_output()?;
            let code = out.status.code().unwrap_or(-1);
            return Ok(Some((code, String::from_utf8_lossy(&out.stderr).into_owned())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}

fn recover(data_dir: &Path, restore: Option<&Path>) -> TestResult<(bool, String)> {
    let mut cmd = Command::new(server_binary());
    cmd.args(["recover", "--data-dir"]).arg(data_dir);
    if let Some(backup) = restore {
        cmd.arg("--restore").arg(backup);
    }
    let out = cmd.output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn files_in(dir: &Path) -> TestResult<Vec<String>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// A provider with one carer, stopped cleanly, its database backed up and then damaged.
fn damaged_provider(dir: &Path) -> TestResult<(std::path::PathBuf, std::path::PathBuf, String)> {
    let data = dir.join("server");
    let token = ServerProcess::bootstrap(&data)?;
    let mut server = ServerProcess::start(&data, "127.0.0.1:0")?;
    Office::new(&server.url, &token).create_person("Ann", "carer")?;
    server.terminate()?;
    let db = data.join("caresync.db");
    let backup = dir.join("backup.db");
    {
        // The documented backup, and everything in the main file (no WAL to mask the damage).
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute("VACUUM INTO ?1", [backup.to_string_lossy()])?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    for side in ["caresync.db-wal", "caresync.db-shm"] {
        let _ = std::fs::remove_file(data.join(side));
    }
    // A disk fault over the header: SQLite no longer calls it a database.
    let mut bytes = std::fs::read(&db)?;
    bytes[..100].fill(0x5a);
    std::fs::write(&db, &bytes)?;
    Ok((data, backup, token))
}

#[test]
fn a_damaged_database_stops_the_server_until_the_operator_recovers_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (data, _, _) = damaged_provider(dir.path())?;
    let db = data.join("caresync.db");
    let damaged = std::fs::read(&db)?;
    let before = files_in(&data)?;

    for attempt in 1..=2 {
        let (code, stderr) =
            start_briefly(&data)?.ok_or(format!("start {attempt} served over a damaged database"))?;
        assert_ne!(code, 0, "start {attempt}: {stderr}");
        assert!(
            stderr.contains("caresync-server recover --data-dir"),
            "start {attempt} does not say how to recover: {stderr}"
        );
        assert_eq!(std::fs::read(&db)?, damaged, "start {attempt} changed the file");
        assert_eq!(files_in(&data)?, before, "start {attempt} moved or added files");
    }
    // bootstrap refuses too: no new office over the damage.
    assert!(ServerProcess::bootstrap(&data).is_err());
    assert_eq!(std::fs::read(&db)?, damaged);

    // The operator's explicit step: set it aside, start an empty provider.
    let (ok, said) = recover(&data, None)?;
    assert!(ok, "{said}");
    let aside: Vec<_> = files_in(&data)?
        .into_iter()
        .filter(|n| n.starts_with("caresync.db.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(data.join(&aside[0]))?,
        damaged,
        "the damaged file is kept whole"
    );
    let server = ServerProcess::start(&data, "127.0.0.1:0")?;
    let (status, _) = http()
        .get(&format!("{}/healthz", server.url))
        .call()
        .map(|r| (r.status().as_u16(), ()))?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn recover_restores_a_backup_and_leaves_a_healthy_database_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (data, backup, token) = damaged_provider(dir.path())?;

    // A damaged backup is refused and nothing moves.
    let bad_backup = dir.path().join("bad-backup.db");
    std::fs::write(&bad_backup, b"not a backup at all".repeat(100))?;
    let before = files_in(&data)?;
    let (ok, said) = recover(&data, Some(&bad_backup))?;
    assert!(!ok, "{said}");
    assert_eq!(files_in(&data)?, before);

    let (ok, said) = recover(&data, Some(&backup))?;
    assert!(ok, "{said}");
    let server = ServerProcess::start(&data, "127.0.0.1:0")?;
    // The provider is back: the old office token works and the carer is there.
    let (status, people) = Office::new(&server.url, &token).call("GET", "/api/v1/people", None)?;
    assert_eq!(status, 200, "{people}");
    assert!(people.to_string().contains("Ann"), "{people}");
    drop(server);

    // A healthy database is not recovered.
    let healthy = files_in(&data)?;
    let (ok, said) = recover(&data, None)?;
    assert!(!ok, "{said}");
    assert!(said.contains("nothing to recover"), "{said}");
    assert_eq!(files_in(&data)?, healthy);
    Ok(())
}
