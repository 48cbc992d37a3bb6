//! The metric definitions of brief section 5, in one place, with every threshold as data.
//!
//! Pure functions over [`Visit`](crate::visit_document::Visit)s: no SQL, no I/O, no clock. The
//! server reads visits, contracts and teams from its store, then calls:
//!
//! 1. [`visit_outcome`] per visit (with the contract's [`ContractRules`] and the report's "now");
//! 2. [`PunctualityReport::build`] over the outcomes, grouped and by period;
//! 3. [`weekly_reconciliation`] and [`continuity`] for the spot-purchasing weekly figures.
//!
//! `docs/metrics.md` states each definition exactly as implemented here.

pub mod alerts;
pub mod billing;
mod csv;
pub mod facts;
pub mod periods;
pub mod projection;
pub mod reconciliation;
pub mod record;
pub mod report;
pub mod rules;
pub mod time_trust;
pub mod visit_outcome;
pub mod working_days;

#[cfg(test)]
pub(crate) mod test_support;

pub use alerts::{alert_kinds, phone_silent_since_due, AlertKind};
pub use billing::{billable_minutes, round_to_unit, Billable};
pub use csv::{json_rows_csv, one_decimal, text_cell, text_field, CsvRow};
pub use facts::{CarerFacts, CarerFigures, FlagCounts, UnitFacts, VisitFacts, VisitFigures};
pub use periods::{local_date, AgencyTimeZone, Period, PeriodKind, UnknownTimeZone};
pub use reconciliation::{
    continuity, continuity_csv, continuity_from_weeks, reconciliation_csv, reconciliation_from_days,
    weekly_reconciliation, ContinuityRow, ContinuityWeek, DayMinutes, ReconciliationRow,
};
pub use record::{TimeCorrection, VisitRecord};
pub use report::{
    kpi_status, ContractInfo, CountUnit, DayTally, GroupBy, KpiRow, KpiStatus, PunctualityReport,
    ReportContext, ReportQuery, ReportRow, TallyKey,
};
pub use rules::{BillingBasis, BillingRule, ContractRules, KpiTargets, Rounding, RulesError, TimeTrustRules};
pub use time_trust::{
    event_trust, time_trust_flags, EventFlag, EventFlags, EventTrust, TimeTrustFlags, UnknownEventFlag,
};
pub use visit_outcome::{
    record_outcome, visit_outcome, Attendance, CarerOutcome, Figures, Punctuality, VisitInputs, VisitOutcome,
};
