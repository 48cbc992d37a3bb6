//! The dashboard over real HTTP on loopback, against a real SQLite store: sign-in and sign-out,
//! session expiry, CSRF refusal, team scoping (another team's visit or carer is not found, never
//! shown), role limits, escaping of names, and the actions reaching the visit's timeline.

use caresync_core::domain::*;
use caresync_core::test_kit;
use caresync_core::visit_document::Schedule;
use caresync_server::auth::hash_secret;
use caresync_server::services::people;
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::{Client, Contract, Team, WebSession};
use caresync_server::{router, AppState};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// The value of a cookie this answer sets.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.header("set-cookie").into_iter().find_map(|c| {
            c.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// The first hidden CSRF field's value in the page.
    fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        Some(self.body[at..].split('"').next()?.to_string())
    }
}

/// One HTTP/1.1 request; redirects are not followed.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    extra: &str,
) -> TestResult<Answer> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    let body = form.unwrap_or_default();
    if form.is_some() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
    // Bodies may be chunked; the tests only look for text in them, so chunk sizes are harmless.
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: AppState,
    addr: std::net::SocketAddr,
    office: String,
    north_sup: String,
    ann: PersonId,
    bob: PersonId,
    ann_visit: VisitId,
    bob_visit: VisitId,
}

/// Two teams: North (supervisor, carer Ann, whose client is called `<script>...`) and South
/// (carer Bob). One visit each, planned this hour.
async fn fixture() -> TestResult<Fixture> {
    let dir = tempfile::tempdir()?;
    let state = AppState::new(Arc::new(SqliteStore::open(&dir.path().join("server.db"))?));
    let store = state.store.as_ref();
    let now = caresync_core::clock::system_now();
    let (office_person, office) = people::create_person(store, "Olive Office", Role::Office, None, now)?;
    let north = Team {
        id: TeamId::new(),
        name: "North team".into(),
    };
    let south = Team {
        id: TeamId::new(),
        name: "South team".into(),
    };
    store.create_team(&north)?;
    store.create_team(&south)?;
    let (_, north_sup) = people::create_person(store, "Nia North", Role::Supervisor, Some(north.id), now)?;
    let (ann, _) = people::create_person(store, "Ann Carer", Role::Carer, Some(north.id), now)?;
    let (bob, _) = people::create_person(store, "Bob Carer", Role::Carer, Some(south.id), now)?;
    let contract = Contract {
        id: ContractId::new(),
        name: "Shire framework <script>x</script>".into(),
        commissioner: "Shire Council".into(),
        model: CommissioningModel::Framework,
        rules: serde_json::json!({"kpi": {"max_late_pct": 10.0, "max_missed_pct": 2.0}}),
    };
    store.upsert_contract(&contract)?;
    let visit_for = |carer: PersonId, name: &str| -> TestResult<VisitId> {
        let client = Client {
            id: ClientId::new(),
            name: name.into(),
            location: None,
            tag_ids: vec![],
        };
        store.upsert_client(&client)?;
        let id = VisitId::new();
        // Planned to start now: on today's board whatever the hour, and not yet overdue.
        let schedule = Schedule {
            client_id: client.id,
            contract_id: contract.id,
            tasks: vec![test_kit::task("Lunch")],
            ..test_kit::schedule(vec![carer], now)
        };
        state.visits.create(id, &schedule, office_person.id, now)?;
        Ok(id)
    };
    let ann_visit = visit_for(ann.id, "<script>alert(1)</script> Smith")?;
    let bob_visit = visit_for(bob.id, "Betty South")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Fixture {
        _dir: dir,
        state,
        addr,
        office: office.ok_or("no office token")?,
        north_sup: north_sup.ok_or("no supervisor token")?,
        ann: ann.id,
        bob: bob.id,
        ann_visit,
        bob_visit,
    })
}

/// Sign in with a token; the session cookie (`name=value`) and the session's form token.
async fn sign_in(f: &Fixture, token: &str) -> TestResult<(String, String)> {
    let form = request(f.addr, "GET", "/signin", None, None, "").await?;
    assert_eq!(form.status, 200);
    let pre = form.set_cookie("caresync_signin").ok_or("no sign-in cookie")?;
    let csrf = form.csrf().ok_or("no csrf field")?;
    let signed = request(
        f.addr,
        "POST",
        "/signin",
        Some(&format!("caresync_signin={pre}")),
        Some(&format!("token={}&csrf={csrf}", enc(token))),
        "",
    )
    .await?;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let session = signed.set_cookie("caresync_session").ok_or("no session cookie")?;
    let cookie = format!("caresync_session={session}");
    let home = request(f.addr, "GET", "/", Some(&cookie), None, "").await?;
    assert_eq!(home.status, 200);
    Ok((cookie, home.csrf().ok_or("no csrf on home")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_strict_http_only_session_and_sign_out_ends_it() -> TestResult {
    let f = fixture().await?;
    let anon = request(f.addr, "GET", "/", None, None, "").await?;
    assert_eq!(anon.status, 303);
    assert_eq!(anon.header("location"), vec!["/signin"]);

    // A wrong token: refused, no session.
    let form = request(f.addr, "GET", "/signin", None, None, "").await?;
    let pre = form.set_cookie("caresync_signin").ok_or("no sign-in cookie")?;
    let csrf = form.csrf().ok_or("no csrf")?;
    let wrong = request(
        f.addr,
        "POST",
        "/signin",
        Some(&format!("caresync_signin={pre}")),
        Some(&format!("token=nope&csrf={csrf}")),
        "",
    )
    .await?;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookie("caresync_session").is_none());

    // The right token without the sign-in form's own token: refused.
    let forged = request(
        f.addr,
        "POST",
        "/signin",
        None,
        Some(&format!("token={}&csrf={csrf}", f.office)),
        "",
    )
    .await?;
    assert_eq!(forged.status, 403);
    assert!(forged.set_cookie("caresync_session").is_none());

    // Over TLS (as a proxy reports it) the cookie is Secure; always HttpOnly and SameSite=Strict.
    let signed = request(
        f.addr,
        "POST",
        "/signin",
        Some(&format!("caresync_signin={pre}")),
        Some(&format!("token={}&csrf={csrf}", f.office)),
        "X-Forwarded-Proto: https\r\n",
    )
    .await?;
    assert_eq!(signed.status, 303);
    let set = signed
        .header("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("caresync_session="))
        .ok_or("no session cookie")?;
    for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    let id = signed.set_cookie("caresync_session").ok_or("no id")?;
    // Only the hash is stored.
    assert!(f.state.store.web_session(&id)?.is_none());
    assert!(f.state.store.web_session(&hash_secret(&id))?.is_some());

    let (cookie, csrf) = sign_in(&f, &f.office).await?;
    // Sign-out needs the session's form token.
    let bad = request(f.addr, "POST", "/signout", Some(&cookie), Some("csrf=forged"), "").await?;
    assert_eq!(bad.status, 403);
    assert_eq!(
        request(f.addr, "GET", "/", Some(&cookie), None, "").await?.status,
        200
    );
    let out = request(
        f.addr,
        "POST",
        "/signout",
        Some(&cookie),
        Some(&format!("csrf={csrf}")),
        "",
    )
    .await?;
    assert_eq!(out.status, 303);
    let after = request(f.addr, "GET", "/", Some(&cookie), None, "").await?;
    assert_eq!(after.status, 303, "the ended session no longer opens pages");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_goes_back_to_sign_in() -> TestResult {
    let f = fixture().await?;
    let now = caresync_core::clock::system_now();
    let office = f
        .state
        .store
        .people()?
        .into_iter()
        .find(|p| p.role == Role::Office)
        .ok_or("no office")?;
    for (id, expires_at) in [("fresh-session-id", now + HOUR_MS), ("stale-session-id", now - 1)] {
        f.state.store.create_web_session(
            &WebSession {
                id_hash: hash_secret(id),
                person_id: office.id,
                created_at: now - 13 * HOUR_MS,
                expires_at,
            },
            now - 13 * HOUR_MS,
        )?;
    }
    let fresh = request(
        f.addr,
        "GET",
        "/",
        Some("caresync_session=fresh-session-id"),
        None,
        "",
    )
    .await?;
    assert_eq!(fresh.status, 200);
    let stale = request(
        f.addr,
        "GET",
        "/",
        Some("caresync_session=stale-session-id"),
        None,
        "",
    )
    .await?;
    assert_eq!(stale.status, 303);
    assert_eq!(stale.header("location"), vec!["/signin"]);
    assert!(f
        .state
        .store
        .web_session(&hash_secret("stale-session-id"))?
        .is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_sees_only_their_team_and_names_are_escaped() -> TestResult {
    let f = fixture().await?;
    let (cookie, _) = sign_in(&f, &f.north_sup).await?;
    let home = request(f.addr, "GET", "/", Some(&cookie), None, "").await?;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Ann Carer"));
    assert!(
        home.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62; Smith")
            || home.body.contains("&lt;script&gt;alert(1)&lt;/script&gt; Smith"),
        "the name is shown as text"
    );
    assert!(!home.body.contains("<script>alert"), "never as markup");
    assert!(
        !home.body.contains("Betty South") && !home.body.contains("Bob Carer"),
        "no other team"
    );

    let mine = request(
        f.addr,
        "GET",
        &format!("/visits/{}", f.ann_visit),
        Some(&cookie),
        None,
        "",
    )
    .await?;
    assert_eq!(mine.status, 200);
    assert!(mine.body.contains("Lunch"));
    assert!(!mine.body.contains("<script>alert"));
    for path in [
        format!("/visits/{}", f.bob_visit),
        format!("/carers/{}", f.bob),
        format!("/visits/{}", VisitId::new()),
        "/visits/not-an-id".to_string(),
    ] {
        let other = request(f.addr, "GET", &path, Some(&cookie), None, "").await?;
        assert_eq!(other.status, 404, "{path}");
        assert!(
            !other.body.contains("Betty South") && !other.body.contains("Bob Carer"),
            "{path}"
        );
    }
    assert_eq!(
        request(
            f.addr,
            "GET",
            &format!("/carers/{}", f.ann),
            Some(&cookie),
            None,
            ""
        )
        .await?
        .status,
        200
    );
    // Office pages are the office's.
    for path in [
        "/punctuality",
        "/punctuality.csv",
        "/kpi",
        "/reconciliation",
        "/continuity",
        "/people",
    ] {
        let page = request(f.addr, "GET", path, Some(&cookie), None, "").await?;
        assert_eq!(page.status, 403, "{path}");
    }

    let (office, _) = sign_in(&f, &f.office).await?;
    let all = request(f.addr, "GET", "/", Some(&office), None, "").await?;
    assert!(all.body.contains("Betty South") && all.body.contains("Ann Carer"));
    let theirs = request(
        f.addr,
        "GET",
        &format!("/visits/{}", f.bob_visit),
        Some(&office),
        None,
        "",
    )
    .await?;
    assert_eq!(theirs.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_session_token_and_reach_the_timeline() -> TestResult {
    let f = fixture().await?;
    let (cookie, csrf) = sign_in(&f, &f.north_sup).await?;
    let path = format!("/visits/{}/note", f.ann_visit);

    let forged = request(
        f.addr,
        "POST",
        &path,
        Some(&cookie),
        Some("csrf=0000&category=general&text=forged+note"),
        "",
    )
    .await?;
    assert_eq!(forged.status, 403);
    let missing = request(
        f.addr,
        "POST",
        &path,
        Some(&cookie),
        Some("category=general&text=x"),
        "",
    )
    .await?;
    assert!(
        missing.status == 422 || missing.status == 400 || missing.status == 403,
        "{}",
        missing.status
    );
    assert!(
        f.state.visits.read(f.ann_visit)?.notes.is_empty(),
        "nothing written"
    );

    let ok = request(
        f.addr,
        "POST",
        &path,
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&category=wellbeing&text={}",
            enc("Rang daughter <b>re</b> meds")
        )),
        "",
    )
    .await?;
    assert_eq!(ok.status, 303);
    let corrected = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::London)
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let amended = request(
        f.addr,
        "POST",
        &format!("/visits/{}/amend", f.ann_visit),
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&carer={}&time=clock_in&corrected={}&reason=no_signal_at_door&comment=Rang+in",
            f.ann,
            enc(&corrected)
        )),
        "",
    )
    .await?;
    assert_eq!(amended.status, 303, "{}", amended.body);
    let visit = f.state.visits.read(f.ann_visit)?;
    assert_eq!(visit.notes.len(), 1);
    assert_eq!(visit.amendments.len(), 1);
    assert_eq!(visit.amendments[0].reason, ReasonCode::NoSignalAtDoor);
    let page = request(
        f.addr,
        "GET",
        &format!("/visits/{}", f.ann_visit),
        Some(&cookie),
        None,
        "",
    )
    .await?;
    assert!(
        page.body.contains("Rang daughter &#60;b&#62;re&#60;/b&#62; meds")
            || page.body.contains("Rang daughter &lt;b&gt;re&lt;/b&gt; meds")
    );
    assert!(page.body.contains("Clock-in of Ann Carer corrected to"));
    assert!(page.body.contains("No signal at door"));
    assert!(page.body.contains("by Nia North (supervisor)"));

    // A supervisor may not act on another team's visit, nor use office actions.
    let theirs = request(
        f.addr,
        "POST",
        &format!("/visits/{}/note", f.bob_visit),
        Some(&cookie),
        Some(&format!("csrf={csrf}&category=general&text=hello")),
        "",
    )
    .await?;
    assert_eq!(theirs.status, 404);
    assert!(f.state.visits.read(f.bob_visit)?.notes.is_empty());
    let cancel = request(
        f.addr,
        "POST",
        &format!("/visits/{}/cancel", f.ann_visit),
        Some(&cookie),
        Some(&format!("csrf={csrf}&reason=nope")),
        "",
    )
    .await?;
    assert_eq!(cancel.status, 403);
    assert_eq!(
        f.state.visits.read(f.ann_visit)?.schedule.status,
        VisitStatus::Scheduled
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_gets_figures_charts_and_the_csv_of_the_table() -> TestResult {
    let f = fixture().await?;
    let (cookie, csrf) = sign_in(&f, &f.office).await?;
    let page = request(
        f.addr,
        "GET",
        "/punctuality?group=contract&period=week&chart=kpi",
        Some(&cookie),
        None,
        "",
    )
    .await?;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Shire framework"));
    assert!(page.body.contains("<svg"), "a chart drawn on the server");
    // The contract's name is text in the table and in the chart's legend, never markup.
    assert!(!page.body.contains("<script>x"));
    assert!(
        page.body.matches("Shire framework &lt;script&gt;").count()
            + page.body.matches("Shire framework &#60;script&#62;").count()
            >= 2
    );
    let csv = request(
        f.addr,
        "GET",
        "/punctuality.csv?group=contract&period=week",
        Some(&cookie),
        None,
        "",
    )
    .await?;
    assert_eq!(csv.status, 200);
    assert!(csv
        .header("content-type")
        .iter()
        .any(|v| v.starts_with("text/csv")));
    assert!(csv.body.contains("period,group,group_id,visits,attended"));
    assert!(csv.body.contains("Shire framework"));
    // Weeks read as people say them (`w/c 23 Nov 2026`, also on the chart's axis), in the table
    // and in its CSV alike; the machine label (`2026-W48`) is the cell's tooltip.
    let label = csv
        .body
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').next())
        .ok_or("an empty CSV")?;
    assert!(label.starts_with("w/c "), "{}", csv.body);
    let cell = page
        .body
        .split("<td title=\"")
        .nth(1)
        .and_then(|rest| rest.split("</td>").next())
        .ok_or("no period cell")?;
    let (iso, shown) = cell.split_once("\">").ok_or("no period cell")?;
    assert!(iso.contains("-W"), "the tooltip is the ISO week: {cell}");
    assert_eq!(shown, label, "the table shows what the CSV holds");
    for path in ["/kpi", "/reconciliation", "/continuity", "/people"] {
        let p = request(f.addr, "GET", path, Some(&cookie), None, "").await?;
        assert_eq!(p.status, 200, "{path}");
        if path != "/people" && path != "/kpi" {
            assert!(p.body.contains(">w/c "), "{path} names its weeks: {}", p.body);
        }
    }
    // Subtitles name the days in words; the pickers keep the ISO dates they need.
    for path in ["/kpi", "/reconciliation", "/continuity"] {
        let p = request(
            f.addr,
            "GET",
            &format!("{path}?from=2026-11-13&to=2026-11-26"),
            Some(&cookie),
            None,
            "",
        )
        .await?;
        assert!(p.body.contains(", 13 to 26 Nov 2026"), "{path}: {}", p.body);
        assert!(p.body.contains("value=\"2026-11-13\""), "{path}");
    }
    // KPI months in words (`November 2026`), never an ISO month (`2026-11`) as a cell's text.
    let kpi = request(f.addr, "GET", "/kpi", Some(&cookie), None, "").await?;
    let iso_month = |at: usize| {
        let b = kpi.body.as_bytes();
        b.get(at + 1..at + 9).is_some_and(|m| {
            m[..4].iter().all(u8::is_ascii_digit)
                && m[4] == b'-'
                && m[5..7].iter().all(u8::is_ascii_digit)
                && m[7] == b'<'
        })
    };
    assert!(
        kpi.body.contains("<td>"),
        "the fixture has KPI months: {}",
        kpi.body
    );
    assert!(
        !kpi.body.match_indices(">20").any(|(at, _)| iso_month(at)),
        "an ISO month shown: {}",
        kpi.body
    );
    // Office actions go through the commit path.
    let cancelled = request(
        f.addr,
        "POST",
        &format!("/visits/{}/cancel", f.bob_visit),
        Some(&cookie),
        Some(&format!(
            "csrf={csrf}&reason={}&chargeable=yes",
            enc("In hospital")
        )),
        "",
    )
    .await?;
    assert_eq!(cancelled.status, 303);
    let v = f.state.visits.read(f.bob_visit)?;
    assert_eq!(v.schedule.status, VisitStatus::Cancelled);
    assert_eq!(v.schedule.chargeable, Some(true));
    // An enrolment code shown with its QR code.
    let enrol = request(
        f.addr,
        "POST",
        &format!("/people/{}/enrolment", f.ann),
        Some(&cookie),
        Some(&format!("csrf={csrf}")),
        "",
    )
    .await?;
    assert_eq!(enrol.status, 200);
    assert!(enrol.body.contains("<svg"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivating_a_person_ends_their_session_at_once() -> TestResult {
    let f = fixture().await?;
    let (sup, _) = sign_in(&f, &f.north_sup).await?;
    let (office, csrf) = sign_in(&f, &f.office).await?;
    let nia = f
        .state
        .store
        .people()?
        .into_iter()
        .find(|p| p.name == "Nia North")
        .ok_or("no supervisor")?;
    let forged = request(
        f.addr,
        "POST",
        &format!("/people/{}/deactivate", nia.id),
        Some(&office),
        Some("csrf=forged"),
        "",
    )
    .await?;
    assert_eq!(forged.status, 403);
    assert_eq!(
        request(f.addr, "GET", "/", Some(&sup), None, "").await?.status,
        200
    );
    let done = request(
        f.addr,
        "POST",
        &format!("/people/{}/deactivate", nia.id),
        Some(&office),
        Some(&format!("csrf={csrf}")),
        "",
    )
    .await?;
    assert_eq!(done.status, 303);
    let after = request(f.addr, "GET", "/", Some(&sup), None, "").await?;
    assert_eq!(after.status, 303, "the deactivated supervisor's session is over");
    let api = request(
        f.addr,
        "GET",
        "/api/v1/alerts",
        None,
        None,
        &format!("Authorization: Bearer {}\r\n", f.north_sup),
    )
    .await?;
    assert_eq!(api.status, 401, "and so is their API token");
    Ok(())
}

/// Whether `text` is in the page escaped as text (askama writes `&#60;`; either form is fine).
fn as_text(body: &str, text: &str) -> bool {
    let named = text.replace('<', "&lt;").replace('>', "&gt;");
    let numeric = text.replace('<', "&#60;").replace('>', "&#62;");
    body.contains(&named) || body.contains(&numeric)
}

/// An alert raised twenty minutes ago on a visit, for a carer's team, as the server would raise it.
fn raise_alert(
    f: &Fixture,
    visit: VisitId,
    carer: PersonId,
    kind: caresync_core::metrics::AlertKind,
) -> TestResult<AlertId> {
    use caresync_server::services::alerts;
    let store = f.state.store.as_ref();
    let team = store.person(carer)?.and_then(|p| p.team_id);
    let a = alerts::new_alert(
        &alerts::OversightSettings::default(),
        visit,
        kind,
        carer,
        String::new(),
        team,
        caresync_core::clock::system_now() - 20 * MINUTE_MS,
    );
    assert!(store.raise_alert(&a, &alerts::raised_entry(&a))?);
    Ok(a.alert_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversight_pages_are_scoped_and_their_forms_act_through_the_alert_service() -> TestResult {
    use caresync_core::metrics::AlertKind;
    use caresync_server::store::alerts::AlertState;
    let f = fixture().await?;
    let ann_alert = raise_alert(&f, f.ann_visit, f.ann, AlertKind::Missed)?;
    let bob_alert = raise_alert(&f, f.bob_visit, f.bob, AlertKind::Safeguarding)?;
    let (sup, sup_csrf) = sign_in(&f, &f.north_sup).await?;
    let (office, office_csrf) = sign_in(&f, &f.office).await?;

    // Every new page answers both roles (escalations, like its API, is the office's).
    for path in ["/alerts", "/alerts?state=closed", "/oversight", "/oversight.csv"] {
        for cookie in [&sup, &office] {
            let page = request(f.addr, "GET", path, Some(cookie), None, "").await?;
            assert_eq!(page.status, 200, "{path}: {}", page.body);
        }
    }
    assert_eq!(
        request(f.addr, "GET", "/escalations", Some(&office), None, "")
            .await?
            .status,
        200
    );
    assert_eq!(
        request(f.addr, "GET", "/escalations", Some(&sup), None, "")
            .await?
            .status,
        403
    );
    let today = request(f.addr, "GET", "/", Some(&sup), None, "").await?;
    assert!(
        today.body.contains("1 open alert to acknowledge or resolve"),
        "{}",
        today.body
    );

    // The supervisor's list: their team's alert, named, escaped; nothing of South's.
    let list = request(f.addr, "GET", "/alerts", Some(&sup), None, "").await?;
    assert!(as_text(&list.body, "<script>alert(1)</script> Smith"));
    assert!(
        !list.body.contains("<script>alert(1)"),
        "a client's name is shown as text"
    );
    assert!(list.body.contains("Ann Carer") && list.body.contains("Missed"));
    assert!(
        list.body.contains("acknowledgement overdue by 5 min"),
        "{}",
        list.body
    );
    assert!(
        list.body.contains(&format!("/visits/{}", f.ann_visit)),
        "links to the visit"
    );
    assert!(!list.body.contains("Betty South") && !list.body.contains("Bob Carer"));
    let office_list = request(f.addr, "GET", "/alerts", Some(&office), None, "").await?;
    assert!(office_list.body.contains("Betty South") && office_list.body.contains("Safeguarding"));
    let filtered = request(f.addr, "GET", "/alerts?kind=missed", Some(&office), None, "").await?;
    assert!(!filtered.body.contains("Betty South"), "filtered by kind");

    // Another team's alert is not found, whatever the form says; nothing changes.
    let ack = |id: AlertId| format!("/alerts/{id}/acknowledge");
    let other = request(
        f.addr,
        "POST",
        &ack(bob_alert),
        Some(&sup),
        Some(&format!("csrf={sup_csrf}")),
        "",
    )
    .await?;
    assert_eq!(other.status, 404);
    let resolve_other = request(
        f.addr,
        "POST",
        &format!("/alerts/{bob_alert}/resolve"),
        Some(&sup),
        Some(&format!("csrf={sup_csrf}&action=contacted_carer&note=x")),
        "",
    )
    .await?;
    assert_eq!(resolve_other.status, 404);
    let store = f.state.store.as_ref();
    assert_eq!(store.alert(bob_alert)?.ok_or("gone")?.state, AlertState::Raised);

    // A forged form is refused and changes nothing.
    let forged = request(f.addr, "POST", &ack(ann_alert), Some(&sup), Some("csrf=0000"), "").await?;
    assert_eq!(forged.status, 403);
    let forged = request(
        f.addr,
        "POST",
        &format!("/alerts/{ann_alert}/resolve"),
        Some(&sup),
        Some("csrf=0000&action=contacted_carer&note=forged"),
        "",
    )
    .await?;
    assert_eq!(forged.status, 403);
    assert_eq!(
        store.alert(ann_alert)?.ok_or("gone")?.version,
        1,
        "nothing written"
    );

    // Acknowledge, then resolve, through the page: the record and its history say who and how.
    let done = request(
        f.addr,
        "POST",
        &ack(ann_alert),
        Some(&sup),
        Some(&format!("csrf={sup_csrf}&back=kind%3Dmissed")),
        "",
    )
    .await?;
    assert_eq!(done.status, 303);
    assert_eq!(done.header("location"), vec!["/alerts?kind=missed".to_string()]);
    let a = store.alert(ann_alert)?.ok_or("gone")?;
    assert_eq!(a.state, AlertState::Acknowledged);
    assert!(
        a.escalated_at.is_some(),
        "acknowledged after the deadline: escalated first"
    );
    let list = request(f.addr, "GET", "/alerts", Some(&sup), None, "").await?;
    assert!(list.body.contains("Escalated to the office") && list.body.contains("Nia North"));
    let again = request(
        f.addr,
        "POST",
        &ack(ann_alert),
        Some(&sup),
        Some(&format!("csrf={sup_csrf}")),
        "",
    )
    .await?;
    assert_eq!(again.status, 409, "acknowledged once");
    let bad = request(
        f.addr,
        "POST",
        &format!("/alerts/{ann_alert}/resolve"),
        Some(&sup),
        Some(&format!("csrf={sup_csrf}&action=made_tea&note=x")),
        "",
    )
    .await?;
    assert_eq!(bad.status, 400, "an action from the fixed list only");
    let resolved = request(
        f.addr,
        "POST",
        &format!("/alerts/{ann_alert}/resolve"),
        Some(&sup),
        Some(&format!(
            "csrf={sup_csrf}&action=contacted_carer&note={}&back=https%3A%2F%2Fevil.example",
            enc("Rang Ann <b>at 10</b>: stuck in traffic")
        )),
        "",
    )
    .await?;
    assert_eq!(resolved.status, 303);
    assert_eq!(
        resolved.header("location"),
        vec!["/alerts".to_string()],
        "no redirect elsewhere"
    );
    let a = store.alert(ann_alert)?.ok_or("gone")?;
    assert_eq!(a.state, AlertState::Resolved);
    assert_eq!(a.action.map(|x| x.as_str()), Some("contacted_carer"));
    let steps: Vec<&str> = store
        .alert_history(ann_alert)?
        .iter()
        .map(|e| e.step.as_str())
        .collect();
    // Raised twenty minutes ago, a missed visit's 15 minutes had passed: late is late.
    assert_eq!(steps, vec!["raised", "escalated", "acknowledged", "resolved"]);

    // Gone from the open list (empty state says so); in the closed history with who and the note.
    let open = request(f.addr, "GET", "/alerts", Some(&sup), None, "").await?;
    assert!(
        open.body.contains("No open alerts for your team"),
        "{}",
        open.body
    );
    let closed = request(f.addr, "GET", "/alerts?state=closed", Some(&sup), None, "").await?;
    assert!(
        closed.body.contains("Contacted carer by Nia North"),
        "{}",
        closed.body
    );
    assert!(as_text(&closed.body, "Rang Ann <b>at 10</b>: stuck in traffic"));

    // The figures: the supervisor's team only; the office sees both and the KPI outlook.
    let figures = request(f.addr, "GET", "/oversight", Some(&sup), None, "").await?;
    assert!(figures.body.contains("North team") && !figures.body.contains("South team"));
    let csv = request(f.addr, "GET", "/oversight.csv", Some(&sup), None, "").await?;
    assert!(csv.body.contains("North team,") && !csv.body.contains("South team"));
    let figures = request(f.addr, "GET", "/oversight", Some(&office), None, "").await?;
    assert!(figures.body.contains("South team") && figures.body.contains("KPI outlook"));
    assert!(as_text(&figures.body, "Shire framework <script>x</script>"));
    let bad_month = request(f.addr, "GET", "/oversight?from=nope", Some(&office), None, "").await?;
    assert_eq!(bad_month.status, 400);

    // Escalations: a commissioner contact through the page, CSRF-checked.
    let contract = store.contracts()?.first().ok_or("no contract")?.id;
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let contact = |csrf: &str| format!("csrf={csrf}&contract={contract}&date={day}&summary=Rang+the+council");
    let forged = request(
        f.addr,
        "POST",
        "/commissioner-contacts",
        Some(&office),
        Some(&contact("0000")),
        "",
    )
    .await?;
    assert_eq!(forged.status, 403);
    assert!(store.commissioner_contacts()?.is_empty());
    let by_sup = request(
        f.addr,
        "POST",
        "/commissioner-contacts",
        Some(&sup),
        Some(&contact(&sup_csrf)),
        "",
    )
    .await?;
    assert_eq!(by_sup.status, 403);
    let ok = request(
        f.addr,
        "POST",
        "/commissioner-contacts",
        Some(&office),
        Some(&contact(&office_csrf)),
        "",
    )
    .await?;
    assert_eq!(ok.status, 303);
    let page = request(f.addr, "GET", "/escalations", Some(&office), None, "").await?;
    assert!(page.body.contains("Rang the council") && page.body.contains("Olive Office"));
    Ok(())
}
