//! Phones, the office and a real server process: convergence, forgery, replay, bad input.

use caresync_core::domain::*;
use caresync_core::protocol::*;
use caresync_core::visit_document::VisitDocument;
use caresync_core::ClockRequest;
use caresync_tests::*;
use serde_json::Value;

fn event_count(world: &World, visit: VisitId) -> TestResult<usize> {
    Ok(world.office.visit(visit)?["events"]
        .as_array()
        .ok_or("no events")?
        .len())
}

fn server_heads(world: &World, visit: VisitId) -> TestResult<Vec<String>> {
    let v = world.office.visit(visit)?;
    Ok(serde_json::from_value(v["heads"].clone())?)
}

#[test]
fn two_offline_phones_and_the_office_converge() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let bob = world.carer_with_phone("Bob")?;
    let start = now() + HOUR_MS;
    let ann_visit = world.office.create_visit(&[ann.carer], start)?;
    let bob_visit = world.office.create_visit(&[bob.carer], start)?;
    let double_up = world
        .office
        .create_visit(&[ann.carer, bob.carer], start + 2 * HOUR_MS)?;

    let first = ann.sync()?;
    assert_eq!(first.visits_received, 2, "{first:?}");
    assert!(first.rounds <= 2, "first sync took {} rounds", first.rounds);
    bob.sync()?;
    assert_eq!(ann.store.visit_ids()?.len(), 2);

    // Offline: both carers work, the office reschedules the shared visit and Ann's.
    ann.set_offline(true);
    bob.set_offline(true);
    ann.store.clock_in(double_up, &ClockRequest::app())?;
    ann.store
        .add_note(double_up, NoteCategory::Wellbeing, "Mrs K was in good spirits")?;
    bob.store.clock_in(double_up, &ClockRequest::app())?;
    bob.store
        .add_note(double_up, NoteCategory::Medication, "Evening tablets taken")?;
    ann.store.clock_in(ann_visit, &ClockRequest::app())?;
    world.office.reschedule(
        double_up,
        start + 3 * HOUR_MS,
        start + 3 * HOUR_MS + 45 * MINUTE_MS,
    )?;
    world
        .office
        .reschedule(ann_visit, start + 10 * MINUTE_MS, start + 40 * MINUTE_MS)?;
    assert!(ann.sync().is_err(), "an offline phone cannot sync");
    assert_eq!(ann.store.pending_count()?, 3);

    ann.set_offline(false);
    bob.set_offline(false);
    let a = ann.sync()?;
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    assert_eq!(a.pending_after, 0);
    bob.sync()?;
    ann.sync()?; // picks up Bob's changes to the double-up

    for visit in [double_up, ann_visit] {
        assert_eq!(
            ann.heads(visit)?,
            server_heads(&world, visit)?,
            "ann vs server on {visit}"
        );
    }
    assert_eq!(bob.heads(double_up)?, server_heads(&world, double_up)?);
    assert_eq!(bob.heads(bob_visit)?, server_heads(&world, bob_visit)?);

    let server_view = world.office.visit(double_up)?;
    let on_ann = ann.store.visit(double_up)?.visit;
    let on_bob = bob.store.visit(double_up)?.visit;
    assert_eq!(on_ann, on_bob);
    assert_eq!(
        serde_json::to_value(&on_ann)?,
        without_rfc3339(&server_view["visit"])
    );
    assert_eq!(on_ann.events.len(), 2);
    assert_eq!(on_ann.notes.len(), 2);
    assert_eq!(
        on_ann.schedule.planned_start,
        start + 3 * HOUR_MS,
        "the office's reschedule survived"
    );
    assert_eq!(server_view["events"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[test]
fn a_forged_change_is_refused_whole_and_the_rest_of_the_batch_syncs() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let bob = world.carer_with_phone("Bob")?;
    let start = now() + HOUR_MS;
    let v1 = world.office.create_visit(&[ann.carer], start)?;
    let v2 = world.office.create_visit(&[ann.carer], start + HOUR_MS)?;
    let bobs = world.office.create_visit(&[bob.carer], start)?;
    ann.sync()?;
    bob.sync()?;
    let before_v1 = server_heads(&world, v1)?;

    // Ann's phone is tampered with: it rewrites the schedule of v1 ...
    let mut forged = VisitDocument::load(&ann.store.visit_bytes(v1)?)?;
    let mut schedule = forged.read()?.schedule;
    schedule.planned_start -= 2 * HOUR_MS;
    forged.update_schedule(&schedule)?;
    ann.store.import_visit(&forged.save())?;
    // ... and does honest work on v2 in the same sync.
    let honest = ann.store.clock_in(v2, &ClockRequest::app())?;
    let summary = ann.sync()?;
    let errors: Vec<(VisitId, &str)> = summary
        .errors
        .iter()
        .map(|e| (e.visit_id, e.code.as_str()))
        .collect();
    assert_eq!(errors, vec![(v1, "forbidden_change")]);
    assert_eq!(
        server_heads(&world, v1)?,
        before_v1,
        "nothing of the forged change persisted"
    );
    let v2_events = world.office.visit(v2)?["events"].clone();
    assert_eq!(v2_events[0]["event_id"], Value::String(honest.id.to_string()));

    // Writing to another carer's visit: Ann's token, Bob's visit, a clock event in Ann's name.
    let mut theirs = VisitDocument::load(&bob.store.visit_bytes(bobs)?)?;
    let before_bobs = server_heads(&world, bobs)?;
    theirs.append_event(&caresync_core::ClockEvent {
        id: EventId::new(),
        kind: ClockKind::ClockIn,
        carer_id: ann.carer,
        device_id: ann.device,
        device_time: now(),
        clock_offset_ms: Some(0),
        offset_measured_at: Some(now()),
        method: ClockMethod::App,
        reason: None,
        location: None,
        tag_id: None,
    })?;
    let resp = push_document(&world.server.url, &ann.token, bobs, theirs.automerge())?;
    assert_eq!(
        resp.errors.first().map(|e| e.code.as_str()),
        Some("not_assigned"),
        "{resp:?}"
    );
    assert_eq!(server_heads(&world, bobs)?, before_bobs);
    assert_eq!(event_count(&world, bobs)?, 0);

    // A clock event in someone else's name on one's own visit is refused too.
    let mut impostor = VisitDocument::load(&ann.store.visit_bytes(v2)?)?;
    let mut ev = honest.clone();
    ev.id = EventId::new();
    ev.kind = ClockKind::ClockOut;
    ev.carer_id = bob.carer;
    impostor.append_event(&ev)?;
    let resp = push_document(&world.server.url, &ann.token, v2, impostor.automerge())?;
    assert_eq!(
        resp.errors.first().map(|e| e.code.as_str()),
        Some("forbidden_change"),
        "{resp:?}"
    );
    assert_eq!(event_count(&world, v2)?, 1);
    Ok(())
}

#[test]
fn replaying_a_captured_sync_request_duplicates_nothing() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let visit = world.office.create_visit(&[ann.carer], now())?;
    ann.sync()?;
    ann.store.clock_in(visit, &ClockRequest::app())?;
    let mark = ann.transport.sent.lock().map_err(|_| "poisoned")?.len();
    let steady = ann.sync()?;
    assert_eq!(steady.rounds, 1, "a clock-in syncs in one round trip: {steady:?}");
    let captured: Vec<Vec<u8>> = ann.transport.sent.lock().map_err(|_| "poisoned")?[mark..].to_vec();
    assert!(!captured.is_empty());
    let heads = server_heads(&world, visit)?;
    for _ in 0..3 {
        for body in &captured {
            let (status, _) = post_raw(&world.server.url, SYNC_PATH, Some(&ann.token), body)?;
            assert_eq!(status, 200);
        }
    }
    assert_eq!(event_count(&world, visit)?, 1);
    assert_eq!(server_heads(&world, visit)?, heads);
    // And the phone, syncing again, still agrees.
    ann.sync()?;
    assert_eq!(ann.heads(visit)?, heads);
    assert_eq!(ann.store.visit(visit)?.visit.events.len(), 1);
    Ok(())
}

#[test]
fn a_carer_reassigned_while_offline_keeps_their_clock_in_flagged() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let bob = world.carer_with_phone("Bob")?;
    let visit = world.office.create_visit(&[ann.carer], now())?;
    ann.sync()?;
    ann.set_offline(true);
    let ev = ann.store.clock_in(visit, &ClockRequest::app())?;
    world.office.reassign(visit, &[bob.carer])?;
    ann.set_offline(false);
    let summary = ann.sync()?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let events = world.office.visit(visit)?["events"].clone();
    assert_eq!(events[0]["event_id"], Value::String(ev.id.to_string()));
    assert!(
        events[0]["flags"]
            .as_str()
            .unwrap_or("")
            .contains("reassigned_before_sync"),
        "{events}"
    );
    // Acknowledged and no longer Ann's: it leaves her phone.
    assert_eq!(summary.pending_after, 0);
    assert!(
        ann.store.visit_ids()?.is_empty(),
        "the reassigned visit should leave Ann's phone"
    );
    // A fresh change by Ann after she saw the reassignment would be refused (she has no copy now).
    Ok(())
}

#[test]
fn a_wrong_phone_clock_is_corrected_and_flagged() -> TestResult {
    let world = World::start()?;
    let carer = world.office.create_person("Cat", "carer")?;
    let code = world.office.enrolment_code(carer)?;
    // The phone's clock is 10 minutes slow.
    let skewed = std::sync::Arc::new(caresync_core::clock::SkewedClock {
        skew_ms: -10 * MINUTE_MS,
    });
    let phone = Phone::enrol(world.dir.path(), &world.server.url, &code, skewed)?;
    let visit = world.office.create_visit(&[phone.carer], now())?;
    phone.sync()?;
    let tapped = now();
    phone.store.clock_in(visit, &ClockRequest::app())?;
    phone.sync()?;
    let ev = world.office.visit(visit)?["events"][0].clone();
    let trusted = ev["trusted_time"].as_i64().ok_or("no trusted time")?;
    assert!(
        (trusted - tapped).abs() < 5_000,
        "trusted {trusted} vs real {tapped}"
    );
    let device_time = ev["device_time"].as_i64().ok_or("no device time")?;
    assert!((tapped - device_time - 10 * MINUTE_MS).abs() < 5_000);
    assert_eq!(ev["flags"], Value::String("clock_skew".into()));
    Ok(())
}

#[test]
fn bad_requests_get_their_error_and_change_nothing() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let visit = world.office.create_visit(&[ann.carer], now())?;
    ann.sync()?;
    ann.store.clock_in(visit, &ClockRequest::app())?;
    ann.sync()?;
    let url = world.server.url.clone();
    let heads = server_heads(&world, visit)?;
    let unchanged = |what: &str| -> TestResult {
        assert_eq!(server_heads(&world, visit)?, heads, "{what} changed the document");
        assert_eq!(event_count(&world, visit)?, 1, "{what} changed the events");
        Ok(())
    };
    let code_of = |body: &[u8]| -> String {
        serde_json::from_slice::<Problem>(body)
            .map(|p| p.code)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into())
    };
    let request = |protocol: u32, visits: Vec<VisitMessage>| {
        to_cbor(&SyncRequest {
            protocol,
            device_time: now(),
            visits,
            manifest_digest: None,
        })
    };

    let (s, b) = post_raw(&url, SYNC_PATH, Some(&ann.token), b"\xff\x00 definitely not cbor")?;
    assert_eq!((s, code_of(&b).as_str()), (400, "malformed_request"));
    unchanged("garbage")?;

    let (s, b) = post_raw(&url, SYNC_PATH, Some(&ann.token), &request(99, vec![]))?;
    assert_eq!((s, code_of(&b).as_str()), (400, "unsupported_protocol"));

    let (s, b) = post_raw(
        &url,
        SYNC_PATH,
        Some(&ann.token),
        &vec![0u8; MAX_REQUEST_BYTES + 10],
    )?;
    assert_eq!((s, code_of(&b).as_str()), (413, "payload_too_large"));

    let many: Vec<VisitMessage> = (0..=MAX_VISITS_PER_REQUEST)
        .map(|_| VisitMessage {
            visit_id: VisitId::new(),
            message: vec![0x42],
        })
        .collect();
    let (s, b) = post_raw(
        &url,
        SYNC_PATH,
        Some(&ann.token),
        &request(PROTOCOL_VERSION, many),
    )?;
    assert_eq!((s, code_of(&b).as_str()), (413, "too_many_visits"));

    // A truncated message for a real visit and a message for an unknown visit, in one batch.
    let mut doc = VisitDocument::load(&ann.store.visit_bytes(visit)?)?;
    ann.store
        .add_note(visit, NoteCategory::General, "not to be sent whole")?;
    let mut with_note = VisitDocument::load(&ann.store.visit_bytes(visit)?)?;
    let change = with_note.automerge().save_after(&doc.heads());
    let mut state = automerge::sync::State::new();
    use automerge::sync::SyncDoc;
    let full = with_note
        .automerge()
        .sync()
        .generate_sync_message(&mut state)
        .ok_or("no message")?
        .encode();
    let truncated = full[..full.len() / 2].to_vec();
    assert!(!change.is_empty());
    let unknown = VisitId::new();
    let (s, b) = post_raw(
        &url,
        SYNC_PATH,
        Some(&ann.token),
        &request(
            PROTOCOL_VERSION,
            vec![
                VisitMessage {
                    visit_id: visit,
                    message: truncated,
                },
                VisitMessage {
                    visit_id: unknown,
                    message: full.clone(),
                },
            ],
        ),
    )?;
    assert_eq!(s, 200);
    let resp: SyncResponse = from_cbor(&b)?;
    let mut codes: Vec<(VisitId, String)> =
        resp.errors.iter().map(|e| (e.visit_id, e.code.clone())).collect();
    codes.sort();
    let mut expect = vec![
        (visit, "malformed_message".to_string()),
        (unknown, "unknown_visit".to_string()),
    ];
    expect.sort();
    assert_eq!(codes, expect);
    unchanged("truncated and unknown")?;

    // Tokens: missing, unknown, and (after revocation) revoked.
    let (s, _) = post_raw(&url, SYNC_PATH, None, &request(PROTOCOL_VERSION, vec![]))?;
    assert_eq!(s, 401);
    let (s, _) = post_raw(
        &url,
        SYNC_PATH,
        Some("not-a-token"),
        &request(PROTOCOL_VERSION, vec![]),
    )?;
    assert_eq!(s, 401);
    let (s, b) = post_raw(
        &url,
        SYNC_PATH,
        Some(&world.office.token),
        &request(PROTOCOL_VERSION, vec![]),
    )?;
    assert_eq!(
        (s, code_of(&b).as_str()),
        (403, "forbidden"),
        "the office's token is not a device"
    );
    // A carer's device token cannot use the office API (403: known, but not allowed).
    let (s, _) = call_as(&url, &ann.token, "GET", "/api/v1/people", None)?;
    assert_eq!(s, 403);
    world.office.revoke(ann.device)?;
    let err = ann.sync().err().ok_or("a revoked phone synced")?;
    assert!(
        matches!(
            err,
            caresync_core::SyncError::Transport(caresync_core::TransportError::Unauthorized(_))
        ),
        "{err}"
    );
    unchanged("revoked phone")?;
    // The phone still holds its unsent note: nothing is lost on the phone either.
    assert_eq!(ann.store.pending_count()?, 1);

    // An enrolment code works once.
    let carer = world.office.create_person("Dee", "carer")?;
    let code = world.office.enrolment_code(carer)?;
    Phone::enrol(
        world.dir.path(),
        &url,
        &code,
        std::sync::Arc::new(caresync_core::SystemClock),
    )?;
    let again = Phone::enrol(
        world.dir.path(),
        &url,
        &code,
        std::sync::Arc::new(caresync_core::SystemClock),
    );
    assert!(again.is_err(), "an enrolment code worked twice");
    Ok(())
}

#[test]
fn sigterm_shuts_down_cleanly_and_health_and_metrics_answer() -> TestResult {
    let mut world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let visit = world.office.create_visit(&[ann.carer], now())?;
    ann.sync()?;
    ann.store.clock_in(visit, &ClockRequest::app())?;
    ann.sync()?;
    let mut resp = http().get(&format!("{}/healthz", world.server.url)).call()?;
    assert_eq!(resp.status().as_u16(), 200);
    let metrics = http()
        .get(&format!("{}/metrics", world.server.url))
        .call()?
        .body_mut()
        .read_to_string()?;
    let accepted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("caresync_changes_accepted_total "))
        .ok_or("no accepted counter")?;
    assert_eq!(accepted.trim(), "1");
    assert!(metrics.contains("caresync_sync_duration_seconds_count"));
    // The embedded store's writer committed that change in a transaction of its own or shared.
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    let (groups, writes) = (
        counter("caresync_store_commit_groups_total").ok_or("no commit groups counter")?,
        counter("caresync_store_commit_writes_total").ok_or("no commit writes counter")?,
    );
    assert!(
        groups >= 1 && writes >= groups,
        "{groups} groups, {writes} writes"
    );
    let _ = resp.body_mut().read_to_string();
    let status = world.server.terminate()?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

/// Text no compressor could shrink much: `chars` random CJK characters from the supplementary
/// plane (four UTF-8 bytes each).
fn incompressible_text(seed: u64, chars: usize) -> String {
    let mut x = seed | 1;
    (0..chars)
        .map(|_| {
            // xorshift64: cheap, deterministic, good enough to defeat DEFLATE.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_u32(0x2_0000 + (x % 0xA000) as u32).unwrap_or('x')
        })
        .collect()
}

/// Issue 11, defect 1: a per-visit message over ciborium's 4 KiB scratch buffer used to stop the
/// phone syncing at all. Long notes sync up and down; a visit whose message is over the
/// protocol's limit gets `message_too_large` and the rest of the same sync goes through.
#[test]
fn long_notes_sync_both_ways_and_an_oversized_visit_never_blocks_the_batch() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let start = now() + HOUR_MS;
    let long_notes = world.office.create_visit(&[ann.carer], start)?;
    let huge = world.office.create_visit(&[ann.carer], start + HOUR_MS)?;
    let ordinary = world.office.create_visit(&[ann.carer], start + 2 * HOUR_MS)?;
    ann.sync()?;

    let six = incompressible_text(6, 6_000);
    let nine = incompressible_text(9, 9_000);
    ann.store.add_note(long_notes, NoteCategory::General, &six)?;
    ann.store.add_note(long_notes, NoteCategory::Wellbeing, &nine)?;
    let summary = ann.sync()?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(summary.pending_after, 0);
    let texts: Vec<String> = world.office.visit(long_notes)?["visit"]["notes"]
        .as_array()
        .ok_or("no notes")?
        .iter()
        .filter_map(|n| n["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        texts,
        vec![six.clone(), nine.clone()],
        "the server holds both notes whole"
    );

    // A second phone for Ann (a fresh enrolment) pulls the visit with both notes.
    let code = world.office.enrolment_code(ann.carer)?;
    let second = Phone::enrol(
        world.dir.path(),
        &world.server.url,
        &code,
        std::sync::Arc::new(caresync_core::SystemClock),
    )?;
    let pulled = second.sync()?;
    assert!(pulled.errors.is_empty(), "{:?}", pulled.errors);
    let on_second: Vec<String> = second
        .store
        .visit(long_notes)?
        .visit
        .notes
        .into_iter()
        .map(|n| n.text)
        .collect();
    assert_eq!(on_second, vec![six, nine]);
    assert_eq!(second.heads(long_notes)?, server_heads(&world, long_notes)?);

    // One visit's message over the limit (30 notes of 40 KB each: Automerge sends them as they are),
    // and an honest clock-in on another visit in the same sync.
    for i in 0..30 {
        ann.store
            .add_note(huge, NoteCategory::General, &incompressible_text(100 + i, 10_000))?;
    }
    let huge_before = server_heads(&world, huge)?;
    let clock_in = ann.store.clock_in(ordinary, &ClockRequest::app())?;
    let summary = ann.sync()?;
    let errors: Vec<(VisitId, &str)> = summary
        .errors
        .iter()
        .map(|e| (e.visit_id, e.code.as_str()))
        .collect();
    assert_eq!(errors, vec![(huge, "message_too_large")]);
    assert_eq!(
        world.office.visit(ordinary)?["events"][0]["event_id"],
        Value::String(clock_in.id.to_string()),
        "the rest of the batch went through"
    );
    assert_eq!(server_heads(&world, huge)?, huge_before);
    assert_eq!(
        ann.store.visit(huge)?.visit.notes.len(),
        30,
        "the oversized visit's notes stay on the phone"
    );
    // Parked as refused (issue 11, defect 10): listed with the reason and not tried again.
    let refused: Vec<(VisitId, String)> = ann
        .store
        .refused_changes()?
        .into_iter()
        .map(|r| (r.visit_id, r.code))
        .collect();
    assert_eq!(refused, vec![(huge, "message_too_large".to_string())]);
    let again = ann.sync()?;
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    Ok(())
}

/// The phone's own Automerge actor, read from its database file, so a forged change looks like
/// the phone's own work.
fn phone_actor(phone: &Phone) -> TestResult<automerge::ActorId> {
    use caresync_core::sqlite::{self, Durability};
    let conn = sqlite::open(&phone.path, caresync_core::store::MIGRATIONS, Durability::Full)?;
    let bytes: Vec<u8> = conn.query_row("SELECT actor FROM device WHERE id = 1", [], |r| r.get(0))?;
    Ok(automerge::ActorId::from(bytes))
}

/// The visits of the requests a phone sent since `mark`, with how many changes each carried
/// (either protocol).
fn sent_messages(phone: &Phone, mark: usize) -> TestResult<Vec<(VisitId, usize)>> {
    let sent = phone.transport.sent.lock().map_err(|_| "poisoned")?[mark..].to_vec();
    let mut out = Vec::new();
    for body in sent {
        if v2::is_version2(&body) {
            let req: v2::Request = v2::decode(&body)?;
            out.extend(req.visits.into_iter().map(|p| (p.visit_id, p.changes.len())));
            continue;
        }
        let req: SyncRequest = from_cbor(&body)?;
        for m in req.visits {
            let changes = automerge::sync::Message::decode(&m.message)?.changes.len();
            out.push((m.visit_id, changes));
        }
    }
    Ok(out)
}

fn sent_count(phone: &Phone) -> TestResult<usize> {
    Ok(phone.transport.sent.lock().map_err(|_| "poisoned")?.len())
}

/// Issue 11, defect 10: a change the server refused used to stay pending and be re-sent on every
/// sync. Now the visit is parked: kept whole on the phone, listed with the server's reason, not
/// re-sent, still pulling the office's news, never purged, and re-sent only when the app asks.
#[test]
fn a_refused_change_is_kept_listed_and_not_resent() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let bob = world.carer_with_phone("Bob")?;
    let start = now() + HOUR_MS;
    let forged_visit = world.office.create_visit(&[ann.carer], start)?;
    let other = world.office.create_visit(&[ann.carer], start + HOUR_MS)?;
    ann.sync()?;

    // A change in Ann's phone's own name that the server must refuse: a clock-in in Bob's name.
    let mut doc = VisitDocument::load(&ann.store.visit_bytes(forged_visit)?)?.with_actor(&phone_actor(&ann)?);
    let forged = caresync_core::ClockEvent {
        id: EventId::new(),
        kind: ClockKind::ClockIn,
        carer_id: bob.carer,
        device_id: ann.device,
        device_time: now(),
        clock_offset_ms: Some(0),
        offset_measured_at: Some(now()),
        method: ClockMethod::App,
        reason: None,
        location: None,
        tag_id: None,
    };
    let forged_hash = doc.append_event(&forged)?;
    ann.store.import_visit(&doc.save())?;
    assert_eq!(ann.store.pending_count()?, 1);

    let first = ann.sync()?;
    let codes: Vec<(VisitId, &str)> = first
        .errors
        .iter()
        .map(|e| (e.visit_id, e.code.as_str()))
        .collect();
    assert_eq!(codes, vec![(forged_visit, "forbidden_change")]);
    assert_eq!(event_count(&world, forged_visit)?, 0);

    // The next syncs do not send it again, and honest work on another visit still goes.
    let honest = ann.store.clock_in(other, &ClockRequest::app())?;
    let mark = sent_count(&ann)?;
    let second = ann.sync()?;
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    let sent = sent_messages(&ann, mark)?;
    assert!(
        sent.iter().all(|(v, _)| *v != forged_visit),
        "the refused visit was sent again: {sent:?}"
    );
    assert_eq!(
        world.office.visit(other)?["events"][0]["event_id"],
        Value::String(honest.id.to_string())
    );
    let third = ann.sync()?;
    assert!(third.errors.is_empty(), "{:?}", third.errors);
    assert_eq!(third.messages_sent, 0, "{third:?}");

    // Listed with the server's reason, and no longer counted as waiting to be sent.
    let refused = ann.store.refused_changes()?;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (refused[0].visit_id, refused[0].code.as_str(), refused[0].changes),
        (forged_visit, "forbidden_change", 1)
    );
    assert!(
        refused[0].message.contains("name of this carer"),
        "{:?}",
        refused[0].message
    );
    assert!((refused[0].refused_at - now()).abs() < 60_000);
    assert_eq!(ann.client.refused_changes()?, refused);
    assert_eq!((third.pending_after, third.refused_after), (0, 1));
    assert_eq!(ann.store.pending_count()?, 0);

    // The office's news for the parked visit still arrives, pulled without the refused change.
    let new_end = start + 50 * MINUTE_MS;
    world.office.reschedule(forged_visit, start, new_end)?;
    let mark = sent_count(&ann)?;
    let pulled = ann.sync()?;
    assert!(pulled.errors.is_empty(), "{:?}", pulled.errors);
    let sent = sent_messages(&ann, mark)?;
    let to_forged: Vec<usize> = sent
        .iter()
        .filter(|(v, _)| *v == forged_visit)
        .map(|(_, changes)| *changes)
        .collect();
    assert_eq!(to_forged, vec![0], "one pull, carrying no change");
    assert_eq!(ann.store.visit(forged_visit)?.visit.schedule.planned_end, new_end);
    assert_eq!(event_count(&world, forged_visit)?, 0);
    assert_eq!(ann.store.refused_changes()?, refused, "still parked, as refused");

    // Kept whole on the phone, and never purged.
    let mut kept = VisitDocument::load(&ann.store.visit_bytes(forged_visit)?)?;
    assert!(kept.automerge().get_change_by_hash(&forged_hash).is_some());
    assert!(ann
        .store
        .visit(forged_visit)?
        .visit
        .events
        .iter()
        .any(|e| e.id == forged.id));
    ann.store.purge_ended_before(i64::MAX)?;
    assert!(ann.store.visit_ids()?.contains(&forged_visit));

    // Only when the app asks is it sent again (and refused again, with the same reason).
    assert!(ann.store.retry_refused(forged_visit)?);
    assert_eq!(ann.store.pending_count()?, 1);
    let retried = ann.sync()?;
    let codes: Vec<(VisitId, &str)> = retried
        .errors
        .iter()
        .map(|e| (e.visit_id, e.code.as_str()))
        .collect();
    assert_eq!(codes, vec![(forged_visit, "forbidden_change")]);
    assert_eq!(ann.store.refused_changes()?.len(), 1);
    assert_eq!(event_count(&world, forged_visit)?, 0);
    Ok(())
}

/// Real HTTP to the real server, keeping every answer's body so a test can see what a phone was
/// sent.
struct AnswerRecorder {
    inner: caresync_core::http_transport::HttpTransport,
    answers: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl caresync_core::Transport for AnswerRecorder {
    fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, caresync_core::TransportError> {
        let answer = self.inner.post(path, token, body)?;
        if let Ok(mut answers) = self.answers.lock() {
            answers.push(answer.clone());
        }
        Ok(answer)
    }
}

/// Issue 11, defect 3: a carer taken off a visit used to go on receiving the whole document,
/// notes written after the reassignment included. What they wrote while assigned is still
/// accepted; what they receive stops, and the visit leaves their phone.
#[test]
fn a_carer_taken_off_a_visit_receives_nothing_written_after() -> TestResult {
    let world = World::start()?;
    let ann = world.carer_with_phone("Ann")?;
    let bob = world.carer_with_phone("Bob")?;
    let visit = world.office.create_visit(&[ann.carer], now())?;
    let stays = world.office.create_visit(&[ann.carer], now() + HOUR_MS)?;
    ann.sync()?;

    ann.set_offline(true);
    let clock_in = ann.store.clock_in(visit, &ClockRequest::app())?;
    world.office.reassign(visit, &[bob.carer])?;
    let secret = "Key safe code is now 4821; Ann is no longer on this call";
    let (status, body) = world.office.call(
        "POST",
        &format!("/api/v1/visits/{visit}/notes"),
        Some(serde_json::json!({"category": "general", "text": secret})),
    )?;
    assert_eq!(status, 201, "{body}");
    world
        .office
        .reschedule(stays, now() + HOUR_MS, now() + 2 * HOUR_MS)?;

    // Ann's phone comes back online and syncs (the same store, recording what it is sent).
    let recorder = std::sync::Arc::new(AnswerRecorder {
        inner: caresync_core::http_transport::HttpTransport::new(&world.server.url),
        answers: Default::default(),
    });
    let client =
        caresync_core::SyncClient::with_protocol(ann.store.clone(), recorder.clone(), phone_protocol());
    let summary = client.sync_now()?;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    // Her clock-in, made while assigned, is accepted and flagged.
    let events = world.office.visit(visit)?["events"].clone();
    assert_eq!(events[0]["event_id"], Value::String(clock_in.id.to_string()));
    assert!(
        events[0]["flags"]
            .as_str()
            .unwrap_or("")
            .contains("reassigned_before_sync"),
        "{events}"
    );
    // She was sent nothing of the document: no change for the visit, no manifest entry.
    let answers = recorder.answers.lock().map_err(|_| "poisoned")?.clone();
    assert!(!answers.is_empty());
    for body in &answers {
        // The answer's visits with their changes, its manifest, and its bytes uncompressed.
        let (visits, manifest, plain): (Vec<(VisitId, usize)>, Vec<VisitId>, Vec<u8>) =
            if v2::is_version2(body) {
                let resp: v2::Response = v2::decode(body)?;
                (
                    resp.visits
                        .iter()
                        .map(|p| (p.visit_id, p.changes.len()))
                        .collect(),
                    resp.manifest.iter().map(|e| e.visit_id).collect(),
                    to_cbor(&resp),
                )
            } else {
                let resp: SyncResponse = from_cbor(body)?;
                let mut visits = vec![];
                for m in &resp.visits {
                    visits.push((
                        m.visit_id,
                        automerge::sync::Message::decode(&m.message)?.changes.len(),
                    ));
                }
                (
                    visits,
                    resp.manifest.iter().map(|e| e.visit_id).collect(),
                    body.clone(),
                )
            };
        for (_, changes) in visits.iter().filter(|(v, _)| *v == visit) {
            assert_eq!(*changes, 0, "changes sent to a carer taken off the visit");
        }
        assert!(manifest.iter().all(|v| *v != visit));
        assert!(
            !plain.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the note reached Ann's phone"
        );
    }
    // Acknowledged and no longer hers: the visit leaves her phone; her other visit stays and
    // still gets the office's news.
    assert_eq!(summary.pending_after, 0);
    assert_eq!(ann.store.visit_ids()?, vec![stays]);
    assert_eq!(ann.heads(stays)?, server_heads(&world, stays)?);

    // Bob, now assigned, gets everything: Ann's clock-in and the note.
    bob.sync()?;
    let on_bob = bob.store.visit(visit)?.visit;
    assert_eq!(on_bob.events.len(), 1);
    assert!(on_bob.notes.iter().any(|n| n.text == secret));
    Ok(())
}
