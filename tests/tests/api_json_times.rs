//! Every instant the API's JSON gives in epoch milliseconds comes with a `<name>_rfc3339` sibling:
//! the same instant in RFC 3339, UTC, checked against a hand-computed value and across every
//! read a supervisor or the office makes of a visit, its figures, alerts and phones.

use caresync_core::domain::*;
use caresync_tests::*;
use serde_json::{json, Value};

/// 2026-11-25T09:00:00Z: 56 years from 1970 (14 leap days) = 20,454 days, then 328 days to
/// 25 November, then 9 hours: (20,454 + 328) × 86,400 s + 32,400 s = 1,795,597,200 s.
const NOV_25_0900: Millis = 1_795_597_200_000;

/// Every integer under a name that looks like an instant (or holds a value in 2001–2286 as
/// milliseconds) has its sibling, and the sibling renders it; returns how many were checked.
fn check_siblings(v: &Value, path: &str) -> usize {
    let mut checked = 0;
    match v {
        Value::Object(fields) => {
            for (name, field) in fields {
                checked += check_siblings(field, &format!("{path}.{name}"));
                let epochish = field
                    .as_i64()
                    .is_some_and(|ms| (1_000_000_000_000..10_000_000_000_000).contains(&ms));
                if name.ends_with("_rfc3339")
                    || !(epochish || (field.is_null() && fields.contains_key(&format!("{name}_rfc3339"))))
                {
                    continue;
                }
                let sibling = &fields[&format!("{name}_rfc3339")];
                match field.as_i64() {
                    Some(ms) => {
                        let expected = chrono::DateTime::from_timestamp_millis(ms)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
                        assert_eq!(sibling.as_str(), expected.as_deref(), "{path}.{name} = {ms}");
                        assert!(
                            sibling.as_str().is_some_and(|s| s.ends_with('Z')),
                            "{path}.{name}"
                        );
                    }
                    None => assert!(sibling.is_null(), "{path}.{name}"),
                }
                checked += 1;
            }
        }
        Value::Array(items) => {
            for (k, item) in items.iter().enumerate() {
                checked += check_siblings(item, &format!("{path}[{k}]"));
            }
        }
        _ => {}
    }
    checked
}

#[test]
fn visit_reads_give_rfc3339_beside_every_millisecond_instant() -> TestResult {
    let world = World::start()?;
    let office = &world.office;
    let phone = world.carer_with_phone("Ann")?;

    // A visit planned at a hand-computed instant: its read gives both forms.
    let later = office.create_visit(&[phone.carer], NOV_25_0900)?;
    let read = office.visit(later)?;
    let schedule = &read["visit"]["schedule"];
    assert_eq!(schedule["planned_start"], json!(NOV_25_0900));
    assert_eq!(schedule["planned_start_rfc3339"], "2026-11-25T09:00:00Z");
    assert_eq!(schedule["planned_end_rfc3339"], "2026-11-25T09:30:00Z");

    // A visit now, clocked in and out by the phone, with a note and an amendment.
    let visit = office.create_visit(&[phone.carer], now() - 10 * MINUTE_MS)?;
    phone.sync()?;
    phone.store.clock_in(visit, &caresync_core::ClockRequest::app())?;
    phone
        .store
        .clock_out(visit, &caresync_core::ClockRequest::app())?;
    let summary = phone.sync()?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let (status, note) = office.call(
        "POST",
        &format!("/api/v1/visits/{visit}/notes"),
        Some(json!({"category": "general", "text": "Rang the family"})),
    )?;
    assert_eq!(status, 201, "{note}");
    assert!(check_siblings(&note, "note") >= 1, "{note}");
    let (status, amendment) = office.call(
        "POST",
        &format!("/api/v1/visits/{visit}/amendments"),
        Some(json!({"carer_id": phone.carer, "time": "clock_in", "corrected_time": rfc3339(now() - 9 * MINUTE_MS), "reason": "authorised_by_office"})),
    )?;
    assert_eq!(status, 201, "{amendment}");
    assert!(check_siblings(&amendment, "amendment") >= 2, "{amendment}");

    let read = office.visit(visit)?;
    let event = &read["events"][0];
    for field in ["device_time", "trusted_time", "received_at"] {
        let ms = event[field].as_i64().ok_or(field)?;
        let expected = chrono::DateTime::from_timestamp_millis(ms)
            .ok_or("in range")?
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        assert_eq!(event[format!("{field}_rfc3339")], json!(expected), "{event}");
    }
    assert!(check_siblings(&read, "visit") >= 8, "{read}");

    let date = chrono::DateTime::from_timestamp_millis(now() - 10 * MINUTE_MS)
        .ok_or("date")?
        .with_timezone(&chrono_tz_london())
        .date_naive();
    let day = chrono::DateTime::from_timestamp_millis(now())
        .ok_or("date")?
        .date_naive();
    for path in [
        format!("/api/v1/visits/{visit}/timeline"),
        format!("/api/v1/visits/{visit}/figures"),
        format!("/api/v1/carers/{}/timeline?date={date}", phone.carer),
        "/api/v1/alerts".to_string(),
        "/api/v1/devices".to_string(),
        format!(
            "/api/v1/oversight/alerts?state=all&from={}",
            day - chrono::Duration::days(1)
        ),
        "/api/v1/oversight/escalations".to_string(),
        "/api/v1/oversight/commissioner-contacts".to_string(),
    ] {
        let (status, body) = office.call("GET", &path, None)?;
        assert_eq!(status, 200, "{path}: {body}");
        check_siblings(&body, &path);
    }
    let (_, timeline) = office.call("GET", &format!("/api/v1/visits/{visit}/timeline"), None)?;
    assert!(check_siblings(&timeline, "timeline") >= 10, "{timeline}");
    let entries = timeline["entries"].as_array().ok_or("entries")?;
    assert!(entries.iter().all(|e| e["at_rfc3339"].is_string()), "{timeline}");
    let (_, figures) = office.call("GET", &format!("/api/v1/visits/{visit}/figures"), None)?;
    for field in ["as_of", "planned_start", "clock_in", "clock_out"] {
        assert!(
            figures[format!("{field}_rfc3339")].is_string(),
            "{field}: {figures}"
        );
    }
    let (_, devices) = office.call("GET", "/api/v1/devices", None)?;
    assert!(devices[0]["enrolled_at_rfc3339"].is_string(), "{devices}");
    assert!(devices[0]["revoked_at_rfc3339"].is_null(), "{devices}");
    Ok(())
}
