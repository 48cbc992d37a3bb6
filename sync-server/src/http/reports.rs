//! Figures for the office (JSON and CSV) and live alerts for supervisors.

use super::office::{require, OFFICE, OFFICE_OR_SUPERVISOR};
use super::{authenticate, blocking, now, ApiError, ApiResult, AppState};
use crate::services::reports::{self, Alert};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use caresync_core::metrics::{
    continuity, continuity_csv, reconciliation_csv, weekly_reconciliation, AgencyTimeZone, GroupBy,
    PeriodKind,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/reports/punctuality",
            get(|s, h, q| figures(s, h, q, Figure::Punctuality, Format::Json)),
        )
        .route(
            "/api/v1/reports/punctuality.csv",
            get(|s, h, q| figures(s, h, q, Figure::Punctuality, Format::Csv)),
        )
        .route(
            "/api/v1/reports/kpi",
            get(|s, h, q| figures(s, h, q, Figure::Kpi, Format::Json)),
        )
        .route(
            "/api/v1/reports/kpi.csv",
            get(|s, h, q| figures(s, h, q, Figure::Kpi, Format::Csv)),
        )
        .route(
            "/api/v1/reports/reconciliation",
            get(|s, h, q| figures(s, h, q, Figure::Reconciliation, Format::Json)),
        )
        .route(
            "/api/v1/reports/reconciliation.csv",
            get(|s, h, q| figures(s, h, q, Figure::Reconciliation, Format::Csv)),
        )
        .route(
            "/api/v1/reports/continuity",
            get(|s, h, q| figures(s, h, q, Figure::Continuity, Format::Json)),
        )
        .route(
            "/api/v1/reports/continuity.csv",
            get(|s, h, q| figures(s, h, q, Figure::Continuity, Format::Csv)),
        )
        .route("/api/v1/alerts", get(alerts))
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Csv,
}

#[derive(Deserialize)]
pub struct ReportParams {
    /// First local day, `YYYY-MM-DD`.
    from: NaiveDate,
    /// Day after the last, `YYYY-MM-DD` (exclusive).
    to: NaiveDate,
    #[serde(default = "default_group")]
    group_by: GroupBy,
    #[serde(default = "default_period")]
    period: PeriodKind,
    /// Judge as the server knew things at this instant (default: now).
    as_of: Option<DateTime<Utc>>,
}

fn default_group() -> GroupBy {
    GroupBy::Contract
}

fn default_period() -> PeriodKind {
    PeriodKind::Week
}

type Params = Result<Query<ReportParams>, QueryRejection>;

fn judged(st: &AppState, headers: &HeaderMap, params: Params) -> ApiResult<(reports::Judged, ReportParams)> {
    require(&authenticate(st, headers)?, OFFICE)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (from, to) =
        reports::day_range(st, p.from, p.to).map_err(|e| ApiError::bad_request("invalid_query", e))?;
    let as_of = p.as_of.map_or_else(now, |t| t.timestamp_millis());
    Ok((reports::judge(st, from, to, as_of)?, p))
}

fn respond<T: serde::Serialize>(
    format: Format,
    json: &T,
    csv: impl FnOnce() -> Result<String, serde_json::Error>,
) -> ApiResult<Response> {
    Ok(match format {
        Format::Json => Json(json).into_response(),
        Format::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            csv().map_err(ApiError::internal)?,
        )
            .into_response(),
    })
}

/// Which figures a report route answers with.
#[derive(Clone, Copy)]
enum Figure {
    Punctuality,
    Kpi,
    Reconciliation,
    Continuity,
}

async fn figures(
    State(st): State<AppState>,
    headers: HeaderMap,
    params: Params,
    figure: Figure,
    format: Format,
) -> ApiResult<Response> {
    let permit = match super::permit(&st.reports_in_flight, st.permit_wait).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy),
    };
    blocking(move || {
        let _permit = permit;
        let (judged, p) = judged(&st, &headers, params)?;
        let tz = AgencyTimeZone(st.tz);
        match figure {
            Figure::Punctuality => {
                let report = reports::punctuality(&judged, p.group_by, p.period, st.tz);
                respond(format, &report, || report.rows_csv())
            }
            Figure::Kpi => {
                let report = reports::punctuality(&judged, GroupBy::Contract, PeriodKind::Month, st.tz);
                respond(format, &report.kpi, || report.kpi_csv())
            }
            Figure::Reconciliation => {
                let rows = weekly_reconciliation(&judged.outcomes, tz);
                respond(format, &rows, || reconciliation_csv(&rows))
            }
            Figure::Continuity => {
                let rows = continuity(&judged.outcomes, tz);
                respond(format, &rows, || continuity_csv(&rows))
            }
        }
    })
    .await
}

/// Alerts now: the office sees all; a supervisor sees visits with a carer from their team.
async fn alerts(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Vec<Alert>>> {
    blocking(move || {
        let who = authenticate(&st, &headers)?;
        require(&who, OFFICE_OR_SUPERVISOR)?;
        let scope = crate::services::scope::carers(st.store.as_ref(), &who)?;
        Ok(Json(reports::alerts(&st, now(), scope.as_ref())?))
    })
    .await
}
