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

/// One flag the server stores with a clock event it received: a time-trust flag, or that the
/// carer had been taken off the visit before the event reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventFlag {
    UnverifiedTime,
    ClockSkew,
    FutureTime,
    ReassignedBeforeSync,
}

impl EventFlag {
    /// Every flag, in the order a set of them is written.
    pub const ALL: [EventFlag; 4] = [
        EventFlag::UnverifiedTime,
        EventFlag::ClockSkew,
        EventFlag::FutureTime,
        EventFlag::ReassignedBeforeSync,
    ];

    /// The flag's name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EventFlag::UnverifiedTime => "unverified_time",
            EventFlag::ClockSkew => "clock_skew",
            EventFlag::FutureTime => "future_time",
            EventFlag::ReassignedBeforeSync => "reassigned_before_sync",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::str::FromStr for EventFlag {
    type Err = UnknownEventFlag;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventFlag::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownEventFlag(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event flag {0:?}")]
pub struct UnknownEventFlag(pub String);

/// The flags stored with a clock event row. Written (to a text column, and in JSON) as the
/// flags' names joined by commas in [`EventFlag::ALL`] order, `""` for none
/// (`clock_skew,reassigned_before_sync`); this type is the one place that text is parsed and
/// rendered.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EventFlags(u8);

impl EventFlags {
    pub fn contains(self, flag: EventFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    pub fn insert(&mut self, flag: EventFlag) {
        self.0 |= flag.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags set, in [`EventFlag::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = EventFlag> {
        EventFlag::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl From<EventFlag> for EventFlags {
    fn from(flag: EventFlag) -> Self {
        EventFlags(flag.bit())
    }
}

impl FromIterator<EventFlag> for EventFlags {
    fn from_iter<I: IntoIterator<Item = EventFlag>>(flags: I) -> Self {
        let mut set = EventFlags::default();
        flags.into_iter().for_each(|f| set.insert(f));
        set
    }
}

impl From<TimeTrustFlags> for EventFlags {
    fn from(t: TimeTrustFlags) -> Self {
        [
            (t.unverified_time, EventFlag::UnverifiedTime),
            (t.clock_skew, EventFlag::ClockSkew),
            (t.future_time, EventFlag::FutureTime),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect()
    }
}

impl std::fmt::Display for EventFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(flag.as_str())?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for EventFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventFlags({self})")
    }
}

impl std::str::FromStr for EventFlags {
    type Err = UnknownEventFlag;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',').filter(|f| !f.is_empty()).map(str::parse).collect()
    }
}

impl Serialize for EventFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventFlags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
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

    #[test]
    fn event_flags_are_written_in_one_order_and_read_back() {
        let mut flags = EventFlags::from(EventFlag::ReassignedBeforeSync);
        flags.insert(EventFlag::ClockSkew);
        assert_eq!(flags.to_string(), "clock_skew,reassigned_before_sync");
        assert_eq!("clock_skew,reassigned_before_sync".parse(), Ok(flags));
        assert_eq!("".parse(), Ok(EventFlags::default()));
        assert_eq!(EventFlags::default().to_string(), "");
        assert!("clock_skew,late".parse::<EventFlags>().is_err());
        let trust = TimeTrustFlags {
            unverified_time: true,
            clock_skew: false,
            future_time: true,
        };
        assert_eq!(EventFlags::from(trust).to_string(), "unverified_time,future_time");
        assert_eq!(
            serde_json::to_value(flags).ok(),
            Some(serde_json::json!("clock_skew,reassigned_before_sync"))
        );
    }
}
