//! The office's figures: punctuality (with charts and a CSV of exactly the table), KPI standing,
//! reconciliation and continuity. Every figure comes from `services::reports` and the metrics it
//! calls; this file only names, orders and draws them.

use super::charts::{self, Series};
use super::format::{self, Names};
use super::session::Viewer;
use super::{blocking, page, Chrome, WebError, WebResult};
use crate::http::{now, AppState};
use crate::services::reports::{self, Span};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use caresync_core::domain::*;
use caresync_core::metrics::{GroupBy, KpiStatus, PeriodKind, PunctualityReport};
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;
use std::collections::BTreeSet;

#[derive(Deserialize, Default, Clone)]
pub struct FigureQuery {
    from: Option<String>,
    to: Option<String>,
    group: Option<String>,
    period: Option<String>,
    chart: Option<String>,
}

/// The period and pickers as chosen (or their defaults), resolved once.
struct Picked {
    from: NaiveDate,
    /// Last day shown (inclusive), as people say it.
    to: NaiveDate,
    group: GroupBy,
    period: PeriodKind,
    chart: &'static str,
}

const GROUPS: &[(GroupBy, &str, &str)] = &[
    (GroupBy::Contract, "contract", "Contract"),
    (
        GroupBy::CommissioningModel,
        "commissioning_model",
        "Spot / framework",
    ),
    (GroupBy::Commissioner, "commissioner", "Commissioner"),
    (GroupBy::Team, "team", "Team"),
    (GroupBy::Carer, "carer", "Carer"),
    (GroupBy::Client, "client", "Client"),
    (GroupBy::All, "all", "Everything"),
];
const PERIODS: &[(PeriodKind, &str, &str)] = &[
    (PeriodKind::Day, "day", "Day"),
    (PeriodKind::Week, "week", "Week"),
    (PeriodKind::Month, "month", "Month"),
];

fn pick(st: &AppState, q: &FigureQuery, default_days: i64) -> WebResult<Picked> {
    let today = format::today(st, now());
    let date = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d"))
            .transpose()
            .map_err(|_| WebError::BadRequest("Dates are written 2026-11-25.".into()))
    };
    let to = date(&q.to)?.unwrap_or(today);
    let from = date(&q.from)?.unwrap_or(to - chrono::Duration::days(default_days - 1));
    if to < from {
        return Err(WebError::BadRequest(
            "The first day must be on or before the last.".into(),
        ));
    }
    let word = |v: &Option<String>| v.as_deref().unwrap_or_default().to_string();
    let group = GROUPS
        .iter()
        .find(|(_, w, _)| *w == word(&q.group))
        .map_or(GroupBy::Contract, |g| g.0);
    let period = PERIODS
        .iter()
        .find(|(_, w, _)| *w == word(&q.period))
        .map_or(PeriodKind::Week, |p| p.0);
    let chart = if word(&q.chart) == "models" {
        "models"
    } else {
        "kpi"
    };
    Ok(Picked {
        from,
        to,
        group,
        period,
        chart,
    })
}

/// The picked days as a report span (as of now), holding one of the report permits the API's
/// reports also take.
async fn span(st: &AppState, p: &Picked) -> WebResult<(Span, tokio::sync::OwnedSemaphorePermit)> {
    let permit = tokio::time::timeout(st.permit_wait, st.reports_in_flight.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            WebError::BadRequest("The server is busy with other reports; try again in a moment.".into())
        })?;
    let (from, to) =
        reports::day_range(st.tz, p.from, p.to + chrono::Duration::days(1)).map_err(WebError::BadRequest)?;
    let span = Span {
        from,
        to,
        as_of: now(),
        tz: st.tz,
    };
    Ok((span, permit))
}

pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct PunctRow {
    /// The machine label (`2026-W48`), the cell's tooltip (the API's CSV has it too).
    pub period: String,
    /// What the page and its CSV show: `w/c 23 Nov 2026`.
    pub period_label: String,
    pub group_id: String,
    pub group: String,
    pub scheduled: u64,
    pub attended: u64,
    pub on_time: String,
    pub late: String,
    pub missed: String,
    pub short: String,
    pub electronic: String,
    pub late_high: bool,
}

#[derive(Template)]
#[template(path = "punctuality.html")]
struct PunctualityPage {
    chrome: Chrome,
    from: String,
    to: String,
    groups: Vec<Choice>,
    periods: Vec<Choice>,
    chart: &'static str,
    query: String,
    models_query: String,
    kpi_query: String,
    late_chart: String,
    missed_chart: String,
    chart_note: String,
    rows: Vec<PunctRow>,
    unit_note: &'static str,
}

fn rows(report: &PunctualityReport, kind: PeriodKind, names: &Names) -> Vec<PunctRow> {
    report
        .rows
        .iter()
        .map(|r| PunctRow {
            period: r.period.clone(),
            period_label: format::period(kind, &r.period_start, &r.period, false),
            group_id: r.group.clone(),
            group: names.group(&r.group),
            scheduled: r.scheduled,
            attended: r.attended,
            on_time: format::pct(r.on_time_pct),
            late: format::pct(r.late_pct),
            missed: format::pct(r.missed_pct),
            short: format::pct(r.short_pct),
            electronic: format::pct(r.electronic_pct),
            late_high: r.late_pct.is_some_and(|v| v > 10.0),
        })
        .collect()
}

/// Late % and missed % per week: each framework contract against its KPI maximum, or spot and
/// framework side by side.
fn charts_for(st: &AppState, span: Span, names: &Names, chart: &str) -> WebResult<(String, String, String)> {
    let (group, note) = if chart == "models" {
        (
            GroupBy::CommissioningModel,
            "Spot and framework visits side by side, week by week.",
        )
    } else {
        (
            GroupBy::Contract,
            "Each framework contract week by week; the dashed line is its KPI maximum.",
        )
    };
    let report = reports::punctuality(&*st.store, span, group, PeriodKind::Week)?;
    let periods: Vec<String> = report
        .rows
        .iter()
        .map(|r| r.period.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let groups: Vec<String> = report
        .rows
        .iter()
        .map(|r| r.group.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let series = |rate: fn(&caresync_core::metrics::ReportRow) -> Option<f64>, late: bool| -> Vec<Series> {
        groups
            .iter()
            .filter_map(|g| {
                // The targets the report judged this contract by (only KPI contracts have any).
                let kpi = g.parse::<ContractId>().ok().and_then(|id| {
                    report
                        .kpi
                        .iter()
                        .find(|k| k.contract_id == id)
                        .map(|k| (k.max_late_pct, k.max_missed_pct))
                });
                if chart != "models" && kpi.is_none() {
                    return None; // only framework contracts carry KPI targets
                }
                Some(Series {
                    name: names.group(g),
                    values: periods
                        .iter()
                        .map(|p| {
                            report
                                .rows
                                .iter()
                                .find(|r| &r.period == p && &r.group == g)
                                .and_then(rate)
                        })
                        .collect(),
                    threshold: kpi.map(|(max_late, max_missed)| if late { max_late } else { max_missed }),
                })
            })
            .collect()
    };
    // The axis reads `w/c 23 Nov`; the periods stay in their machine order.
    let axis: Vec<String> = periods
        .iter()
        .map(|p| {
            let start = report
                .rows
                .iter()
                .find(|r| &r.period == p)
                .map(|r| r.period_start.as_str());
            format::period(PeriodKind::Week, start.unwrap_or_default(), p, true)
        })
        .collect();
    let late = charts::percent_lines("Late calls, % of attended", &axis, &series(|r| r.late_pct, true));
    let missed = charts::percent_lines("Missed calls, %", &axis, &series(|r| r.missed_pct, false));
    Ok((late, missed, note.to_string()))
}

fn query_string(p: &Picked, chart: &str) -> String {
    let g = GROUPS.iter().find(|g| g.0 == p.group).map_or("contract", |g| g.1);
    let per = PERIODS.iter().find(|x| x.0 == p.period).map_or("week", |x| x.1);
    format!("from={}&to={}&group={g}&period={per}&chart={chart}", p.from, p.to)
}

pub async fn punctuality(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<FigureQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    viewer.require_office()?;
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let p = pick(&st, &q, 28)?;
    let (span, _permit) = span(&st, &p).await?;
    blocking(move || {
        let names = Names::load(&st)?;
        let report = reports::punctuality(&*st.store, span, p.group, p.period)?;
        let (late_chart, missed_chart, chart_note) = charts_for(&st, span, &names, p.chart)?;
        page(&PunctualityPage {
            chrome: viewer.chrome(&st, "punctuality"),
            from: p.from.to_string(),
            to: p.to.to_string(),
            groups: GROUPS
                .iter()
                .map(|(g, v, l)| Choice {
                    value: v,
                    label: l,
                    selected: *g == p.group,
                })
                .collect(),
            periods: PERIODS
                .iter()
                .map(|(x, v, l)| Choice {
                    value: v,
                    label: l,
                    selected: *x == p.period,
                })
                .collect(),
            chart: p.chart,
            query: query_string(&p, p.chart),
            models_query: query_string(&p, "models"),
            kpi_query: query_string(&p, "kpi"),
            late_chart,
            missed_chart,
            chart_note,
            rows: rows(&report, p.period, &names),
            unit_note: if matches!(p.group, GroupBy::Carer | GroupBy::Team) {
                "Counted per carer: a double-up counts once for each carer, judged on their own times."
            } else {
                "Counted per visit."
            },
        })
    })
    .await
}

/// A CSV text cell: the API's own neutralisation (OWASP: a leading `=`, `+`, `-`, `@`, tab or
/// carriage return gets an apostrophe, and the cell is quoted). Numbers never pass through here.
fn cell(s: &str) -> String {
    caresync_core::metrics::text_field(s)
}

/// Exactly the table on the page: the same rows, columns, names and one-decimal percentages,
/// with each group's id beside its name.
pub async fn punctuality_csv(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<FigureQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    viewer.require_office()?;
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let p = pick(&st, &q, 28)?;
    let (span, _permit) = span(&st, &p).await?;
    blocking(move || {
        let names = Names::load(&st)?;
        let report = reports::punctuality(&*st.store, span, p.group, p.period)?;
        let mut out = String::from(
            "period,group,group_id,visits,attended,on_time_pct,late_pct,missed_pct,short_pct,electronic_pct\r\n",
        );
        let pct = |s: &str| s.trim_end_matches('%').replace('–', "");
        for r in rows(&report, p.period, &names) {
            out.push_str(
                &[
                    cell(&r.period_label),
                    cell(&r.group),
                    cell(&r.group_id),
                    r.scheduled.to_string(),
                    r.attended.to_string(),
                    pct(&r.on_time),
                    pct(&r.late),
                    pct(&r.missed),
                    pct(&r.short),
                    pct(&r.electronic),
                ]
                .join(","),
            );
            out.push_str("\r\n");
        }
        let file = format!("punctuality-{}-to-{}.csv", p.from, p.to);
        Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file}\"")),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            // A byte-order mark so Excel reads the names as UTF-8.
            format!("\u{feff}{out}"),
        )
            .into_response())
    })
    .await
}

pub struct KpiLine {
    pub contract: String,
    pub commissioner: String,
    pub months: Vec<KpiCell>,
}

pub struct KpiCell {
    pub month: String,
    pub late: String,
    pub missed: String,
    pub max_late: String,
    pub max_missed: String,
    pub breach: bool,
    pub attended: u64,
}

#[derive(Template)]
#[template(path = "kpi.html")]
struct KpiPage {
    chrome: Chrome,
    from: String,
    to: String,
    /// The days covered, as the subtitle reads them: `13 to 26 Nov 2026`.
    span: String,
    lines: Vec<KpiLine>,
    late_chart: String,
}

pub async fn kpi(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<FigureQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    viewer.require_office()?;
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let mut p = pick(&st, &q, 90)?;
    if q.from.as_deref().unwrap_or_default().is_empty() {
        // Whole months: from the first of the month three months back.
        p.from = (p.to - chrono::Duration::days(75)).with_day(1).unwrap_or(p.from);
    }
    let (span, _permit) = span(&st, &p).await?;
    blocking(move || {
        let names = Names::load(&st)?;
        let mut lines: Vec<KpiLine> = Vec::new();
        for k in &reports::kpi(&*st.store, span)? {
            let cellv = KpiCell {
                // `2026-11` reads `November 2026`.
                month: format::period(PeriodKind::Month, &format!("{}-01", k.month), &k.month, false),
                late: format::pct(k.late_pct),
                missed: format::pct(k.missed_pct),
                max_late: format!("{:.1}%", k.max_late_pct),
                max_missed: format!("{:.1}%", k.max_missed_pct),
                breach: k.status == KpiStatus::Breach,
                attended: k.attended,
            };
            let name = names.contract(k.contract_id);
            match lines.iter_mut().find(|l| l.contract == name) {
                Some(l) => l.months.push(cellv),
                None => lines.push(KpiLine {
                    contract: name,
                    commissioner: k.commissioner.clone(),
                    months: vec![cellv],
                }),
            }
        }
        let (late_chart, _, _) = charts_for(&st, span, &names, "kpi")?;
        page(&KpiPage {
            chrome: viewer.chrome(&st, "kpi"),
            from: p.from.to_string(),
            to: p.to.to_string(),
            span: format::days(p.from, p.to),
            lines,
            late_chart,
        })
    })
    .await
}

pub struct RecRow {
    pub week: String,
    pub client: String,
    pub contract: String,
    pub visits: u64,
    pub authorised: String,
    pub delivered: String,
    pub billable: String,
    pub delivered_diff: String,
    pub billable_diff: String,
    pub mismatch: bool,
}

#[derive(Template)]
#[template(path = "reconciliation.html")]
struct ReconciliationPage {
    chrome: Chrome,
    from: String,
    to: String,
    /// The days covered, as the subtitle reads them: `13 to 26 Nov 2026`.
    span: String,
    rows: Vec<RecRow>,
    mismatches: usize,
}

/// `3h 55m`, `-1h 20m`, `45m`: compact enough for a wide table.
fn hours(min: i64) -> String {
    let sign = if min < 0 { "-" } else { "" };
    let (h, m) = (min.abs() / 60, min.abs() % 60);
    if h == 0 {
        format!("{sign}{m}m")
    } else {
        format!("{sign}{h}h {m:02}m")
    }
}

pub async fn reconciliation(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<FigureQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    viewer.require_office()?;
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let p = pick(&st, &q, 14)?;
    let (span, _permit) = span(&st, &p).await?;
    blocking(move || {
        let names = Names::load(&st)?;
        let mut rows = reports::reconciliation(&*st.store, span)?;
        // Mismatches first, the largest first.
        rows.sort_by_key(|r| {
            (
                std::cmp::Reverse(
                    r.delivered_minus_authorised
                        .abs()
                        .max(r.billable_minus_authorised.abs()),
                ),
                r.week.clone(),
            )
        });
        let rows: Vec<RecRow> = rows
            .iter()
            .map(|r| RecRow {
                week: format::period(PeriodKind::Week, &r.week_start, &r.week, false),
                client: names.client(r.client_id),
                contract: names.contract(r.contract_id),
                visits: r.visits,
                authorised: hours(r.authorised_minutes),
                delivered: hours(r.delivered_minutes),
                billable: hours(r.billable_minutes),
                delivered_diff: hours(r.delivered_minus_authorised),
                billable_diff: hours(r.billable_minus_authorised),
                mismatch: r.billable_minus_authorised != 0,
            })
            .collect();
        page(&ReconciliationPage {
            chrome: viewer.chrome(&st, "reconciliation"),
            from: p.from.to_string(),
            to: p.to.to_string(),
            span: format::days(p.from, p.to),
            mismatches: rows.iter().filter(|r| r.mismatch).count(),
            rows,
        })
    })
    .await
}

pub struct ContRow {
    pub week: String,
    pub client: String,
    pub visits: u64,
    pub carers: u64,
    pub scheduled: u64,
    pub many: bool,
}

#[derive(Template)]
#[template(path = "continuity.html")]
struct ContinuityPage {
    chrome: Chrome,
    from: String,
    to: String,
    /// The days covered, as the subtitle reads them: `13 to 26 Nov 2026`.
    span: String,
    rows: Vec<ContRow>,
}

pub async fn continuity(
    State(st): State<AppState>,
    viewer: Viewer,
    q: Result<Query<FigureQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult<Response> {
    viewer.require_office()?;
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let p = pick(&st, &q, 14)?;
    let (span, _permit) = span(&st, &p).await?;
    blocking(move || {
        let names = Names::load(&st)?;
        let mut rows = reports::continuity(&*st.store, span)?;
        rows.sort_by_key(|r| (std::cmp::Reverse(r.distinct_carers), r.week.clone()));
        page(&ContinuityPage {
            chrome: viewer.chrome(&st, "continuity"),
            from: p.from.to_string(),
            to: p.to.to_string(),
            span: format::days(p.from, p.to),
            rows: rows
                .iter()
                .map(|r| ContRow {
                    week: format::period(PeriodKind::Week, &r.week_start, &r.week, false),
                    client: names.client(r.client_id),
                    visits: r.visits,
                    carers: r.distinct_carers,
                    scheduled: r.distinct_carers_scheduled,
                    many: r.distinct_carers > 3,
                })
                .collect(),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{cell, hours};

    #[test]
    fn csv_cells_are_quoted_and_never_run_as_formulas() {
        assert_eq!(cell("Client 07"), "Client 07");
        assert_eq!(cell("Smith, Ann"), "\"Smith, Ann\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        // The API's CSVs neutralise these too; the dashboard's download once let them through.
        assert_eq!(cell("\tcmd"), "\"'\tcmd\"");
        assert_eq!(cell("\r=1+1"), "\"'\r=1+1\"");
        assert_eq!(
            cell("-3.5"),
            "\"'-3.5\"",
            "only names pass through here, never numbers"
        );
    }

    #[test]
    fn reconciliation_hours_are_compact() {
        assert_eq!(hours(45), "45m");
        assert_eq!(hours(235), "3h 55m");
        assert_eq!(hours(-80), "-1h 20m");
        assert_eq!(hours(0), "0m");
    }
}
