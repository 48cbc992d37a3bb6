//! Records and enums at the boundary, and their conversions from and to the core's types.

use crate::PhoneError;
use caresync_core::domain as core;
use caresync_core::store::StoreError;
use caresync_core::sync_client::{SyncError, TransportError};

/// An enum mirrored across the boundary, converting both ways.
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
        pub enum $name { $($variant),+ }

        impl From<$name> for core::$name {
            fn from(v: $name) -> Self {
                match v { $($name::$variant => core::$name::$variant),+ }
            }
        }

        impl From<core::$name> for $name {
            fn from(v: core::$name) -> Self {
                match v { $(core::$name::$variant => $name::$variant),+ }
            }
        }
    };
}

mirror_enum!(
    /// How the carer clocked; everything but `Manual` is electronic.
    ClockMethod { App, Gps, Qr, Nfc, Manual }
);
mirror_enum!(ClockKind { ClockIn, ClockOut });
mirror_enum!(
    /// The fixed list of reasons for a manual clock.
    ReasonCode {
        PhoneUnavailable,
        AppFault,
        TagMissing,
        NoSignalAtDoor,
        ForgotToClock,
        WrongVisitClocked,
        ClientRequest,
        AuthorisedByOffice,
        Other,
    }
);
mirror_enum!(NoteCategory {
    General,
    Wellbeing,
    Medication,
    Concern,
    Safeguarding,
    Nutrition,
    Handover
});
mirror_enum!(TaskResult {
    Done,
    NotDone,
    Refused
});
mirror_enum!(CarerVisitState {
    Upcoming,
    InProgress,
    Done,
    Cancelled
});

#[derive(Debug, Clone, Copy, PartialEq, uniffi::Record)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f64,
}

impl From<GeoPoint> for core::Location {
    fn from(p: GeoPoint) -> Self {
        Self {
            lat: p.lat,
            lon: p.lon,
            accuracy_m: p.accuracy_m,
        }
    }
}

impl From<core::Location> for GeoPoint {
    fn from(l: core::Location) -> Self {
        Self {
            lat: l.lat,
            lon: l.lon,
            accuracy_m: l.accuracy_m,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct VisitSummary {
    pub visit_id: String,
    pub client_id: String,
    pub planned_start_ms: i64,
    pub planned_end_ms: i64,
    pub state: CarerVisitState,
    pub pending_changes: u32,
}

impl From<caresync_core::VisitSummary> for VisitSummary {
    fn from(v: caresync_core::VisitSummary) -> Self {
        Self {
            visit_id: v.visit_id.to_string(),
            client_id: v.client_id.to_string(),
            planned_start_ms: v.planned_start,
            planned_end_ms: v.planned_end,
            state: v.state.into(),
            pending_changes: v.pending_changes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ClockEventRecord {
    pub event_id: String,
    pub kind: ClockKind,
    pub carer_id: String,
    pub device_time_ms: i64,
    /// Device time corrected by the offset known when the carer tapped.
    pub trusted_time_ms: i64,
    pub method: ClockMethod,
    pub reason: Option<ReasonCode>,
    pub location: Option<GeoPoint>,
}

impl From<caresync_core::ClockEvent> for ClockEventRecord {
    fn from(e: caresync_core::ClockEvent) -> Self {
        Self {
            event_id: e.id.to_string(),
            kind: e.kind.into(),
            carer_id: e.carer_id.to_string(),
            device_time_ms: e.device_time,
            trusted_time_ms: e.trusted_time(),
            method: e.method.into(),
            reason: e.reason.map(Into::into),
            location: e.location.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct NoteRecord {
    pub note_id: String,
    pub author_id: String,
    pub written_at_ms: i64,
    pub category: NoteCategory,
    pub text: String,
}

impl From<caresync_core::Note> for NoteRecord {
    fn from(n: caresync_core::Note) -> Self {
        Self {
            note_id: n.id.to_string(),
            author_id: n.author_id.to_string(),
            written_at_ms: n.written_at,
            category: n.category.into(),
            text: n.text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TaskRecord {
    pub task_id: String,
    pub title: String,
    /// The latest outcome recorded, if any.
    pub result: Option<TaskResult>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct VisitDetail {
    pub visit_id: String,
    pub client_id: String,
    pub carers: Vec<String>,
    pub planned_start_ms: i64,
    pub planned_end_ms: i64,
    pub cancel_reason: Option<String>,
    pub state: CarerVisitState,
    pub tasks: Vec<TaskRecord>,
    pub events: Vec<ClockEventRecord>,
    pub notes: Vec<NoteRecord>,
    pub pending_changes: u32,
}

impl From<caresync_core::VisitDetail> for VisitDetail {
    fn from(d: caresync_core::VisitDetail) -> Self {
        let v = d.visit;
        let tasks = v
            .schedule
            .tasks
            .iter()
            .map(|t| TaskRecord {
                task_id: t.id.to_string(),
                title: t.title.clone(),
                result: v.latest_outcome(t.id).map(|o| o.result.into()),
            })
            .collect();
        Self {
            visit_id: v.visit_id.to_string(),
            client_id: v.schedule.client_id.to_string(),
            carers: v.schedule.carers.iter().map(ToString::to_string).collect(),
            planned_start_ms: v.schedule.planned_start,
            planned_end_ms: v.schedule.planned_end,
            cancel_reason: v.schedule.cancel_reason.clone(),
            state: d.state.into(),
            tasks,
            events: v.events.into_iter().map(Into::into).collect(),
            notes: v.notes.into_iter().map(Into::into).collect(),
            pending_changes: d.pending_changes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct VisitSyncError {
    pub visit_id: String,
    /// Stable code, e.g. `forbidden_change`, `not_assigned` (docs/protocol.md).
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SyncReport {
    pub round_trips: u32,
    pub visits_sent: u32,
    pub visits_received: u32,
    pub errors: Vec<VisitSyncError>,
    pub server_time_ms: Option<i64>,
    /// Local changes still waiting to be sent (refused ones are not waiting).
    pub pending_after: u32,
    /// Visits holding changes the server refused (see `refused_changes`).
    pub refused_after: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// A visit whose changes the server refused: kept on the phone, not sent again unless the app
/// calls `retry_refused`, for the app to show with the reason.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RefusedChange {
    pub visit_id: String,
    /// The server's stable code: `forbidden_change`, `not_assigned`, `invalid_entry`,
    /// `malformed_message`, `message_too_large` or `unknown_visit` (docs/protocol.md).
    pub code: String,
    pub message: String,
    /// When the phone learnt of the refusal (device time, ms since the epoch).
    pub refused_at_ms: i64,
    /// How many changes the refusal covered; all are kept.
    pub changes: u32,
}

impl From<caresync_core::RefusedChanges> for RefusedChange {
    fn from(r: caresync_core::RefusedChanges) -> Self {
        Self {
            visit_id: r.visit_id.to_string(),
            code: r.code,
            message: r.message,
            refused_at_ms: r.refused_at,
            changes: r.changes,
        }
    }
}

impl From<caresync_core::SyncSummary> for SyncReport {
    fn from(s: caresync_core::SyncSummary) -> Self {
        Self {
            round_trips: s.rounds,
            visits_sent: s.visits_sent,
            visits_received: s.visits_received,
            errors: s
                .errors
                .into_iter()
                .map(|e| VisitSyncError {
                    visit_id: e.visit_id.to_string(),
                    code: e.code,
                    message: e.message,
                })
                .collect(),
            server_time_ms: s.server_time,
            pending_after: s.pending_after,
            refused_after: s.refused_after,
            bytes_up: s.bytes_up,
            bytes_down: s.bytes_down,
        }
    }
}

impl From<StoreError> for PhoneError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::UnknownVisit(_) | StoreError::UnknownTask { .. } => {
                PhoneError::NotFound { detail: message }
            }
            StoreError::NotEnrolled => PhoneError::NotEnrolled { detail: message },
            StoreError::NotAssigned(_)
            | StoreError::VisitCancelled(_)
            | StoreError::AlreadyClockedIn(_)
            | StoreError::NotClockedIn(_)
            | StoreError::AlreadyClockedOut(_)
            | StoreError::ManualNeedsReason
            | StoreError::InvalidLocation
            | StoreError::EmptyNote
            | StoreError::NoteTooLong(_) => PhoneError::InvalidInput { detail: message },
            StoreError::Document { .. }
            | StoreError::Open(_)
            | StoreError::Sqlite(_)
            | StoreError::Poisoned => PhoneError::Storage { detail: message },
        }
    }
}

impl From<SyncError> for PhoneError {
    fn from(e: SyncError) -> Self {
        let message = e.to_string();
        match e {
            SyncError::Store(s) => s.into(),
            SyncError::Transport(TransportError::Offline(_)) => PhoneError::Offline { detail: message },
            SyncError::Transport(TransportError::Unauthorized(_) | TransportError::Forbidden(_)) => {
                PhoneError::Unauthorized { detail: message }
            }
            SyncError::Transport(TransportError::Rejected { .. })
            | SyncError::BadResponse(_)
            | SyncError::ProtocolMismatch { .. } => PhoneError::Server { detail: message },
        }
    }
}
