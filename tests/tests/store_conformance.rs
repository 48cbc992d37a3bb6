//! One conformance suite for the server's storage trait, run against the embedded SQLite store
//! and against PostgreSQL (a private cluster started for the test). Each behaviour is a function
//! taking `&dyn ServerStore` and gets a fresh, empty store.

use caresync_core::domain::*;
use caresync_server::store::postgres::PostgresStore;
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::*;
use caresync_tests::pg::PgCluster;

type Behaviour = fn(&dyn ServerStore);

const BEHAVIOURS: &[(&str, Behaviour)] = &[
    ("people", people),
    ("api tokens and revocation", tokens_and_revocation),
    ("enrolment codes are used once and expire", enrolment),
    (
        "a code redeemed by many at once enrols one device",
        concurrent_redemption,
    ),
    ("chunks are idempotent by hash", chunks_idempotent),
    ("compaction removes only the merged chunks", compaction),
    ("sync state upserts", sync_state),
    ("visit rows and assignment history", visit_rows_and_assignments),
    (
        "events are inserted once, keeping the first received_at",
        events_insert_once,
    ),
    ("amendments", amendments),
    ("report queries", report_queries),
    (
        "reconciliation and continuity from the per-client sums are those of the fact rows",
        client_sums,
    ),
    (
        "a rescheduled visit's events and amendments move with it",
        rescheduled_visit_moves_its_rows,
    ),
    ("reference data", reference_data),
    (
        "a rules change racing its contract's commits leaves every visit judged by the rules that stand",
        rules_change_races_commits,
    ),
    (
        "a client's move racing their visits' commits leaves every visit judged by where they live",
        client_move_races_commits,
    ),
    (
        "sign-in sees revoked and expiring tokens as stored",
        sign_in_as_stored,
    ),
    ("rotation replaces a person's tokens in one step", token_rotation),
    (
        "deactivation stops tokens, phones and codes at once",
        deactivation,
    ),
    (
        "codes are owned, and locking spends only unused ones",
        code_owner_and_lock,
    ),
    ("a client's carers are those now assigned", client_carers),
    ("dashboard sessions", web_sessions),
    (
        "alerts are raised once, changed only from the version read, history appended",
        alerts_once_and_versioned,
    ),
    ("a lease has one holder until it lapses", leases),
    (
        "reviews racing on one visit raise its alert once",
        racing_reviews_raise_once,
    ),
    (
        "escalations open once per client, contract and week, and are raised once",
        escalations_once,
    ),
    (
        "a token's standing changes at the next sign-in",
        sign_in_sees_changes_at_once,
    ),
];

fn run_all(mut fresh: impl FnMut() -> Box<dyn ServerStore>) {
    for (name, behaviour) in BEHAVIOURS {
        eprintln!("behaviour: {name}");
        let store = fresh();
        behaviour(store.as_ref());
    }
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut n = 0;
    run_all(|| {
        n += 1;
        let store = SqliteStore::open(&dir.path().join(format!("store-{n}.db"))).expect("open sqlite");
        Box::new(store)
    });
}

#[test]
fn postgres_store_conforms() {
    let cluster = PgCluster::start();
    run_all(|| {
        let store = PostgresStore::open(&cluster.create_database()).expect("open postgres");
        Box::new(store)
    });
    // A pool of one connection: concurrent callers wait their turn instead of failing.
    let small = PostgresStore::open_with_pool_size(&cluster.create_database(), 1).expect("open");
    concurrent_redemption(&small);
    // A database from before token expiry (schema 1): live tokens get 90 days from the upgrade.
    let url = cluster.create_database();
    let store = PostgresStore::open(&url).expect("open");
    let office = person(&store, "Office", Role::Office);
    store.add_api_token(office.id, "live", 1, None).expect("token");
    store.add_api_token(office.id, "revoked", 1, None).expect("token");
    store.revoke_api_token("revoked", 5).expect("revoke");
    drop(store);
    let mut raw = ::postgres::Client::connect(&url, ::postgres::NoTls).expect("connect");
    raw.batch_execute(
        "ALTER TABLE api_tokens DROP COLUMN expires_at;
         DROP INDEX api_tokens_by_person, devices_by_person, enrolment_codes_by_person, visits_by_client;
         DROP TABLE web_sessions;
         UPDATE caresync_schema SET version = 1;",
    )
    .expect("back to schema 1");
    drop(raw);
    let before = caresync_core::clock::system_now();
    let store = PostgresStore::open(&url).expect("upgrade");
    let live = store.sign_in("live").expect("lookup").expect("kept");
    let expires = live.expires_at.expect("an expiry");
    assert!((before - 1_000 + 90 * DAY_MS..before + 60_000 + 90 * DAY_MS).contains(&expires));
    let revoked = store.sign_in("revoked").expect("lookup").expect("kept");
    assert_eq!((revoked.revoked_at, revoked.expires_at), (Some(5), None));
    // Opening an already-migrated database again is harmless.
    let url = cluster.create_database();
    PostgresStore::open(&url).expect("first open");
    let store = PostgresStore::open(&url).expect("second open");
    assert!(store.people().expect("people").is_empty());
}

/// The one check of PostgreSQL's numbered files: a database made at schema 1 with rows in it and
/// migrated one step at a time ends with exactly the columns and indexes of a fresh one.
#[test]
fn postgres_migrated_step_by_step_has_the_fresh_schema() {
    use caresync_server::store::postgres::SCHEMA_VERSION;
    let cluster = PgCluster::start();
    let old = cluster.create_database();
    PostgresStore::migrate_to(&old, 1).expect("schema 1");
    let (visit, person, contract) = (VisitId::new(), PersonId::new(), ContractId::new());
    let rules = serde_json::to_string(&caresync_core::metrics::ContractRules::default()).expect("rules");
    let mut raw = ::postgres::Client::connect(&old, ::postgres::NoTls).expect("connect");
    raw.batch_execute(&format!(
        "INSERT INTO people VALUES ('{person}', 'Ann', 'carer', NULL, TRUE);
         INSERT INTO api_tokens VALUES ('token', '{person}', 1, NULL);
         INSERT INTO contracts VALUES ('{contract}', 'Spot', 'County', 'spot', '{rules}');
         INSERT INTO visits VALUES ('{visit}', '{c}', '{contract}', '{person}', 500000, 600000,
             'scheduled', NULL, '', 1);
         INSERT INTO assignments VALUES ('{visit}', '{person}', TRUE);
         INSERT INTO clock_events (event_id, visit_id, carer_id, device_id, kind, device_time,
             trusted_time, received_at, method)
         VALUES ('{e}', '{visit}', '{person}', '{d}', 'clock_in', 500000, 500000, 500001, 'app');",
        c = ClientId::new(),
        e = EventId::new(),
        d = DeviceId::new(),
    ))
    .expect("rows at schema 1");
    for version in 2..=SCHEMA_VERSION {
        PostgresStore::migrate_to(&old, version).expect("one step");
        let at: i32 = raw
            .query_one("SELECT version FROM caresync_schema", &[])
            .expect("version")
            .get(0);
        assert_eq!(at as usize, version);
    }
    let migrated = PostgresStore::open(&old).expect("open migrated");
    let fresh_url = cluster.create_database();
    drop(PostgresStore::open(&fresh_url).expect("open fresh"));
    let mut fresh = ::postgres::Client::connect(&fresh_url, ::postgres::NoTls).expect("connect");
    let schema = pg_schema(&mut raw);
    assert_eq!(schema, pg_schema(&mut fresh));
    assert!(schema.iter().any(|s| s.starts_with("leases.")), "{schema:?}");
    assert_eq!(
        migrated.visit_row(visit).expect("read").map(|v| v.contract_id),
        Some(contract)
    );
    let facts: i64 = raw
        .query_one("SELECT COUNT(*) FROM visit_facts", &[])
        .expect("count")
        .get(0);
    assert_eq!(facts, 1, "the backfill judged the visit");
}

/// Columns (type, nullability, default, position) and index definitions of the public schema.
fn pg_schema(client: &mut ::postgres::Client) -> Vec<String> {
    let columns = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text,
                    COALESCE(column_default::text, ''), ordinal_position::int
             FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY table_name, column_name",
            &[],
        )
        .expect("columns");
    let indexes = client
        .query(
            "SELECT indexname::text, indexdef::text FROM pg_indexes WHERE schemaname = 'public'
             ORDER BY indexname",
            &[],
        )
        .expect("indexes");
    let mut out: Vec<String> = columns
        .iter()
        .map(|r| {
            format!(
                "{}.{}: {} nullable={} default={} position={}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3),
                r.get::<_, String>(4),
                r.get::<_, i32>(5)
            )
        })
        .collect();
    out.extend(
        indexes
            .iter()
            .map(|r| format!("index {}: {}", r.get::<_, String>(0), r.get::<_, String>(1))),
    );
    out
}

// ---- fixtures ---------------------------------------------------------------------------------

fn person(store: &dyn ServerStore, name: &str, role: Role) -> Person {
    let p = Person {
        id: PersonId::new(),
        name: name.into(),
        role,
        team_id: None,
        active: true,
    };
    store.create_person(&p).expect("create person");
    p
}

fn chunk(bytes: &[u8]) -> Chunk {
    use sha2::Digest;
    Chunk {
        hash: hex::encode(sha2::Sha256::digest(bytes)),
        bytes: bytes.to_vec(),
    }
}

fn visit_row(visit: VisitId, carers: Vec<PersonId>, start: Millis) -> VisitRow {
    VisitRow {
        visit_id: visit,
        client_id: ClientId::new(),
        contract_id: ContractId::new(),
        carers,
        planned_start: start,
        planned_end: start + 3_600_000,
        status: VisitStatus::Scheduled,
        chargeable: None,
        heads: caresync_core::Heads::from_bytes(&[[0xaa; 32], [0xbb; 32]]),
        updated_at: start - 1000,
    }
}

fn commit(visit: VisitRow) -> VisitCommit {
    VisitCommit {
        visit,
        chunk: None,
        new_events: vec![],
        new_amendments: vec![],
        sync_state: None,
    }
}

fn event(visit: VisitId, carer: PersonId, kind: ClockKind, at: Millis, received_at: Millis) -> EventRow {
    EventRow {
        event_id: EventId::new(),
        visit_id: visit,
        carer_id: carer,
        device_id: DeviceId::new(),
        kind,
        device_time: at,
        clock_offset_ms: Some(-1500),
        offset_measured_at: Some(at - 60_000),
        trusted_time: at - 1500,
        received_at,
        method: ClockMethod::Manual,
        reason: Some(ReasonCode::NoSignalAtDoor),
        location: Some(Location {
            lat: 51.5,
            lon: -0.12,
            accuracy_m: 8.5,
        }),
        flags: caresync_core::metrics::EventFlag::ClockSkew.into(),
    }
}

// ---- behaviours -----------------------------------------------------------------------------

fn people(store: &dyn ServerStore) {
    let team = Team {
        id: TeamId::new(),
        name: "North".into(),
    };
    store.create_team(&team).expect("team");
    let mut ann = person(store, "Ann", Role::Carer);
    person(store, "Bob", Role::Office);
    assert_eq!(store.person(ann.id).expect("person"), Some(ann.clone()));
    assert_eq!(store.person(PersonId::new()).expect("person"), None);
    // Creating again updates (name, team, active).
    ann.team_id = Some(team.id);
    ann.active = false;
    ann.name = "Ann B".into();
    store.create_person(&ann).expect("update");
    let all = store.people().expect("people");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], ann, "ordered by name");
    assert_eq!(all[1].role, Role::Office);
}

fn tokens_and_revocation(store: &dyn ServerStore) {
    let office = person(store, "Office", Role::Office);
    store
        .add_api_token(office.id, "tok-office", 1, None)
        .expect("token");
    let p = store
        .principal_for_token("tok-office")
        .expect("lookup")
        .expect("known");
    assert_eq!(p.person, office);
    assert_eq!(p.device_id, None);
    assert!(store.principal_for_token("nope").expect("lookup").is_none());
    assert!(
        store.add_api_token(office.id, "tok-office", 2, None).is_err(),
        "token hashes are unique"
    );

    let carer = person(store, "Cat", Role::Carer);
    store.add_enrolment_code(carer.id, "code", 1_000).expect("code");
    let device = DeviceId::new();
    store
        .redeem_enrolment_code("code", 10, device, "Cat's phone", "tok-device")
        .expect("redeem")
        .expect("valid");
    let p = store
        .principal_for_token("tok-device")
        .expect("lookup")
        .expect("known");
    assert_eq!((p.person.id, p.device_id), (carer.id, Some(device)));
    store.device_synced(device, 50).expect("synced");
    let devices = store.devices().expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].last_sync_at, Some(50));
    assert_eq!(devices[0].enrolled_at, 10);

    assert!(store.revoke_device(device, 100).expect("revoke"));
    assert!(store.revoke_device(device, 200).expect("revoke again"));
    assert!(!store.revoke_device(DeviceId::new(), 100).expect("unknown"));
    assert!(store.principal_for_token("tok-device").expect("lookup").is_none());
    assert_eq!(
        store.devices().expect("devices")[0].revoked_at,
        Some(100),
        "first revocation kept"
    );
}

fn enrolment(store: &dyn ServerStore) {
    let carer = person(store, "Dee", Role::Carer);
    store.add_enrolment_code(carer.id, "c1", 1_000).expect("code");
    store.add_enrolment_code(carer.id, "c2", 1_000).expect("code");
    assert_eq!(
        store
            .redeem_enrolment_code("c1", 999, DeviceId::new(), "p", "t1")
            .expect("redeem"),
        Some(carer.id)
    );
    assert_eq!(
        store
            .redeem_enrolment_code("c1", 999, DeviceId::new(), "p", "t2")
            .expect("redeem"),
        None,
        "used once"
    );
    assert_eq!(
        store
            .redeem_enrolment_code("c2", 1_000, DeviceId::new(), "p", "t3")
            .expect("redeem"),
        None,
        "expired at expires_at"
    );
    assert_eq!(
        store
            .redeem_enrolment_code("unknown", 1, DeviceId::new(), "p", "t4")
            .expect("redeem"),
        None
    );
    assert_eq!(store.devices().expect("devices").len(), 1);
}

fn concurrent_redemption(store: &dyn ServerStore) {
    let carer = person(store, "Eve", Role::Carer);
    store.add_enrolment_code(carer.id, "shared", 1_000).expect("code");
    let winners = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    store
                        .redeem_enrolment_code("shared", 10, DeviceId::new(), "p", &format!("tok-{i}"))
                        .expect("redeem")
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("thread"))
            .count()
    });
    assert_eq!(winners, 1);
    assert_eq!(store.devices().expect("devices").len(), 1);
}

fn chunks_idempotent(store: &dyn ServerStore) {
    let visit = VisitId::new();
    assert!(store.visit_chunks(visit).expect("chunks").is_empty());
    let row = visit_row(visit, vec![PersonId::new()], 10_000);
    for bytes in [&b"one"[..], b"two", b"one"] {
        store
            .commit_visit(&VisitCommit {
                chunk: Some(chunk(bytes)),
                ..commit(row.clone())
            })
            .expect("commit");
    }
    let chunks = store.visit_chunks(visit).expect("chunks");
    assert_eq!(
        chunks,
        vec![chunk(b"one"), chunk(b"two")],
        "oldest first, no duplicate"
    );
    assert_eq!(
        store.visit_chunk_hashes(visit).expect("hashes"),
        vec![chunk(b"one").hash, chunk(b"two").hash]
    );
}

fn compaction(store: &dyn ServerStore) {
    let visit = VisitId::new();
    let row = visit_row(visit, vec![PersonId::new()], 10_000);
    for bytes in [&b"a"[..], b"b", b"c"] {
        store
            .commit_visit(&VisitCommit {
                chunk: Some(chunk(bytes)),
                ..commit(row.clone())
            })
            .expect("commit");
    }
    let merged = store.visit_chunk_hashes(visit).expect("hashes");
    // Written after the snapshot was taken, by another writer: must survive.
    store
        .commit_visit(&VisitCommit {
            chunk: Some(chunk(b"late")),
            ..commit(row.clone())
        })
        .expect("commit");
    store
        .compact_visit(visit, &merged, &chunk(b"snapshot"))
        .expect("compact");
    let hashes = store.visit_chunk_hashes(visit).expect("hashes");
    assert_eq!(hashes.len(), 2);
    assert!(hashes.contains(&chunk(b"snapshot").hash));
    assert!(hashes.contains(&chunk(b"late").hash));
    // Compacting again with a list that names the snapshot itself keeps the snapshot.
    let all = store.visit_chunk_hashes(visit).expect("hashes");
    store
        .compact_visit(visit, &all, &chunk(b"snapshot"))
        .expect("compact");
    assert_eq!(
        store.visit_chunks(visit).expect("chunks"),
        vec![chunk(b"snapshot")]
    );
}

fn sync_state(store: &dyn ServerStore) {
    let (visit, device) = (VisitId::new(), DeviceId::new());
    assert_eq!(store.sync_state(device, visit).expect("state"), None);
    let row = visit_row(visit, vec![PersonId::new()], 10_000);
    for state in [vec![1u8, 2], vec![3u8]] {
        store
            .commit_visit(&VisitCommit {
                sync_state: Some((device, Some(state))),
                ..commit(row.clone())
            })
            .expect("commit");
    }
    assert_eq!(store.sync_state(device, visit).expect("state"), Some(vec![3u8]));
    assert_eq!(store.sync_state(DeviceId::new(), visit).expect("state"), None);
    // A protocol 2 commit names the device and keeps no state: the protocol 1 state stands.
    store
        .commit_visit(&VisitCommit {
            sync_state: Some((device, None)),
            ..commit(row)
        })
        .expect("commit");
    assert_eq!(store.sync_state(device, visit).expect("state"), Some(vec![3u8]));
}

fn visit_rows_and_assignments(store: &dyn ServerStore) {
    let (a, b, c) = (PersonId::new(), PersonId::new(), PersonId::new());
    let visit = VisitId::new();
    let mut row = visit_row(visit, vec![a, b], 50_000);
    store.commit_visit(&commit(row.clone())).expect("commit");
    assert_eq!(store.visit_row(visit).expect("row"), Some(row.clone()));
    assert_eq!(store.visit_row(VisitId::new()).expect("row"), None);
    // Reassign b -> c and cancel.
    row.carers = vec![a, c];
    row.status = VisitStatus::Cancelled;
    row.chargeable = Some(true);
    row.heads = caresync_core::Heads::from_bytes(&[[0xcc; 32]]);
    store.commit_visit(&commit(row.clone())).expect("commit");
    assert_eq!(store.visit_row(visit).expect("row"), Some(row.clone()));
    let ids = |v: Vec<VisitRow>| v.into_iter().map(|r| r.visit_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.visits_for_carer(c, 0, 100_000).expect("c")),
        vec![visit]
    );
    assert!(
        store.visits_for_carer(b, 0, 100_000).expect("b").is_empty(),
        "no longer assigned"
    );
    assert!(
        store.visits_for_carer(a, 50_001, 100_000).expect("a").is_empty(),
        "window [from, to)"
    );
    assert_eq!(
        ids(store.visits_for_carer(a, 50_000, 50_001).expect("a")),
        vec![visit]
    );
    assert!(store.was_ever_assigned(visit, b).expect("b"), "history kept");
    assert!(store.was_ever_assigned(visit, c).expect("c"));
    assert!(!store.was_ever_assigned(visit, PersonId::new()).expect("stranger"));
    // Back to b alone, moved to another client, contract and time: a commit writes only what
    // changed (the indexed columns and the assignments), so each of these must still land.
    row.carers = vec![b];
    row.client_id = ClientId::new();
    row.contract_id = ContractId::new();
    row.planned_start = 70_000;
    row.planned_end = 73_600;
    store.commit_visit(&commit(row.clone())).expect("commit");
    assert_eq!(store.visit_row(visit).expect("row"), Some(row.clone()));
    assert_eq!(
        ids(store.visits_for_carer(b, 70_000, 70_001).expect("b")),
        vec![visit],
        "assigned again"
    );
    for gone in [a, c] {
        assert!(store.visits_for_carer(gone, 0, 100_000).expect("gone").is_empty());
    }
    assert!(
        store.visits_for_carer(b, 50_000, 50_001).expect("b").is_empty(),
        "found at its new time only"
    );
    // The same commit again changes nothing.
    store.commit_visit(&commit(row.clone())).expect("commit");
    assert_eq!(store.visit_row(visit).expect("row"), Some(row));
    assert_eq!(
        ids(store.visits_for_carer(b, 0, 100_000).expect("b")),
        vec![visit]
    );
}

fn events_insert_once(store: &dyn ServerStore) {
    let carer = PersonId::new();
    let visit = VisitId::new();
    let row = visit_row(visit, vec![carer], 10_000);
    let first = event(visit, carer, ClockKind::ClockIn, 10_000, 11_000);
    let mut again = first.clone();
    again.received_at = 99_000;
    let mut out = event(visit, carer, ClockKind::ClockOut, 13_000, 14_000);
    out.location = None;
    out.reason = None;
    out.clock_offset_ms = None;
    out.offset_measured_at = None;
    out.method = ClockMethod::Nfc;
    out.flags = Default::default();
    store
        .commit_visit(&VisitCommit {
            new_events: vec![first.clone()],
            ..commit(row.clone())
        })
        .expect("commit");
    store
        .commit_visit(&VisitCommit {
            new_events: vec![again, out.clone()],
            ..commit(row.clone())
        })
        .expect("commit");
    assert_eq!(store.events_for_visit(visit).expect("events"), vec![first, out]);
    assert_eq!(store.count_events().expect("count"), 2);
}

fn amendments(store: &dyn ServerStore) {
    let carer = PersonId::new();
    let visit = VisitId::new();
    let row = visit_row(visit, vec![carer], 10_000);
    let a = AmendmentRow {
        amendment_id: AmendmentId::new(),
        visit_id: visit,
        author_id: PersonId::new(),
        carer_id: carer,
        time: AmendedTime::ClockOut,
        corrected_time: 12_345,
        reason: ReasonCode::ForgotToClock,
        written_at: 20_000,
    };
    let mut again = a.clone();
    again.corrected_time = 1;
    for batch in [vec![a.clone()], vec![again]] {
        store
            .commit_visit(&VisitCommit {
                new_amendments: batch,
                ..commit(row.clone())
            })
            .expect("commit");
    }
    assert_eq!(
        store.amendments_planned_between(0, 20_000).expect("amendments"),
        vec![a]
    );
}

fn report_queries(store: &dyn ServerStore) {
    let carer = PersonId::new();
    let inside = VisitId::new();
    let outside = VisitId::new();
    let e1 = event(inside, carer, ClockKind::ClockIn, 100_000, 100_500);
    let e2 = event(outside, carer, ClockKind::ClockIn, 200_000, 200_500);
    store
        .commit_visit(&VisitCommit {
            new_events: vec![e1.clone()],
            ..commit(visit_row(inside, vec![carer], 100_000))
        })
        .expect("commit");
    store
        .commit_visit(&VisitCommit {
            new_events: vec![e2],
            ..commit(visit_row(outside, vec![carer], 200_000))
        })
        .expect("commit");
    let rows = store.visits_planned_between(100_000, 200_000).expect("visits");
    assert_eq!(rows.iter().map(|r| r.visit_id).collect::<Vec<_>>(), vec![inside]);
    assert_eq!(
        store.events_planned_between(100_000, 200_000).expect("events"),
        vec![e1]
    );
    assert_eq!(store.visits_planned_between(0, 300_000).expect("visits").len(), 2);
    assert_eq!(store.events_planned_between(0, 300_000).expect("events").len(), 2);
    assert!(store
        .amendments_planned_between(0, 300_000)
        .expect("amendments")
        .is_empty());
}

/// London midnight of a day in 2026.
fn london(month: u32, day: u32) -> Millis {
    use chrono::TimeZone;
    let d = chrono::NaiveDate::from_ymd_opt(2026, month, day).expect("date");
    chrono_tz::Europe::London
        .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("time"))
        .earliest()
        .expect("exists")
        .timestamp_millis()
}

/// A month (1 March 2026 is a Sunday; the clocks go forward on the 29th) whose visits are
/// rescheduled across weeks, cancelled, reassigned and doubled up, commit by commit. The reports
/// read the per-client sums where the range is on London midnights and nothing changed after
/// `as_of`; the same range shifted by 1 ms (no visit starts at midnight) sums the fact rows.
/// Both must agree, now and as of each earlier commit, and with figures counted by hand.
fn client_sums(store: &dyn ServerStore) {
    use caresync_core::metrics::ContinuityRow;
    use caresync_server::services::reports::{self, Span};
    let (client, other) = (ClientId::new(), ClientId::new());
    let (k1, k2) = (ContractId::new(), ContractId::new());
    let (c1, c2, c3) = (PersonId::new(), PersonId::new(), PersonId::new());
    let at = |month: u32, day: u32, hour: i64| london(month, day) + hour * 3_600_000;
    let mut t = london(2, 20);
    let mut instants = vec![];
    let put = |row: VisitRow, came: &[PersonId], t: &mut Millis| {
        *t += 60_000;
        let events = came
            .iter()
            .map(|c| event(row.visit_id, *c, ClockKind::ClockIn, row.planned_start, *t))
            .collect();
        store
            .commit_visit(&VisitCommit {
                new_events: events,
                ..commit(VisitRow {
                    updated_at: *t,
                    ..row
                })
            })
            .expect("commit");
        *t
    };
    let visit = |id: VisitId, contract: ContractId, carers: Vec<PersonId>, start: Millis| VisitRow {
        client_id: client,
        contract_id: contract,
        ..visit_row(id, carers, start)
    };
    let (v1, v2, v3, v4, v5) = (
        VisitId::new(),
        VisitId::new(),
        VisitId::new(),
        VisitId::new(),
        VisitId::new(),
    );
    // Sunday 1st (a partial week), a double-up both came to.
    instants.push(put(visit(v2, k1, vec![c1, c2], at(3, 1, 9)), &[c1, c2], &mut t));
    // Monday 2nd, c1 came.
    instants.push(put(visit(v1, k1, vec![c1], at(3, 2, 10)), &[c1], &mut t));
    // Sunday 29th (the clocks go forward), c2 assigned, not come.
    instants.push(put(visit(v4, k1, vec![c2], at(3, 29, 12)), &[], &mut t));
    // Tuesday 31st after midnight BST (Monday 23:30 UTC), on the other contract.
    instants.push(put(
        visit(v3, k2, vec![c3], at(3, 31, 0) + 1_800_000),
        &[c3],
        &mut t,
    ));
    // Another client's visit, and one outside the month.
    let mut row = visit(v5, k2, vec![c3], at(3, 10, 8));
    row.client_id = other;
    instants.push(put(row, &[c3], &mut t));
    instants.push(put(
        visit(VisitId::new(), k1, vec![c1], at(4, 1, 8)),
        &[c1],
        &mut t,
    ));
    // v1 moves to Monday 30th (another week), v3 is cancelled, v4 goes to c3 and c1.
    let mut row = visit(v1, k1, vec![c1], at(3, 30, 10));
    row.planned_end = row.planned_start + 1_800_000;
    instants.push(put(row, &[c1], &mut t));
    let mut row = visit(v3, k2, vec![c3], at(3, 31, 0) + 1_800_000);
    row.status = VisitStatus::Cancelled;
    row.chargeable = Some(true);
    instants.push(put(row, &[c3], &mut t));
    instants.push(put(visit(v4, k1, vec![c3, c1], at(3, 29, 12)), &[], &mut t));

    let tz = chrono_tz::Europe::London;
    let check = |from: Millis, to: Millis, as_of: Millis| {
        let span = Span { from, to, as_of, tz };
        let rows = Span {
            from: from + 1,
            to: to + 1,
            ..span
        };
        let sums = reports::reconciliation(store, span).expect("reconciliation");
        assert_eq!(
            sums,
            reports::reconciliation(store, rows).expect("reconciliation"),
            "as of {as_of}"
        );
        let sums = reports::continuity(store, span).expect("continuity");
        assert_eq!(
            sums,
            reports::continuity(store, rows).expect("continuity"),
            "as of {as_of}"
        );
        sums
    };
    let now = t + 1;
    for as_of in instants.iter().flat_map(|i| [i - 1, *i]).chain([now]) {
        for (from, to) in [
            (london(3, 1), london(4, 1)),
            (london(3, 2), london(3, 30)),
            (london(3, 29), london(4, 1)),
            (london(2, 23), london(4, 6)),
        ] {
            check(from, to, as_of);
        }
    }
    // By hand, now.
    let weeks: Vec<(String, ClientId, u64, u64, u64)> = check(london(3, 1), london(4, 1), now)
        .into_iter()
        .map(|r: ContinuityRow| {
            (
                r.week_start,
                r.client_id,
                r.visits,
                r.distinct_carers,
                r.distinct_carers_scheduled,
            )
        })
        .collect();
    let mut expected = vec![
        ("2026-02-23".to_string(), client, 1, 2, 2),
        ("2026-03-09".to_string(), other, 1, 1, 1),
        ("2026-03-23".to_string(), client, 1, 0, 2),
        ("2026-03-30".to_string(), client, 1, 1, 1),
    ];
    expected.sort_by_key(|e| (e.0.clone(), e.1));
    assert_eq!(weeks, expected);
    let recon = reports::reconciliation(
        store,
        Span {
            from: london(3, 1),
            to: london(4, 1),
            as_of: now,
            tz,
        },
    )
    .expect("reconciliation");
    let last: Vec<(String, ContractId, u64, u64, i64)> = recon
        .iter()
        .filter(|r| r.week_start == "2026-03-30")
        .map(|r| {
            (
                r.week_start.clone(),
                r.contract_id,
                r.visits,
                r.cancelled,
                r.authorised_minutes,
            )
        })
        .collect();
    let mut expected = vec![
        ("2026-03-30".to_string(), k1, 1, 0, 30),
        ("2026-03-30".to_string(), k2, 1, 1, 0),
    ];
    expected.sort_by_key(|e| e.1);
    let mut last = last;
    last.sort_by_key(|e| e.1);
    assert_eq!(last, expected);
}

fn rescheduled_visit_moves_its_rows(store: &dyn ServerStore) {
    let carer = PersonId::new();
    let visit = VisitId::new();
    let e = event(visit, carer, ClockKind::ClockIn, 100_000, 100_500);
    let a = AmendmentRow {
        amendment_id: AmendmentId::new(),
        visit_id: visit,
        author_id: PersonId::new(),
        carer_id: carer,
        time: AmendedTime::ClockIn,
        corrected_time: 100_000,
        reason: ReasonCode::ForgotToClock,
        written_at: 150_000,
    };
    store
        .commit_visit(&VisitCommit {
            new_events: vec![e.clone()],
            new_amendments: vec![a.clone()],
            ..commit(visit_row(visit, vec![carer], 100_000))
        })
        .expect("commit");
    // The office moves the visit to another day; nothing new arrives with the change.
    store
        .commit_visit(&commit(visit_row(visit, vec![carer], 900_000)))
        .expect("reschedule");
    assert!(store
        .events_planned_between(0, 500_000)
        .expect("events")
        .is_empty());
    assert!(store
        .amendments_planned_between(0, 500_000)
        .expect("amendments")
        .is_empty());
    assert_eq!(
        store.events_planned_between(500_000, 1_000_000).expect("events"),
        vec![e]
    );
    assert_eq!(
        store
            .amendments_planned_between(500_000, 1_000_000)
            .expect("amendments"),
        vec![a]
    );
}

fn reference_data(store: &dyn ServerStore) {
    let t = Team {
        id: TeamId::new(),
        name: "South".into(),
    };
    store.create_team(&t).expect("team");
    store
        .create_team(&Team {
            name: "South East".into(),
            ..t.clone()
        })
        .expect("rename");
    assert_eq!(store.teams().expect("teams")[0].name, "South East");

    let mut client = Client {
        id: ClientId::new(),
        name: "Mrs Jones".into(),
        location: Some(Location {
            lat: 52.1,
            lon: -1.5,
            accuracy_m: 0.0,
        }),
        tag_ids: vec!["tag-1".into(), "tag-2".into()],
    };
    store.upsert_client(&client).expect("client");
    assert_eq!(store.client(client.id).expect("client"), Some(client.clone()));
    client.location = None;
    client.tag_ids = vec![];
    store.upsert_client(&client).expect("update");
    assert_eq!(store.clients().expect("clients"), vec![client.clone()]);
    assert_eq!(store.client(ClientId::new()).expect("client"), None);

    let mut contract = Contract {
        id: ContractId::new(),
        name: "Framework A".into(),
        commissioner: "County Council".into(),
        model: CommissioningModel::Framework,
        rules: serde_json::json!({ "late_after_min": 10, "kpi": { "max_late_pct": 5.0 } }),
    };
    store.upsert_contract(&contract).expect("contract");
    assert_eq!(
        store.contract(contract.id).expect("contract"),
        Some(contract.clone())
    );
    contract.model = CommissioningModel::Spot;
    store.upsert_contract(&contract).expect("update");
    assert_eq!(store.contracts().expect("contracts"), vec![contract]);
}

/// Commits judge a visit by its contract's rules while a rules change judges the contract's
/// visits again: whatever the interleaving, each visit must end judged by the rules that stand.
/// Judging and a rules change wait for each other (on PostgreSQL, advisory locks taken in
/// `refresh_facts` and `upsert_contract_at`); without that, a commit that read the old rules and
/// wrote after the change's own judging left the old verdict standing.
/// The visit's standing facts, as a report reads them.
fn standing_facts(
    store: &dyn ServerStore,
    visit: VisitId,
) -> Option<caresync_core::metrics::facts::VisitFacts> {
    let snapshot = store
        .report_snapshot(&caresync_server::store::facts::SnapshotQuery {
            from: Millis::MIN,
            to: Millis::MAX,
            as_of: Millis::MAX,
            visits: true,
            visit: Some(visit),
            ..Default::default()
        })
        .expect("snapshot");
    snapshot.visits.into_iter().next()
}

/// `change` made while two threads commit `rows` over and over (each at least four times),
/// its result once they have stopped: a failure raised while they still ran would leave the
/// scope waiting for them for ever.
fn race_commits<T>(
    store: &dyn ServerStore,
    rows: &[VisitRow],
    change: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for half in [0, 1] {
            let stop = &stop;
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 4 {
                    for row in rows.iter().skip(half).step_by(2) {
                        n += 1;
                        let row = VisitRow {
                            updated_at: row.updated_at + n,
                            ..row.clone()
                        };
                        store.commit_visit(&commit(row)).expect("racing commit");
                    }
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let changed = change();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        changed
    })
}

fn rules_change_races_commits(store: &dyn ServerStore) {
    use caresync_core::metrics::Punctuality;
    let mut contract = Contract {
        id: ContractId::new(),
        name: "Racing".into(),
        commissioner: "County Council".into(),
        model: CommissioningModel::Spot,
        rules: serde_json::json!({ "late_after_min": 10 }),
    };
    store.upsert_contract(&contract).expect("contract");
    let carer = PersonId::new();
    let start: Millis = 1_767_250_800_000;
    let rows: Vec<VisitRow> = (0..6)
        .map(|i| VisitRow {
            contract_id: contract.id,
            ..visit_row(VisitId::new(), vec![carer], start + i * 3_600_000)
        })
        .collect();
    // Each clocks in 20 minutes late: late under 10 minutes' grace, on time under 30.
    for row in &rows {
        let clock_in = event(
            row.visit_id,
            carer,
            ClockKind::ClockIn,
            row.planned_start + 1_200_000,
            1,
        );
        let clock_in = EventRow {
            trusted_time: row.planned_start + 1_200_000,
            flags: Default::default(),
            ..clock_in
        };
        store
            .commit_visit(&VisitCommit {
                new_events: vec![clock_in],
                ..commit(row.clone())
            })
            .expect("first commit");
    }
    let punctuality = |row: &VisitRow| standing_facts(store, row.visit_id).and_then(|f| f.visit.punctuality);
    assert!(rows.iter().all(|r| punctuality(r) == Some(Punctuality::Late)));
    for round in 0..6 {
        let grace = if round % 2 == 0 { 30 } else { 10 };
        contract.rules = serde_json::json!({ "late_after_min": grace });
        race_commits(store, &rows, || store.upsert_contract(&contract)).expect("rules change");
        let expected = if grace == 30 {
            Punctuality::OnTime
        } else {
            Punctuality::Late
        };
        for row in &rows {
            assert_eq!(
                punctuality(row),
                Some(expected),
                "round {round}: visit {} judged by the rules before the change",
                row.visit_id
            );
        }
    }
}

/// Like [`rules_change_races_commits`], for the client's location: whether a clock-in was at
/// the client's home is judged against where they live at commit, so a move racing commits must
/// leave every visit judged by the location that stands (PostgreSQL locks the client's row for
/// that, as it does the contract's).
fn client_move_races_commits(store: &dyn ServerStore) {
    let home = Location {
        lat: 51.5,
        lon: -0.12,
        accuracy_m: 5.0,
    };
    let far = Location {
        lat: 52.5,
        lon: -1.5,
        accuracy_m: 5.0,
    };
    let mut client = Client {
        id: ClientId::new(),
        name: "Moving".into(),
        location: Some(home),
        tag_ids: vec![],
    };
    store.upsert_client(&client).expect("client");
    let carer = PersonId::new();
    let start: Millis = 1_767_250_800_000;
    let rows: Vec<VisitRow> = (0..6)
        .map(|i| VisitRow {
            client_id: client.id,
            ..visit_row(VisitId::new(), vec![carer], start + i * 3_600_000)
        })
        .collect();
    // Each clocks in at the client's first home (the events' location).
    for row in &rows {
        let clock_in = event(row.visit_id, carer, ClockKind::ClockIn, row.planned_start, 1);
        store
            .commit_visit(&VisitCommit {
                new_events: vec![clock_in],
                ..commit(row.clone())
            })
            .expect("first commit");
    }
    let verified =
        |row: &VisitRow| standing_facts(store, row.visit_id).and_then(|f| f.visit.location_verified);
    assert!(rows.iter().all(|r| verified(r) == Some(true)));
    for round in 0..6 {
        let moved_away = round % 2 == 0;
        client.location = Some(if moved_away { far } else { home });
        race_commits(store, &rows, || store.upsert_client(&client)).expect("move");
        for row in &rows {
            assert_eq!(
                verified(row),
                Some(!moved_away),
                "round {round}: visit {} judged by where the client lived before the move",
                row.visit_id
            );
        }
    }
}

fn sign_in_as_stored(store: &dyn ServerStore) {
    let sup = person(store, "Sue", Role::Supervisor);
    store
        .add_api_token(sup.id, "tok-sup", 10, Some(1_000))
        .expect("token");
    let s = store.sign_in("tok-sup").expect("lookup").expect("known");
    assert_eq!(s.principal.person, sup);
    assert_eq!((s.revoked_at, s.expires_at), (None, Some(1_000)));
    assert!(store.sign_in("nope").expect("lookup").is_none());

    assert!(store.revoke_api_token("tok-sup", 50).expect("revoke"));
    assert!(store.revoke_api_token("tok-sup", 60).expect("again"));
    assert!(!store.revoke_api_token("nope", 60).expect("unknown"));
    let s = store.sign_in("tok-sup").expect("lookup").expect("still known");
    assert_eq!(s.revoked_at, Some(50), "first revocation kept");
    assert!(store.principal_for_token("tok-sup").expect("lookup").is_none());

    let carer = person(store, "Cat", Role::Carer);
    store.add_enrolment_code(carer.id, "code", 1_000).expect("code");
    let device = DeviceId::new();
    store
        .redeem_enrolment_code("code", 10, device, "phone", "tok-phone")
        .expect("redeem")
        .expect("valid");
    store.revoke_device(device, 70).expect("revoke");
    let s = store.sign_in("tok-phone").expect("lookup").expect("known");
    assert_eq!(s.principal.device_id, Some(device));
    assert_eq!((s.revoked_at, s.expires_at), (Some(70), None));
}

fn token_rotation(store: &dyn ServerStore) {
    let sup = person(store, "Sue", Role::Supervisor);
    store.add_api_token(sup.id, "old-1", 1, Some(100)).expect("token");
    store.add_api_token(sup.id, "old-2", 2, Some(100)).expect("token");
    let other = person(store, "Oli", Role::Office);
    store
        .add_api_token(other.id, "other", 1, Some(100))
        .expect("token");
    assert!(store
        .rotate_api_token(sup.id, "new", 10, Some(500))
        .expect("rotate"));
    for old in ["old-1", "old-2"] {
        assert_eq!(
            store.sign_in(old).expect("lookup").expect("known").revoked_at,
            Some(10)
        );
    }
    let new = store.sign_in("new").expect("lookup").expect("known");
    assert_eq!((new.revoked_at, new.expires_at), (None, Some(500)));
    assert_eq!(
        store.sign_in("other").expect("lookup").expect("known").revoked_at,
        None
    );
    assert!(!store
        .rotate_api_token(PersonId::new(), "x", 10, None)
        .expect("unknown"));
    assert!(store.sign_in("x").expect("lookup").is_none(), "nothing added");

    assert_eq!(store.revoke_api_tokens(sup.id, 20).expect("revoke all"), 1);
    assert_eq!(store.revoke_api_tokens(sup.id, 30).expect("again"), 0);
    assert_eq!(
        store.sign_in("new").expect("lookup").expect("known").revoked_at,
        Some(20)
    );
}

fn deactivation(store: &dyn ServerStore) {
    let carer = person(store, "Cat", Role::Carer);
    store.add_enrolment_code(carer.id, "c1", 1_000).expect("code");
    store.add_enrolment_code(carer.id, "c2", 1_000).expect("code");
    let device = DeviceId::new();
    store
        .redeem_enrolment_code("c1", 10, device, "phone", "tok-phone")
        .expect("redeem")
        .expect("valid");
    let sup = person(store, "Sue", Role::Supervisor);
    store
        .add_api_token(sup.id, "tok-sup", 1, Some(1_000))
        .expect("token");
    let bystander = person(store, "Bea", Role::Carer);
    store.add_enrolment_code(bystander.id, "c3", 1_000).expect("code");

    assert!(store.deactivate_person(carer.id, 50).expect("deactivate"));
    assert!(store.deactivate_person(sup.id, 50).expect("deactivate"));
    assert!(!store.deactivate_person(PersonId::new(), 50).expect("unknown"));
    assert!(!store.person(carer.id).expect("person").expect("kept").active);
    let phone = store.sign_in("tok-phone").expect("lookup").expect("known");
    assert_eq!(phone.revoked_at, Some(50));
    assert!(!phone.principal.person.active);
    assert_eq!(
        store
            .sign_in("tok-sup")
            .expect("lookup")
            .expect("known")
            .revoked_at,
        Some(50)
    );
    assert_eq!(
        store
            .redeem_enrolment_code("c2", 60, DeviceId::new(), "p", "t2")
            .expect("redeem"),
        None,
        "unused codes are spent"
    );
    assert_eq!(
        store
            .redeem_enrolment_code("c3", 60, DeviceId::new(), "p", "t3")
            .expect("redeem"),
        Some(bystander.id),
        "other people's codes are untouched"
    );
    // Made active again (by an upsert), nothing of theirs comes back.
    let mut again = store.person(carer.id).expect("person").expect("kept");
    again.active = true;
    store.create_person(&again).expect("reactivate");
    assert!(store.principal_for_token("tok-phone").expect("lookup").is_none());
}

fn code_owner_and_lock(store: &dyn ServerStore) {
    let carer = person(store, "Dee", Role::Carer);
    store.add_enrolment_code(carer.id, "used", 1_000).expect("code");
    store.add_enrolment_code(carer.id, "fresh", 1_000).expect("code");
    store
        .redeem_enrolment_code("used", 10, DeviceId::new(), "p", "t1")
        .expect("redeem")
        .expect("valid");
    assert_eq!(store.enrolment_code_owner("used").expect("owner"), Some(carer.id));
    assert_eq!(
        store.enrolment_code_owner("fresh").expect("owner"),
        Some(carer.id)
    );
    assert_eq!(store.enrolment_code_owner("nope").expect("owner"), None);
    assert_eq!(
        store.lock_enrolment_codes(carer.id, 20).expect("lock"),
        1,
        "only the unused one"
    );
    assert_eq!(
        store
            .redeem_enrolment_code("fresh", 30, DeviceId::new(), "p", "t2")
            .expect("redeem"),
        None
    );
    assert_eq!(store.devices().expect("devices").len(), 1);
}

fn client_carers(store: &dyn ServerStore) {
    let (ann, bob, cat) = (PersonId::new(), PersonId::new(), PersonId::new());
    let client = ClientId::new();
    let mut v1 = visit_row(VisitId::new(), vec![ann], 1_000);
    v1.client_id = client;
    store.commit_visit(&commit(v1.clone())).expect("commit");
    let mut v2 = visit_row(VisitId::new(), vec![bob, ann], 2_000);
    v2.client_id = client;
    store.commit_visit(&commit(v2)).expect("commit");
    store
        .commit_visit(&commit(visit_row(VisitId::new(), vec![cat], 1_000)))
        .expect("another client's visit");
    let mut carers = store.client_carers(client).expect("carers");
    carers.sort();
    let mut expected = vec![ann, bob];
    expected.sort();
    assert_eq!(carers, expected);
    // Reassigned away: no longer a carer of the client through that visit.
    v1.carers = vec![cat];
    store.commit_visit(&commit(v1)).expect("reassign");
    let mut carers = store.client_carers(client).expect("carers");
    carers.sort();
    let mut expected = vec![ann, bob, cat];
    expected.sort();
    assert_eq!(carers, expected, "ann still on v2, cat now on v1");
    assert!(store.client_carers(ClientId::new()).expect("none").is_empty());
}

/// Dashboard sessions: stored by hash, ended on sign-out, and expired ones swept when a new one
/// starts.
fn web_sessions(store: &dyn ServerStore) {
    let office = person(store, "Olive", Role::Office);
    let session = |hash: &str, expires_at: Millis| WebSession {
        id_hash: hash.into(),
        person_id: office.id,
        created_at: 1_000,
        expires_at,
    };
    store
        .create_web_session(&session("old", 5_000), 1_000)
        .expect("old");
    store
        .create_web_session(&session("live", 90_000), 1_000)
        .expect("live");
    assert_eq!(
        store.web_session("old").expect("read"),
        Some(session("old", 5_000))
    );
    assert_eq!(store.web_session("nope").expect("read"), None);
    // Starting a session at 10 000 sweeps the one that expired at 5 000.
    store
        .create_web_session(&session("new", 99_000), 10_000)
        .expect("new");
    assert_eq!(store.web_session("old").expect("read"), None);
    assert_eq!(
        store.web_session("live").expect("read"),
        Some(session("live", 90_000))
    );
    store.end_web_session("live").expect("end");
    store.end_web_session("live").expect("ending twice is harmless");
    assert_eq!(store.web_session("live").expect("read"), None);
    assert!(store.web_session("new").expect("read").is_some());
}

fn alerts_once_and_versioned(store: &dyn ServerStore) {
    use caresync_core::metrics::AlertKind;
    use caresync_server::services::alerts as svc;
    use caresync_server::store::alerts::*;
    let settings = svc::OversightSettings::default();
    let (visit, carer, team) = (VisitId::new(), PersonId::new(), TeamId::new());
    let t = 1_790_064_000_000;
    let a = svc::new_alert(
        &settings,
        visit,
        AlertKind::Missed,
        carer,
        String::new(),
        Some(team),
        t,
    );
    assert!(store.raise_alert(&a, &svc::raised_entry(&a)).expect("store"));
    // The same (visit, kind, carer, subject) under another id: not raised again.
    let again = svc::new_alert(
        &settings,
        visit,
        AlertKind::Missed,
        carer,
        String::new(),
        Some(team),
        t + 5,
    );
    assert!(!store
        .raise_alert(&again, &svc::raised_entry(&again))
        .expect("store"));
    // Another subject (a second concern note) is another alert.
    let note = svc::new_alert(
        &settings,
        visit,
        AlertKind::Concern,
        carer,
        "n1".into(),
        Some(team),
        t,
    );
    assert!(store
        .raise_alert(&note, &svc::raised_entry(&note))
        .expect("store"));
    assert_eq!(store.alert(again.alert_id).expect("store"), None);
    assert_eq!(store.alert(a.alert_id).expect("store").as_ref(), Some(&a));

    let sup = PersonId::new();
    let (acked, entries) = svc::acknowledge(&a, sup, t + 60_000).expect("store");
    assert!(store.update_alert(&acked, 1, &entries).expect("store"));
    // A writer who read version 1 is refused and nothing is appended.
    let (late, late_entries) =
        svc::resolve(&a, sup, t + 70_000, ResolutionAction::NoActionNeeded, "x").expect("store");
    assert!(!store.update_alert(&late, 1, &late_entries).expect("store"));
    let stored = store.alert(a.alert_id).expect("store").expect("store");
    assert_eq!(stored, acked);
    let history = store.alert_history(a.alert_id).expect("store");
    assert_eq!(
        history.iter().map(|e| (e.seq, e.step, e.by)).collect::<Vec<_>>(),
        vec![
            (1, AlertStep::Raised, None),
            (2, AlertStep::Acknowledged, Some(sup))
        ]
    );
    let open = store
        .alerts(&AlertQuery {
            open_only: true,
            visit: Some(visit),
            ..AlertQuery::default()
        })
        .expect("store");
    assert_eq!(open.len(), 2);
    let (closed, entries) = svc::close(&note, t + 1, CloseReason::Cancelled).expect("store");
    assert!(store.update_alert(&closed, 1, &entries).expect("store"));
    let open = store
        .alerts(&AlertQuery {
            open_only: true,
            ..AlertQuery::default()
        })
        .expect("store");
    assert_eq!(
        open.iter().map(|a| a.alert_id).collect::<Vec<_>>(),
        vec![a.alert_id]
    );
    let window = store
        .alerts(&AlertQuery {
            raised_from: Some(t),
            raised_to: Some(t + 1),
            ..AlertQuery::default()
        })
        .expect("store");
    assert_eq!(window.len(), 2);
    assert_eq!(
        store.alert_history(note.alert_id).expect("store")[1].close_reason,
        Some(CloseReason::Cancelled)
    );
}

fn leases(store: &dyn ServerStore) {
    assert!(store.claim_lease("sweep", "a", 1000, 2000).expect("store"));
    assert!(
        !store.claim_lease("sweep", "b", 1500, 2500).expect("store"),
        "a holds it"
    );
    assert!(
        store.claim_lease("sweep", "a", 1500, 2500).expect("store"),
        "the holder renews"
    );
    assert!(
        store.claim_lease("sweep", "b", 2500, 3500).expect("store"),
        "lapsed at 2500"
    );
    assert!(!store.claim_lease("sweep", "a", 2600, 3600).expect("store"));
    assert!(
        store.claim_lease("other", "a", 2600, 3600).expect("store"),
        "leases are by name"
    );
}

fn escalations_once(store: &dyn ServerStore) {
    use caresync_server::store::alerts::*;
    let (contract, client, office) = (ContractId::new(), ClientId::new(), PersonId::new());
    let e = Escalation {
        escalation_id: "e1".into(),
        contract_id: contract,
        client_id: client,
        week_start: "2026-12-21".into(),
        authorised_minutes: 120,
        delivered_minutes: 90,
        opened_at: 5,
        due_on: "2027-01-05".into(),
        raised_at: None,
        raised_on: None,
        raised_by: None,
        contact_id: None,
    };
    assert!(store.open_escalation(&e).expect("open"));
    let twin = Escalation {
        escalation_id: "e2".into(),
        ..e.clone()
    };
    assert!(
        !store.open_escalation(&twin).expect("open"),
        "same client, contract and week"
    );
    assert_eq!(store.escalations().expect("list"), vec![e.clone()]);
    let contact = |id: &str, escalation: Option<&str>| CommissionerContact {
        contact_id: id.into(),
        contract_id: contract,
        contact_on: "2027-01-04".into(),
        summary: "told them".into(),
        recorded_by: office,
        recorded_at: 7,
        escalation_id: escalation.map(str::to_string),
    };
    assert!(store.raise_escalation(&contact("c1", Some("e1"))).expect("raise"));
    assert!(
        !store.raise_escalation(&contact("c2", Some("e1"))).expect("raise"),
        "once"
    );
    assert!(!store
        .raise_escalation(&contact("c3", Some("nope")))
        .expect("raise"));
    store
        .add_commissioner_contact(&contact("c4", None))
        .expect("contact");
    let raised = &store.escalations().expect("list")[0];
    assert_eq!(
        (
            raised.raised_at,
            raised.raised_on.as_deref(),
            raised.raised_by,
            raised.contact_id.as_deref()
        ),
        (Some(7), Some("2027-01-04"), Some(office), Some("c1"))
    );
    let mut ids: Vec<String> = store
        .commissioner_contacts()
        .expect("contacts")
        .into_iter()
        .map(|c| c.contact_id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec!["c1".to_string(), "c4".to_string()],
        "a refused raise records no contact"
    );
}

fn racing_reviews_raise_once(store: &dyn ServerStore) {
    use caresync_server::services::alerts as svc;
    use caresync_server::store::alerts::*;
    // Ann is in a team, and others are not on the visit: the review reads her team alone.
    let team = TeamId::new();
    store
        .create_team(&Team {
            id: team,
            name: "North".into(),
        })
        .expect("team");
    let carer = Person {
        id: PersonId::new(),
        name: "Ann".into(),
        role: Role::Carer,
        team_id: Some(team),
        active: true,
    };
    store.create_person(&carer).expect("create person");
    let _others = person(store, "Bob", Role::Carer);
    let visit = VisitId::new();
    let start = 1_790_064_000_000;
    store
        .commit_visit(&commit(visit_row(visit, vec![carer.id], start)))
        .expect("commit");
    // Long after the visit's end: missed. Eight reviews at once, as instances and the commit
    // path might: each reads "no open alert" and tries to raise.
    let now = start + 10 * HOUR_MS;
    let settings = svc::OversightSettings::default();
    let barrier = std::sync::Barrier::new(8);
    let raised: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    svc::review_visit(store, &settings, visit, now)
                        .expect("review")
                        .raised
                        .len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(raised, 1, "one review raised it");
    let alerts = store
        .alerts(&AlertQuery {
            visit: Some(visit),
            ..AlertQuery::default()
        })
        .expect("alerts");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, caresync_core::metrics::AlertKind::Missed);
    assert_eq!(alerts[0].team_id, Some(team), "for her team's supervisor");
    let history = store.alert_history(alerts[0].alert_id).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].step, AlertStep::Raised);
}

/// Sign-ins answered from memory (PostgreSQL) still see this instance's revocations,
/// deactivations and role changes at the very next sign-in.
fn sign_in_sees_changes_at_once(store: &dyn ServerStore) {
    let mut person = Person {
        id: PersonId::new(),
        name: "Office".into(),
        role: Role::Office,
        team_id: None,
        active: true,
    };
    store.create_person(&person).expect("person");
    store.add_api_token(person.id, "one", 1, None).expect("token");
    store.add_api_token(person.id, "two", 1, None).expect("token");
    let signed_in = |hash: &str| store.sign_in(hash).expect("lookup").expect("known");
    assert_eq!(signed_in("one").revoked_at, None);
    assert_eq!(signed_in("one").revoked_at, None, "asked twice");

    store.revoke_api_token("one", 9).expect("revoke");
    assert_eq!(signed_in("one").revoked_at, Some(9));

    assert_eq!(signed_in("two").principal.person.role, Role::Office);
    person.role = Role::Supervisor;
    store.create_person(&person).expect("update");
    assert_eq!(signed_in("two").principal.person.role, Role::Supervisor);

    store.deactivate_person(person.id, 10).expect("deactivate");
    let two = signed_in("two");
    assert!(!two.principal.person.active);
    assert_eq!(two.revoked_at, Some(10));
}
