//! Builders for the metric tests: fixed ids, visits at given times, events with a small offset.

use crate::domain::*;
use crate::visit_document::{Amendment, ClockEvent, Schedule, Visit};
use chrono::{NaiveDate, TimeZone, Utc};
use uuid::Uuid;

pub fn carer_a() -> PersonId {
    PersonId(Uuid::from_u128(0xA))
}
pub fn carer_b() -> PersonId {
    PersonId(Uuid::from_u128(0xB))
}
pub fn carer_c() -> PersonId {
    PersonId(Uuid::from_u128(0xC))
}
pub fn client_1() -> ClientId {
    ClientId(Uuid::from_u128(0x1001))
}
pub fn client_2() -> ClientId {
    ClientId(Uuid::from_u128(0x1002))
}
pub fn contract_x() -> ContractId {
    ContractId(Uuid::from_u128(0x2001))
}
pub fn contract_y() -> ContractId {
    ContractId(Uuid::from_u128(0x2002))
}
pub fn office() -> PersonId {
    PersonId(Uuid::from_u128(0xFF))
}

/// UTC milliseconds of a UTC wall time.
pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|date| date.and_hms_opt(h, mi, 0))
        .map(|naive| Utc.from_utc_datetime(&naive).timestamp_millis())
        .expect("valid test date")
}

/// A visit for `carers` from `start` lasting `minutes`, on client 1 and contract X.
pub fn visit(carers: Vec<PersonId>, start: Millis, minutes: i64) -> Visit {
    Visit {
        schema_version: 1,
        visit_id: VisitId::new(),
        schedule: Schedule {
            client_id: client_1(),
            contract_id: contract_x(),
            carers,
            planned_start: start,
            planned_end: start + minutes * MINUTE_MS,
            tasks: vec![],
            status: VisitStatus::Scheduled,
            cancel_reason: None,
            chargeable: None,
        },
        events: vec![],
        notes: vec![],
        task_outcomes: vec![],
        amendments: vec![],
    }
}

/// A clock event whose trusted time is exactly `trusted`: the device was 1.5 s slow, measured 1 s
/// before; taken by the app at the client's door.
pub fn event(carer: PersonId, kind: ClockKind, trusted: Millis) -> ClockEvent {
    ClockEvent {
        id: EventId::new(),
        kind,
        carer_id: carer,
        device_id: DeviceId(Uuid::from_u128(0xD0)),
        device_time: trusted - 1500,
        clock_offset_ms: Some(1500),
        offset_measured_at: Some(trusted - 2500),
        method: ClockMethod::App,
        reason: None,
        location: Some(client_home()),
        tag_id: None,
    }
}

pub fn clock_in(carer: PersonId, trusted: Millis) -> ClockEvent {
    event(carer, ClockKind::ClockIn, trusted)
}

pub fn clock_out(carer: PersonId, trusted: Millis) -> ClockEvent {
    event(carer, ClockKind::ClockOut, trusted)
}

pub fn amendment(carer: PersonId, time: AmendedTime, corrected: Millis, written_at: Millis) -> Amendment {
    Amendment {
        id: AmendmentId::new(),
        author_id: office(),
        author_role: Role::Office,
        carer_id: carer,
        time,
        corrected_time: corrected,
        reason: ReasonCode::ForgotToClock,
        comment: None,
        written_at,
    }
}

pub fn client_home() -> Location {
    Location {
        lat: 51.5,
        lon: -0.12,
        accuracy_m: 10.0,
    }
}

/// `metres` due north of the client's home (1° of latitude ≈ 111 195 m on the mean sphere).
pub fn north_of_home(metres: f64) -> Location {
    let home = client_home();
    Location {
        lat: home.lat + metres / (6_371_008.8 * std::f64::consts::PI / 180.0),
        ..home
    }
}
