//! Time on the phone: the device's own clock (possibly wrong) and the offset to the server's.

use crate::domain::Millis;

/// The phone's wall clock. A trait so tests can set it wrong on purpose.
pub trait DeviceClock: Send + Sync {
    fn now(&self) -> Millis;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl DeviceClock for SystemClock {
    fn now(&self) -> Millis {
        system_now()
    }
}

/// Milliseconds since the epoch; a clock before 1970 reads as negative rather than panicking.
pub fn system_now() -> Millis {
    let now = std::time::SystemTime::now();
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as Millis,
        Err(e) => -(e.duration().as_millis() as Millis),
    }
}

/// A device clock that is off from the system clock by a fixed amount (tests and the demo).
#[derive(Clone, Copy, Debug)]
pub struct SkewedClock {
    pub skew_ms: i64,
}

impl DeviceClock for SkewedClock {
    fn now(&self) -> Millis {
        system_now() + self.skew_ms
    }
}

/// A clock that reads whatever the test last set.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(at: Millis) -> Self {
        Self(std::sync::atomic::AtomicI64::new(at))
    }
    pub fn set(&self, at: Millis) {
        self.0.store(at, std::sync::atomic::Ordering::SeqCst)
    }
    pub fn advance(&self, by: Millis) {
        self.0.fetch_add(by, std::sync::atomic::Ordering::SeqCst);
    }
}

impl DeviceClock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<T: DeviceClock + ?Sized> DeviceClock for std::sync::Arc<T> {
    fn now(&self) -> Millis {
        (**self).now()
    }
}

/// Server time minus device time, measured during a sync exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    pub offset_ms: i64,
    /// Device time when it was measured.
    pub measured_at: Millis,
}

impl ClockOffset {
    /// From one request/response: the server's time is taken to be mid-way through the round trip.
    pub fn measure(sent_at: Millis, received_at: Millis, server_time: Millis) -> Self {
        // Saturating: the server's time comes off the wire and may be anything.
        let midpoint = sent_at.saturating_add(received_at.saturating_sub(sent_at) / 2);
        Self {
            offset_ms: server_time.saturating_sub(midpoint),
            measured_at: received_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_uses_half_the_round_trip() {
        // Device clock 90 s slow; a 200 ms round trip; the server stamps mid-way.
        let sent = 1_000_000;
        let server = sent + 100 + 90_000;
        let off = ClockOffset::measure(sent, sent + 200, server);
        assert_eq!(off.offset_ms, 90_000);
        assert_eq!(off.measured_at, sent + 200);
    }

    /// A server (or something posing as one) answering with a wild time must not overflow the
    /// phone's arithmetic (a panic in debug builds, a wrapped offset in release).
    #[test]
    fn wild_server_times_saturate() {
        let sent = 1_795_000_000_000;
        assert_eq!(
            ClockOffset::measure(sent, sent + 250, i64::MIN).offset_ms,
            i64::MIN
        );
        assert_eq!(ClockOffset::measure(-sent, -sent, i64::MAX).offset_ms, i64::MAX);
        assert_eq!(ClockOffset::measure(i64::MIN, i64::MAX, 0).measured_at, i64::MAX);
    }
}
