//! The server's logic, between the HTTP handlers and the store.

pub mod alerts;
pub mod escalations;
pub mod manifest;
pub mod names;
pub mod people;
pub mod reference;
pub mod reports;
pub mod rules;
pub mod schedule;
pub mod scope;
pub mod sign_in_limits;
pub mod supervision;
pub mod timeline;
pub mod validation;
pub mod visits;

use crate::store::StoreError;
use validation::Invalid;

/// Why a service said no, in terms each boundary renders its own way (the JSON API: 404, 400
/// with the value's code, 409 with the conflict's code; a dashboard page: a message).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No such thing, or not in the caller's scope (the same answer, so ids cannot probe).
    #[error("{0}")]
    NotFound(String),
    /// A value out of bounds or naming nothing.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The thing is in a state that forbids this (exists already, deactivated, same contract).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From the visit service (unknown visit, a document that would not take the change).
    #[error(transparent)]
    Visit(#[from] visits::VisitServiceError),
}

impl Refused {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Refused::Invalid(Invalid {
            code,
            message: message.into(),
        })
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Refused::Conflict {
            code,
            message: message.into(),
        }
    }
}
