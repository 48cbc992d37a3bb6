//! The OpenAPI document against the running server: every documented operation exists, and every
//! operation's role and scope checks hold, as a matrix generated from the operation table: each
//! route × {no token, a carer's device, a supervisor on something in their team, a supervisor on
//! something outside it, the office}. A route added to the table is in the matrix without more code.
//!
//! The rule it checks: a role that may never call an operation gets 403; a role that may, naming
//! something outside its scope, gets 404 (the same answer as an id that does not exist).

use caresync_core::clock::SystemClock;
use caresync_core::domain::*;
use caresync_core::protocol::{to_cbor, SyncRequest, CBOR, PROTOCOL_VERSION};
use caresync_server::http::openapi::{Access, Names, Operation, OPERATIONS};
use caresync_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;

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

/// Ids inside and outside a supervisor's scope, fresh for each operation (some operations
/// revoke, deactivate or cancel what they name).
struct Fixture {
    /// Sue supervises team North; Ann is a carer in North, Bob a carer in South.
    supervisor: String,
    supervisor_id: PersonId,
    ann: Phone,
    bob: Phone,
    ann_visit: VisitId,
    bob_visit: VisitId,
    ann_client: ClientId,
    bob_client: ClientId,
    contract: ContractId,
    /// Alerts raised by a concern each carer's phone synced (on their own visit).
    ann_alert: String,
    bob_alert: String,
}

impl Fixture {
    fn build(world: &World) -> TestResult<Self> {
        let office = &world.office;
        let (_, north) = office.call("POST", "/api/v1/teams", Some(json!({"name": "North"})))?;
        let (_, south) = office.call("POST", "/api/v1/teams", Some(json!({"name": "South"})))?;
        let (_, sup) = office.call(
            "POST",
            "/api/v1/people",
            Some(json!({"name": "Sue", "role": "supervisor", "team_id": north["id"]})),
        )?;
        let supervisor = sup["token"].as_str().ok_or("no supervisor token")?.to_string();
        let supervisor_id = sup["person"]["id"].as_str().ok_or("no id")?.parse()?;
        let carer_in = |name: &str, team: &Value| -> TestResult<Phone> {
            let (status, p) = office.call(
                "POST",
                "/api/v1/people",
                Some(json!({"name": name, "role": "carer", "team_id": team["id"]})),
            )?;
            assert_eq!(status, 201, "{p}");
            let id: PersonId = p["person"]["id"].as_str().ok_or("no id")?.parse()?;
            let code = office.enrolment_code(id)?;
            Phone::enrol(world.dir.path(), &world.server.url, &code, Arc::new(SystemClock))
        };
        let ann = carer_in("Ann", &north)?;
        let bob = carer_in("Bob", &south)?;
        let ann_client = office.create_client("Ann's client", None)?;
        let bob_client = office.create_client("Bob's client", None)?;
        let contract = office.create_contract("Spot", "spot", json!({}))?;
        let start = now() + HOUR_MS;
        let ann_visit = office.create_visit_for(ann_client, contract, &[ann.carer], start, 30)?;
        let bob_visit = office.create_visit_for(bob_client, contract, &[bob.carer], start, 30)?;
        let concern = |phone: &Phone, visit: VisitId| -> TestResult<String> {
            phone.sync()?;
            phone
                .store
                .add_note(visit, NoteCategory::Concern, "Seemed low today")?;
            phone.sync()?;
            let (status, all) = office.call("GET", "/api/v1/oversight/alerts", None)?;
            assert_eq!(status, 200, "{all}");
            all.as_array()
                .and_then(|a| a.iter().find(|x| x["visit_id"] == json!(visit)))
                .and_then(|x| x["alert_id"].as_str())
                .map(str::to_string)
                .ok_or_else(|| "no alert raised by the concern".into())
        };
        let ann_alert = concern(&ann, ann_visit)?;
        let bob_alert = concern(&bob, bob_visit)?;
        Ok(Self {
            supervisor,
            supervisor_id,
            ann,
            bob,
            ann_visit,
            bob_visit,
            ann_client,
            bob_client,
            contract,
            ann_alert,
            bob_alert,
        })
    }

    /// The id an operation's path names: in the supervisor's scope, or outside it.
    fn id(&self, op: &Operation, in_scope: bool) -> String {
        let pick = |a: String, b: String| if in_scope { a } else { b };
        match op.names {
            Names::Nothing => String::new(),
            Names::Visit => pick(self.ann_visit.to_string(), self.bob_visit.to_string()),
            Names::Person if op.access == Access::OfficeOrSelf => {
                pick(self.supervisor_id.to_string(), self.ann.carer.to_string())
            }
            Names::Person => pick(self.ann.carer.to_string(), self.bob.carer.to_string()),
            Names::Client => pick(self.ann_client.to_string(), self.bob_client.to_string()),
            Names::Contract => self.contract.to_string(),
            Names::Device => pick(self.ann.device.to_string(), self.bob.device.to_string()),
            Names::Alert => pick(self.ann_alert.clone(), self.bob_alert.clone()),
        }
    }
}

/// The path with its id and required query parameters filled in.
fn filled(op: &Operation, id: &str) -> String {
    let today = chrono::Utc::now().date_naive();
    let mut path = op.path.replace("{id}", id);
    let mut sep = '?';
    for q in op.query {
        let mut parts = q.split(':');
        let (name, kind, required) = (parts.next(), parts.next(), parts.next() == Some("true"));
        if !required {
            continue;
        }
        let value = match (name, kind) {
            (Some("to"), _) => today.succ_opt().unwrap_or(today).to_string(),
            (_, Some("date")) => today.to_string(),
            _ => continue,
        };
        path.push_str(&format!("{sep}{}={value}", name.unwrap_or_default()));
        sep = '&';
    }
    path
}

#[test]
fn every_route_checks_role_and_scope_for_every_kind_of_caller() -> TestResult {
    let world = World::start()?;
    let url = world.server.url.clone();

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
        let f = Fixture::build(&world)?;
        let cbor = op.request.is_some_and(|r| r.starts_with("cbor:"));
        let body = || -> Option<Vec<u8>> {
            match op.request {
                Some("cbor:SyncRequest") => Some(sync_body.clone()),
                Some(r) if r.starts_with("cbor:") => Some(b"not cbor".to_vec()),
                Some(_) => Some(b"{}".to_vec()),
                None => None,
            }
        };
        let (inside, outside) = (filled(op, &f.id(op, true)), filled(op, &f.id(op, false)));
        let as_who = |token: Option<&str>, path: &str| call(&url, token, op.method, path, body(), cbor);
        let what = format!("{} {}", op.method, op.path);

        // Least powerful first: the office's call may revoke or cancel what it names.
        let (anon, _) = as_who(None, &inside)?;
        let (device, _) = as_who(Some(&f.ann.token), &inside)?;
        let (sup_out, sup_out_body) = as_who(Some(&f.supervisor), &outside)?;
        let (sup_in, sup_in_body) = as_who(Some(&f.supervisor), &inside)?;
        let (office, office_body) = as_who(Some(&world.office.token), &inside)?;

        // The route exists: not 405, and not a bare 404 (ours carry a problem body).
        assert_ne!(office, 405, "{what}");
        assert!(
            office != 404 || office_body.contains("\"code\""),
            "{what}: no such route"
        );
        // Allowed: neither refused nor "not found", and no server error.
        let allowed = |s: u16| !matches!(s, 401 | 403 | 404) && s < 500;
        let row = format!(
            "{what}: none {anon}, device {device}, supervisor in {sup_in} ({sup_in_body}), \
             supervisor out {sup_out} ({sup_out_body}), office {office} ({office_body})"
        );
        match op.access {
            Access::Public => {
                for s in [anon, device, sup_in, sup_out, office] {
                    assert!(allowed(s), "{row}");
                }
            }
            Access::Device => {
                assert_eq!(anon, 401, "{row}");
                assert!(allowed(device), "{row}");
                assert_eq!((sup_in, sup_out, office), (403, 403, 403), "{row}");
            }
            Access::Office => {
                assert_eq!(anon, 401, "{row}");
                assert_eq!((device, sup_in, sup_out), (403, 403, 403), "{row}");
                assert!(allowed(office), "{row}");
            }
            Access::OfficeOrSupervisor | Access::OfficeOrSelf => {
                assert_eq!(anon, 401, "{row}");
                assert_eq!(device, 403, "{row}");
                assert!(allowed(sup_in), "{row}");
                assert!(allowed(office), "{row}");
                if matches!(op.names, Names::Nothing | Names::Contract) {
                    assert!(allowed(sup_out), "{row}");
                } else {
                    assert_eq!(sup_out, 404, "{row}");
                    assert!(sup_out_body.contains("not_found"), "{row}");
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, OPERATIONS.len());
    Ok(())
}

/// Lists answer a supervisor with their team's part only.
#[test]
fn a_supervisor_lists_only_their_teams_people_and_clients() -> TestResult {
    let world = World::start()?;
    let f = Fixture::build(&world)?;
    let url = &world.server.url;
    let ids = |path: &str, token: &str| -> TestResult<Vec<String>> {
        let (status, v) = call_as(url, token, "GET", path, None)?;
        assert_eq!(status, 200, "{path}: {v}");
        Ok(v.as_array()
            .ok_or("not a list")?
            .iter()
            .filter_map(|x| x["id"].as_str().map(str::to_string))
            .collect())
    };
    let people = ids("/api/v1/people", &f.supervisor)?;
    assert!(people.contains(&f.ann.carer.to_string()));
    assert!(people.contains(&f.supervisor_id.to_string()));
    assert!(!people.contains(&f.bob.carer.to_string()), "another team's carer");
    let clients = ids("/api/v1/clients", &f.supervisor)?;
    assert_eq!(clients, vec![f.ann_client.to_string()]);
    // The office sees everyone.
    let all = ids("/api/v1/people", &world.office.token)?;
    assert!(all.contains(&f.bob.carer.to_string()));
    let all = ids("/api/v1/clients", &world.office.token)?;
    assert!(all.contains(&f.bob_client.to_string()));
    Ok(())
}
