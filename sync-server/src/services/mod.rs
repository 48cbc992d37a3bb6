//! The server's logic, between the HTTP handlers and the store.

pub mod alerts;
pub mod escalations;
pub mod names;
pub mod people;
pub mod reports;
pub mod rules;
pub mod scope;
pub mod sign_in_limits;
pub mod validation;
pub mod visits;
