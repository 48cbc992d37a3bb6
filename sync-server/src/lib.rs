//! caresync-server: the sync endpoint phones talk to, the office and supervisor API, and the
//! storage behind them (embedded SQLite by default).
//!
//! Layers: `http` (parse and authorise) → `services` (ingest, write rules, people) → `store`
//! (a trait with an embedded SQLite implementation).

pub mod auth;
pub mod demo;
pub mod http;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod web;

pub use http::{router, AppState};
