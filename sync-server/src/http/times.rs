//! RFC 3339 beside epoch milliseconds in the API's JSON (issue 13): every instant a JSON answer
//! carries as milliseconds since 1970 (`planned_start`, `received_at`, `at`, ...) gains a sibling
//! `<name>_rfc3339` holding the same instant as RFC 3339 in UTC (`2026-11-25T09:00:00Z`, with
//! milliseconds only when there are some). The milliseconds stay, so phones and existing clients
//! keep working.
//!
//! One mechanism for every route: a layer rewrites successful `application/json` answers under
//! `/api/v1/`, adding the siblings wherever one of [`INSTANT_FIELDS`] holds an integer (or `null`),
//! at any depth. Types, the visit document (Automerge) and the sync protocol (CBOR) are untouched.
//! The OpenAPI document describes each sibling next to its field, and a test there checks that the
//! fields it documents as milliseconds are exactly [`INSTANT_FIELDS`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde_json::Value;

/// What a sibling's name adds to its field's.
pub const SUFFIX: &str = "_rfc3339";

/// The field names that hold an instant as epoch milliseconds in the API's JSON answers.
pub const INSTANT_FIELDS: &[&str] = &[
    // The schedule, live alerts, a visit's figures.
    "planned_start",
    "planned_end",
    // Clock events, as in the document and as projected.
    "device_time",
    "offset_measured_at",
    "trusted_time",
    "received_at",
    // Notes, task outcomes, amendments, commissioner contacts.
    "written_at",
    "recorded_at",
    "corrected_time",
    // Timeline entries and alert history.
    "at",
    // Alert records and escalations.
    "raised_at",
    "ack_due_at",
    "acknowledged_at",
    "escalated_at",
    "resolved_at",
    "closed_at",
    "opened_at",
    // Phones.
    "enrolled_at",
    "revoked_at",
    "last_sync_at",
    // A visit's figures: the instant judged at, and i and o.
    "as_of",
    "clock_in",
    "clock_out",
];

/// `2026-11-25T09:00:00Z` (`…:00.250Z` when there are milliseconds); `None` outside the years
/// 0000–9999, which RFC 3339 cannot write (a phone's clock can say anything).
pub fn rfc3339(ms: i64) -> Option<String> {
    let t = DateTime::<Utc>::from_timestamp_millis(ms)?;
    (0..=9999)
        .contains(&t.year())
        .then(|| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Adds the siblings throughout `value`. A field that already exists is never overwritten.
pub fn add_rfc3339(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let mut siblings = Vec::new();
            for (name, field) in fields.iter_mut() {
                add_rfc3339(field);
                if !INSTANT_FIELDS.contains(&name.as_str()) {
                    continue;
                }
                let sibling = match field {
                    Value::Number(n) => match n.as_i64() {
                        Some(ms) => rfc3339(ms).map_or(Value::Null, Value::String),
                        None => continue,
                    },
                    Value::Null => Value::Null,
                    _ => continue,
                };
                siblings.push((format!("{name}{SUFFIX}"), sibling));
            }
            for (name, sibling) in siblings {
                fields.entry(name).or_insert(sibling);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(add_rfc3339),
        _ => {}
    }
}

/// The layer: successful JSON answers under `/api/v1/` get their siblings.
pub async fn with_rfc3339(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/v1/");
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || !json || !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The body is already whole in memory (axum's `Json`); this only collects it.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return super::ApiError::internal(e).into_response(),
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    add_rfc3339(&mut value);
    match serde_json::to_vec(&value) {
        Ok(rewritten) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Response::from_parts(parts, Body::from(rewritten))
        }
        Err(e) => super::ApiError::internal(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instants_read_as_utc_by_hand() {
        // 1970-01-01 to 2026-01-01: 56 years of 365 days and 14 leap days (1972–2024) = 20,454
        // days; to 25 November (2026 is not a leap year): 304 + 24 = 328 more; 09:00 adds 32,400 s.
        assert_eq!((56 * 365 + 14 + 328) * 86_400 + 32_400, 1_795_597_200_i64);
        assert_eq!(
            rfc3339(1_795_597_200_000).as_deref(),
            Some("2026-11-25T09:00:00Z")
        );
        assert_eq!(
            rfc3339(1_764_061_200_000).as_deref(),
            Some("2025-11-25T09:00:00Z")
        );
        assert_eq!(
            rfc3339(1_795_597_200_250).as_deref(),
            Some("2026-11-25T09:00:00.250Z")
        );
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(rfc3339(253_402_300_800_000), None, "year 10000");
    }

    /// The layer parses answers again: a percentage must come back bit for bit (serde_json's
    /// `float_roundtrip`), or a report read through the API would drift from its CSV.
    #[test]
    fn rates_survive_the_second_parse_exactly() -> Result<(), serde_json::Error> {
        for k in 1..=1_000_u32 {
            for n in [3.0, 7.0, 11.0, 13.0, 997.0] {
                let rate = f64::from(k) * 100.0 / n;
                let text = serde_json::to_vec(&json!({ "late_pct": rate }))?;
                let back: Value = serde_json::from_slice(&text)?;
                assert_eq!(
                    back["late_pct"].as_f64().map(f64::to_bits),
                    Some(rate.to_bits()),
                    "{rate}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn siblings_sit_beside_instants_at_any_depth_and_nothing_else_changes() {
        let mut v = json!({
            "visit": { "schedule": { "planned_start": 1_795_597_200_000_i64, "planned_end": 1_795_599_000_000_i64 } },
            "events": [{ "device_time": 1_795_597_260_500_i64, "offset_measured_at": null, "clock_offset_ms": 1_000 }],
            "entries": [{ "kind": "clock", "at": 0 }],
            "expires_at": "2026-11-25T09:00:00Z",
            "as_of_rfc3339": "kept",
            "as_of": 1,
            "late_pct": 33.333333333333336,
        });
        add_rfc3339(&mut v);
        assert_eq!(
            v["visit"]["schedule"]["planned_start_rfc3339"],
            "2026-11-25T09:00:00Z"
        );
        assert_eq!(
            v["visit"]["schedule"]["planned_end_rfc3339"],
            "2026-11-25T09:30:00Z"
        );
        assert_eq!(v["events"][0]["device_time_rfc3339"], "2026-11-25T09:01:00.500Z");
        assert_eq!(v["events"][0]["offset_measured_at_rfc3339"], Value::Null);
        assert!(
            v["events"][0].get("clock_offset_ms_rfc3339").is_none(),
            "a duration is not an instant"
        );
        assert_eq!(v["entries"][0]["at_rfc3339"], "1970-01-01T00:00:00Z");
        assert!(v.get("expires_at_rfc3339").is_none(), "already a date-time");
        assert_eq!(v["as_of_rfc3339"], "kept", "never overwritten");
        assert_eq!(v["planned_start"], Value::Null, "absent stays absent");
        assert!(v.get("planned_start_rfc3339").is_none());
        assert_eq!(v["late_pct"], json!(33.333333333333336));
    }
}
