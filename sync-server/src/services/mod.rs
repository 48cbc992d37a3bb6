//! The server's logic, between the HTTP handlers and the store.

pub mod people;
pub mod reports;
pub mod rules;
pub mod validation;
pub mod visits;
