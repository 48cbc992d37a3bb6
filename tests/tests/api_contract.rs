//! The OpenAPI document against the running server: every documented operation exists, and every
//! operation's role check holds for no token, a carer's device, a supervisor and the office.

use caresync_core::protocol::{to_cbor, SyncRequest, CBOR, PROTOCOL_VERSION};
use caresync_server::http::openapi::{Access, OPERATIONS};
use caresync_tests::*;
use serde_json::{json, Value};

fn call(
    url: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    cbor: bool,
) -> TestResult<(u16, String)> {
    let agent = http();
    let full = format!("{url}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut resp = match method {
        "get" => {
            let mut r = agent.get(&full);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()?
        }
        _ => {
            let mut r = match method {
                "put" => agent.put(&full),
                _ => agent.post(&full),
            };
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r = r.header("content-type", if cbor { CBOR } else { "application/json" });
            r.send(&body.unwrap_or_default()[..])?
        }
    };
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_to_string().unwrap_or_default()))
}

#[test]
fn the_document_is_served_and_matches_the_routes_and_their_roles() -> TestResult {
    let world = World::start()?;
    let url = world.server.url.clone();
    let ann = world.carer_with_phone("Ann")?;
    let (_, team) = world
        .office
        .call("POST", "/api/v1/teams", Some(json!({"name": "North"})))?;
    let (_, sup) = world.office.call(
        "POST",
        "/api/v1/people",
        Some(json!({"name": "Sue", "role": "supervisor", "team_id": team["id"]})),
    )?;
    let supervisor = sup["token"].as_str().ok_or("no supervisor token")?.to_string();

    let (status, doc) = call(&url, None, "get", "/api/openapi.json", None, false)?;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc)?;
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let documented = doc["paths"].as_object().ok_or("no paths")?;
    let ops: usize = documented
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(ops, OPERATIONS.len(), "the served document lists every operation");

    let sync_body = to_cbor(&SyncRequest {
        protocol: PROTOCOL_VERSION,
        device_time: now(),
        visits: vec![],
        manifest_digest: None,
    });
    let mut checked = 0;
    for op in OPERATIONS {
        let path = op.path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        let cbor = op.request.is_some_and(|r| r.starts_with("cbor:"));
        let body = || -> Option<Vec<u8>> {
            match op.request {
                Some("cbor:SyncRequest") => Some(sync_body.clone()),
                Some(r) if r.starts_with("cbor:") => Some(b"not cbor".to_vec()),
                Some(_) => Some(b"{}".to_vec()),
                None => None,
            }
        };
        let as_who = |token: Option<&str>| call(&url, token, op.method, &path, body(), cbor);
        let what = format!("{} {}", op.method, op.path);

        // The route exists: not a bare 404 (ours carry a problem body) and not 405.
        let (office_status, office_body) = as_who(Some(&world.office.token))?;
        assert_ne!(office_status, 405, "{what}");
        assert!(
            office_status != 404 || office_body.contains("\"code\""),
            "{what}: no such route"
        );

        let (anon, _) = as_who(None)?;
        let (device, _) = as_who(Some(&ann.token))?;
        let (sup_status, _) = as_who(Some(&supervisor))?;
        let allowed = |s: u16| s != 401 && s != 403;
        match op.access {
            Access::Public => {
                assert!(
                    allowed(anon) && allowed(device) && allowed(office_status),
                    "{what}: {anon} {device} {office_status}"
                );
            }
            Access::Device => {
                assert_eq!(anon, 401, "{what}");
                assert!(allowed(device), "{what}: device got {device}");
                assert_eq!(office_status, 403, "{what}: office token is not a device");
                assert_eq!(sup_status, 403, "{what}");
            }
            Access::Office => {
                assert_eq!(anon, 401, "{what}");
                assert_eq!(device, 403, "{what}");
                assert_eq!(sup_status, 403, "{what}");
                assert!(allowed(office_status), "{what}: office got {office_status}");
            }
            Access::OfficeOrSupervisor => {
                assert_eq!(anon, 401, "{what}");
                assert_eq!(device, 403, "{what}");
                assert!(allowed(sup_status), "{what}: supervisor got {sup_status}");
                assert!(allowed(office_status), "{what}: office got {office_status}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, OPERATIONS.len());
    Ok(())
}
