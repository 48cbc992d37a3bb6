//! Slow and idle clients against a real server process: they are cut off by the header, body and
//! idle timeouts and by the connection cap, and while they hang on, the office and phones are
//! still served.

use caresync_core::protocol::SYNC_PATH;
use caresync_tests::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How a slow client's connection ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The server answered before the body was complete (the status code).
    Answered(u16),
    /// The server closed the connection.
    Closed,
    /// Still dribbling when the test gave up.
    NeverCut,
}

/// Send a request head announcing a 1,000-byte body, then one body byte a second, watching for
/// the server to answer or hang up, for at most `give_up`.
fn dribble(addr: &str, path: &str, token: &str, give_up: Duration) -> Outcome {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Outcome::Closed;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).is_err() {
        return Outcome::Closed;
    }
    if s.set_read_timeout(Some(Duration::from_secs(1))).is_err() {
        return Outcome::Closed;
    }
    let started = Instant::now();
    let mut buf = [0u8; 512];
    while started.elapsed() < give_up {
        if s.write_all(b" ").is_err() {
            return Outcome::Closed;
        }
        match s.read(&mut buf) {
            Ok(0) => return Outcome::Closed,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let status = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Outcome::Answered(status);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Outcome::Closed,
        }
    }
    Outcome::NeverCut
}

/// Whether the server has closed `s` (EOF or reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    if s.set_read_timeout(Some(wait)).is_err() {
        return true;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn start(dir: &Path, env: &[(&str, &str)]) -> TestResult<(ServerProcess, Office)> {
    let data = dir.join("server");
    let token = ServerProcess::bootstrap(&data)?;
    let server = ServerProcess::start_with_env(&data, "127.0.0.1:0", None, env)?;
    let office = Office::new(&server.url, &token);
    Ok((server, office))
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_never_starve_the_office_or_phones() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, office) = start(
        dir.path(),
        &[
            ("CARESYNC_HEADER_TIMEOUT_SECS", "5"),
            ("CARESYNC_IDLE_TIMEOUT_SECS", "5"),
            ("CARESYNC_BODY_TIMEOUT_SECS", "5"),
        ],
    )?;
    let carer = office.create_person("Ann", "carer")?;
    let code = office.enrolment_code(carer)?;
    let phone = Phone::enrol(
        dir.path(),
        &server.url,
        &code,
        std::sync::Arc::new(caresync_core::clock::SystemClock),
    )?;
    office.create_visit(&[carer], now() + 3_600_000)?;

    // 40 authenticated clients dribbling bodies: more than there are work permits (32).
    let slow: Vec<_> = (0..40)
        .map(|i| {
            let (addr, token) = (server.addr.clone(), office.token.clone());
            let path = if i % 2 == 0 { "/api/v1/visits" } else { SYNC_PATH };
            std::thread::spawn(move || dribble(&addr, path, &token, Duration::from_secs(40)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // And a few hundred connections that never send a byte.
    let mut idle = (0..300)
        .map(|_| TcpStream::connect(&server.addr))
        .collect::<Result<Vec<_>, _>>()?;

    // The office and the phone are served while all of them hang on.
    let (status, people) = office.call("GET", "/api/v1/people", None)?;
    assert_eq!(status, 200, "{people}");
    let nurse = office.create_person("Bea", "carer")?;
    assert!(people.as_array().is_some_and(|p| !p.is_empty()));
    let summary = phone.sync().map_err(|e| format!("phone sync failed: {e}"))?;
    assert_eq!(summary.visits_received, 1, "{summary:?}");
    office.create_visit(&[nurse], now() + 7_200_000)?;

    // The dribblers are cut off: a 408 or a closed connection, never served at a byte a second.
    for handle in slow {
        let outcome = handle.join().map_err(|_| "slow client panicked")?;
        assert!(
            matches!(outcome, Outcome::Answered(408) | Outcome::Closed),
            "slow client ended {outcome:?}"
        );
    }
    // The idle connections are closed by the server (past the idle timeout).
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "idle connection never closed"
        );
    }
    // And the server still answers afterwards.
    let (status, _) = office.call("GET", "/api/v1/people", None)?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn connections_beyond_the_cap_are_refused_until_one_closes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, office) = start(
        dir.path(),
        &[
            ("CARESYNC_MAX_CONNECTIONS", "20"),
            ("CARESYNC_HEADER_TIMEOUT_SECS", "120"),
            ("CARESYNC_IDLE_TIMEOUT_SECS", "120"),
        ],
    )?;
    let mut held = (0..30)
        .map(|_| TcpStream::connect(&server.addr))
        .collect::<Result<Vec<_>, _>>()?;
    // The server accepts in order: the ten over the cap are closed as they are accepted...
    for (n, s) in held.iter_mut().enumerate().skip(20) {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "connection {n}, over the cap of 20, was kept"
        );
    }
    // ...and the first twenty are kept.
    for (n, s) in held.iter_mut().enumerate().take(20) {
        assert!(
            !closed_within(s, Duration::from_millis(200)),
            "connection {n}, within the cap, was closed"
        );
    }
    // With the cap full, a new client is refused too...
    assert!(
        office.call("GET", "/api/v1/people", None).is_err(),
        "a request beyond the cap was served"
    );
    // ...and served once held connections close.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match office.call("GET", "/api/v1/people", None) {
            Ok((200, _)) => break,
            other if Instant::now() > deadline => {
                return Err(format!("not served after the held connections closed: {other:?}").into())
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok(())
}

#[test]
fn a_phone_whose_idle_connection_was_closed_syncs_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, office) = start(dir.path(), &[("CARESYNC_IDLE_TIMEOUT_SECS", "1")])?;
    let carer = office.create_person("Ann", "carer")?;
    let code = office.enrolment_code(carer)?;
    let phone = Phone::enrol(
        dir.path(),
        &server.url,
        &code,
        std::sync::Arc::new(caresync_core::clock::SystemClock),
    )?;
    office.create_visit(&[carer], now() + 3_600_000)?;
    phone.sync().map_err(|e| format!("first sync: {e}"))?;
    // The phone's pooled connection outlives the server's idle timeout...
    std::thread::sleep(Duration::from_millis(2500));
    office.create_visit(&[carer], now() + 7_200_000)?;
    // ...and its next sync still goes through.
    let summary = phone.sync().map_err(|e| format!("sync after idle close: {e}"))?;
    assert_eq!(summary.visits_received, 1, "{summary:?}");
    Ok(())
}

/// Open a connection and send the start of a request head, never its end.
fn half_a_head(addr: &str) -> TestResult<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(b"GET /api/v1/people HTTP/1.1\r\nHost: x\r\nAuthori")?;
    Ok(s)
}

#[test]
fn a_slow_head_and_an_idle_connection_each_have_their_own_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A short header timeout and a long idle one: the slow head goes, the silent one stays.
    let (server, _) = start(
        dir.path(),
        &[
            ("CARESYNC_HEADER_TIMEOUT_SECS", "1"),
            ("CARESYNC_IDLE_TIMEOUT_SECS", "120"),
        ],
    )?;
    let mut silent = TcpStream::connect(&server.addr)?;
    let mut slow = half_a_head(&server.addr)?;
    assert!(
        closed_within(&mut slow, Duration::from_secs(20)),
        "a head half sent was never cut off"
    );
    assert!(
        !closed_within(&mut silent, Duration::from_secs(2)),
        "an idle connection was closed long before the idle timeout"
    );
    drop(server);

    // The other way round: the silent one goes, the slow head (still within its time) stays.
    let (server, _) = start(
        dir.path(),
        &[
            ("CARESYNC_HEADER_TIMEOUT_SECS", "120"),
            ("CARESYNC_IDLE_TIMEOUT_SECS", "1"),
        ],
    )?;
    let mut silent = TcpStream::connect(&server.addr)?;
    let mut slow = half_a_head(&server.addr)?;
    assert!(
        closed_within(&mut silent, Duration::from_secs(20)),
        "an idle connection was never closed"
    );
    assert!(
        !closed_within(&mut slow, Duration::from_secs(2)),
        "a request head within its timeout was cut off"
    );
    Ok(())
}
