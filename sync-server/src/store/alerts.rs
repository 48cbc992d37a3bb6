//! Alerts as records: the row that says where an alert stands now, and its history, which is
//! only ever appended to. Shared by both backends (the SQL is written once with `$n`
//! placeholders; SQLite takes `?n`).
//!
//! Raising is idempotent by a unique key (visit, kind, carer, subject): every instance may try to
//! raise the same alert and `INSERT … ON CONFLICT DO NOTHING` lets exactly one succeed; the
//! "raised" history entry is written only by the insert that succeeded. A change to an alert is
//! written only if the alert's `version` (the number of its history entries) is still the one the
//! change was computed from, so two writers cannot both append the same step.

use super::{Result, StoreError};
use caresync_core::domain::*;
use caresync_core::metrics::AlertKind;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt(format!("unknown {} {other:?}", stringify!($name)))),
                }
            }
        }
    };
}

text_enum!(
    /// Where an alert stands. `Resolved` and `Closed` are final.
    AlertState {
        Raised => "raised",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
        Closed => "closed",
    }
);

impl AlertState {
    pub fn is_open(self) -> bool {
        matches!(self, AlertState::Raised | AlertState::Acknowledged)
    }
}

text_enum!(
    /// What was done about an alert: the fixed list a resolution picks from.
    ResolutionAction {
        ContactedCarer => "contacted_carer",
        ContactedClient => "contacted_client",
        ContactedFamily => "contacted_family",
        CoverArranged => "cover_arranged",
        VisitRescheduled => "visit_rescheduled",
        RecordCorrected => "record_corrected",
        SafeguardingReferral => "safeguarding_referral",
        ReferredToHealthProfessional => "referred_to_health_professional",
        NoActionNeeded => "no_action_needed",
    }
);

text_enum!(
    /// Why an alert closed itself: its cause went away.
    CloseReason {
        Attended => "attended",
        ClockedOut => "clocked_out",
        Cancelled => "cancelled",
        Reassigned => "reassigned",
        BecameMissed => "became_missed",
        NoLongerShort => "no_longer_short",
        TimesNoLongerFlagged => "times_no_longer_flagged",
        Rescheduled => "rescheduled",
    }
);

impl CloseReason {
    /// What the history says, for a person reading it.
    pub fn explain(self) -> &'static str {
        match self {
            CloseReason::Attended => "a clock-in arrived (the phone synced late): the visit was attended",
            CloseReason::ClockedOut => "a clock-out arrived",
            CloseReason::Cancelled => "the visit was cancelled",
            CloseReason::Reassigned => "the carer is no longer assigned to the visit",
            CloseReason::BecameMissed => "the visit is now missed; the missed alert carries it on",
            CloseReason::NoLongerShort => "corrected times show the visit was not short",
            CloseReason::TimesNoLongerFlagged => "no clock time is flagged any more",
            CloseReason::Rescheduled => "the visit was moved and is not yet due",
        }
    }
}

text_enum!(
    /// One step of an alert's history.
    AlertStep {
        Raised => "raised",
        Acknowledged => "acknowledged",
        Escalated => "escalated",
        Resolved => "resolved",
        Closed => "closed",
    }
);

/// An alert as it stands.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert_id: AlertId,
    pub visit_id: VisitId,
    pub kind: AlertKind,
    /// The carer the alert is about (the assigned carer, or a note's or outcome's author).
    pub carer_id: PersonId,
    /// What within the visit: a note's or task outcome's id for a concern; empty otherwise.
    pub subject: String,
    /// The carer's team when raised: whose supervisor it is for.
    pub team_id: Option<TeamId>,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub raised_at: Millis,
    /// Acknowledge by this instant (inclusive) or the alert escalates to the office.
    #[schema(value_type = i64, format = "epoch-ms")]
    pub ack_due_at: Millis,
    pub state: AlertState,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub acknowledged_at: Option<Millis>,
    pub acknowledged_by: Option<PersonId>,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub escalated_at: Option<Millis>,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub resolved_at: Option<Millis>,
    pub resolved_by: Option<PersonId>,
    pub action: Option<ResolutionAction>,
    /// The resolver's note (care information: never logged).
    pub note: Option<String>,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub closed_at: Option<Millis>,
    pub close_reason: Option<CloseReason>,
    /// How many history entries the alert has.
    pub version: u32,
}

/// One appended step of an alert's history.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEntry {
    pub alert_id: AlertId,
    /// 1, 2, …: the alert's version after this step.
    pub seq: u32,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub at: Millis,
    pub step: AlertStep,
    /// Who did it; `None` when the server did (raising, escalating, closing).
    pub by: Option<PersonId>,
    pub action: Option<ResolutionAction>,
    pub note: Option<String>,
    pub close_reason: Option<CloseReason>,
    /// Why, in words.
    pub detail: String,
}

/// Which alerts to read.
#[derive(Clone, Debug, Default)]
pub struct AlertQuery {
    /// Only raised or acknowledged alerts.
    pub open_only: bool,
    /// Raised in `[from, to)`.
    pub raised_from: Option<Millis>,
    pub raised_to: Option<Millis>,
    pub visit: Option<VisitId>,
}

pub const ALERT_COLS: &str = "alert_id, visit_id, kind, carer_id, subject, team_id, raised_at, ack_due_at, state, \
     acknowledged_at, acknowledged_by, escalated_at, resolved_at, resolved_by, action, note, closed_at, close_reason, version";

pub const INSERT_ALERT: &str = "INSERT INTO alerts (alert_id, visit_id, kind, carer_id, subject, team_id, raised_at, \
     ack_due_at, state, acknowledged_at, acknowledged_by, escalated_at, resolved_at, resolved_by, action, note, closed_at, \
     close_reason, version)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
     ON CONFLICT (visit_id, kind, carer_id, subject) DO NOTHING";

/// Rewrite an alert's standing if its version is still `$19` (the new version is `$18`).
pub const UPDATE_ALERT: &str = "UPDATE alerts SET state = $2, acknowledged_at = $3, acknowledged_by = $4, \
     escalated_at = $5, resolved_at = $6, resolved_by = $7, action = $8, note = $9, closed_at = $10, close_reason = $11, \
     ack_due_at = $12, team_id = $13, raised_at = $14, kind = $15, carer_id = $16, subject = $17, version = $18 \
     WHERE alert_id = $1 AND version = $19";

pub const INSERT_ENTRY: &str =
    "INSERT INTO alert_history (alert_id, seq, at, step, by_person, action, note, close_reason, detail)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

pub const ENTRY_COLS: &str = "alert_id, seq, at, step, by_person, action, note, close_reason, detail";

/// Take or renew a named lease: true if this holder has it until `until`.
pub const CLAIM_LEASE: &str =
    "UPDATE leases SET holder = $2, until_ms = $4 WHERE name = $1 AND (until_ms <= $3 OR holder = $2)";
pub const ADD_LEASE: &str =
    "INSERT INTO leases (name, holder, until_ms) VALUES ($1, '', 0) ON CONFLICT (name) DO NOTHING";

/// A row read back: its text columns and its integer columns (each `None` where the other kind).
pub type RawRow = (Vec<Option<String>>, Vec<Option<i64>>);

/// A value to bind, for either backend.
#[derive(Clone, Debug)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

fn text(s: impl ToString) -> Value {
    Value::Text(Some(s.to_string()))
}

fn opt_text<T: ToString>(s: Option<T>) -> Value {
    Value::Text(s.map(|s| s.to_string()))
}

/// [`ALERT_COLS`] values, in order.
pub fn alert_values(a: &AlertRecord) -> Vec<Value> {
    vec![
        text(a.alert_id),
        text(a.visit_id),
        text(a.kind.as_str()),
        text(a.carer_id),
        text(&a.subject),
        opt_text(a.team_id),
        Value::Int(Some(a.raised_at)),
        Value::Int(Some(a.ack_due_at)),
        text(a.state.as_str()),
        Value::Int(a.acknowledged_at),
        opt_text(a.acknowledged_by),
        Value::Int(a.escalated_at),
        Value::Int(a.resolved_at),
        opt_text(a.resolved_by),
        opt_text(a.action.map(|x| x.as_str())),
        Value::Text(a.note.clone()),
        Value::Int(a.closed_at),
        opt_text(a.close_reason.map(|x| x.as_str())),
        Value::Int(Some(i64::from(a.version))),
    ]
}

/// [`UPDATE_ALERT`]'s values.
pub fn update_values(a: &AlertRecord, expected_version: u32) -> Vec<Value> {
    let v = alert_values(a);
    // id, state, ack.., then the rest in the statement's order.
    vec![
        v[0].clone(),
        v[8].clone(),
        v[9].clone(),
        v[10].clone(),
        v[11].clone(),
        v[12].clone(),
        v[13].clone(),
        v[14].clone(),
        v[15].clone(),
        v[16].clone(),
        v[17].clone(),
        v[7].clone(),
        v[5].clone(),
        v[6].clone(),
        v[2].clone(),
        v[3].clone(),
        v[4].clone(),
        v[18].clone(),
        Value::Int(Some(i64::from(expected_version))),
    ]
}

pub fn entry_values(e: &AlertEntry) -> Vec<Value> {
    vec![
        text(e.alert_id),
        Value::Int(Some(i64::from(e.seq))),
        Value::Int(Some(e.at)),
        text(e.step.as_str()),
        opt_text(e.by),
        opt_text(e.action.map(|x| x.as_str())),
        Value::Text(e.note.clone()),
        opt_text(e.close_reason.map(|x| x.as_str())),
        text(&e.detail),
    ]
}

fn parse<T: FromStr>(s: &Option<String>, what: &str) -> Result<T> {
    s.as_deref()
        .ok_or_else(|| StoreError::Corrupt(format!("alert {what} missing")))?
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("alert {what} unreadable")))
}

fn parse_opt<T: FromStr>(s: &Option<String>, what: &str) -> Result<Option<T>> {
    match s {
        None => Ok(None),
        Some(_) => parse(s, what).map(Some),
    }
}

/// Columns are read by the backend as text where text and as integers where integers.
pub fn alert_from(t: &[Option<String>], i: &[Option<i64>]) -> Result<AlertRecord> {
    if t.len() != 19 || i.len() != 19 {
        return Err(StoreError::Corrupt("alert row of the wrong width".into()));
    }
    let int = |k: usize, what: &str| i[k].ok_or_else(|| StoreError::Corrupt(format!("alert {what} missing")));
    Ok(AlertRecord {
        alert_id: parse(&t[0], "id")?,
        visit_id: parse(&t[1], "visit")?,
        kind: parse(&t[2], "kind")?,
        carer_id: parse(&t[3], "carer")?,
        subject: t[4].clone().unwrap_or_default(),
        team_id: parse_opt(&t[5], "team")?,
        raised_at: int(6, "raised_at")?,
        ack_due_at: int(7, "ack_due_at")?,
        state: parse(&t[8], "state")?,
        acknowledged_at: i[9],
        acknowledged_by: parse_opt(&t[10], "acknowledged_by")?,
        escalated_at: i[11],
        resolved_at: i[12],
        resolved_by: parse_opt(&t[13], "resolved_by")?,
        action: parse_opt(&t[14], "action")?,
        note: t[15].clone(),
        closed_at: i[16],
        close_reason: parse_opt(&t[17], "close_reason")?,
        version: u32::try_from(int(18, "version")?)
            .map_err(|_| StoreError::Corrupt("alert version".into()))?,
    })
}

/// Which of [`ALERT_COLS`] are integers.
pub const ALERT_INT_COLS: [bool; 19] = [
    false, false, false, false, false, false, true, true, false, true, false, true, true, false, false,
    false, true, false, true,
];

/// Which of [`ENTRY_COLS`] are integers.
pub const ENTRY_INT_COLS: [bool; 9] = [false, true, true, false, false, false, false, false, false];

pub fn entry_from(t: &[Option<String>], i: &[Option<i64>]) -> Result<AlertEntry> {
    if t.len() != 9 || i.len() != 9 {
        return Err(StoreError::Corrupt("alert history row of the wrong width".into()));
    }
    Ok(AlertEntry {
        alert_id: parse(&t[0], "id")?,
        seq: u32::try_from(i[1].unwrap_or(0)).map_err(|_| StoreError::Corrupt("alert seq".into()))?,
        at: i[2].unwrap_or(0),
        step: parse(&t[3], "step")?,
        by: parse_opt(&t[4], "by")?,
        action: parse_opt(&t[5], "action")?,
        note: t[6].clone(),
        close_reason: parse_opt(&t[7], "close_reason")?,
        detail: t[8].clone().unwrap_or_default(),
    })
}

/// The WHERE clause and values of an [`AlertQuery`], numbering placeholders from 1.
pub fn query_where(q: &AlertQuery) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if q.open_only {
        clauses.push("state IN ('raised', 'acknowledged')".to_string());
    }
    if let Some(from) = q.raised_from {
        values.push(Value::Int(Some(from)));
        clauses.push(format!("raised_at >= ${}", values.len()));
    }
    if let Some(to) = q.raised_to {
        values.push(Value::Int(Some(to)));
        clauses.push(format!("raised_at < ${}", values.len()));
    }
    if let Some(v) = q.visit {
        values.push(text(v));
        clauses.push(format!("visit_id = ${}", values.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

/// SQLite's placeholders (`?n`) for SQL written with PostgreSQL's (`$n`).
pub fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// A weekly reconciliation mismatch (authorised against delivered minutes) for one client and
/// contract, to be raised with the commissioner within 5 working days of the week's end.
#[derive(utoipa::ToSchema)]
#[schema(as = EscalationRecord)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    #[schema(format = Uuid)]
    pub escalation_id: String,
    pub contract_id: ContractId,
    pub client_id: ClientId,
    /// The ISO week's Monday, `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub week_start: String,
    pub authorised_minutes: i64,
    pub delivered_minutes: i64,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub opened_at: Millis,
    /// Raise by this local day (inclusive).
    #[schema(format = Date)]
    pub due_on: String,
    #[schema(value_type = Option<i64>, format = "epoch-ms")]
    pub raised_at: Option<Millis>,
    /// The local day it was raised with the commissioner.
    #[schema(format = Date)]
    pub raised_on: Option<String>,
    pub raised_by: Option<PersonId>,
    /// The commissioner contact that raised it.
    #[schema(format = Uuid)]
    pub contact_id: Option<String>,
}

/// A contact with a commissioner: evidence of proactive communication.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionerContact {
    #[schema(format = Uuid)]
    pub contact_id: String,
    pub contract_id: ContractId,
    /// The local day of the contact, `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub contact_on: String,
    pub summary: String,
    pub recorded_by: PersonId,
    #[schema(value_type = i64, format = "epoch-ms")]
    pub recorded_at: Millis,
    /// The escalation it raised, if any.
    #[schema(format = Uuid)]
    pub escalation_id: Option<String>,
}

pub const ESCALATION_COLS: &str = "escalation_id, contract_id, client_id, week_start, authorised_minutes, \
     delivered_minutes, opened_at, due_on, raised_at, raised_on, raised_by, contact_id";
pub const ESCALATION_INT_COLS: [bool; 12] = [
    false, false, false, false, true, true, true, false, true, false, false, false,
];
pub const INSERT_ESCALATION: &str =
    "INSERT INTO escalations (escalation_id, contract_id, client_id, week_start, \
     authorised_minutes, delivered_minutes, opened_at, due_on, raised_at, raised_on, raised_by, contact_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT (contract_id, client_id, week_start) DO NOTHING";
/// Mark an escalation raised, once.
pub const RAISE_ESCALATION: &str =
    "UPDATE escalations SET raised_at = $2, raised_on = $3, raised_by = $4, contact_id = $5 \
     WHERE escalation_id = $1 AND raised_at IS NULL";
pub const CONTACT_COLS: &str =
    "contact_id, contract_id, contact_on, summary, recorded_by, recorded_at, escalation_id";
pub const CONTACT_INT_COLS: [bool; 7] = [false, false, false, false, false, true, false];
pub const INSERT_CONTACT: &str =
    "INSERT INTO commissioner_contacts (contact_id, contract_id, contact_on, summary, \
     recorded_by, recorded_at, escalation_id) VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub fn escalation_values(e: &Escalation) -> Vec<Value> {
    vec![
        text(&e.escalation_id),
        text(e.contract_id),
        text(e.client_id),
        text(&e.week_start),
        Value::Int(Some(e.authorised_minutes)),
        Value::Int(Some(e.delivered_minutes)),
        Value::Int(Some(e.opened_at)),
        text(&e.due_on),
        Value::Int(e.raised_at),
        Value::Text(e.raised_on.clone()),
        opt_text(e.raised_by),
        Value::Text(e.contact_id.clone()),
    ]
}

pub fn escalation_from(t: &[Option<String>], i: &[Option<i64>]) -> Result<Escalation> {
    if t.len() != 12 || i.len() != 12 {
        return Err(StoreError::Corrupt("escalation row of the wrong width".into()));
    }
    Ok(Escalation {
        escalation_id: t[0].clone().unwrap_or_default(),
        contract_id: parse(&t[1], "contract")?,
        client_id: parse(&t[2], "client")?,
        week_start: t[3].clone().unwrap_or_default(),
        authorised_minutes: i[4].unwrap_or(0),
        delivered_minutes: i[5].unwrap_or(0),
        opened_at: i[6].unwrap_or(0),
        due_on: t[7].clone().unwrap_or_default(),
        raised_at: i[8],
        raised_on: t[9].clone(),
        raised_by: parse_opt(&t[10], "raised_by")?,
        contact_id: t[11].clone(),
    })
}

pub fn contact_values(c: &CommissionerContact) -> Vec<Value> {
    vec![
        text(&c.contact_id),
        text(c.contract_id),
        text(&c.contact_on),
        text(&c.summary),
        text(c.recorded_by),
        Value::Int(Some(c.recorded_at)),
        Value::Text(c.escalation_id.clone()),
    ]
}

pub fn contact_from(t: &[Option<String>], i: &[Option<i64>]) -> Result<CommissionerContact> {
    if t.len() != 7 || i.len() != 7 {
        return Err(StoreError::Corrupt("contact row of the wrong width".into()));
    }
    Ok(CommissionerContact {
        contact_id: t[0].clone().unwrap_or_default(),
        contract_id: parse(&t[1], "contract")?,
        contact_on: t[2].clone().unwrap_or_default(),
        summary: t[3].clone().unwrap_or_default(),
        recorded_by: parse(&t[4], "recorded_by")?,
        recorded_at: i[5].unwrap_or(0),
        escalation_id: t[6].clone(),
    })
}
