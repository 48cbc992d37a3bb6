//! The thresholds a contract sets (brief, section 5), as data. Defaults are the brief's.
//!
//! Minutes and percentages are whole numbers so every comparison in the definitions is exact
//! integer arithmetic on milliseconds; KPI maxima may be fractional (e.g. 2.5 %).

use crate::domain::{Millis, HOUR_MS, MINUTE_MS};
use serde::{Deserialize, Serialize};

/// Rounding units a contract may bill in, in minutes.
pub const BILLING_UNITS_MIN: [u32; 5] = [1, 5, 15, 30, 60];

/// Every threshold of the metric definitions, for one contract.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContractRules {
    /// Late when the clock-in is more than this many minutes after the planned start.
    /// Also the point after the planned start at which an unattended visit becomes overdue.
    pub late_after_min: u32,
    /// Early when the clock-in is more than this many minutes before the planned start.
    pub early_before_min: u32,
    /// Missed (or "no clock-out") once "now" is more than this many minutes after the planned end.
    pub missed_after_end_min: u32,
    /// Short when the actual duration is below this percentage of the planned duration.
    pub short_below_pct: u32,
    /// Overrun when the actual duration is above this percentage of the planned duration.
    pub overrun_above_pct: u32,
    /// A clock-in within this many metres of the client's recorded location is location verified.
    pub location_radius_m: f64,
    pub billing: BillingRule,
    /// Monthly KPI maxima; framework contracts carry them, spot contracts usually not.
    pub kpi: Option<KpiTargets>,
    /// When an event's time is flagged as not trustworthy (brief, section 4).
    pub time_trust: TimeTrustRules,
}

impl Default for ContractRules {
    fn default() -> Self {
        Self {
            late_after_min: 15,
            early_before_min: 15,
            missed_after_end_min: 30,
            short_below_pct: 75,
            overrun_above_pct: 125,
            location_radius_m: 200.0,
            billing: BillingRule::default(),
            kpi: None,
            time_trust: TimeTrustRules::default(),
        }
    }
}

/// How billable minutes are derived from a visit.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingRule {
    pub basis: BillingBasis,
    /// One of [`BILLING_UNITS_MIN`].
    pub unit_min: u32,
    pub rounding: Rounding,
}

impl Default for BillingRule {
    fn default() -> Self {
        Self {
            basis: BillingBasis::Actual,
            unit_min: 1,
            rounding: Rounding::Nearest,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingBasis {
    /// The planned duration E − P.
    Planned,
    /// The actual duration o − i.
    Actual,
    /// The smaller of actual and planned.
    Capped,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// To the nearest unit; exactly half a unit (or less) rounds down.
    Nearest,
    Down,
    Up,
}

/// Monthly maxima of a framework contract, in percent. Breach when the rate is strictly above.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiTargets {
    pub max_late_pct: f64,
    pub max_missed_pct: f64,
}

/// Thresholds of the time-trust flags (brief, section 4).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeTrustRules {
    /// An offset measured longer ago than this (before the event) no longer verifies its time.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub offset_max_age_ms: Millis,
    /// `clock_skew` when |offset| is above this.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub max_skew_ms: Millis,
    /// `future_time` when the trusted time is later than the server's receipt by more than this.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub future_tolerance_ms: Millis,
}

impl Default for TimeTrustRules {
    fn default() -> Self {
        Self {
            offset_max_age_ms: 24 * HOUR_MS,
            max_skew_ms: 2 * MINUTE_MS,
            future_tolerance_ms: 2 * MINUTE_MS,
        }
    }
}

/// Why a set of rules can't be used. Each names the field, so the office can fix it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RulesError {
    #[error("billing.unit_min must be one of 1, 5, 15, 30, 60 minutes, not {0}")]
    BillingUnit(u32),
    #[error("short_below_pct must be between 1 and 100, not {0}")]
    ShortPct(u32),
    #[error("overrun_above_pct must be at least 100, not {0}")]
    OverrunPct(u32),
    #[error("location_radius_m must be a positive number of metres, not {0}")]
    LocationRadius(f64),
    #[error("kpi.{field} must be a percentage between 0 and 100, not {value}")]
    KpiPct { field: &'static str, value: f64 },
    #[error("time_trust.{field} must not be negative, not {value}")]
    TimeTrust { field: &'static str, value: Millis },
}

impl ContractRules {
    /// Checks what the types can't: units from the fixed list, percentages in range, no negatives.
    /// Whole-minute thresholds are unsigned, so a negative one is refused when the rules are parsed.
    pub fn validate(&self) -> Result<(), RulesError> {
        if !BILLING_UNITS_MIN.contains(&self.billing.unit_min) {
            return Err(RulesError::BillingUnit(self.billing.unit_min));
        }
        if !(1..=100).contains(&self.short_below_pct) {
            return Err(RulesError::ShortPct(self.short_below_pct));
        }
        if self.overrun_above_pct < 100 {
            return Err(RulesError::OverrunPct(self.overrun_above_pct));
        }
        if !(self.location_radius_m.is_finite() && self.location_radius_m > 0.0) {
            return Err(RulesError::LocationRadius(self.location_radius_m));
        }
        if let Some(kpi) = &self.kpi {
            for (field, value) in [
                ("max_late_pct", kpi.max_late_pct),
                ("max_missed_pct", kpi.max_missed_pct),
            ] {
                if !(value.is_finite() && (0.0..=100.0).contains(&value)) {
                    return Err(RulesError::KpiPct { field, value });
                }
            }
        }
        let tt = &self.time_trust;
        for (field, value) in [
            ("offset_max_age_ms", tt.offset_max_age_ms),
            ("max_skew_ms", tt.max_skew_ms),
            ("future_tolerance_ms", tt.future_tolerance_ms),
        ] {
            if value < 0 {
                return Err(RulesError::TimeTrust { field, value });
            }
        }
        Ok(())
    }

    pub fn late_after_ms(&self) -> Millis {
        Millis::from(self.late_after_min) * MINUTE_MS
    }

    pub fn early_before_ms(&self) -> Millis {
        Millis::from(self.early_before_min) * MINUTE_MS
    }

    pub fn missed_after_end_ms(&self) -> Millis {
        Millis::from(self.missed_after_end_min) * MINUTE_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_briefs() {
        let r = ContractRules::default();
        assert_eq!(
            (r.late_after_min, r.early_before_min, r.missed_after_end_min),
            (15, 15, 30)
        );
        assert_eq!((r.short_below_pct, r.overrun_above_pct), (75, 125));
        assert_eq!(r.location_radius_m, 200.0);
        assert_eq!(r.time_trust.offset_max_age_ms, 86_400_000);
        assert_eq!(r.time_trust.max_skew_ms, 120_000);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn every_listed_unit_is_accepted_and_others_refused() {
        let mut r = ContractRules::default();
        for unit in [1, 5, 15, 30, 60] {
            r.billing.unit_min = unit;
            assert_eq!(r.validate(), Ok(()));
        }
        for unit in [0, 2, 10, 45, 120] {
            r.billing.unit_min = unit;
            assert_eq!(r.validate(), Err(RulesError::BillingUnit(unit)));
        }
    }

    #[test]
    fn out_of_range_thresholds_are_refused_with_the_field_named() {
        let base = ContractRules::default();
        let mut r = base.clone();
        r.short_below_pct = 0;
        assert_eq!(r.validate(), Err(RulesError::ShortPct(0)));
        let mut r = base.clone();
        r.overrun_above_pct = 99;
        assert_eq!(r.validate(), Err(RulesError::OverrunPct(99)));
        let mut r = base.clone();
        r.location_radius_m = -1.0;
        assert!(matches!(r.validate(), Err(RulesError::LocationRadius(_))));
        let mut r = base.clone();
        r.location_radius_m = f64::NAN;
        assert!(matches!(r.validate(), Err(RulesError::LocationRadius(_))));
        let mut r = base.clone();
        r.kpi = Some(KpiTargets {
            max_late_pct: 5.0,
            max_missed_pct: -0.5,
        });
        let err = r.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("kpi.max_missed_pct"), "{err}");
        let mut r = base;
        r.time_trust.max_skew_ms = -1;
        assert!(matches!(
            r.validate(),
            Err(RulesError::TimeTrust {
                field: "max_skew_ms",
                ..
            })
        ));
    }

    #[test]
    fn json_is_partial_and_strict() -> Result<(), serde_json::Error> {
        // Missing fields take the brief's defaults; unknown fields and negative minutes are refused.
        let r: ContractRules = serde_json::from_str(
            r#"{"late_after_min": 10, "billing": {"basis": "capped", "unit_min": 15}}"#,
        )?;
        assert_eq!(r.late_after_min, 10);
        assert_eq!(r.early_before_min, 15);
        assert_eq!(r.billing.basis, BillingBasis::Capped);
        assert_eq!(r.billing.rounding, Rounding::Nearest);
        assert!(serde_json::from_str::<ContractRules>(r#"{"late_after_min": -5}"#).is_err());
        assert!(serde_json::from_str::<ContractRules>(r#"{"lateness": 5}"#).is_err());
        let back: ContractRules = serde_json::from_str(&serde_json::to_string(&r)?)?;
        assert_eq!(back, r);
        Ok(())
    }
}
