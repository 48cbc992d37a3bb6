//! Shutting accounts and guarding sign-in, on a real server process: deactivation stops a
//! person's phone at once, office tokens expire with a clear answer, rotation replaces a token,
//! the CLI does the same without the API, and guessing enrolment codes is refused and logged.

use caresync_core::clock::SystemClock;
use caresync_core::protocol::*;
use caresync_core::sync_client::TransportError;
use caresync_core::SyncError;
use caresync_tests::*;
use serde_json::json;
use std::sync::Arc;

fn sync_status(url: &str, token: &str) -> TestResult<u16> {
    let req = to_cbor(&SyncRequest {
        protocol: PROTOCOL_VERSION,
        device_time: now(),
        visits: vec![],
        manifest_digest: None,
    });
    Ok(post_raw(url, SYNC_PATH, Some(token), &req)?.0)
}

#[test]
fn a_deactivated_carers_phone_is_refused_at_once() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    ann.sync()?;
    let (_, sup) = world.office.call(
        "POST",
        "/api/v1/people",
        Some(json!({"name": "Sue", "role": "supervisor"})),
    )?;
    let sue = sup["token"].as_str().ok_or("no token")?.to_string();
    let sue_id = sup["person"]["id"].as_str().ok_or("no id")?.to_string();
    let spare_code = world.office.enrolment_code(ann.carer)?;

    let (status, person) =
        world
            .office
            .call("POST", &format!("/api/v1/people/{}/deactivate", ann.carer), None)?;
    assert_eq!(status, 200, "{person}");
    assert_eq!(person["active"], json!(false));
    // The very next sync is refused, through the phone's own client and by hand.
    assert!(matches!(
        ann.sync(),
        Err(SyncError::Transport(TransportError::Unauthorized(_)))
    ));
    assert_eq!(sync_status(&world.server.url, &ann.token)?, 401);
    // Her unused code is spent too.
    let err = Phone::enrol(
        world.dir.path(),
        &world.server.url,
        &spare_code,
        Arc::new(SystemClock),
    );
    assert!(err.is_err(), "a deactivated carer's code still enrols");
    let devices = world.office.call("GET", "/api/v1/devices", None)?.1;
    assert!(devices[0]["revoked_at"].is_i64(), "{devices}");

    // A supervisor's token stops the same way.
    assert_eq!(
        call_as(&world.server.url, &sue, "GET", "/api/v1/alerts", None)?.0,
        200
    );
    let (status, _) = world
        .office
        .call("POST", &format!("/api/v1/people/{sue_id}/deactivate"), None)?;
    assert_eq!(status, 200);
    let (status, body) = call_as(&world.server.url, &sue, "GET", "/api/v1/alerts", None)?;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap_or("").contains("deactivated"),
        "{body}"
    );
    Ok(())
}

#[test]
fn an_expired_office_token_is_refused_with_a_clear_message() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    let d = data.to_string_lossy().to_string();
    // 0.00002 days is 1.7 s.
    let out = server_command(&["bootstrap", "--data-dir", &d, "--token-ttl-days", "0.00002"])?;
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("office token: "))
        .ok_or("no token")?
        .to_string();
    let server = ServerProcess::start(&data, "127.0.0.1:0")?;
    let (status, _) = call_as(&server.url, &token, "GET", "/api/v1/people", None)?;
    assert_eq!(status, 200, "works before it expires");
    std::thread::sleep(std::time::Duration::from_millis(2_000));
    let (status, body) = call_as(&server.url, &token, "GET", "/api/v1/people", None)?;
    assert_eq!(status, 401);
    assert_eq!(body["code"], json!("unauthorized"));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("expired at 20"), "{message}");
    assert!(message.contains("rotate-token"), "says what to do: {message}");
    assert!(server_command(&["bootstrap", "--data-dir", &d, "--token-ttl-days", "0"]).is_err());
    Ok(())
}

#[test]
fn rotation_returns_a_new_token_and_the_old_one_stops() -> TestResult {
    let world = World::start()?;
    let url = world.server.url.clone();
    let (_, sup) = world.office.call(
        "POST",
        "/api/v1/people",
        Some(json!({"name": "Sue", "role": "supervisor"})),
    )?;
    let old = sup["token"].as_str().ok_or("no token")?.to_string();
    let sue = sup["person"]["id"].as_str().ok_or("no id")?.to_string();

    // Sue rotates her own token.
    let (status, issued) = call_as(&url, &old, "POST", &format!("/api/v1/people/{sue}/token"), None)?;
    assert_eq!(status, 201, "{issued}");
    let new = issued["token"].as_str().ok_or("no token")?.to_string();
    assert_ne!(new, old);
    assert!(
        issued["expires_at"].as_str().is_some_and(|t| t > "2026"),
        "{issued}"
    );
    assert_eq!(call_as(&url, &old, "GET", "/api/v1/alerts", None)?.0, 401);
    assert_eq!(call_as(&url, &new, "GET", "/api/v1/alerts", None)?.0, 200);

    // The office revokes her tokens: the new one stops too; rotating gives her one again.
    let (status, body) = world
        .office
        .call("POST", &format!("/api/v1/people/{sue}/tokens/revoke"), None)?;
    assert_eq!((status, body["revoked"].as_i64()), (200, Some(1)));
    assert_eq!(call_as(&url, &new, "GET", "/api/v1/alerts", None)?.0, 401);
    let (status, issued) = world
        .office
        .call("POST", &format!("/api/v1/people/{sue}/token"), None)?;
    assert_eq!(status, 201);
    let third = issued["token"].as_str().ok_or("no token")?.to_string();
    assert_eq!(call_as(&url, &third, "GET", "/api/v1/alerts", None)?.0, 200);

    // The CLI, beside the running server: rotate the office's own token, then revoke by value.
    let d = world.server.data_dir.to_string_lossy().to_string();
    let people = world.office.call("GET", "/api/v1/people", None)?.1;
    let office_id = people
        .as_array()
        .and_then(|a| a.iter().find(|p| p["role"] == "office"))
        .and_then(|p| p["id"].as_str())
        .ok_or("no office person")?
        .to_string();
    let out = server_command(&["rotate-token", "--data-dir", &d, "--person", &office_id])?;
    let office_new = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .ok_or("no token printed")?
        .to_string();
    assert_eq!(
        call_as(&url, &world.office.token, "GET", "/api/v1/people", None)?.0,
        401
    );
    assert_eq!(call_as(&url, &office_new, "GET", "/api/v1/people", None)?.0, 200);
    server_command(&["revoke-token", "--data-dir", &d, "--token", &third])?;
    assert_eq!(call_as(&url, &third, "GET", "/api/v1/alerts", None)?.0, 401);
    server_command(&["deactivate", "--data-dir", &d, "--person", &sue])?;
    let sue_now = call_as(&url, &office_new, "GET", "/api/v1/people", None)?.1;
    let row = sue_now
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == sue.as_str()))
        .ok_or("sue is listed")?;
    assert_eq!(row["active"], json!(false));
    Ok(())
}

fn enrol_status(url: &str, code: &str) -> TestResult<(u16, Option<String>)> {
    let body = to_cbor(&EnrolRequest {
        code: code.into(),
        device_name: "guesser".into(),
    });
    let mut resp = http()
        .post(&format!("{url}{ENROL_PATH}"))
        .header("content-type", CBOR)
        .send(&body[..])?;
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = resp.body_mut().read_to_vec();
    Ok((resp.status().as_u16(), retry))
}

#[test]
fn guessing_codes_is_limited_per_person_and_per_source_and_logged_without_the_code() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    let token = ServerProcess::bootstrap(&data)?;
    let log = dir.path().join("server.log");
    let server = start_server_logging_to(&data, &log)?;
    let office = Office::new(&server.url, &token);
    let url = server.url.clone();
    let ann = office.create_person("Ann", "carer")?;

    // Per person: five tries of Ann's used code spend her outstanding one.
    let used = office.enrolment_code(ann)?;
    Phone::enrol(dir.path(), &url, &used, Arc::new(SystemClock))?;
    let outstanding = office.enrolment_code(ann)?;
    for _ in 0..5 {
        assert_eq!(enrol_status(&url, &used)?.0, 401);
    }
    assert_eq!(
        enrol_status(&url, &outstanding)?.0,
        401,
        "her outstanding code was spent"
    );
    // A code issued after the lock works.
    Phone::enrol(
        dir.path(),
        &url,
        &office.enrolment_code(ann)?,
        Arc::new(SystemClock),
    )?;

    // Per source: that was 6 failures; 4 wrong guesses make 10, and then even a right code waits
    // (it is issued first: the office shares the test's address and waits too).
    let right = office.enrolment_code(ann)?;
    let guesses = ["AAAAA-AAAAA", "BBBBB-BBBBB", "CCCCC-CCCCC", "DDDDD-DDDDD"];
    for g in guesses {
        assert_eq!(enrol_status(&url, g)?.0, 401);
    }
    let (status, retry) = enrol_status(&url, &right)?;
    assert_eq!(status, 429);
    let retry: u64 = retry.ok_or("no Retry-After")?.parse()?;
    assert!((1..=15 * 60).contains(&retry), "{retry}");
    // Bearer tokens from that source wait too, even a good one; the office elsewhere would not.
    assert_eq!(call_as(&url, &token, "GET", "/api/v1/people", None)?.0, 429);
    assert_eq!(
        http().get(&format!("{url}/healthz")).call()?.status().as_u16(),
        200
    );

    drop(server);
    let text = std::fs::read_to_string(&log)?;
    assert!(
        !text.contains('\x1b'),
        "a log written to a file carries no terminal colour codes: {text:?}"
    );
    let failures: Vec<&str> = text.lines().filter(|l| l.contains("failed sign-in")).collect();
    assert_eq!(failures.len(), 10, "{text}");
    assert!(
        failures
            .iter()
            .all(|l| l.contains("source=127.0.0.1") && l.contains("WARN")),
        "{text}"
    );
    assert!(failures.iter().any(|l| l.contains("reason=wrong_code")), "{text}");
    assert!(
        failures
            .iter()
            .any(|l| l.contains("reason=spent_or_expired_code")),
        "{text}"
    );
    assert!(text.contains("too many failed attempts"), "{text}");
    for secret in guesses.iter().copied().chain([
        used.as_str(),
        outstanding.as_str(),
        right.as_str(),
        token.as_str(),
    ]) {
        let bare: String = secret.chars().filter(|c| *c != '-').collect();
        assert!(
            !text.contains(secret) && !text.contains(&bare),
            "the log holds a code or token"
        );
    }
    Ok(())
}

#[test]
fn guessed_tokens_are_limited_per_source_but_revoked_ones_are_not_counted() -> TestResult {
    let world = World::start()?;
    let url = world.server.url.clone();
    let ann = world.carer_with_phone("Ann")?;
    world.office.revoke(ann.device)?;
    // A phone left running after its revocation: refused every time, never locked out.
    for _ in 0..15 {
        assert_eq!(sync_status(&url, &ann.token)?, 401);
    }
    assert_eq!(world.office.call("GET", "/api/v1/people", None)?.0, 200);
    // Ten guessed tokens lock the source, good token or not; probes still answer.
    for i in 0..10 {
        let guess = format!("{i:064}");
        assert_eq!(call_as(&url, &guess, "GET", "/api/v1/people", None)?.0, 401);
    }
    assert_eq!(world.office.call("GET", "/api/v1/people", None)?.0, 429);
    assert_eq!(sync_status(&url, &ann.token)?, 429);
    let probe = http()
        .get(&format!("{url}/healthz"))
        .header("authorization", "Bearer nonsense")
        .call()?;
    assert_eq!(probe.status().as_u16(), 200);
    Ok(())
}

/// The dashboard's sign-in form, as a browser sends it: a GET that sets the form's double-submit
/// cookie, then a POST of the token with that cookie and the form's token. The POST's status.
fn dashboard_sign_in(url: &str, token: &str) -> TestResult<u16> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut form = agent.get(&format!("{url}/signin")).call()?;
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("caresync_signin="))
        .and_then(|c| c.split(';').next())
        .ok_or("no sign-in cookie")?
        .to_string();
    let page = form.body_mut().read_to_string()?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("no csrf field")?
        .to_string();
    let resp = agent
        .post(&format!("{url}/signin"))
        .header("cookie", &format!("caresync_signin={cookie}"))
        .send_form([("token", token), ("csrf", csrf.as_str())])?;
    Ok(resp.status().as_u16())
}

/// Tokens guessed at the dashboard's sign-in form count against the address like API guesses:
/// after ten, even the right token is refused there, and the API is refused too.
#[test]
fn dashboard_sign_in_guesses_are_limited_per_source() -> TestResult {
    let world = World::start()?;
    let url = world.server.url.clone();
    for i in 0..10 {
        assert_eq!(dashboard_sign_in(&url, &format!("{i:064}"))?, 401, "guess {i}");
    }
    assert_eq!(dashboard_sign_in(&url, &world.office.token)?, 429);
    assert_eq!(world.office.call("GET", "/api/v1/people", None)?.0, 429);
    Ok(())
}
