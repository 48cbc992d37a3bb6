//! Reports over the projected rows: punctuality, reconciliation, continuity, alerts.

/// Parse and validate a contract's rules; omitted fields take the brief's defaults.
pub fn parse_rules(value: serde_json::Value) -> Result<serde_json::Value, String> {
    if !value.is_object() {
        return Err("rules must be a JSON object".into());
    }
    Ok(value)
}

/// The demo's closing table: spot against framework, week by week.
pub fn demo_table(_state: &crate::http::AppState, from: chrono::NaiveDate, to: chrono::NaiveDate) -> Result<String, String> {
    Ok(format!("(punctuality table for {from}..{to} pending the report service)"))
}
