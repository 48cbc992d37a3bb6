//! Figures for the office (JSON and CSV, with names beside ids) and live alerts for supervisors.

use super::authed::{Authed, Office, OfficeOrSupervisor, Operations};
use super::{blocking, now, ApiError, ApiResult, AppState};
use crate::services::names::{named_columns, Names};
use crate::services::reports::{self, Alert, FiguresError, Span};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use caresync_core::metrics::{json_rows_csv, CsvRow, GroupBy, PeriodKind, ReportRow, VisitFigures};
use caresync_core::VisitId;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .op("get", "/api/v1/reports/punctuality", |s, h, q| {
            figures(s, h, q, Figure::Punctuality, Format::Json)
        })
        .op("get", "/api/v1/reports/punctuality.csv", |s, h, q| {
            figures(s, h, q, Figure::Punctuality, Format::Csv)
        })
        .op("get", "/api/v1/reports/kpi", |s, h, q| {
            figures(s, h, q, Figure::Kpi, Format::Json)
        })
        .op("get", "/api/v1/reports/kpi.csv", |s, h, q| {
            figures(s, h, q, Figure::Kpi, Format::Csv)
        })
        .op("get", "/api/v1/reports/reconciliation", |s, h, q| {
            figures(s, h, q, Figure::Reconciliation, Format::Json)
        })
        .op("get", "/api/v1/reports/reconciliation.csv", |s, h, q| {
            figures(s, h, q, Figure::Reconciliation, Format::Csv)
        })
        .op("get", "/api/v1/reports/continuity", |s, h, q| {
            figures(s, h, q, Figure::Continuity, Format::Json)
        })
        .op("get", "/api/v1/reports/continuity.csv", |s, h, q| {
            figures(s, h, q, Figure::Continuity, Format::Csv)
        })
        .op("get", "/api/v1/alerts", alerts)
        .op("get", "/api/v1/visits/{id}/figures", visit_figures)
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

fn span(st: &AppState, params: Params) -> ApiResult<(Span, ReportParams)> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (from, to) =
        reports::day_range(st.tz, p.from, p.to).map_err(|e| ApiError::bad_request("invalid_query", e))?;
    let as_of = p.as_of.map_or_else(now, |t| t.timestamp_millis());
    Ok((
        Span {
            from,
            to,
            as_of,
            tz: st.tz,
        },
        p,
    ))
}

/// Report rows as the API answers them: each row's JSON with names beside its ids
/// (`services::names`), as a JSON array or as CSV with the row type's columns plus the name
/// columns. JSON and CSV are written from the same named rows, so they cannot disagree.
fn named_rows<T: CsvRow>(
    names: &Names,
    rows: &[T],
    group_by: Option<GroupBy>,
) -> Result<Vec<Value>, serde_json::Error> {
    let mut values = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    names.name_rows(&mut values, group_by);
    Ok(values)
}

fn csv_response<T: CsvRow>(rows: &[Value]) -> Response {
    (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        json_rows_csv(&named_columns(T::COLUMNS), rows),
    )
        .into_response()
}

fn respond_rows<T: CsvRow>(
    format: Format,
    names: &Names,
    rows: &[T],
    group_by: Option<GroupBy>,
) -> ApiResult<Response> {
    let rows = named_rows(names, rows, group_by).map_err(ApiError::internal)?;
    Ok(match format {
        Format::Json => Json(rows).into_response(),
        Format::Csv => csv_response::<T>(&rows),
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
    _: Authed<Office>,
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
        let (span, p) = span(&st, params)?;
        let store = st.store.as_ref();
        let names = Names::from_store(store)?;
        match figure {
            Figure::Punctuality => {
                let report = reports::punctuality(store, span, p.group_by, p.period)?;
                let rows = named_rows(&names, &report.rows, Some(p.group_by)).map_err(ApiError::internal)?;
                Ok(match format {
                    Format::Json => {
                        let kpi = named_rows(&names, &report.kpi, None).map_err(ApiError::internal)?;
                        let mut json = serde_json::to_value(&report).map_err(ApiError::internal)?;
                        json["rows"] = Value::Array(rows);
                        json["kpi"] = Value::Array(kpi);
                        Json(json).into_response()
                    }
                    Format::Csv => csv_response::<ReportRow>(&rows),
                })
            }
            Figure::Kpi => {
                let report = reports::punctuality(store, span, GroupBy::Contract, PeriodKind::Month)?;
                respond_rows(format, &names, &report.kpi, None)
            }
            Figure::Reconciliation => {
                let rows = reports::reconciliation(store, span)?;
                respond_rows(format, &names, &rows, None)
            }
            Figure::Continuity => {
                let rows = reports::continuity(store, span)?;
                respond_rows(format, &names, &rows, None)
            }
        }
    })
    .await
}

/// Alerts now: the office sees all; a supervisor sees visits with a carer from their team.
async fn alerts(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
) -> ApiResult<Json<Vec<Alert>>> {
    blocking(move || {
        let scope = crate::services::scope::carers(st.store.as_ref(), &who)?;
        Ok(Json(reports::alerts(st.store.as_ref(), now(), scope.as_ref())?))
    })
    .await
}

#[derive(Deserialize)]
pub struct FiguresParams {
    /// Judge as the server knew things at this instant (default: now; never later than now).
    as_of: Option<DateTime<Utc>>,
}

/// One visit's figures: state, minutes late or early, actual and planned minutes, short,
/// overrun, flags, billable minutes. Office, or a supervisor for a visit in their scope.
async fn visit_figures(
    State(st): State<AppState>,
    Authed { who, .. }: Authed<OfficeOrSupervisor>,
    Path(id): Path<String>,
    params: Result<Query<FiguresParams>, QueryRejection>,
) -> ApiResult<Json<VisitFigures>> {
    blocking(move || {
        let visit_id: VisitId = super::office::parse_id(&id)?;
        // Scope first: out of scope answers 404 like an unknown visit.
        super::supervision::visit_in_scope(&st, &who, visit_id)?;
        let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        let at = now();
        let as_of = p.as_of.map_or(at, |t| t.timestamp_millis());
        match reports::visit_figures(st.store.as_ref(), visit_id, as_of, at) {
            Ok(f) => Ok(Json(f)),
            Err(e @ FiguresError::FutureAsOf { .. }) => {
                Err(ApiError::bad_request("as_of_in_future", e.to_string()))
            }
            Err(e @ FiguresError::Unknown(_)) => Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                e.to_string(),
            )),
            Err(FiguresError::Store(e)) => Err(e.into()),
        }
    })
    .await
}
