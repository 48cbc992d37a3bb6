//! Breaches seen coming: a framework contract's month-to-date late % and missed % against its
//! KPI maximum, projected to the month's end from the visits still scheduled at the rates of the
//! last seven days (a sickness cluster shows there before it moves the month's figure).
//!
//! Projection, with `r_missed` = recent missed ÷ (recent attended + recent missed) and `r_late` =
//! recent late ÷ recent attended (the month-to-date rates when the recent window has none):
//! attended = mtd attended + remaining × (1 − r_missed); missed = mtd missed + remaining ×
//! r_missed; late = mtd late + remaining × (1 − r_missed) × r_late. Rates as in the report:
//! late ÷ attended, missed ÷ (attended + missed); "above" is strictly above (as `kpi_status`).

use super::rules::KpiTargets;
use serde::{Deserialize, Serialize};

/// Counts of one contract over some days.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KpiCounts {
    pub attended: u64,
    pub late: u64,
    pub missed: u64,
}

/// Where a measure stands and is heading.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outlook {
    /// Neither now nor projected above the maximum.
    Ok,
    /// Within the maximum now, above it by the month's end at recent rates: warn the
    /// commissioner now.
    Warning,
    /// Already above the maximum month to date.
    Breach,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasureProjection {
    pub month_to_date_pct: Option<f64>,
    pub projected_pct: Option<f64>,
    pub max_pct: f64,
    pub outlook: Outlook,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = KpiOutlook))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KpiProjection {
    pub late: MeasureProjection,
    pub missed: MeasureProjection,
}

fn pct(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part * 100.0 / whole)
}

fn measure(mtd: Option<f64>, projected: Option<f64>, max_pct: f64) -> MeasureProjection {
    let above = |p: Option<f64>| p.is_some_and(|p| p > max_pct);
    let outlook = if above(mtd) {
        Outlook::Breach
    } else if above(projected) {
        Outlook::Warning
    } else {
        Outlook::Ok
    };
    let one_decimal = |p: Option<f64>| p.map(|p| (p * 10.0).round() / 10.0);
    MeasureProjection {
        month_to_date_pct: one_decimal(mtd),
        projected_pct: one_decimal(projected),
        max_pct,
        outlook,
    }
}

/// The projection of one contract's month (see the module's definition).
pub fn project(mtd: KpiCounts, recent: KpiCounts, remaining: u64, kpi: KpiTargets) -> KpiProjection {
    let f = |n: u64| n as f64;
    let rate = |part: u64, whole: u64, fallback: f64| if whole > 0 { f(part) / f(whole) } else { fallback };
    let mtd_missed_rate = rate(mtd.missed, mtd.attended + mtd.missed, 0.0);
    let r_missed = rate(recent.missed, recent.attended + recent.missed, mtd_missed_rate);
    let r_late = rate(recent.late, recent.attended, rate(mtd.late, mtd.attended, 0.0));
    let rem = f(remaining);
    let attended = f(mtd.attended) + rem * (1.0 - r_missed);
    let missed = f(mtd.missed) + rem * r_missed;
    let late = f(mtd.late) + rem * (1.0 - r_missed) * r_late;
    KpiProjection {
        late: measure(
            pct(f(mtd.late), f(mtd.attended)),
            pct(late, attended),
            kpi.max_late_pct,
        ),
        missed: measure(
            pct(f(mtd.missed), f(mtd.attended + mtd.missed)),
            pct(missed, attended + missed),
            kpi.max_missed_pct,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KPI: KpiTargets = KpiTargets {
        max_late_pct: 10.0,
        max_missed_pct: 2.0,
    };

    #[test]
    fn a_late_rate_rising_mid_month_warns_before_the_month_crosses() {
        // The 15th: 100 attended, 5 late (5 %), none missed. The last seven days: 40 attended,
        // 8 late (20 %). 100 visits still scheduled: late = 5 + 100 × 0.2 = 25 of 200 = 12.5 %.
        let p = project(
            KpiCounts {
                attended: 100,
                late: 5,
                missed: 0,
            },
            KpiCounts {
                attended: 40,
                late: 8,
                missed: 0,
            },
            100,
            KPI,
        );
        assert_eq!(p.late.month_to_date_pct, Some(5.0));
        assert_eq!(p.late.projected_pct, Some(12.5));
        assert_eq!(p.late.outlook, Outlook::Warning);
        assert_eq!(p.missed.outlook, Outlook::Ok);
        // At the last seven days' earlier rate (5 %) the month stays at 5 %: no warning.
        let calm = project(
            KpiCounts {
                attended: 100,
                late: 5,
                missed: 0,
            },
            KpiCounts {
                attended: 40,
                late: 2,
                missed: 0,
            },
            100,
            KPI,
        );
        assert_eq!(
            (calm.late.projected_pct, calm.late.outlook),
            (Some(5.0), Outlook::Ok)
        );
    }

    #[test]
    fn missed_projection_by_hand_and_a_breach_already_there() {
        // 98 attended, 1 missed (1.0 %); recently 45 attended, 3 missed: r = 3/48 = 0.0625.
        // 80 remaining: missed 1 + 5 = 6; attended 98 + 75 = 173; 6 / 179 = 3.35 % > 2 %.
        let p = project(
            KpiCounts {
                attended: 98,
                late: 0,
                missed: 1,
            },
            KpiCounts {
                attended: 45,
                late: 0,
                missed: 3,
            },
            80,
            KPI,
        );
        assert_eq!(p.missed.month_to_date_pct, Some(1.0));
        assert_eq!(p.missed.projected_pct, Some(3.4));
        assert_eq!(p.missed.outlook, Outlook::Warning);
        // Exactly at the maximum is not above it; one more late visit is.
        let at = project(
            KpiCounts {
                attended: 100,
                late: 10,
                missed: 0,
            },
            KpiCounts::default(),
            0,
            KPI,
        );
        assert_eq!(at.late.outlook, Outlook::Ok);
        let over = project(
            KpiCounts {
                attended: 100,
                late: 11,
                missed: 0,
            },
            KpiCounts::default(),
            0,
            KPI,
        );
        assert_eq!(over.late.outlook, Outlook::Breach);
    }
}
