//! caresync-ffi: the carer's phone, for Kotlin and Swift, through uniffi.
//!
//! One object, [`CarerPhone`], forwards to the core's store and sync client; records and enums
//! mirror the core's types at the boundary (ids as strings, times as milliseconds since the
//! epoch), with the conversions in `From` impls (`convert.rs`). `sync_now` blocks: call it off the
//! main thread. Every method may be called from any thread, also while a sync runs.

mod convert;

use caresync_core::http_transport::HttpTransport;
use caresync_core::sync_client::{self, SyncClient};
use caresync_core::{ClockRequest, PhoneStore};
pub use convert::*;
use std::path::Path;
use std::sync::{Arc, Mutex};

uniffi::setup_scaffolding!();

/// What went wrong, in a form a phone developer can show or log. The text is in `detail`
/// (`message` would clash with the exception's own property in Kotlin).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum PhoneError {
    /// The phone has not been enrolled yet.
    #[error("{detail}")]
    NotEnrolled { detail: String },
    /// The server could not be reached; everything is kept and will sync later.
    #[error("{detail}")]
    Offline { detail: String },
    /// The enrolment code is wrong, used or expired, or this phone was revoked.
    #[error("{detail}")]
    Unauthorized { detail: String },
    /// The action does not fit the visit (e.g. clock-out before clock-in, an empty note).
    #[error("{detail}")]
    InvalidInput { detail: String },
    /// No such visit or task on this phone.
    #[error("{detail}")]
    NotFound { detail: String },
    /// The server refused the request or answered with something unexpected.
    #[error("{detail}")]
    Server { detail: String },
    /// The phone's database could not be used.
    #[error("{detail}")]
    Storage { detail: String },
}

/// A carer's phone: the local store plus sync with the server.
#[derive(uniffi::Object)]
pub struct CarerPhone {
    store: Arc<PhoneStore>,
    client: Mutex<Option<Arc<SyncClient>>>,
}

impl CarerPhone {
    fn client(&self) -> Result<Arc<SyncClient>, PhoneError> {
        let guard = self.client.lock().map_err(|_| PhoneError::Storage {
            detail: "lock poisoned".into(),
        })?;
        guard.clone().ok_or(PhoneError::NotEnrolled {
            detail: "this phone is not enrolled".into(),
        })
    }

    fn set_client(&self, server_url: &str) -> Result<(), PhoneError> {
        let client = SyncClient::new(self.store.clone(), Arc::new(HttpTransport::new(server_url)));
        *self.client.lock().map_err(|_| PhoneError::Storage {
            detail: "lock poisoned".into(),
        })? = Some(Arc::new(client));
        Ok(())
    }
}

#[uniffi::export]
impl CarerPhone {
    /// Open (or create) the phone's database at `path`. A file that is corrupt or not a database
    /// is moved aside, never deleted, and the error says where it went.
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<Self>, PhoneError> {
        let store = Arc::new(PhoneStore::open(Path::new(&path))?);
        let phone = Arc::new(Self {
            store,
            client: Mutex::new(None),
        });
        if let Some(identity) = phone.store.identity()? {
            phone.set_client(&identity.server_url)?;
        }
        Ok(phone)
    }

    pub fn is_enrolled(&self) -> Result<bool, PhoneError> {
        Ok(self.store.identity()?.is_some())
    }

    /// Enrol with the one-time code the office issued. Returns the carer's id.
    pub fn enrol(&self, server_url: String, code: String, device_name: String) -> Result<String, PhoneError> {
        let transport = HttpTransport::new(&server_url);
        let identity = sync_client::enrol(&self.store, &transport, &server_url, &code, &device_name)?;
        self.set_client(&server_url)?;
        Ok(identity.carer_id.to_string())
    }

    /// This phone's device id, once enrolled.
    pub fn device_id(&self) -> Result<Option<String>, PhoneError> {
        Ok(self.store.identity()?.map(|i| i.device_id.to_string()))
    }

    /// Sync now (blocking: run it on a background thread). The UI may keep writing meanwhile.
    pub fn sync_now(&self) -> Result<SyncReport, PhoneError> {
        Ok(self.client()?.sync_now()?.into())
    }

    /// The visits planned on a local day (`YYYY-MM-DD`, the agency's time zone).
    pub fn visits_on(&self, date: String) -> Result<Vec<VisitSummary>, PhoneError> {
        let day =
            chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| PhoneError::InvalidInput {
                detail: format!("{date:?} is not a YYYY-MM-DD date"),
            })?;
        Ok(self.store.visits_on(day)?.into_iter().map(Into::into).collect())
    }

    pub fn visit(&self, visit_id: String) -> Result<VisitDetail, PhoneError> {
        Ok(self.store.visit(parse_id(&visit_id)?)?.into())
    }

    pub fn clock_in(
        &self,
        visit_id: String,
        method: ClockMethod,
        location: Option<GeoPoint>,
        reason: Option<ReasonCode>,
        tag_id: Option<String>,
    ) -> Result<ClockEventRecord, PhoneError> {
        let req = clock_request(method, location, reason, tag_id);
        Ok(self.store.clock_in(parse_id(&visit_id)?, &req)?.into())
    }

    pub fn clock_out(
        &self,
        visit_id: String,
        method: ClockMethod,
        location: Option<GeoPoint>,
        reason: Option<ReasonCode>,
        tag_id: Option<String>,
    ) -> Result<ClockEventRecord, PhoneError> {
        let req = clock_request(method, location, reason, tag_id);
        Ok(self.store.clock_out(parse_id(&visit_id)?, &req)?.into())
    }

    pub fn add_note(
        &self,
        visit_id: String,
        category: NoteCategory,
        text: String,
    ) -> Result<NoteRecord, PhoneError> {
        Ok(self
            .store
            .add_note(parse_id(&visit_id)?, category.into(), &text)?
            .into())
    }

    pub fn record_task_outcome(
        &self,
        visit_id: String,
        task_id: String,
        result: TaskResult,
        note: Option<String>,
    ) -> Result<(), PhoneError> {
        self.store.record_task_outcome(
            parse_id(&visit_id)?,
            parse_id(&task_id)?,
            result.into(),
            note.as_deref(),
        )?;
        Ok(())
    }

    /// Local changes waiting to be sent (the server has not acknowledged them; refused ones
    /// are counted by `refused_changes` instead).
    pub fn pending_count(&self) -> Result<u32, PhoneError> {
        Ok(self.store.pending_count()?)
    }

    /// Visits whose changes the server refused, with its reasons, oldest first. Their changes
    /// stay on the phone and are not sent again until `retry_refused`.
    pub fn refused_changes(&self) -> Result<Vec<RefusedChange>, PhoneError> {
        Ok(self
            .store
            .refused_changes()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Send a refused visit's changes again on the next sync (once what the server objected to
    /// has been put right). Returns whether the visit was refused.
    pub fn retry_refused(&self, visit_id: String) -> Result<bool, PhoneError> {
        Ok(self.store.retry_refused(parse_id(&visit_id)?)?)
    }

    pub fn last_sync_at_ms(&self) -> Result<Option<i64>, PhoneError> {
        Ok(self.store.last_sync_at()?)
    }

    /// Server time minus device time, as last measured.
    pub fn clock_offset_ms(&self) -> Result<Option<i64>, PhoneError> {
        Ok(self.store.clock_offset()?.map(|o| o.offset_ms))
    }
}

fn clock_request(
    method: ClockMethod,
    location: Option<GeoPoint>,
    reason: Option<ReasonCode>,
    tag_id: Option<String>,
) -> ClockRequest {
    ClockRequest {
        method: method.into(),
        location: location.map(Into::into),
        reason: reason.map(Into::into),
        tag_id,
    }
}

fn parse_id<T: std::str::FromStr>(id: &str) -> Result<T, PhoneError> {
    id.parse().map_err(|_| PhoneError::InvalidInput {
        detail: format!("{id:?} is not a valid id"),
    })
}
