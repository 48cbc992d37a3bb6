//! When every permit is taken, a request is told to come back later (503 `busy`, `Retry-After`)
//! rather than queueing forever, and health probes still answer. A real server on loopback, with
//! the permits set to none so the outcome does not depend on timing.

use caresync_server::store::sqlite::SqliteStore;
use caresync_server::{router, AppState};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One HTTP/1.1 GET with a bearer token; the whole response as text.
async fn get(addr: std::net::SocketAddr, path: &str, token: &str) -> Result<String, std::io::Error> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// A real office token: a request is authenticated before it may wait for a permit.
fn office_token(state: &AppState) -> Result<String, Box<dyn std::error::Error>> {
    let (_, token) = caresync_server::services::people::create_person(
        state.store.as_ref(),
        "Office",
        caresync_core::domain::Role::Office,
        None,
        caresync_core::clock::system_now(),
    )?;
    Ok(token.ok_or("no token")?)
}

async fn serve(state: AppState) -> Result<std::net::SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_permit_free_requests_get_busy_and_probes_still_answer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut state = AppState::new(Arc::new(SqliteStore::open(&dir.path().join("server.db"))?));
    state.in_flight = Arc::new(Semaphore::new(0));
    state.permit_wait = Duration::from_millis(50);
    let token = office_token(&state)?;
    let addr = serve(state).await?;

    let busy = get(addr, "/api/v1/people", &token).await?;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.to_ascii_lowercase().contains("retry-after: 5"), "{busy}");
    assert!(busy.contains("\"busy\""), "{busy}");
    let health = get(addr, "/healthz", "x").await?;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_for_their_own_permits_while_other_requests_go_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut state = AppState::new(Arc::new(SqliteStore::open(&dir.path().join("server.db"))?));
    state.reports_in_flight = Arc::new(Semaphore::new(0));
    state.permit_wait = Duration::from_millis(50);
    let token = office_token(&state)?;
    let addr = serve(state).await?;

    let report = get(
        addr,
        "/api/v1/reports/punctuality?from=2026-11-01&to=2026-11-08",
        &token,
    )
    .await?;
    assert!(report.starts_with("HTTP/1.1 503"), "{report}");
    // Not a report: past the limiter, and refused only for its made-up token.
    let people = get(addr, "/api/v1/people", "x").await?;
    assert!(people.starts_with("HTTP/1.1 401"), "{people}");
    Ok(())
}

/// One HTTP/1.1 POST of a JSON body with a bearer token; the whole response as text.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &str,
) -> Result<String, std::io::Error> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_wait_for_room_in_the_memory_budget_and_requests_without_one_go_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut state = AppState::new(Arc::new(SqliteStore::open(&dir.path().join("server.db"))?));
    state.body_budget_kib = Arc::new(Semaphore::new(0));
    state.permit_wait = Duration::from_millis(50);
    let token = office_token(&state)?;
    let addr = serve(state).await?;

    let refused = post(addr, "/api/v1/teams", &token, r#"{"name":"North"}"#).await?;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"busy\""), "{refused}");
    let listed = get(addr, "/api/v1/teams", &token).await?;
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(!listed.contains("North"), "{listed}");
    Ok(())
}
