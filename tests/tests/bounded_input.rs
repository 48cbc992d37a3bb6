//! Out-of-bounds input through the real API: each case gets a 4xx with a stable code, and nothing
//! is stored (checked by reading back what the request would have created).

use caresync_core::domain::*;
use caresync_core::protocol::{from_cbor, to_cbor, EnrolRequest, EnrolResponse, Problem, ENROL_PATH};
use caresync_tests::*;
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

struct Setup {
    world: World,
    carer: PersonId,
    client: ClientId,
    contract: ContractId,
}

fn setup() -> TestResult<Setup> {
    let world = World::start()?;
    let carer = world.office.create_person("Ann", "carer")?;
    let client = world.office.create_client("Mrs Jones", None)?;
    let contract = world.office.create_contract("Spot", "spot", json!({}))?;
    Ok(Setup {
        world,
        carer,
        client,
        contract,
    })
}

impl Setup {
    fn visit(&self, id: VisitId, start: &str, end: &str, tasks: Value) -> Value {
        json!({
            "visit_id": id,
            "client_id": self.client,
            "contract_id": self.contract,
            "carers": [self.carer],
            "planned_start": start,
            "planned_end": end,
            "tasks": tasks,
        })
    }

    /// POST the visits; returns status and code, and checks that none of them was stored.
    fn refused_visits(&self, visits: Vec<Value>) -> TestResult<(u16, String)> {
        let ids: Vec<String> = visits
            .iter()
            .map(|v| v["visit_id"].as_str().unwrap_or_default().to_string())
            .collect();
        let (status, body) =
            self.world
                .office
                .call("POST", "/api/v1/visits", Some(json!({ "visits": visits })))?;
        for id in ids {
            let (s, _) = self
                .world
                .office
                .call("GET", &format!("/api/v1/visits/{id}"), None)?;
            assert_eq!(s, 404, "visit {id} was stored by a refused request");
        }
        Ok((status, code(&body).to_string()))
    }
}

#[test]
fn visits_out_of_bounds_are_refused_and_none_is_stored() -> TestResult {
    let s = setup()?;
    let tomorrow = rfc3339(now() + DAY_MS);
    let tomorrow_end = rfc3339(now() + DAY_MS + 30 * MINUTE_MS);
    let tasks = json!(["Breakfast"]);
    let cases = [
        (
            "year 1",
            s.visit(
                VisitId::new(),
                "0001-01-01T09:00:00Z",
                "0001-01-01T09:30:00Z",
                tasks.clone(),
            ),
            "out_of_range",
        ),
        (
            "year 9999",
            s.visit(
                VisitId::new(),
                "9999-01-01T09:00:00Z",
                "9999-01-01T09:30:00Z",
                tasks.clone(),
            ),
            "out_of_range",
        ),
        (
            "1,000 years long",
            s.visit(VisitId::new(), &tomorrow, "3026-01-01T09:30:00Z", tasks.clone()),
            "out_of_range",
        ),
        (
            "25 hours long",
            s.visit(
                VisitId::new(),
                &tomorrow,
                &rfc3339(now() + 2 * DAY_MS + HOUR_MS),
                tasks.clone(),
            ),
            "out_of_range",
        ),
        (
            "10,000 tasks of 700 bytes",
            s.visit(
                VisitId::new(),
                &tomorrow,
                &tomorrow_end,
                json!(vec!["x".repeat(700); 10_000]),
            ),
            "too_many",
        ),
        (
            "a 201-character task",
            s.visit(VisitId::new(), &tomorrow, &tomorrow_end, json!(["x".repeat(201)])),
            "too_long",
        ),
        (
            "a task with NUL",
            s.visit(
                VisitId::new(),
                &tomorrow,
                &tomorrow_end,
                json!(["Break\u{0}fast"]),
            ),
            "invalid_characters",
        ),
    ];
    for (what, visit, expected) in cases {
        let (status, got) = s.refused_visits(vec![visit])?;
        assert_eq!((status, got.as_str()), (400, expected), "{what}");
    }
    // One bad visit in a bulk create: the good one before it is not stored either.
    let good = s.visit(VisitId::new(), &tomorrow, &tomorrow_end, tasks.clone());
    let bad = s.visit(
        VisitId::new(),
        "9999-01-01T09:00:00Z",
        "9999-01-01T09:30:00Z",
        tasks.clone(),
    );
    let (status, got) = s.refused_visits(vec![good, bad])?;
    assert_eq!((status, got.as_str()), (400, "out_of_range"));

    // A reschedule out of bounds leaves the visit as it was.
    let id = s.world.office.create_visit(&[s.carer], now() + DAY_MS)?;
    let before = s.world.office.visit(id)?;
    let (status, body) = s.world.office.call(
        "POST",
        &format!("/api/v1/visits/{id}/reschedule"),
        Some(json!({"planned_start": "9999-01-01T09:00:00Z", "planned_end": "9999-01-01T09:30:00Z"})),
    )?;
    assert_eq!((status, code(&body)), (400, "out_of_range"), "{body}");
    assert_eq!(s.world.office.visit(id)?["heads"], before["heads"]);
    Ok(())
}

#[test]
fn names_tags_and_teams_out_of_bounds_are_refused_and_nothing_is_stored() -> TestResult {
    let s = setup()?;
    let office = &s.world.office;
    let people_before = office.call("GET", "/api/v1/people", None)?.1;

    for (what, body, expected) in [
        (
            "NUL in a name",
            json!({"name": "Ann\u{0}Smith", "role": "carer"}),
            "invalid_characters",
        ),
        (
            "right-to-left override",
            json!({"name": "Ann\u{202E}htimS", "role": "carer"}),
            "invalid_characters",
        ),
        (
            "a 201-character name",
            json!({"name": "a".repeat(201), "role": "carer"}),
            "too_long",
        ),
        (
            "a supervisor in no team",
            json!({"name": "Sue", "role": "supervisor", "team_id": TeamId::new()}),
            "unknown_team",
        ),
    ] {
        let (status, answer) = office.call("POST", "/api/v1/people", Some(body))?;
        assert_eq!((status, code(&answer)), (400, expected), "{what}: {answer}");
    }
    assert_eq!(office.call("GET", "/api/v1/people", None)?.1, people_before);

    // 100,000 tags on one client; a client name with a bidi override.
    for (what, body, expected) in [
        (
            "100,000 tags",
            json!({"name": "Mr Tag", "tag_ids": (0..100_000).map(|n| format!("tag-{n}")).collect::<Vec<_>>()}),
            "too_many",
        ),
        (
            "an override in a client name",
            json!({"name": "Mr \u{202E}gaT", "tag_ids": []}),
            "invalid_characters",
        ),
    ] {
        let id = ClientId::new();
        let mut body = body;
        body["id"] = json!(id);
        let (status, answer) = office.call("POST", "/api/v1/clients", Some(body))?;
        assert_eq!((status, code(&answer)), (400, expected), "{what}: {answer}");
        let (status, _) = office.call("GET", &format!("/api/v1/clients/{id}"), None)?;
        assert_eq!(status, 404, "{what}: the client was stored");
    }

    // A commissioner with a NUL.
    let id = ContractId::new();
    let (status, answer) = office.call(
        "POST",
        "/api/v1/contracts",
        Some(json!({"id": id, "name": "Frame", "commissioner": "Council\u{0}", "model": "spot"})),
    )?;
    assert_eq!((status, code(&answer)), (400, "invalid_characters"), "{answer}");
    let (status, _) = office.call("GET", &format!("/api/v1/contracts/{id}"), None)?;
    assert_eq!(status, 404);
    Ok(())
}

#[test]
fn device_names_out_of_bounds_are_refused_without_using_the_code() -> TestResult {
    let s = setup()?;
    let office = &s.world.office;
    let url = &s.world.server.url;
    let code = office.enrolment_code(s.carer)?;
    let enrol = |device_name: String| -> TestResult<(u16, Vec<u8>)> {
        post_raw(
            url,
            ENROL_PATH,
            None,
            &to_cbor(&EnrolRequest {
                code: code.clone(),
                device_name,
            }),
        )
    };
    for (what, name, status, expected) in [
        (
            "a 2 MB device name",
            "p".repeat(2 << 20),
            413,
            "payload_too_large",
        ),
        ("a 101-character device name", "p".repeat(101), 400, "too_long"),
        (
            "NUL in a device name",
            "Pixel\u{0}".to_string(),
            400,
            "invalid_characters",
        ),
        (
            "an override in a device name",
            "Pixel \u{202E}8".to_string(),
            400,
            "invalid_characters",
        ),
    ] {
        let (got, body) = enrol(name)?;
        let problem: Problem = serde_json::from_slice(&body)?;
        assert_eq!((got, problem.code.as_str()), (status, expected), "{what}");
    }
    let (_, devices) = office.call("GET", "/api/v1/devices", None)?;
    assert_eq!(devices, json!([]), "a refused enrolment stored a device");
    // The code was not used up: a proper name enrols with it.
    let (status, body) = enrol("Pixel 8".into())?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let enrolled: EnrolResponse = from_cbor(&body)?;
    assert_eq!(enrolled.carer_id, s.carer);
    Ok(())
}
