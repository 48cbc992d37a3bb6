//! Flags on one clock event's time (brief, section 4). Metrics still use the trusted time; the
//! flags travel with the figures so a reader sees which times rest on a doubtful clock.

use super::rules::TimeTrustRules;
use crate::domain::{ClockKind, EventId, Millis, PersonId};
use crate::visit_document::ClockEvent;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeTrustFlags {
    /// No offset was known, or it was measured more than `offset_max_age_ms` before the event's
    /// device time, or (device clock moved back since) after it.
    pub unverified_time: bool,
    /// |offset| above `max_skew_ms`: the phone's clock was off; the trusted time corrects it.
    pub clock_skew: bool,
    /// Trusted time later than the server received the event by more than `future_tolerance_ms`.
    /// Never set when the receipt time is unknown.
    pub future_time: bool,
}

impl TimeTrustFlags {
    pub fn any(&self) -> bool {
        self.unverified_time || self.clock_skew || self.future_time
    }
}

/// One event's trusted time and flags, as shown next to a visit's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTrust {
    pub event_id: EventId,
    pub carer_id: PersonId,
    pub kind: ClockKind,
    pub device_time: Millis,
    pub trusted_time: Millis,
    pub received_at: Option<Millis>,
    pub flags: TimeTrustFlags,
}

/// Flags for one event, given when the server received it (if known).
pub fn time_trust_flags(
    event: &ClockEvent,
    received_at: Option<Millis>,
    rules: &TimeTrustRules,
) -> TimeTrustFlags {
    let unverified_time = match (event.clock_offset_ms, event.offset_measured_at) {
        (Some(_), Some(measured_at)) => {
            let age = event.device_time.saturating_sub(measured_at);
            !(0..=rules.offset_max_age_ms).contains(&age)
        }
        _ => true,
    };
    let clock_skew = event
        .clock_offset_ms
        .is_some_and(|offset| offset.unsigned_abs() > rules.max_skew_ms.unsigned_abs());
    let future_time = received_at
        .is_some_and(|received| event.trusted_time().saturating_sub(received) > rules.future_tolerance_ms);
    TimeTrustFlags {
        unverified_time,
        clock_skew,
        future_time,
    }
}

pub fn event_trust(event: &ClockEvent, received_at: Option<Millis>, rules: &TimeTrustRules) -> EventTrust {
    EventTrust {
        event_id: event.id,
        carer_id: event.carer_id,
        kind: event.kind,
        device_time: event.device_time,
        trusted_time: event.trusted_time(),
        received_at,
        flags: time_trust_flags(event, received_at, rules),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HOUR_MS, MINUTE_MS};
    use crate::metrics::test_support::*;

    const T: Millis = 1_790_000_000_000;

    #[test]
    fn a_fresh_small_offset_raises_nothing() {
        let e = clock_in(carer_a(), T); // offset +1.5 s measured 1 s before
        let f = time_trust_flags(&e, Some(T + 10 * MINUTE_MS), &TimeTrustRules::default());
        assert_eq!(f, TimeTrustFlags::default());
        assert!(!f.any());
    }

    #[test]
    fn skewed_clock_is_flagged_and_corrected() {
        // Phone 5 minutes fast: device says 10:05, server-minus-device offset is −5 min.
        let mut e = clock_in(carer_a(), T);
        e.device_time = T + 5 * MINUTE_MS;
        e.clock_offset_ms = Some(-5 * MINUTE_MS);
        e.offset_measured_at = Some(T);
        let t = event_trust(&e, Some(T + MINUTE_MS), &TimeTrustRules::default());
        assert!(t.flags.clock_skew);
        assert!(!t.flags.unverified_time);
        assert!(!t.flags.future_time);
        assert_eq!(t.trusted_time, T); // 10:05 − 5 min
    }

    #[test]
    fn skew_boundary_is_strict() {
        let rules = TimeTrustRules::default();
        let mut e = clock_in(carer_a(), T);
        e.clock_offset_ms = Some(2 * MINUTE_MS);
        assert!(!time_trust_flags(&e, None, &rules).clock_skew);
        e.clock_offset_ms = Some(-2 * MINUTE_MS - 1);
        assert!(time_trust_flags(&e, None, &rules).clock_skew);
    }

    #[test]
    fn unverified_when_offset_missing_or_stale() {
        let rules = TimeTrustRules::default();
        let mut e = clock_in(carer_a(), T);
        e.device_time = T;
        e.clock_offset_ms = None;
        e.offset_measured_at = None;
        assert!(time_trust_flags(&e, None, &rules).unverified_time);
        assert!(!time_trust_flags(&e, None, &rules).clock_skew);

        e.clock_offset_ms = Some(1000);
        e.offset_measured_at = Some(T - 24 * HOUR_MS); // exactly 24 h old: still verified
        assert!(!time_trust_flags(&e, None, &rules).unverified_time);
        e.offset_measured_at = Some(T - 24 * HOUR_MS - 1);
        assert!(time_trust_flags(&e, None, &rules).unverified_time);
        // Measured "after" the event: the device clock went back; the offset can't vouch for it.
        e.offset_measured_at = Some(T + 1);
        assert!(time_trust_flags(&e, None, &rules).unverified_time);
    }

    #[test]
    fn future_time_against_receipt() {
        let rules = TimeTrustRules::default();
        // Device time T − 1.5 s, offset +1.5 s: trusted time is T.
        let e = clock_in(carer_a(), T);
        assert_eq!(e.trusted_time(), T);
        // Received 2 min before the trusted time: not beyond 2 min.
        assert!(!time_trust_flags(&e, Some(T - 2 * MINUTE_MS), &rules).future_time);
        // 1 ms earlier receipt: flagged.
        assert!(time_trust_flags(&e, Some(T - 2 * MINUTE_MS - 1), &rules).future_time);
        // Unknown receipt: not flagged.
        assert!(!time_trust_flags(&e, None, &rules).future_time);
    }
}
