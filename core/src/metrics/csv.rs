//! CSV for flat report rows, written from each row's serde (JSON) form so the two can't disagree:
//! numbers in the same shortest round-trip notation, `null` as an empty field, RFC 4180 quoting.

use serde::Serialize;
use serde_json::Value;

/// A flat row type with its CSV column order (every field of its JSON form, once).
pub trait CsvRow: Serialize {
    const COLUMNS: &'static [&'static str];
}

/// Header line then one line per row, `\r\n`-terminated (RFC 4180).
pub fn to_csv<T: CsvRow>(rows: &[T]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    push_line(&mut out, T::COLUMNS.iter().map(|c| (*c).to_string()));
    for row in rows {
        let value = serde_json::to_value(row)?;
        push_line(
            &mut out,
            T::COLUMNS.iter().map(|c| match value.get(*c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }),
        );
    }
    Ok(out)
}

fn push_line(out: &mut String, fields: impl Iterator<Item = String>) {
    for (n, field) in fields.enumerate() {
        if n > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
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
                Value::String(s) => assert_eq!(field, s, "{column}"),
                Value::Bool(b) => assert_eq!(field.parse::<bool>().ok(), Some(*b), "{column}"),
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
}
