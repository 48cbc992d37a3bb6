//! What one visit amounts to, per the definitions of brief section 5, at the report's "now".
//!
//! Visit-level times for a double-up: i is the earliest first clock-in of any carer, o the latest
//! last clock-out of any carer (the care began when the first carer arrived and ended when the last
//! left). Each carer is also judged on their own i and o, for carer and team figures.

use super::billing::{billable_minutes, Billable};
use super::record::VisitRecord;
use super::rules::ContractRules;
use super::time_trust::{event_trust, EventTrust};
use crate::domain::*;
use crate::visit_document::{ClockEvent, Visit};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// What the server knows about a visit beyond its document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VisitInputs {
    /// The client's recorded location; without it no clock-in is location verified.
    pub client_location: Option<Location>,
    /// When the server received each event; without it `future_time` is never raised.
    pub received_at: HashMap<EventId, Millis>,
}

/// Where a visit (or one carer's part of it) stands. Exactly one applies.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attendance {
    /// Cancelled in the schedule: excluded from every rate, even if someone clocked in.
    Cancelled,
    /// Has a clock-in (from an event or an amendment).
    Attended,
    /// Unattended, and "now" is not yet past P + late threshold.
    Pending,
    /// Unattended, past P + late threshold, not yet past E + missed threshold: a live alert.
    Overdue,
    /// Unattended and "now" past E + missed threshold. Can still become attended when an offline
    /// phone syncs; recomputing with the new event changes it.
    Missed,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Punctuality {
    /// P − i > early threshold.
    Early,
    OnTime,
    /// i − P > late threshold.
    Late,
}

/// The judged figures, for a whole visit or for one carer's part of it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub attendance: Attendance,
    /// i: trusted time after amendments.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, format = "epoch-ms"))]
    pub clock_in: Option<Millis>,
    /// o: trusted time after amendments.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, format = "epoch-ms"))]
    pub clock_out: Option<Millis>,
    /// Set only when attended.
    pub punctuality: Option<Punctuality>,
    /// i − P (negative when early); set only when attended.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub start_offset_ms: Option<Millis>,
    /// o − i, never below 0; set when attended with a clock-out.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub duration_ms: Option<Millis>,
    pub short: bool,
    pub overrun: bool,
    pub no_clock_out: bool,
    /// ECM compliant: attended, and clock-in and clock-out both electronic and unamended.
    pub electronic: bool,
    /// None when not attended or the client's location is unknown.
    pub location_verified: Option<bool>,
}

/// One carer's part of a visit; the originals stay next to the amended times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarerOutcome {
    pub carer_id: PersonId,
    /// False for someone with events or amendments who is no longer on the schedule.
    pub assigned: bool,
    #[serde(flatten)]
    pub figures: Figures,
    /// Trusted time of the carer's first clock-in event, before any amendment.
    pub original_clock_in: Option<Millis>,
    /// Trusted time of the carer's last clock-out event, before any amendment.
    pub original_clock_out: Option<Millis>,
    /// The amendment whose corrected time is used, if any.
    pub clock_in_amendment: Option<AmendmentId>,
    pub clock_out_amendment: Option<AmendmentId>,
}

/// One visit's outcome: the unit every report, KPI and reconciliation is built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitOutcome {
    pub visit_id: VisitId,
    pub contract_id: ContractId,
    pub client_id: ClientId,
    pub planned_start: Millis,
    pub planned_end: Millis,
    #[serde(flatten)]
    pub figures: Figures,
    /// Attended, but some assigned carer has no clock-in.
    pub partially_attended: bool,
    /// Someone clocked out without any clock-in: shown so the office can amend.
    pub clock_out_without_clock_in: bool,
    /// Assigned carers in schedule order, then anyone else with events or amendments.
    pub carers: Vec<CarerOutcome>,
    /// Every clock event with its trusted time and flags, in document order.
    pub events: Vec<EventTrust>,
    /// Cancelled with `chargeable: true`.
    pub chargeable: bool,
    /// E − P of a visit that is not cancelled, else 0 (never negative).
    pub authorised_ms: Millis,
    /// o − i of an attended visit with a clock-out, else 0.
    pub delivered_ms: Millis,
    pub billable_minutes: i64,
}

impl VisitOutcome {
    pub fn is_cancelled(&self) -> bool {
        self.figures.attendance == Attendance::Cancelled
    }

    pub fn flagged_events(&self) -> usize {
        self.events.iter().filter(|e| e.flags.any()).count()
    }
}

/// Derives a visit's outcome at `now` under `rules`.
pub fn visit_outcome(
    visit: &Visit,
    rules: &ContractRules,
    inputs: &VisitInputs,
    now: Millis,
) -> VisitOutcome {
    record_outcome(&VisitRecord::of(visit), rules, inputs, now)
}

/// Derives the outcome of a visit's record (the narrow input) at `now` under `rules`.
pub fn record_outcome(
    visit: &VisitRecord,
    rules: &ContractRules,
    inputs: &VisitInputs,
    now: Millis,
) -> VisitOutcome {
    let cancelled = visit.cancelled;
    let judge = Judge {
        rules,
        planned_start: visit.planned_start,
        planned_end: visit.planned_end,
        cancelled,
        now,
        client_location: inputs.client_location,
    };

    let mut carer_ids: Vec<PersonId> = Vec::new();
    for c in &visit.carers {
        if !carer_ids.contains(c) {
            carer_ids.push(*c);
        }
    }
    let others: BTreeSet<PersonId> = visit
        .events
        .iter()
        .map(|e| e.carer_id)
        .chain(visit.corrections.iter().map(|a| a.carer_id))
        .filter(|c| !carer_ids.contains(c))
        .collect();
    let assigned_count = carer_ids.len();
    carer_ids.extend(others);

    let carers: Vec<CarerOutcome> = carer_ids
        .iter()
        .enumerate()
        .map(|(n, carer)| judge.carer(visit, *carer, n < assigned_count))
        .collect();

    let clock_in = carers.iter().filter_map(|c| c.figures.clock_in).min();
    let clock_out = carers.iter().filter_map(|c| c.figures.clock_out).max();
    let mut figures = judge.figures(clock_in, clock_out);
    if figures.attendance == Attendance::Attended {
        let present = || carers.iter().filter(|c| c.figures.clock_in.is_some());
        figures.electronic = present().all(|c| c.figures.electronic);
        figures.location_verified = inputs
            .client_location
            .map(|_| present().all(|c| c.figures.location_verified == Some(true)));
    }
    let partially_attended = figures.attendance == Attendance::Attended
        && carers
            .iter()
            .take(assigned_count)
            .any(|c| c.figures.clock_in.is_none());
    let clock_out_without_clock_in = carers
        .iter()
        .any(|c| c.figures.clock_in.is_none() && c.figures.clock_out.is_some());

    let events = visit
        .events
        .iter()
        .map(|e| event_trust(e, inputs.received_at.get(&e.id).copied(), &rules.time_trust))
        .collect();

    let planned_ms = visit.planned_end.saturating_sub(visit.planned_start).max(0);
    let chargeable = cancelled && visit.chargeable == Some(true);
    let billable = match figures.attendance {
        Attendance::Cancelled if chargeable => Billable::CancelledChargeable { planned_ms },
        Attendance::Attended => Billable::Attended {
            planned_ms,
            actual_ms: figures.duration_ms,
        },
        _ => Billable::Nothing,
    };
    VisitOutcome {
        visit_id: visit.visit_id,
        contract_id: visit.contract_id,
        client_id: visit.client_id,
        planned_start: visit.planned_start,
        planned_end: visit.planned_end,
        partially_attended,
        clock_out_without_clock_in,
        chargeable,
        authorised_ms: if cancelled { 0 } else { planned_ms },
        delivered_ms: match figures.attendance {
            Attendance::Attended => figures.duration_ms.unwrap_or(0),
            _ => 0,
        },
        billable_minutes: billable_minutes(&rules.billing, billable),
        figures,
        carers,
        events,
    }
}

struct Judge<'a> {
    rules: &'a ContractRules,
    planned_start: Millis,
    planned_end: Millis,
    cancelled: bool,
    now: Millis,
    client_location: Option<Location>,
}

impl Judge<'_> {
    fn carer(&self, visit: &VisitRecord, carer: PersonId, assigned: bool) -> CarerOutcome {
        let first_in: Option<&ClockEvent> = visit.clock_in_of(carer);
        let last_out: Option<&ClockEvent> = visit.clock_out_of(carer);
        let in_amendment = visit.latest_correction(carer, AmendedTime::ClockIn);
        let out_amendment = visit.latest_correction(carer, AmendedTime::ClockOut);
        let clock_in = in_amendment
            .map(|a| a.corrected_time)
            .or(first_in.map(ClockEvent::trusted_time));
        let clock_out = out_amendment
            .map(|a| a.corrected_time)
            .or(last_out.map(ClockEvent::trusted_time));
        let mut figures = self.figures(clock_in, clock_out);
        if figures.attendance == Attendance::Attended {
            let electronic_event = |e: Option<&ClockEvent>| e.is_some_and(|e| e.method.is_electronic());
            figures.electronic = in_amendment.is_none()
                && out_amendment.is_none()
                && electronic_event(first_in)
                && electronic_event(last_out);
            figures.location_verified = self.client_location.map(|home| {
                // The location of the carer's first clock-in event, even if its time was amended:
                // the phone was there. An amendment with no event behind it proves no location.
                first_in
                    .and_then(|e| e.location)
                    .is_some_and(|at| at.is_valid() && at.distance_m(&home) <= self.rules.location_radius_m)
            });
        }
        CarerOutcome {
            carer_id: carer,
            assigned,
            figures,
            original_clock_in: first_in.map(ClockEvent::trusted_time),
            original_clock_out: last_out.map(ClockEvent::trusted_time),
            clock_in_amendment: in_amendment.map(|a| a.id),
            clock_out_amendment: out_amendment.map(|a| a.id),
        }
    }

    /// Attendance, punctuality and duration from i and o. ECM and location are filled by callers.
    fn figures(&self, clock_in: Option<Millis>, clock_out: Option<Millis>) -> Figures {
        let r = self.rules;
        let (p, e) = (self.planned_start, self.planned_end);
        let past_missed_line = self.now > e.saturating_add(r.missed_after_end_ms());
        let attendance = if self.cancelled {
            Attendance::Cancelled
        } else if clock_in.is_some() {
            Attendance::Attended
        } else if past_missed_line {
            Attendance::Missed
        } else if self.now > p.saturating_add(r.late_after_ms()) {
            Attendance::Overdue
        } else {
            Attendance::Pending
        };
        let mut f = Figures {
            attendance,
            clock_in,
            clock_out,
            punctuality: None,
            start_offset_ms: None,
            duration_ms: None,
            short: false,
            overrun: false,
            no_clock_out: false,
            electronic: false,
            location_verified: None,
        };
        let Some(i) = clock_in.filter(|_| attendance == Attendance::Attended) else {
            return f;
        };
        let offset = i.saturating_sub(p);
        f.start_offset_ms = Some(offset);
        f.punctuality = Some(if offset > r.late_after_ms() {
            Punctuality::Late
        } else if offset.saturating_neg() > r.early_before_ms() {
            Punctuality::Early
        } else {
            Punctuality::OnTime
        });
        match clock_out {
            Some(o) => {
                let duration = o.saturating_sub(i).max(0);
                f.duration_ms = Some(duration);
                // Integer percentages: d·100 against pct·D, exact at the boundary.
                let planned = i128::from(e.saturating_sub(p));
                if planned > 0 {
                    let d = i128::from(duration) * 100;
                    f.short = d < i128::from(r.short_below_pct) * planned;
                    f.overrun = d > i128::from(r.overrun_above_pct) * planned;
                }
            }
            None => f.no_clock_out = past_missed_line,
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::test_support::*;

    /// 08:00 UTC on a Tuesday; a 30-minute visit to 08:30.
    const P: Millis = 1_790_064_000_000;

    fn rules() -> ContractRules {
        ContractRules::default()
    }

    fn at_home() -> VisitInputs {
        VisitInputs {
            client_location: Some(client_home()),
            received_at: HashMap::new(),
        }
    }

    /// "Now" well after the visit: E + 2 h.
    fn later() -> Millis {
        P + 150 * MINUTE_MS
    }

    fn outcome(v: &Visit, now: Millis) -> VisitOutcome {
        visit_outcome(v, &rules(), &at_home(), now)
    }

    fn attended(start: Millis, end: Millis) -> Visit {
        let mut v = visit(vec![carer_a()], P, 30);
        v.events.push(clock_in(carer_a(), start));
        v.events.push(clock_out(carer_a(), end));
        v
    }

    #[test]
    fn late_boundary_is_strict() {
        // Exactly 15 min late: on time. 15 min + 1 ms: late.
        let o = outcome(&attended(P + 15 * MINUTE_MS, P + 40 * MINUTE_MS), later());
        assert_eq!(o.figures.attendance, Attendance::Attended);
        assert_eq!(o.figures.punctuality, Some(Punctuality::OnTime));
        assert_eq!(o.figures.start_offset_ms, Some(900_000));
        let o = outcome(&attended(P + 15 * MINUTE_MS + 1, P + 40 * MINUTE_MS), later());
        assert_eq!(o.figures.punctuality, Some(Punctuality::Late));
    }

    #[test]
    fn early_boundary_is_strict() {
        let o = outcome(&attended(P - 15 * MINUTE_MS, P + 30 * MINUTE_MS), later());
        assert_eq!(o.figures.punctuality, Some(Punctuality::OnTime));
        let o = outcome(&attended(P - 15 * MINUTE_MS - 1, P + 30 * MINUTE_MS), later());
        assert_eq!(o.figures.punctuality, Some(Punctuality::Early));
        assert_eq!(o.figures.start_offset_ms, Some(-900_001));
    }

    #[test]
    fn pending_overdue_missed_by_now() {
        let v = visit(vec![carer_a()], P, 30);
        // Up to and including P + 15 min: pending. After: overdue.
        assert_eq!(outcome(&v, P - HOUR_MS).figures.attendance, Attendance::Pending);
        assert_eq!(
            outcome(&v, P + 15 * MINUTE_MS).figures.attendance,
            Attendance::Pending
        );
        assert_eq!(
            outcome(&v, P + 15 * MINUTE_MS + 1).figures.attendance,
            Attendance::Overdue
        );
        // E = P + 30 min; missed only strictly after E + 30 min = P + 60 min.
        assert_eq!(
            outcome(&v, P + 60 * MINUTE_MS).figures.attendance,
            Attendance::Overdue
        );
        let missed = outcome(&v, P + 60 * MINUTE_MS + 1);
        assert_eq!(missed.figures.attendance, Attendance::Missed);
        assert_eq!(missed.billable_minutes, 0);
        assert_eq!(missed.delivered_ms, 0);
        assert_eq!(missed.authorised_ms, 30 * MINUTE_MS);
    }

    #[test]
    fn missed_visit_becomes_attended_when_the_offline_clock_in_arrives() {
        let mut v = visit(vec![carer_a()], P, 30);
        let now = P + 3 * HOUR_MS;
        assert_eq!(outcome(&v, now).figures.attendance, Attendance::Missed);
        // The phone was offline; its clock-in (08:05) and clock-out (08:33) sync at 11:00.
        v.events.push(clock_in(carer_a(), P + 5 * MINUTE_MS));
        v.events.push(clock_out(carer_a(), P + 33 * MINUTE_MS));
        let o = outcome(&v, now);
        assert_eq!(o.figures.attendance, Attendance::Attended);
        assert_eq!(o.figures.punctuality, Some(Punctuality::OnTime));
        assert_eq!(o.delivered_ms, 28 * MINUTE_MS);
        assert_eq!(o.billable_minutes, 28);
    }

    #[test]
    fn short_and_overrun_boundaries() {
        // D = 30 min. 75 % = 22.5 min; 125 % = 37.5 min.
        let i = P;
        let half_min = 30_000;
        let o = outcome(&attended(i, i + 22 * MINUTE_MS + half_min), later());
        assert!(!o.figures.short, "exactly 75 % is not short");
        let o = outcome(&attended(i, i + 22 * MINUTE_MS + half_min - 1), later());
        assert!(o.figures.short);
        let o = outcome(&attended(i, i + 37 * MINUTE_MS + half_min), later());
        assert!(!o.figures.overrun, "exactly 125 % is not an overrun");
        let o = outcome(&attended(i, i + 37 * MINUTE_MS + half_min + 1), later());
        assert!(o.figures.overrun);
        assert!(!o.figures.short);
        assert_eq!(o.figures.duration_ms, Some(2_250_001));
    }

    #[test]
    fn no_clock_out_only_after_the_missed_line() {
        let mut v = visit(vec![carer_a()], P, 30);
        v.events.push(clock_in(carer_a(), P));
        let o = outcome(&v, P + 60 * MINUTE_MS);
        assert!(!o.figures.no_clock_out);
        let o = outcome(&v, P + 60 * MINUTE_MS + 1);
        assert!(o.figures.no_clock_out);
        assert!(!o.figures.short && !o.figures.overrun);
        assert_eq!(o.figures.duration_ms, None);
        assert!(!o.figures.electronic, "no clock-out: not ECM compliant");
        // Default billing is actual: nothing to bill until the clock-out is known.
        assert_eq!(o.billable_minutes, 0);
    }

    #[test]
    fn cancelled_is_its_own_state_and_bills_by_chargeable() {
        let mut v = attended(P + 40 * MINUTE_MS, P + 50 * MINUTE_MS);
        v.schedule.status = VisitStatus::Cancelled;
        let o = outcome(&v, later());
        assert_eq!(o.figures.attendance, Attendance::Cancelled);
        assert_eq!(o.figures.punctuality, None);
        assert_eq!((o.authorised_ms, o.delivered_ms, o.billable_minutes), (0, 0, 0));
        v.schedule.chargeable = Some(true);
        let o = outcome(&v, later());
        assert!(o.chargeable);
        assert_eq!(o.billable_minutes, 30);
    }

    #[test]
    fn double_up_with_one_carer_absent() {
        let mut v = visit(vec![carer_a(), carer_b()], P, 30);
        // A arrives 20 min late and stays to 08:50; B never comes.
        v.events.push(clock_in(carer_a(), P + 20 * MINUTE_MS));
        v.events.push(clock_out(carer_a(), P + 50 * MINUTE_MS));
        let o = outcome(&v, later());
        assert_eq!(o.figures.attendance, Attendance::Attended);
        assert!(o.partially_attended);
        assert_eq!(o.figures.punctuality, Some(Punctuality::Late));
        assert_eq!(o.carers.len(), 2);
        assert_eq!(o.carers[0].carer_id, carer_a());
        assert_eq!(o.carers[0].figures.punctuality, Some(Punctuality::Late));
        // B is judged alone: unattended and past E + 30 min, so missed for B.
        assert_eq!(o.carers[1].carer_id, carer_b());
        assert_eq!(o.carers[1].figures.attendance, Attendance::Missed);
        assert_eq!(o.carers[1].figures.punctuality, None);
    }

    #[test]
    fn double_up_visit_times_span_both_carers_each_judged_alone() {
        let mut v = visit(vec![carer_a(), carer_b()], P, 30);
        // A on time 08:05–08:30; B 20 min late 08:20–08:40.
        v.events.push(clock_in(carer_a(), P + 5 * MINUTE_MS));
        v.events.push(clock_in(carer_b(), P + 20 * MINUTE_MS));
        v.events.push(clock_out(carer_a(), P + 30 * MINUTE_MS));
        v.events.push(clock_out(carer_b(), P + 40 * MINUTE_MS));
        let o = outcome(&v, later());
        assert!(!o.partially_attended);
        // i = 08:05 (earliest), o = 08:40 (latest): 35 min, on time.
        assert_eq!(o.figures.clock_in, Some(P + 5 * MINUTE_MS));
        assert_eq!(o.figures.clock_out, Some(P + 40 * MINUTE_MS));
        assert_eq!(o.figures.duration_ms, Some(35 * MINUTE_MS));
        assert_eq!(o.figures.punctuality, Some(Punctuality::OnTime));
        assert_eq!(o.carers[0].figures.punctuality, Some(Punctuality::OnTime));
        assert_eq!(o.carers[1].figures.punctuality, Some(Punctuality::Late));
        // B: 20 min of a 30 min call is below 22.5 min, so B's own part is short.
        assert!(o.carers[1].figures.short);
        assert!(!o.figures.short);
    }

    #[test]
    fn amended_clock_in_turns_late_into_on_time_and_keeps_the_original() {
        let mut v = attended(P + 25 * MINUTE_MS, P + 45 * MINUTE_MS);
        assert_eq!(outcome(&v, later()).figures.punctuality, Some(Punctuality::Late));
        // The carer arrived at 08:02 but the app failed; two amendments, the later-written wins.
        v.amendments.push(amendment(
            carer_a(),
            AmendedTime::ClockIn,
            P + 2 * MINUTE_MS,
            P + 2 * HOUR_MS,
        ));
        v.amendments.push(amendment(
            carer_a(),
            AmendedTime::ClockIn,
            P + 20 * MINUTE_MS,
            P + HOUR_MS,
        ));
        let o = outcome(&v, later());
        assert_eq!(o.figures.clock_in, Some(P + 2 * MINUTE_MS));
        assert_eq!(o.figures.punctuality, Some(Punctuality::OnTime));
        let a = &o.carers[0];
        assert_eq!(a.original_clock_in, Some(P + 25 * MINUTE_MS));
        assert_eq!(a.clock_in_amendment, Some(v.amendments[0].id));
        assert_eq!(o.events.len(), 2, "the original event is still listed");
        // Amended: no longer ECM compliant. 08:02–08:45 = 43 min.
        assert!(!o.figures.electronic);
        assert_eq!(o.figures.duration_ms, Some(43 * MINUTE_MS));
    }

    #[test]
    fn amendment_alone_makes_a_visit_attended() {
        let mut v = visit(vec![carer_a()], P, 30);
        v.amendments
            .push(amendment(carer_a(), AmendedTime::ClockIn, P, P + HOUR_MS));
        v.amendments.push(amendment(
            carer_a(),
            AmendedTime::ClockOut,
            P + 30 * MINUTE_MS,
            P + HOUR_MS,
        ));
        let o = outcome(&v, later());
        assert_eq!(o.figures.attendance, Attendance::Attended);
        assert_eq!(o.delivered_ms, 30 * MINUTE_MS);
        assert!(!o.figures.electronic);
        // No event, so no location evidence.
        assert_eq!(o.figures.location_verified, Some(false));
    }

    #[test]
    fn electronic_compliance_needs_both_ends_electronic() {
        let v = attended(P, P + 30 * MINUTE_MS);
        assert!(outcome(&v, later()).figures.electronic);
        let mut manual = v.clone();
        manual.events[1].method = ClockMethod::Manual;
        manual.events[1].reason = Some(ReasonCode::PhoneUnavailable);
        assert!(!outcome(&manual, later()).figures.electronic);
        let mut nfc = v;
        nfc.events[0].method = ClockMethod::Nfc;
        assert!(outcome(&nfc, later()).figures.electronic);
    }

    #[test]
    fn location_verified_within_radius() {
        let mut v = attended(P, P + 30 * MINUTE_MS);
        v.events[0].location = Some(north_of_home(199.0));
        assert_eq!(outcome(&v, later()).figures.location_verified, Some(true));
        v.events[0].location = Some(north_of_home(201.0));
        assert_eq!(outcome(&v, later()).figures.location_verified, Some(false));
        v.events[0].location = None;
        assert_eq!(outcome(&v, later()).figures.location_verified, Some(false));
        let unknown_home = visit_outcome(&v, &rules(), &VisitInputs::default(), later());
        assert_eq!(unknown_home.figures.location_verified, None);
    }

    #[test]
    fn skewed_device_clock_is_corrected_and_flagged() {
        let mut v = visit(vec![carer_a()], P, 30);
        // The phone is 5 min fast: it reads 08:19 when the server's time is 08:14. Offset −5 min
        // gives trusted 08:14: on time, though the device time alone would say 19 min late.
        let mut e = clock_in(carer_a(), P);
        e.device_time = P + 19 * MINUTE_MS;
        e.clock_offset_ms = Some(-5 * MINUTE_MS);
        e.offset_measured_at = Some(P + 18 * MINUTE_MS);
        v.events.push(e);
        let mut received = HashMap::new();
        received.insert(v.events[0].id, P + 15 * MINUTE_MS);
        let inputs = VisitInputs {
            client_location: Some(client_home()),
            received_at: received,
        };
        let o = visit_outcome(&v, &rules(), &inputs, P + 20 * MINUTE_MS);
        assert_eq!(o.figures.clock_in, Some(P + 14 * MINUTE_MS));
        assert_eq!(o.figures.punctuality, Some(Punctuality::OnTime));
        assert!(o.events[0].flags.clock_skew);
        assert!(
            !o.events[0].flags.future_time,
            "08:14 is before the 08:15 receipt"
        );
        assert_eq!(o.flagged_events(), 1);
    }

    #[test]
    fn unverified_and_future_times_are_flagged_but_still_used() {
        let mut v = visit(vec![carer_a()], P, 30);
        let mut e = clock_in(carer_a(), P + 10 * MINUTE_MS);
        e.clock_offset_ms = None;
        e.offset_measured_at = None;
        v.events.push(e);
        // Received at 08:07, but the event claims 08:10: 3 min in the future.
        let inputs = VisitInputs {
            client_location: None,
            received_at: HashMap::from([(v.events[0].id, P + 7 * MINUTE_MS)]),
        };
        let o = visit_outcome(&v, &rules(), &inputs, later());
        let flags = o.events[0].flags;
        assert!(flags.unverified_time && flags.future_time && !flags.clock_skew);
        // No offset: trusted time is the device time, 08:10 − 1.5 s.
        assert_eq!(o.figures.clock_in, Some(P + 10 * MINUTE_MS - 1500));
    }

    #[test]
    fn absurd_times_never_panic() {
        use crate::metrics::{weekly_reconciliation, AgencyTimeZone, Period, PeriodKind};
        for (start, event_at, now) in [
            (Millis::MAX - 1, Millis::MIN, Millis::MAX),
            (Millis::MIN, Millis::MAX, Millis::MIN),
            (0, Millis::MIN, Millis::MAX),
        ] {
            let mut v = visit(vec![carer_a()], 0, 30);
            v.schedule.planned_start = start;
            v.schedule.planned_end = start.wrapping_add(1);
            v.events.push(clock_in(carer_a(), 0));
            v.events[0].device_time = event_at;
            v.events[0].clock_offset_ms = Some(Millis::MAX);
            v.events[0].offset_measured_at = Some(Millis::MIN);
            v.events.push(clock_out(carer_a(), 0));
            v.events[1].device_time = Millis::MIN;
            let mut rules = rules();
            rules.billing.rounding = crate::metrics::Rounding::Up;
            let o = visit_outcome(&v, &rules, &at_home(), now);
            let _ = weekly_reconciliation(&[o.clone(), o], AgencyTimeZone::default());
            for kind in [PeriodKind::Day, PeriodKind::Week, PeriodKind::Month] {
                let _ = Period::containing(kind, start, AgencyTimeZone::default()).label();
            }
        }
    }

    #[test]
    fn outcome_serialises_and_reads_back() -> Result<(), serde_json::Error> {
        let o = outcome(&attended(P, P + 30 * MINUTE_MS), later());
        let json = serde_json::to_string(&o)?;
        assert!(json.contains("\"attendance\":\"attended\""), "{json}");
        let back: VisitOutcome = serde_json::from_str(&json)?;
        assert_eq!(back, o);
        Ok(())
    }
}
