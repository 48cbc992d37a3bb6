//! Care-world types shared by the phone, the server and the bindings.
//!
//! Times are UTC milliseconds since the Unix epoch (`i64`) everywhere inside documents and stores;
//! local days are computed at the edges with the agency's time zone.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

pub const MINUTE_MS: Millis = 60_000;
pub const HOUR_MS: Millis = 60 * MINUTE_MS;
pub const DAY_MS: Millis = 24 * HOUR_MS;

/// The longest note a carer or supervisor may write, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A scheduled visit; also the id of its Automerge document.
    VisitId
);
id_type!(
    /// A person who works for the agency (carer, supervisor or office).
    PersonId
);
id_type!(ClientId);
id_type!(ContractId);
id_type!(
    /// An enrolled phone.
    DeviceId
);
id_type!(TaskId);
id_type!(EventId);
id_type!(NoteId);
id_type!(AmendmentId);
id_type!(OutcomeId);
id_type!(TeamId);
id_type!(
    /// A persisted alert (server-side oversight record).
    AlertId
);

macro_rules! wire_enum {
    // `tt`, not `literal`: a derive then reads `rename = $wire` as the string it is.
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(UnknownValue { kind: stringify!($name), value: other.to_string() }),
                }
            }
        }
    };
}

/// A string that names no variant of a fixed list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

wire_enum!(
    /// Who a person is to the agency; decides what they may read and write.
    Role { Carer => "carer", Supervisor => "supervisor", Office => "office" }
);

wire_enum!(
    /// How a clock event was captured. Everything but `Manual` counts as electronic.
    ClockMethod { App => "app", Gps => "gps", Qr => "qr", Nfc => "nfc", Manual => "manual" }
);

impl ClockMethod {
    pub fn is_electronic(self) -> bool {
        self != ClockMethod::Manual
    }
}

wire_enum!(
    ClockKind { ClockIn => "clock_in", ClockOut => "clock_out" }
);

wire_enum!(
    /// The fixed list of reasons for a manual clock or an amendment of actual times.
    ReasonCode {
        PhoneUnavailable => "phone_unavailable",
        AppFault => "app_fault",
        TagMissing => "tag_missing",
        NoSignalAtDoor => "no_signal_at_door",
        ForgotToClock => "forgot_to_clock",
        WrongVisitClocked => "wrong_visit_clocked",
        ClientRequest => "client_request",
        AuthorisedByOffice => "authorised_by_office",
        Other => "other",
    }
);

wire_enum!(
    NoteCategory {
        General => "general",
        Wellbeing => "wellbeing",
        Medication => "medication",
        Concern => "concern",
        Safeguarding => "safeguarding",
        Nutrition => "nutrition",
        Handover => "handover",
    }
);

wire_enum!(
    TaskResult { Done => "done", NotDone => "not_done", Refused => "refused" }
);

wire_enum!(
    VisitStatus { Scheduled => "scheduled", Cancelled => "cancelled" }
);

wire_enum!(
    /// Which actual time an amendment corrects.
    AmendedTime { ClockIn => "clock_in", ClockOut => "clock_out" }
);

wire_enum!(
    /// The carer's view of one visit on their phone.
    CarerVisitState {
        Upcoming => "upcoming",
        InProgress => "in_progress",
        Done => "done",
        Cancelled => "cancelled",
    }
);

wire_enum!(
    CommissioningModel { Spot => "spot", Framework => "framework" }
);

/// Where a phone was when it clocked, as the phone reported it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    /// Radius of the phone's 68 % confidence circle, in metres.
    pub accuracy_m: f64,
}

impl Location {
    /// Great-circle distance in metres (haversine; plenty for "within 200 m").
    pub fn distance_m(&self, other: &Location) -> f64 {
        const EARTH_RADIUS_M: f64 = 6_371_008.8;
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().asin()
    }

    pub fn is_valid(&self) -> bool {
        (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
            && self.accuracy_m.is_finite()
            && self.accuracy_m >= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for m in ClockMethod::ALL {
            assert_eq!(m.as_str().parse::<ClockMethod>().ok(), Some(*m));
        }
        assert!("carrier pigeon".parse::<ClockMethod>().is_err());
        assert_eq!(
            serde_json::to_string(&ReasonCode::ForgotToClock).ok().as_deref(),
            Some("\"forgot_to_clock\"")
        );
    }

    #[test]
    fn distance_is_roughly_right() {
        let a = Location {
            lat: 51.5007,
            lon: -0.1246,
            accuracy_m: 5.0,
        };
        let b = Location {
            lat: 51.5033,
            lon: -0.1196,
            accuracy_m: 5.0,
        };
        let d = a.distance_m(&b);
        assert!((400.0..500.0).contains(&d), "{d}");
        assert!(!ClockMethod::Manual.is_electronic());
        assert!(ClockMethod::Nfc.is_electronic());
    }
}
