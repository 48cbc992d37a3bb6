//! Live alerts for supervisors: which visits need someone to act, and whether the carer's phone
//! may simply have no signal.

use super::facts::UnitFacts;
use super::visit_outcome::Attendance;
use crate::domain::Millis;
use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// A carer's note in the `concern` category.
    Concern,
    /// A carer's note in the `safeguarding` category.
    Safeguarding,
    /// A task recorded as refused or not done (for example medication).
    TaskNotDone,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Overdue => "overdue",
            AlertKind::Missed => "missed",
            AlertKind::NoClockOut => "no_clock_out",
            AlertKind::Short => "short",
            AlertKind::TimeTrust => "time_trust",
            AlertKind::Concern => "concern",
            AlertKind::Safeguarding => "safeguarding",
            AlertKind::TaskNotDone => "task_not_done",
        }
    }

    pub const ALL: &'static [AlertKind] = &[
        AlertKind::Overdue,
        AlertKind::Missed,
        AlertKind::NoClockOut,
        AlertKind::Short,
        AlertKind::TimeTrust,
        AlertKind::Concern,
        AlertKind::Safeguarding,
        AlertKind::TaskNotDone,
    ];

    /// Whether the kind follows from the visit's facts (and so may close itself when they
    /// change), rather than from something a carer wrote (a concern stays until handled).
    pub fn from_visit_state(self) -> bool {
        !matches!(
            self,
            AlertKind::Concern | AlertKind::Safeguarding | AlertKind::TaskNotDone
        )
    }

    /// Whether "the phone has been silent since the visit was due" matters for this kind.
    pub fn may_be_offline(self) -> bool {
        matches!(self, AlertKind::Overdue | AlertKind::Missed)
    }
}

impl std::str::FromStr for AlertKind {
    type Err = crate::domain::UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlertKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| crate::domain::UnknownValue {
                kind: "AlertKind",
                value: s.to_string(),
            })
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
