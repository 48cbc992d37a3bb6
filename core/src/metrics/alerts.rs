//! Live alerts for supervisors: which visits need someone to act, and whether the carer's phone
//! may simply have no signal.

use super::facts::UnitFacts;
use super::visit_outcome::Attendance;
use crate::domain::Millis;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Unattended, past P + late threshold, not yet missed.
    Overdue,
    /// Unattended, past E + missed threshold.
    Missed,
    /// Attended, no clock-out, past E + missed threshold.
    NoClockOut,
    /// Shorter than the contract's short threshold.
    Short,
    /// Some clock event's time is flagged (brief, section 4).
    TimeTrust,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Overdue => "overdue",
            AlertKind::Missed => "missed",
            AlertKind::NoClockOut => "no_clock_out",
            AlertKind::Short => "short",
            AlertKind::TimeTrust => "time_trust",
        }
    }

    /// Whether "the phone has been silent since the visit was due" matters for this kind.
    pub fn may_be_offline(self) -> bool {
        matches!(self, AlertKind::Overdue | AlertKind::Missed)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A visit's alerts at `now`, in a fixed order.
pub fn alert_kinds(visit: &UnitFacts, now: Millis) -> Vec<AlertKind> {
    let mut kinds = Vec::new();
    match visit.attendance_at(now) {
        Attendance::Overdue => kinds.push(AlertKind::Overdue),
        Attendance::Missed => kinds.push(AlertKind::Missed),
        _ => {}
    }
    if visit.attended && visit.no_clock_out_at(now) {
        kinds.push(AlertKind::NoClockOut);
    }
    if visit.short {
        kinds.push(AlertKind::Short);
    }
    if visit.flags.flagged > 0 {
        kinds.push(AlertKind::TimeTrust);
    }
    kinds
}

/// No assigned carer's phone has synced since the visit was due (`last_syncs`: each assigned
/// carer's latest sync of a phone not revoked), so the carer may be in the house with no signal.
pub fn phone_silent_since_due(
    planned_start: Millis,
    last_syncs: impl IntoIterator<Item = Option<Millis>>,
) -> bool {
    last_syncs
        .into_iter()
        .all(|at| at.is_none_or(|at| at < planned_start))
}
