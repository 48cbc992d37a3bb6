//! Limits on failed sign-ins and enrolments, so codes and tokens cannot be guessed at speed.
//!
//! Per source address: after `max_per_source` failures (unknown tokens, wrong or spent enrolment
//! codes) within `window_ms`, that source's sign-ins and enrolments are refused (429, with
//! Retry-After) until the window ends, even with a right code or token. Per person: when
//! `max_per_person` failed enrolments name the same person's code (a used or expired code of
//! theirs) within the window, their outstanding codes are spent and the office issues a new one.
//!
//! The counts live in this process's memory: with several server instances behind a load
//! balancer each instance counts on its own (an attacker gets that many tries per instance), and a
//! restart forgets them. Tokens revoked or expired, and deactivated people, are logged but not
//! counted: a phone left running after its revocation must not lock out its neighbours behind the
//! same address.

use caresync_core::domain::{Millis, PersonId, MINUTE_MS};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Thresholds; the defaults suit people typing codes, not scripts.
#[derive(Clone, Copy, Debug)]
pub struct LimitPolicy {
    pub max_per_source: u32,
    pub max_per_person: u32,
    pub window_ms: Millis,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self {
            max_per_source: 10,
            max_per_person: 5,
            window_ms: 15 * MINUTE_MS,
        }
    }
}

/// Most sources remembered at once; beyond it, new sources share one window (so a flood of
/// addresses costs bounded memory and is still limited, as one).
const MAX_SOURCES: usize = 100_000;

#[derive(Clone, Copy)]
struct Window {
    started: Millis,
    failures: u32,
}

/// A source: an IPv4 address, or an IPv6 /64 (one subscriber's network), or the shared
/// overflow slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum SourceKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
    Overflow,
}

fn key_of(ip: IpAddr) -> SourceKey {
    match ip {
        IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SourceKey::V4(v4.octets()),
            None => {
                let o = v6.octets();
                SourceKey::V6Prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        },
    }
}

#[derive(Default)]
pub struct SignInLimits {
    policy: LimitPolicy,
    sources: Mutex<HashMap<SourceKey, Window>>,
    people: Mutex<HashMap<PersonId, Window>>,
}

impl SignInLimits {
    pub fn new(policy: LimitPolicy) -> Self {
        Self {
            policy,
            ..Default::default()
        }
    }

    pub fn policy(&self) -> LimitPolicy {
        self.policy
    }

    /// `Err(seconds to wait)` if this source has used up its failures.
    pub fn check_source(&self, source: IpAddr, now: Millis) -> Result<(), u64> {
        let key = key_of(source);
        // A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let window = sources.get(&key).or_else(|| {
            sources
                .get(&SourceKey::Overflow)
                .filter(|_| sources.len() >= MAX_SOURCES)
        });
        match window {
            Some(w) if self.live(w, now) && w.failures >= self.policy.max_per_source => {
                Err(self.retry_after_secs(w, now))
            }
            _ => Ok(()),
        }
    }

    /// Count a failure from a source; returns the failures counted in its window so far.
    pub fn source_failed(&self, source: IpAddr, now: Millis) -> u32 {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = key_of(source);
        if !sources.contains_key(&key) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, w| self.live(w, now));
            if sources.len() >= MAX_SOURCES {
                key = SourceKey::Overflow;
            }
        }
        self.count(
            sources.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            }),
            now,
        )
    }

    /// Count a failed enrolment naming a person's code; true when they reach the limit (their
    /// codes are then to be spent), which also starts their count again.
    pub fn person_failed(&self, person: PersonId, now: Millis) -> bool {
        let mut people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        if people.len() >= MAX_SOURCES {
            people.retain(|_, w| self.live(w, now));
        }
        let w = people.entry(person).or_insert(Window {
            started: now,
            failures: 0,
        });
        if self.count(w, now) >= self.policy.max_per_person {
            people.remove(&person);
            return true;
        }
        false
    }

    fn live(&self, w: &Window, now: Millis) -> bool {
        now < w.started.saturating_add(self.policy.window_ms)
    }

    fn count(&self, w: &mut Window, now: Millis) -> u32 {
        if !self.live(w, now) {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        w.failures
    }

    fn retry_after_secs(&self, w: &Window, now: Millis) -> u64 {
        let end = w.started.saturating_add(self.policy.window_ms);
        u64::try_from((end - now + 999) / 1000).unwrap_or(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SignInLimits {
        SignInLimits::new(LimitPolicy {
            max_per_source: 3,
            max_per_person: 2,
            window_ms: 60_000,
        })
    }

    #[test]
    fn a_source_is_refused_after_its_failures_until_the_window_ends() {
        let l = limits();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        for i in 1..=3 {
            assert_eq!(l.check_source(ip, 1_000), Ok(()));
            assert_eq!(l.source_failed(ip, 1_000 + i), i as u32);
        }
        assert_eq!(l.check_source(ip, 2_000), Err(60), "59.001 s, rounded up");
        assert_eq!(
            l.check_source(other, 2_000),
            Ok(()),
            "other sources are not held up"
        );
        assert_eq!(l.check_source(ip, 62_000), Ok(()), "the window ended");
        assert_eq!(l.source_failed(ip, 62_000), 1, "and counting starts again");
    }

    #[test]
    fn an_ipv6_network_is_one_source() {
        let l = limits();
        for i in 0..3 {
            let ip: IpAddr = format!("2001:db8:1:2::{i}").parse().expect("ip");
            l.source_failed(ip, 0);
        }
        let sibling: IpAddr = "2001:db8:1:2:ffff::1".parse().expect("ip");
        assert!(l.check_source(sibling, 1).is_err());
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(l.check_source(elsewhere, 1).is_ok());
    }

    #[test]
    fn a_person_reaches_the_limit_once_per_window() {
        let l = limits();
        let p = PersonId::new();
        assert!(!l.person_failed(p, 0));
        assert!(l.person_failed(p, 1));
        assert!(!l.person_failed(p, 2), "counting starts again after the lock");
    }
}
