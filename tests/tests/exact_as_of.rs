//! Exact as-of, end to end on a real server: a report answered today `as_of` an earlier instant
//! equals the one answered then, though the visit has since moved to another contract and been
//! rescheduled; one visit's figures as of then and now; a future `as_of` is refused.

use caresync_core::domain::*;
use caresync_tests::*;
use serde_json::{json, Value};

fn get(office: &Office, path: &str) -> TestResult<Value> {
    let (status, v) = office.call("GET", path, None)?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {v}").into());
    }
    Ok(v)
}

/// `(group, scheduled, missed)` of each row.
fn rows(report: &Value) -> Vec<(String, u64, u64)> {
    report["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["group"].as_str().unwrap_or_default().to_string(),
                        r["scheduled"].as_u64().unwrap_or_default(),
                        r["missed"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_report_as_of_before_a_move_and_a_reschedule_is_the_report_of_then() -> TestResult {
    let world = World::start()?;
    let office = &world.office;
    let client = office.create_client("Mr P", None)?;
    let framework = office.create_contract(
        "Northshire framework",
        "framework",
        json!({"kpi": {"max_late_pct": 10.0, "max_missed_pct": 2.0}}),
    )?;
    let spot = office.create_contract("Westshire spot", "spot", json!({}))?;
    let carer = office.create_person("Bea", "carer")?;
    // Three days ago at 10:00 UTC: long past, never attended, so missed.
    let start = (now() / DAY_MS - 3) * DAY_MS + 10 * HOUR_MS;
    let visit = office.create_visit_for(client, framework, &[carer], start, 30)?;
    let day = chrono::DateTime::from_timestamp_millis(start)
        .ok_or("date")?
        .date_naive();
    let window = format!(
        "from={}&to={}",
        day - chrono::Duration::days(7),
        day + chrono::Duration::days(7)
    );

    let then = now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let as_of = rfc3339(then).replace('+', "%2B");
    let report_then = get(
        office,
        &format!("/api/v1/reports/punctuality?{window}&group_by=contract&period=month"),
    )?;
    assert_eq!(
        rows(&report_then),
        vec![(framework.to_string(), 1, 1)],
        "{report_then}"
    );
    let kpi_then = get(office, &format!("/api/v1/reports/kpi?{window}"))?;
    assert_eq!(kpi_then[0]["missed"], 1, "{kpi_then}");
    std::thread::sleep(std::time::Duration::from_millis(20));

    // The package changes commissioner: the office moves the visit, then reschedules it a day on.
    let (status, moved) = office.call(
        "POST",
        &format!("/api/v1/visits/{visit}/contract"),
        Some(json!({"contract_id": spot})),
    )?;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["schedule"]["contract_id"], json!(spot));
    office.reschedule(visit, start + DAY_MS, start + DAY_MS + 30 * MINUTE_MS)?;
    let timeline = get(office, &format!("/api/v1/visits/{visit}/timeline"))?;
    assert!(
        timeline.to_string().contains("moved to another contract"),
        "{timeline}"
    );

    // Now the visit is the spot contract's, and the framework has nothing left to breach.
    let report_now = get(
        office,
        &format!("/api/v1/reports/punctuality?{window}&group_by=contract&period=month"),
    )?;
    assert_eq!(rows(&report_now), vec![(spot.to_string(), 1, 1)], "{report_now}");
    assert_eq!(get(office, &format!("/api/v1/reports/kpi?{window}"))?, json!([]));
    // As of then, the very report of then.
    let replay = get(
        office,
        &format!("/api/v1/reports/punctuality?{window}&group_by=contract&period=month&as_of={as_of}"),
    )?;
    assert_eq!(replay, report_then);
    assert_eq!(
        get(office, &format!("/api/v1/reports/kpi?{window}&as_of={as_of}"))?,
        kpi_then
    );

    // One visit's figures, now and then.
    let f = get(office, &format!("/api/v1/visits/{visit}/figures"))?;
    assert_eq!(
        (f["attendance"].as_str(), f["contract_id"].clone()),
        (Some("missed"), json!(spot))
    );
    assert_eq!(
        (f["planned_minutes"].as_i64(), f["billable_minutes"].as_i64()),
        (Some(30), Some(0))
    );
    assert_eq!(f["planned_start"].as_i64(), Some(start + DAY_MS));
    let f = get(office, &format!("/api/v1/visits/{visit}/figures?as_of={as_of}"))?;
    assert_eq!(f["contract_id"], json!(framework), "{f}");
    assert_eq!(f["planned_start"].as_i64(), Some(start));

    // A future as_of is refused, with a code a program can act on.
    let future = rfc3339(now() + HOUR_MS).replace('+', "%2B");
    let (status, problem) = office.call(
        "GET",
        &format!("/api/v1/visits/{visit}/figures?as_of={future}"),
        None,
    )?;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "as_of_in_future", "{problem}");
    // Moving to the contract it is on, or to none that exists, changes nothing.
    let (status, _) = office.call(
        "POST",
        &format!("/api/v1/visits/{visit}/contract"),
        Some(json!({"contract_id": spot})),
    )?;
    assert_eq!(status, 409);
    let (status, _) = office.call(
        "POST",
        &format!("/api/v1/visits/{visit}/contract"),
        Some(json!({"contract_id": ContractId::new()})),
    )?;
    assert_eq!(status, 400);
    let f = get(office, &format!("/api/v1/visits/{visit}/figures"))?;
    assert_eq!(f["contract_id"], json!(spot));
    Ok(())
}
