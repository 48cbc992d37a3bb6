//! The phone endpoints: enrolment and batched sync (CBOR).

use super::authed::{Authed, CarerDevice};
use super::{blocking, now, ApiError, ApiResult, AppState};
use crate::services::visits::{Ingested, Pushed};
use crate::services::{manifest, people};
use crate::store::Principal;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use caresync_core::domain::{DeviceId, Millis, VisitId};
use caresync_core::protocol::*;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

fn cbor(body: Vec<u8>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, CBOR)], body).into_response()
}

fn body_or_413(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "payload_too_large",
            format!("request body refused: {e}"),
        )
    })?;
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body over {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    Ok(body)
}

pub async fn enrol(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_or_413(body)?;
    let req: EnrolRequest =
        from_cbor(&body).map_err(|e| ApiError::bad_request("malformed_request", e.to_string()))?;
    crate::services::validation::validate_device_name(&req.device_name)?;
    blocking(move || {
        let at = now();
        let enrolled = match people::enrol_device(state.store.as_ref(), &req.code, &req.device_name, at)? {
            people::Enrolment::Enrolled(enrolled) => enrolled,
            people::Enrolment::Refused { owner } => {
                // Repeated tries at one person's code spend all of theirs (services::sign_in_limits).
                if let Some(person) = owner.filter(|p| state.sign_in_limits.person_failed(*p, at)) {
                    let spent = people::lock_enrolment_codes(state.store.as_ref(), person, at)?;
                    tracing::warn!(%person, spent, "too many failed enrolments with this person's codes; their codes are spent");
                }
                return Err(super::sign_in::wrong_code(owner));
            }
        };
        tracing::debug!(device = %enrolled.device_id, carer = %enrolled.carer_id, "device enrolled");
        Ok(cbor(to_cbor(&EnrolResponse {
            device_id: enrolled.device_id,
            carer_id: enrolled.carer_id,
            token: enrolled.token,
            server_time: now(),
        })))
    })
    .await
}

pub async fn sync(
    State(state): State<AppState>,
    // A refusal is counted as a rejected sync, and an over-long body is told so first.
    caller: Result<Authed<CarerDevice>, ApiError>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let started = Instant::now();
    let telemetry = state.telemetry.clone();
    let result = async {
        let body = body_or_413(body)?;
        let who = caller?.who;
        if v2::is_version2(&body) && !state.store.shared_by_instances() {
            // The embedded store: judged on this thread, each commit awaited (see `push_v2`).
            return push_v2(state, who, body).await;
        }
        blocking(move || {
            if v2::is_version2(&body) {
                answer_v2(&state, &who, &body)
            } else {
                answer(&state, &who, &body)
            }
        })
        .await
    }
    .await;
    match &result {
        Ok(_) => {
            telemetry.sync_requests.fetch_add(1, Relaxed);
            telemetry.observe_sync(started.elapsed().as_secs_f64());
        }
        Err(_) => {
            telemetry.requests_rejected.fetch_add(1, Relaxed);
        }
    }
    result
}

/// A sync request body, decoded and checked before any visit is touched: CBOR shape, protocol
/// version, batch size and no visit twice. Public so the fuzz target drives the same code.
pub fn decode_request(body: &[u8]) -> ApiResult<SyncRequest> {
    let req: SyncRequest =
        from_cbor(body).map_err(|e| ApiError::bad_request("malformed_request", e.to_string()))?;
    if req.protocol != PROTOCOL_VERSION {
        return Err(ApiError::bad_request(
            "unsupported_protocol",
            format!(
                "protocol {} is not supported; this server speaks {PROTOCOL_VERSION}",
                req.protocol
            ),
        ));
    }
    check_batch(req.visits.iter().map(|m| m.visit_id))?;
    Ok(req)
}

/// Both versions' batch rules: at most [`MAX_VISITS_PER_REQUEST`] visits, none twice.
fn check_batch(visits: impl ExactSizeIterator<Item = VisitId>) -> ApiResult<()> {
    if visits.len() > MAX_VISITS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_visits",
            format!(
                "{} visits in one request; at most {MAX_VISITS_PER_REQUEST}",
                visits.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for visit in visits {
        if !seen.insert(visit) {
            return Err(ApiError::bad_request(
                "duplicate_visit",
                format!("visit {visit} appears twice"),
            ));
        }
    }
    Ok(())
}

/// The manifest of the caller's carer at `at`, given the visits sent and the phone's digest of
/// the rest (hex; version 2's half-length digest agrees by prefix).
fn carers_manifest(
    state: &AppState,
    who: &Principal,
    at: Millis,
    sent: impl Iterator<Item = VisitId>,
    digest: Option<&str>,
) -> ApiResult<manifest::Manifest> {
    let sent: HashSet<VisitId> = sent.collect();
    Ok(manifest::for_carer(
        state.store.as_ref(),
        state.visits.manifests(),
        who.person.id,
        (at - state.scope_back_ms, at + state.scope_ahead_ms),
        &sent,
        digest,
    )?)
}

fn answer(state: &AppState, who: &Principal, body: &[u8]) -> ApiResult<Response> {
    let device = who
        .device_id
        .ok_or_else(|| ApiError::forbidden("sync is for enrolled devices"))?;
    let req = decode_request(body)?;
    let t = &state.telemetry;
    let at = now();
    let mut response = SyncResponse {
        protocol: PROTOCOL_VERSION,
        server_time: at,
        visits: vec![],
        errors: vec![],
        manifest: vec![],
        manifest_complete: false,
    };
    // Each accepted message's commit records the device's sync in its own transaction.
    let mut recorded_sync = false;
    for m in &req.visits {
        t.sync_visit_messages.fetch_add(1, Relaxed);
        match state.visits.ingest(who, m.visit_id, &m.message, at)? {
            Ingested::Accepted { reply, new_changes } => {
                recorded_sync = true;
                t.changes_accepted.fetch_add(new_changes as u64, Relaxed);
                if let Some(message) = reply {
                    response.visits.push(VisitMessage {
                        visit_id: m.visit_id,
                        message,
                    });
                }
            }
            Ingested::Refused(error) => {
                t.messages_refused.fetch_add(1, Relaxed);
                tracing::warn!(visit = %error.visit_id, device = %device, code = %error.code, "visit message refused");
                response.errors.push(error);
            }
        }
    }
    let sent = req.visits.iter().map(|m| m.visit_id);
    let manifest = carers_manifest(state, who, at, sent, req.manifest_digest.as_deref())?;
    response.manifest = manifest.entries;
    response.manifest_complete = manifest.complete;
    if !recorded_sync {
        manifest::device_synced(state.store.as_ref(), device, at)?;
    }
    response.server_time = now();
    Ok(cbor(to_cbor(&response)))
}

/// A version 2 request body ([`v2::Request`]), decoded and checked as [`decode_request`] checks
/// version 1's. Public so the fuzz target drives the same code.
pub fn decode_request_v2(body: &[u8]) -> ApiResult<v2::Request> {
    let req: v2::Request = v2::decode(body).map_err(|e| match e {
        v2::FrameError::TooLarge => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
        }
        e => ApiError::bad_request("malformed_request", e.to_string()),
    })?;
    check_batch(req.visits.iter().map(|p| p.visit_id))?;
    Ok(req)
}

/// Version 2: each visit's changes taken as version 1's messages are, answered with only what the
/// phone lacks, and a manifest only when the phone's digest disagrees. On a blocking thread: the
/// path of a store other instances share, whose commits are round trips to it.
fn answer_v2(state: &AppState, who: &Principal, body: &[u8]) -> ApiResult<Response> {
    let (req, mut answer) = V2Answer::begin(who, body)?;
    for push in req.visits.iter() {
        let pushed =
            state
                .visits
                .ingest_changes(who, push.visit_id, &push.changes, push.heads.clone(), answer.at)?;
        answer.record(state, push.visit_id, pushed);
    }
    if !answer.recorded_sync {
        manifest::device_synced(state.store.as_ref(), answer.device, answer.at)?;
    }
    answer.finish(state, who, &req)
}

/// [`answer_v2`] on the embedded store, on the async thread that read the request: each push is
/// judged here and its commit awaited while the store's writer makes it durable, so no thread
/// sleeps on the group's `fsync` and the request does not hop to the blocking pool and back
/// (two of the four thread switches a sync cost; docs/performance.md, ninth round). Only a
/// write outside a commit (a sync that brought nothing new) goes to a blocking thread.
async fn push_v2(state: AppState, who: Principal, body: Bytes) -> ApiResult<Response> {
    let (req, mut answer) = V2Answer::begin(&who, &body)?;
    for push in req.visits.iter() {
        let pushed = state
            .visits
            .clone()
            .push_changes(&who, push.visit_id, &push.changes, push.heads.clone(), answer.at)
            .await?;
        answer.record(&state, push.visit_id, pushed);
    }
    if !answer.recorded_sync {
        let (st, device, at) = (state.clone(), answer.device, answer.at);
        blocking(move || Ok(manifest::device_synced(st.store.as_ref(), device, at)?)).await?;
    }
    answer.finish(&state, &who, &req)
}

/// A version 2 response as its pushes are taken.
struct V2Answer {
    device: DeviceId,
    at: Millis,
    response: v2::Response,
    /// A push with new changes records the device's sync in its commit; otherwise it is
    /// recorded once, apart.
    recorded_sync: bool,
}

impl V2Answer {
    fn begin(who: &Principal, body: &[u8]) -> ApiResult<(v2::Request, Self)> {
        let device = who
            .device_id
            .ok_or_else(|| ApiError::forbidden("sync is for enrolled devices"))?;
        let req = decode_request_v2(body)?;
        Ok((
            req,
            Self {
                device,
                at: now(),
                response: v2::Response::default(),
                recorded_sync: false,
            },
        ))
    }

    fn record(&mut self, state: &AppState, visit: VisitId, pushed: Pushed) {
        let t = &state.telemetry;
        t.sync_visit_messages.fetch_add(1, Relaxed);
        match pushed {
            Pushed::Accepted { reply, new_changes } => {
                self.recorded_sync |= new_changes > 0;
                t.changes_accepted.fetch_add(new_changes as u64, Relaxed);
                if let Some((changes, heads)) = reply {
                    self.response.visits.push(v2::Pull {
                        visit_id: visit,
                        changes,
                        heads: Some(heads),
                    });
                }
            }
            Pushed::Refused(error) => {
                t.messages_refused.fetch_add(1, Relaxed);
                tracing::warn!(visit = %error.visit_id, device = %self.device, code = %error.code, "visit push refused");
                self.response.errors.push(error.into());
            }
        }
    }

    /// The manifest, when the phone's digest of the visits it did not push disagrees, and the
    /// body.
    fn finish(mut self, state: &AppState, who: &Principal, req: &v2::Request) -> ApiResult<Response> {
        let sent = req.visits.iter().map(|p| p.visit_id);
        let digest = req.manifest_digest.as_deref().map(hex::encode);
        let manifest = carers_manifest(state, who, self.at, sent, digest.as_deref())?;
        self.response.manifest_complete = manifest.complete;
        // Unless complete, the manifest holds only the pushed visits, whose heads the pulls carry.
        if manifest.complete {
            self.response.manifest = manifest
                .entries
                .into_iter()
                .map(|e| v2::Entry {
                    visit_id: e.visit_id,
                    heads: e.heads,
                })
                .collect();
        }
        self.response.server_time = now();
        Ok(cbor(v2::encode(&self.response)))
    }
}
