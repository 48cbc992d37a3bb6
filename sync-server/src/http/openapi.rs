//! The OpenAPI 3.1 document, served at `/api/openapi.json`: its operations from one table
//! (`OPERATIONS`) that the router and the tests also use (every route exists, every role check
//! holds), its schemas derived from the Rust types with `utoipa::ToSchema` (which reads their serde
//! attributes), plus what the JSON layers add to an answer: the `_rfc3339` sibling of each instant
//! in milliseconds (`http::times`) and the names beside report rows' ids (`services::names`).

use axum::Json;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token.
    Public,
    /// An enrolled carer's device token.
    Device,
    Office,
    OfficeOrSupervisor,
    /// The office, or the person the path names acting on themselves (their own token).
    OfficeOrSelf,
}

/// What the path's `{id}` names, so the role-and-scope matrix test can fill it with an id inside
/// or outside a supervisor's scope (see `services::scope`). A route with `{id}` must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// No id in the path.
    Nothing,
    /// A visit: in scope when one of its carers is in the supervisor's team.
    Visit,
    /// A person: in scope when in the supervisor's team (for `OfficeOrSelf`: the caller).
    Person,
    /// A client: in scope when one of their visits has a carer in the supervisor's team.
    Client,
    /// A contract: reference data without personal details, visible to every supervisor.
    Contract,
    /// An enrolled phone (office only).
    Device,
    /// A persisted alert: in scope when its visit is.
    Alert,
}

/// One documented operation: method, path, who may call it, summary, request schema, response.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// What `{id}` in the path names.
    pub names: Names,
    pub id: &'static str,
    pub summary: &'static str,
    /// A `#/components/schemas` name for a JSON body, `cbor:<name>` for a CBOR body.
    pub request: Option<&'static str>,
    /// Status and schema of the success answer (`csv`, `text` or a schema name; empty: no body).
    pub response: (u16, &'static str),
    /// Query parameters: `name:type:required`.
    pub query: &'static [&'static str],
}

const REPORT_QUERY: &[&str] = &[
    "from:date:true",
    "to:date:true",
    "group_by:GroupBy:false",
    "period:PeriodKind:false",
    "as_of:date-time:false",
];
const WINDOW_QUERY: &[&str] = &["from:date:true", "to:date:true", "as_of:date-time:false"];

macro_rules! op {
    ($m:literal $p:literal $a:ident $n:ident $id:literal $s:literal, $req:expr, ($st:literal, $resp:literal) $(, $q:expr)?) => {
        Operation {
            method: $m,
            path: $p,
            access: Access::$a,
            names: Names::$n,
            id: $id,
            summary: $s,
            request: $req,
            response: ($st, $resp),
            query: op!(@q $($q)?),
        }
    };
    (@q) => { &[] };
    (@q $q:expr) => { $q };
}

pub const OPERATIONS: &[Operation] = &[
    op!("get" "/healthz" Public Nothing "healthz" "Liveness and version", None, (200, "Health")),
    op!("get" "/metrics" Public Nothing "metrics" "Prometheus counters and the sync latency histogram", None, (200, "text")),
    op!("get" "/api/openapi.json" Public Nothing "openapi" "This document", None, (200, "object")),
    op!("post" "/api/v1/enrol" Public Nothing "enrol" "Enrol a phone with a one-time code (CBOR)", Some("cbor:EnrolRequest"), (200, "cbor:EnrolResponse")),
    op!("post" "/api/v1/sync" Device Nothing "sync" "Batched sync per visit: version 1 (CBOR map of Automerge sync messages) or version 2 (framed by its first byte: raw changes, CBOR, deflated with a preset dictionary); see docs/protocol.md", Some("cbor:SyncRequest"), (200, "cbor:SyncResponse")),
    op!("post" "/api/v1/people" Office Nothing "createPerson" "Create a carer, supervisor or office person (office and supervisors get a token, shown once)", Some("NewPerson"), (201, "CreatedPerson")),
    op!("get" "/api/v1/people" OfficeOrSupervisor Nothing "listPeople" "Everyone (a supervisor: their team and themselves)", None, (200, "PersonList")),
    op!("post" "/api/v1/people/{id}/enrolment-codes" Office Person "issueEnrolmentCode" "A one-time code for a carer's phone (7 days)", None, (201, "EnrolmentCode")),
    op!("post" "/api/v1/people/{id}/deactivate" Office Person "deactivatePerson" "Shut an account: the person's API tokens, phones and unused codes stop at once; their records stay", None, (200, "Person")),
    op!("post" "/api/v1/people/{id}/token" OfficeOrSelf Person "rotateToken" "A new API token (shown once); the person's earlier tokens stop at once. Office: anyone's; others: their own", None, (201, "IssuedToken")),
    op!("post" "/api/v1/people/{id}/tokens/revoke" Office Person "revokeTokens" "Revoke every API token of a person", None, (200, "RevokedTokens")),
    op!("get" "/api/v1/devices" Office Nothing "listDevices" "Enrolled phones", None, (200, "DeviceList")),
    op!("post" "/api/v1/devices/{id}/revoke" Office Device "revokeDevice" "Revoke a phone; its token fails from the next request", None, (204, "")),
    op!("post" "/api/v1/teams" Office Nothing "createTeam" "Create a team", Some("NewTeam"), (201, "Team")),
    op!("get" "/api/v1/teams" OfficeOrSupervisor Nothing "listTeams" "Teams (a supervisor: their own)", None, (200, "TeamList")),
    op!("post" "/api/v1/clients" Office Nothing "createClient" "Create a client with location and door tags", Some("ClientBody"), (201, "Client")),
    op!("get" "/api/v1/clients" OfficeOrSupervisor Nothing "listClients" "Clients (a supervisor: those with a visit by their team)", None, (200, "ClientList")),
    op!("get" "/api/v1/clients/{id}" OfficeOrSupervisor Client "getClient" "One client", None, (200, "Client")),
    op!("put" "/api/v1/clients/{id}" Office Client "updateClient" "Replace a client's details", Some("ClientBody"), (200, "Client")),
    op!("post" "/api/v1/contracts" Office Nothing "createContract" "Create a contract: commissioner, model, rules", Some("ContractBody"), (201, "Contract")),
    op!("get" "/api/v1/contracts" OfficeOrSupervisor Nothing "listContracts" "Contracts", None, (200, "ContractList")),
    op!("get" "/api/v1/contracts/{id}" OfficeOrSupervisor Contract "getContract" "One contract", None, (200, "Contract")),
    op!("put" "/api/v1/contracts/{id}" Office Contract "updateContract" "Replace a contract's details and rules", Some("ContractBody"), (200, "Contract")),
    op!("post" "/api/v1/visits" Office Nothing "createVisits" "Create visits in bulk (all or nothing)", Some("NewVisits"), (201, "CreatedVisits")),
    op!("get" "/api/v1/visits/{id}" OfficeOrSupervisor Visit "getVisit" "A visit's document, event rows and heads", None, (200, "VisitView")),
    op!("post" "/api/v1/visits/{id}/reschedule" Office Visit "rescheduleVisit" "Move a visit", Some("Reschedule"), (200, "Visit")),
    op!("post" "/api/v1/visits/{id}/reassign" Office Visit "reassignVisit" "Change the assigned carer(s)", Some("Reassign"), (200, "Visit")),
    op!("post" "/api/v1/visits/{id}/cancel" Office Visit "cancelVisit" "Cancel with a reason and a chargeable flag", Some("Cancel"), (200, "Visit")),
    op!("post" "/api/v1/visits/{id}/contract" Office Visit "moveVisitContract" "Move a visit to another contract (timeline: \"moved to another contract\")", Some("MoveContract"), (200, "Visit")),
    op!("get" "/api/v1/visits/{id}/figures" OfficeOrSupervisor Visit "visitFigures" "One visit's figures as of an instant (default now; a future as_of is refused with as_of_in_future)", None, (200, "VisitFigures"), &["as_of:date-time:false"]),
    op!("post" "/api/v1/visits/{id}/amendments" OfficeOrSupervisor Visit "amendVisit" "Correct an actual time with a reason code; the original is kept", Some("NewAmendment"), (201, "Amendment")),
    op!("post" "/api/v1/visits/{id}/notes" OfficeOrSupervisor Visit "addVisitNote" "A supervisor's or the office's note", Some("NewNote"), (201, "Note")),
    op!("get" "/api/v1/visits/{id}/timeline" OfficeOrSupervisor Visit "visitTimeline" "Schedule changes, clock events, notes, outcomes and amendments in order", None, (200, "VisitTimeline")),
    op!("get" "/api/v1/carers/{id}/timeline" OfficeOrSupervisor Person "carerDayTimeline" "A carer's day", None, (200, "CarerDay"), &["date:date:true"]),
    op!("get" "/api/v1/reports/punctuality" Office Nothing "punctualityReport" "Punctuality figures grouped and by period, with KPI status", None, (200, "PunctualityReport"), REPORT_QUERY),
    op!("get" "/api/v1/reports/punctuality.csv" Office Nothing "punctualityReportCsv" "The report's rows as CSV", None, (200, "csv"), REPORT_QUERY),
    op!("get" "/api/v1/reports/kpi" Office Nothing "kpiReport" "KPI status per framework contract and month", None, (200, "KpiRowList"), WINDOW_QUERY),
    op!("get" "/api/v1/reports/kpi.csv" Office Nothing "kpiReportCsv" "KPI rows as CSV", None, (200, "csv"), WINDOW_QUERY),
    op!("get" "/api/v1/reports/reconciliation" Office Nothing "reconciliationReport" "Weekly authorised, delivered and billable minutes per client and contract", None, (200, "ReconciliationRowList"), WINDOW_QUERY),
    op!("get" "/api/v1/reports/reconciliation.csv" Office Nothing "reconciliationReportCsv" "Reconciliation as CSV", None, (200, "csv"), WINDOW_QUERY),
    op!("get" "/api/v1/reports/continuity" Office Nothing "continuityReport" "Distinct carers per client per week", None, (200, "ContinuityRowList"), WINDOW_QUERY),
    op!("get" "/api/v1/reports/continuity.csv" Office Nothing "continuityReportCsv" "Continuity as CSV", None, (200, "csv"), WINDOW_QUERY),
    op!("get" "/api/v1/alerts" OfficeOrSupervisor Nothing "alerts" "Live alerts (a supervisor sees their team's)", None, (200, "AlertList")),
    op!("get" "/api/v1/oversight/alerts" OfficeOrSupervisor Nothing "listAlertRecords" "Alerts as records: open (default) or all, by raising day (a supervisor: their team's visits)", None, (200, "AlertRecordList"), &["state:AlertListState:false", "from:date:false", "to:date:false"]),
    op!("get" "/api/v1/oversight/alerts/{id}" OfficeOrSupervisor Alert "getAlertRecord" "One alert with its history (append-only)", None, (200, "AlertWithHistory")),
    op!("post" "/api/v1/oversight/alerts/{id}/acknowledge" OfficeOrSupervisor Alert "acknowledgeAlert" "Acknowledge; past the kind's deadline it is recorded as escalated first", None, (200, "AlertRecord")),
    op!("post" "/api/v1/oversight/alerts/{id}/resolve" OfficeOrSupervisor Alert "resolveAlert" "Resolve with an action from the fixed list and a note (acknowledges too if needed)", Some("Resolution"), (200, "AlertRecord")),
    op!("get" "/api/v1/oversight/figures" OfficeOrSupervisor Nothing "oversightFigures" "Per team and month: alerts by kind, median and p90 minutes to acknowledge and resolve, share escalated; reconciliation escalations due that month involving the team, raised on time and late (a supervisor: their team)", None, (200, "OversightRowList"), &["from:date:true", "to:date:true"]),
    op!("get" "/api/v1/oversight/kpi-projection" Office Nothing "kpiProjection" "Per framework contract: month-to-date late % and missed % against the KPI maximum, projected to the month's end at the last seven days' rates; outlook ok, warning or breach", None, (200, "KpiProjectionList")),
    op!("get" "/api/v1/oversight/escalations" Office Nothing "listEscalations" "Weekly reconciliation mismatches: due within 5 working days of the week's end, status, raised on time", None, (200, "EscalationList")),
    op!("post" "/api/v1/oversight/escalations/raise" Office Nothing "raiseEscalation" "Raise an escalation with the commissioner now (records the contact; 409 already_raised)", Some("RaiseEscalation"), (200, "Escalation")),
    op!("get" "/api/v1/oversight/commissioner-contacts" Office Nothing "listCommissionerContacts" "Contacts with commissioners (evidence of proactive communication)", None, (200, "CommissionerContactList")),
    op!("post" "/api/v1/oversight/commissioner-contacts" Office Nothing "addCommissionerContact" "Record a contact with a commissioner: date, contract, summary", Some("NewCommissionerContact"), (201, "CommissionerContact")),
    op!("get" "/api/v1/oversight/figures.csv" OfficeOrSupervisor Nothing "oversightFiguresCsv" "The oversight figures as CSV", None, (200, "csv"), &["from:date:true", "to:date:true"]),
];

pub async fn openapi() -> Json<Value> {
    Json(document())
}

/// How an instant in epoch milliseconds is described; each gets an RFC 3339 sibling.
const EPOCH_MS: &str = "milliseconds since 1970-01-01 UTC";

/// The sibling `http::times` adds beside an instant in milliseconds.
fn rfc3339_sibling(field: &str) -> Value {
    json!({
        "type": ["string", "null"],
        "format": "date-time",
        "description": format!("`{field}` in RFC 3339, UTC (`Z`); null when `{field}` is null or outside the years 0000–9999"),
    })
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn list(name: &str) -> Value {
    json!({ "type": "array", "items": r(name) })
}

/// The schemas derived from the Rust types (`utoipa::ToSchema`, which reads their serde
/// attributes); every type they mention comes along (ids, enums, nested rows).
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    // Core: the visit document, figures and report rows (its `openapi` feature).
    caresync_core::protocol::Problem,
    caresync_core::Visit,
    caresync_core::domain::CommissioningModel,
    caresync_core::metrics::ContractRules,
    caresync_core::metrics::GroupBy,
    caresync_core::metrics::PeriodKind,
    caresync_core::metrics::VisitFigures,
    caresync_core::metrics::PunctualityReport,
    caresync_core::metrics::ReconciliationRow,
    caresync_core::metrics::ContinuityRow,
    // The server's records.
    crate::store::Person,
    crate::store::Device,
    crate::store::Team,
    crate::store::Client,
    crate::store::Contract,
    crate::store::alerts::AlertRecord,
    crate::store::alerts::CommissionerContact,
    crate::services::reports::Alert,
    crate::services::alerts::OversightRow,
    crate::services::escalations::EscalationView,
    crate::services::escalations::ContractProjection,
    crate::services::timeline::VisitTimeline,
    // Request and answer bodies of the handlers.
    super::ops::Health,
    super::office::NewPerson,
    super::office::CreatedPerson,
    super::office::IssuedToken,
    super::office::RevokedTokens,
    super::office::EnrolmentCode,
    super::office::NewVisits,
    super::office::CreatedVisits,
    super::office::VisitView,
    super::office::Reschedule,
    super::office::Reassign,
    super::office::MoveContract,
    super::office::Cancel,
    super::reference::NewTeam,
    super::reference::ClientBody,
    super::reference::ContractBody,
    super::supervision::NewAmendment,
    super::supervision::NewNote,
    super::supervision::CarerDay,
    super::oversight::AlertWithHistory,
    super::oversight::Resolution,
    super::oversight::RaiseBody,
    super::oversight::NewContact,
)))]
struct Derived;

/// The format the types give an instant in epoch milliseconds (`#[schema(format = "epoch-ms")]`).
const EPOCH_MS_FORMAT: &str = "epoch-ms";

/// The derived schemas as the API answers them: each instant in milliseconds described and
/// followed by its `_rfc3339` sibling (`http::times`), and the names `services::names` adds beside
/// the ids of report rows.
fn derived() -> Map<String, Value> {
    let components = Derived::openapi().components.unwrap_or_default();
    let mut schemas = match serde_json::to_value(&components.schemas) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for schema in schemas.values_mut() {
        add_instant_siblings(schema);
    }
    for row in ["ReportRow", "KpiRow", "ReconciliationRow", "ContinuityRow"] {
        if let Some(schema) = schemas.get_mut(row) {
            add_names(schema);
        }
    }
    schemas
}

/// Marks each property the types give the epoch-milliseconds format, at any depth, and adds its
/// RFC 3339 sibling, required when the field is.
fn add_instant_siblings(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            let mut siblings = Vec::new();
            if let Some(Value::Object(props)) = m.get_mut("properties") {
                for (k, p) in props.iter_mut() {
                    if p["format"] != EPOCH_MS_FORMAT {
                        continue;
                    }
                    if let Value::Object(p) = p {
                        let detail = p
                            .remove("description")
                            .and_then(|d| d.as_str().map(str::to_string));
                        let description = match detail {
                            Some(d) => format!("{EPOCH_MS}: {d}"),
                            None => EPOCH_MS.to_string(),
                        };
                        p.insert("description".into(), json!(description));
                        siblings.push(k.clone());
                    }
                }
                for k in &siblings {
                    props.insert(format!("{k}{}", super::times::SUFFIX), rfc3339_sibling(k));
                }
            }
            if let Some(Value::Array(required)) = m.get_mut("required") {
                for k in &siblings {
                    if required.iter().any(|r| r == k) {
                        required.push(json!(format!("{k}{}", super::times::SUFFIX)));
                    }
                }
            }
            m.values_mut().for_each(add_instant_siblings);
        }
        Value::Array(a) => a.iter_mut().for_each(add_instant_siblings),
        _ => {}
    }
}

/// The name `services::names` writes beside each id of a report row (and the commissioner beside
/// a contract's name), present whenever the id is.
fn add_names(schema: &mut Value) {
    let Some(props) = schema["properties"].as_object().cloned() else {
        return;
    };
    let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
    let mut new_required = required.clone();
    for (id, name) in crate::services::names::NAMED_IDS {
        if !props.contains_key(*id) {
            continue;
        }
        let what = name.trim_end_matches("_name");
        schema["properties"][*name] =
            json!({ "type": "string", "description": format!("the {what}'s name") });
        if required.iter().any(|r| r == id) {
            new_required.push(json!(name));
        }
        if *id == "contract_id" && !props.contains_key("commissioner") {
            schema["properties"]["commissioner"] =
                json!({ "type": "string", "description": "the contract's commissioner" });
        }
    }
    schema["required"] = Value::Array(new_required);
}

fn schemas() -> Map<String, Value> {
    let mut s = derived();
    // The alert list's `state` query parameter: a string the handler matches.
    s.insert(
        "AlertListState".into(),
        json!({ "type": "string", "enum": ["open", "all"] }),
    );
    for cbor in ["EnrolRequest", "EnrolResponse", "SyncRequest", "SyncResponse"] {
        s.insert(
            cbor.into(),
            json!({ "description": format!("CBOR-encoded {cbor} (sync: or its version 2 frame); field by field in docs/protocol.md, core/src/protocol.rs and core/src/protocol/v2.rs") }),
        );
    }
    // `<Item>List`, an array of `<Item>`, for each list an operation answers with.
    for op in OPERATIONS {
        let name = op.response.1;
        if let Some(item) = name.strip_suffix("List") {
            if s.contains_key(item) {
                s.insert(name.to_string(), list(item));
            }
        }
    }
    s
}

fn content(kind: &str) -> Value {
    match kind {
        "csv" => json!({ "text/csv": { "schema": { "type": "string" } } }),
        "text" => json!({ "text/plain": { "schema": { "type": "string" } } }),
        "object" => json!({ "application/json": { "schema": { "type": "object" } } }),
        k => match k.strip_prefix("cbor:") {
            Some(name) => json!({ "application/cbor": { "schema": r(name) } }),
            None => json!({ "application/json": { "schema": r(k) } }),
        },
    }
}

pub fn document() -> Value {
    let problem =
        |d: &str| json!({ "description": d, "content": { "application/json": { "schema": r("Problem") } } });
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut parameters: Vec<Value> = Vec::new();
        if op.path.contains("{id}") {
            parameters.push(json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }));
        }
        for q in op.query {
            let mut parts = q.split(':');
            let (name, kind, required) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next() == Some("true"),
            );
            let schema = match kind {
                "date" | "date-time" => json!({ "type": "string", "format": kind }),
                other => r(other),
            };
            parameters.push(json!({ "name": name, "in": "query", "required": required, "schema": schema }));
        }
        let mut responses = Map::new();
        let (status, body) = op.response;
        let ok = if body.is_empty() {
            json!({ "description": "done" })
        } else {
            json!({ "description": "success", "content": content(body) })
        };
        responses.insert(status.to_string(), ok);
        responses.insert("400".into(), problem("malformed or invalid request"));
        if op.access != Access::Public {
            responses.insert(
                "401".into(),
                problem("missing, unknown, revoked or expired token, or a deactivated person"),
            );
            responses.insert("403".into(), problem("the caller's role may not do this"));
        }
        if op.access != Access::Public || op.id == "enrol" {
            responses.insert(
                "429".into(),
                json!({
                    "description": "too_many_attempts: too many failed sign-ins or enrolments from this source or for this person; try again after Retry-After seconds",
                    "headers": { "Retry-After": { "schema": { "type": "integer" } } },
                    "content": { "application/json": { "schema": r("Problem") } }
                }),
            );
        }
        if op.path.contains("{id}") {
            responses.insert(
                "404".into(),
                problem("no such id, or outside the caller's scope (a supervisor's team)"),
            );
        }
        if op.method != "get" {
            responses.insert("413".into(), problem("body or batch too large"));
            responses.insert(
                "408".into(),
                problem("the body did not arrive within the body timeout"),
            );
        }
        if op.request.is_some_and(|r| !r.starts_with("cbor:")) {
            // axum's JSON extractor: no `Content-Type: application/json`, or a body that is JSON
            // but not of the documented shape (schemathesis found both undocumented).
            responses.insert("415".into(), problem("the body is not declared as JSON"));
            responses.insert(
                "422".into(),
                problem("the JSON body does not have the documented shape"),
            );
        }
        if !matches!(op.path, "/healthz" | "/metrics") {
            responses.insert(
                "503".into(),
                problem("server busy; retry after the Retry-After seconds"),
            );
        }
        if matches!(
            op.id,
            "createClient" | "createContract" | "createVisits" | "cancelVisit"
        ) {
            responses.insert("409".into(), problem("already exists or already cancelled"));
        }
        if matches!(op.id, "rotateToken" | "issueEnrolmentCode") {
            responses.insert("409".into(), problem("deactivated: the person's account is shut"));
        }
        let roles = match op.access {
            Access::Public => vec![],
            Access::Device => vec!["carer device"],
            Access::Office => vec!["office"],
            Access::OfficeOrSupervisor => vec!["office", "supervisor"],
            Access::OfficeOrSelf => vec!["office", "the person named"],
        };
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "x-roles": roles,
            "parameters": parameters,
            "responses": responses,
        });
        operation["security"] = if op.access == Access::Public {
            json!([])
        } else {
            json!([{ "bearer": [] }])
        };
        if let Some(req) = op.request {
            operation["requestBody"] = json!({ "required": true, "content": content(req) });
        }
        let entry = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "caresync server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sync endpoint for carers' phones and the office and supervisor API. Times in request bodies are RFC 3339; times in documents and rows are milliseconds since the epoch (UTC), each with a sibling `<name>_rfc3339` giving the same instant as RFC 3339 in UTC (`2026-11-25T09:00:00Z`). Report rows carry names beside their ids (`client_name`, `contract_name`, `group_name`, ...), in JSON and CSV alike; CSV percentages have one decimal. Errors answer with a Problem body carrying a stable code."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An office or supervisor API token (expires; see docs/api.md) or an enrolled phone's device token."
            } },
            "schemas": schemas()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// An instant in epoch milliseconds, as the types mark it, described as such.
    fn is_epoch_ms(schema: &Value) -> bool {
        schema["format"] == EPOCH_MS_FORMAT
            && schema["description"]
                .as_str()
                .is_some_and(|d| d.starts_with(EPOCH_MS))
    }

    fn allows_null(schema: &Value) -> bool {
        match &schema["type"] {
            Value::String(t) => t == "null",
            Value::Array(types) => types.iter().any(|t| t == "null"),
            _ => false,
        }
    }

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn document_is_well_formed_and_every_ref_resolves() {
        let doc = document();
        assert_eq!(doc["openapi"], json!("3.1.0"));
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(&r);
            assert!(schemas.contains_key(name), "unresolved {r}");
        }
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().cloned().unwrap_or_default() {
            for (method, op) in item.as_object().cloned().unwrap_or_default() {
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path}"
                );
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            }
        }
    }

    /// The matrix test fills `{id}` by what an operation names, so each must say; every
    /// operation that needs a token declares the bearer scheme.
    #[test]
    fn every_id_route_says_what_it_names_and_every_token_route_its_security() {
        for op in OPERATIONS {
            assert_eq!(
                op.path.contains("{id}"),
                op.names != Names::Nothing,
                "{}",
                op.path
            );
        }
        let doc = document();
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        for op in OPERATIONS {
            let security = &doc["paths"][op.path][op.method]["security"];
            let expected = if op.access == Access::Public {
                json!([])
            } else {
                json!([{ "bearer": [] }])
            };
            assert_eq!(security, &expected, "{}", op.id);
        }
    }

    /// What schemathesis found undocumented (docs/security.md, "API fuzzing"): `null` for an
    /// absent optional field, and axum's 415 and 422 answers to a body that is not the JSON shown.
    #[test]
    fn optional_fields_may_be_null_and_json_bodies_document_415_and_422() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for (schema, field) in [
            ("Person", "team_id"),
            ("Client", "location"),
            ("Device", "revoked_at"),
        ] {
            let prop = &schemas[schema]["properties"][field];
            // `anyOf` (written here) or `oneOf` (derived: `Option` of a component).
            let nullable = ["anyOf", "oneOf"].iter().any(|k| {
                prop[*k]
                    .as_array()
                    .is_some_and(|alts| alts.iter().any(allows_null))
            }) || allows_null(prop);
            assert!(nullable, "{schema}.{field} must allow null: {prop}");
        }
        assert!(
            !allows_null(&schemas["Person"]["properties"]["id"]),
            "required fields stay non-null"
        );
        for op in OPERATIONS {
            let responses = &doc["paths"][op.path][op.method]["responses"];
            let json_body = op.request.is_some_and(|r| !r.starts_with("cbor:"));
            for status in ["415", "422"] {
                assert_eq!(
                    responses.get(status).is_some(),
                    json_body,
                    "{} {} {status}",
                    op.method,
                    op.path
                );
            }
        }
    }

    /// Every property documented as epoch milliseconds, with its parent's properties and required
    /// list, anywhere in the schemas.
    fn epoch_ms_properties(v: &Value, out: &mut Vec<(String, Value, Value)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get("properties") {
                    for (k, p) in props {
                        let alternatives = p["anyOf"].as_array().cloned().unwrap_or_default();
                        if is_epoch_ms(p) || alternatives.iter().any(is_epoch_ms) {
                            out.push((k.clone(), Value::Object(props.clone()), m["required"].clone()));
                        }
                    }
                }
                m.values().for_each(|x| epoch_ms_properties(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| epoch_ms_properties(x, out)),
            _ => {}
        }
    }

    /// The instants documented in milliseconds are exactly those `http::times` gives an RFC 3339
    /// sibling, each documented beside its field as a date-time, required when the field is.
    #[test]
    fn every_instant_in_milliseconds_has_its_rfc3339_sibling_documented() {
        let doc = document();
        let mut found = Vec::new();
        epoch_ms_properties(&doc["components"]["schemas"], &mut found);
        assert!(found.len() > 20, "{}", found.len());
        for (field, props, required) in &found {
            let sibling = format!("{field}{}", crate::http::times::SUFFIX);
            assert_eq!(props[&sibling]["format"], "date-time", "{field}");
            let required: Vec<&str> = required
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                required.contains(&field.as_str()),
                required.contains(&sibling.as_str()),
                "{field}"
            );
        }
        let documented: BTreeSet<&str> = found.iter().map(|(f, _, _)| f.as_str()).collect();
        let transformed: BTreeSet<&str> = crate::http::times::INSTANT_FIELDS.iter().copied().collect();
        assert_eq!(documented, transformed);
        // Times in request bodies stay RFC 3339 alone.
        assert_eq!(
            doc["components"]["schemas"]["NewVisit"]["properties"]["planned_start"]["format"],
            "date-time"
        );
        assert!(doc["components"]["schemas"]["NewVisit"]["properties"]
            .get("planned_start_rfc3339")
            .is_none());
    }

    /// The documented defaults of a contract's rules are the type's `Default`, field by field.
    #[test]
    fn contract_rules_defaults_are_the_types_own() {
        let doc = document();
        let props = &doc["components"]["schemas"]["ContractRules"]["properties"];
        let defaults =
            serde_json::to_value(caresync_core::metrics::ContractRules::default()).unwrap_or_default();
        let defaults = defaults.as_object().cloned().unwrap_or_default();
        assert!(defaults.len() > 5);
        for (field, value) in defaults {
            assert_eq!(props[&field]["default"], value, "{field}");
        }
        assert_eq!(
            doc["components"]["schemas"]["ContractRules"]["additionalProperties"],
            false
        );
    }

    /// Every `.route(...)` in the router's source is documented, and nothing else is.
    #[test]
    fn documented_operations_are_exactly_the_routes() {
        let sources = [
            include_str!("mod.rs"),
            include_str!("office.rs"),
            include_str!("reference.rs"),
            include_str!("supervision.rs"),
            include_str!("reports.rs"),
            include_str!("oversight.rs"),
        ];
        let consts = [
            ("SYNC_PATH", caresync_core::protocol::SYNC_PATH),
            ("ENROL_PATH", caresync_core::protocol::ENROL_PATH),
        ];
        let mut routed = BTreeSet::new();
        let path_of = |part: &str| match part.trim().strip_prefix('"') {
            Some(p) => p.trim_end_matches('"').to_string(),
            None => consts
                .iter()
                .find(|(n, _)| *n == part.trim())
                .map(|(_, p)| p.to_string())
                .unwrap_or_default(),
        };
        for src in sources {
            // `.op("method", path, handler)`: an operation mounted with its rule checked
            // (`authed::Operations`).
            for chunk in src.split(".op(").skip(1) {
                let mut parts = chunk.splitn(3, ',');
                let method = parts.next().unwrap_or("").trim().trim_matches('"');
                let path = path_of(parts.next().unwrap_or(""));
                routed.insert((method.to_string(), path));
            }
            for chunk in src.split(".route(").skip(1) {
                let (path_part, rest) = chunk.split_once(',').unwrap_or((chunk, ""));
                let path_part = path_part.trim();
                let path = match path_part.strip_prefix('"') {
                    Some(p) => p.trim_end_matches('"').to_string(),
                    None => consts
                        .iter()
                        .find(|(n, _)| *n == path_part)
                        .map(|(_, p)| p.to_string())
                        .unwrap_or_default(),
                };
                // Methods registered on this route, up to the closing of `.route(`.
                let end = rest.find("\n        .").unwrap_or(rest.len());
                for method in ["get", "post", "put", "delete", "patch"] {
                    if rest[..end].contains(&format!("{method}(")) {
                        routed.insert((method.to_string(), path.clone()));
                    }
                }
            }
        }
        let documented: BTreeSet<(String, String)> = OPERATIONS
            .iter()
            .map(|o| (o.method.to_string(), o.path.to_string()))
            .collect();
        assert_eq!(routed, documented);
    }
}
