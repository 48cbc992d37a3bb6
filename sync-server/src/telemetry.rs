//! Counters for `/metrics` (Prometheus text format). Never labelled with anything from a note.

use crate::store::sqlite::group_commit::Counts;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the sync latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
pub struct Telemetry {
    pub sync_requests: AtomicU64,
    pub sync_visit_messages: AtomicU64,
    pub changes_accepted: AtomicU64,
    pub messages_refused: AtomicU64,
    pub requests_rejected: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Telemetry {
    pub fn observe_sync(&self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    pub fn render(&self, cached_documents: usize, groups: Option<Counts>) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            &mut out,
            "caresync_sync_requests_total",
            "Sync requests answered.",
            &self.sync_requests,
        );
        counter(
            &mut out,
            "caresync_sync_visit_messages_total",
            "Visit messages received in sync requests.",
            &self.sync_visit_messages,
        );
        counter(
            &mut out,
            "caresync_changes_accepted_total",
            "Automerge changes accepted from phones.",
            &self.changes_accepted,
        );
        counter(
            &mut out,
            "caresync_visit_messages_refused_total",
            "Visit messages refused by the write rules or as malformed.",
            &self.messages_refused,
        );
        counter(
            &mut out,
            "caresync_requests_rejected_total",
            "Requests rejected whole (auth, size, protocol).",
            &self.requests_rejected,
        );
        let _ = writeln!(out, "# HELP caresync_cached_documents Visit documents held in memory.\n# TYPE caresync_cached_documents gauge\ncaresync_cached_documents {cached_documents}");
        if let Some(c) = groups {
            // Writes per transaction is the second over the first: how many syncs share an fsync.
            for (name, help, v) in [
                (
                    "caresync_store_commit_groups_total",
                    "Transactions the store's writer committed (each one fsync).",
                    c.groups,
                ),
                (
                    "caresync_store_commit_writes_total",
                    "Sync-path writes committed in those transactions.",
                    c.writes,
                ),
                (
                    "caresync_store_commit_groups_retried_total",
                    "Transactions rolled back because one write failed, whose writes then ran alone.",
                    c.retried,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
            }
        }
        let name = "caresync_sync_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a sync request.\n# TYPE {name} histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.latency_sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}
