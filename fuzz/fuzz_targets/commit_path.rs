//! The server's judge-and-commit path for a carer's phone: an input becomes one visit's sync
//! message, which `VisitService::ingest` applies to a copy of a real visit document, audits
//! (`VisitDocument::audit_since`), judges by the write rules (services/rules.rs) and commits into
//! a real embedded SQLite store.
//!
//! The first byte picks how the rest is read: a raw sync message, raw change bytes inside a real
//! phone's message, or (most inputs) an edit program run on the phone's replica so the message
//! carries valid Automerge changes (see `caresync_fuzz::run_program`); and whether the visit was
//! reassigned away from the carer since the phone last synced.
//!
//! Oracles: `ingest` never fails as a whole (that would fail the phone's whole sync with a 500);
//! a refused message stores nothing; an accepted one leaves a readable visit whose schedule and
//! amendments are the office's and whose entries are all in this carer's and device's name.
#![no_main]

use caresync_core::domain::*;
use caresync_core::visit_document::VisitDocument;
use caresync_fuzz::{message_with_raw_changes, phone_message, run_program, Bytes, Server, World, NOW};
use caresync_server::services::visits::Ingested;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

/// Start a new store after this many visits, so a long run's database stays small.
const VISITS_PER_STORE: u32 = 20_000;

struct Fixture {
    world: World,
    phone: VisitDocument,
    server: Server,
    visits_made: u32,
    /// The visit as created, and one reassigned away from the carer, each untouched so far.
    fresh: [VisitId; 2],
}

impl Fixture {
    fn new() -> Self {
        let world = World::new();
        let mut server = Server::new(&world);
        let fresh = [server.new_visit(&world, false), server.new_visit(&world, true)];
        Self {
            phone: world.phone_replica(),
            world,
            server,
            visits_made: 2,
            fresh,
        }
    }

    fn replace(&mut self, reassigned: bool) {
        self.visits_made += 1;
        if self.visits_made >= VISITS_PER_STORE {
            *self = Fixture::new();
            return;
        }
        self.fresh[reassigned as usize] = self.server.new_visit(&self.world, reassigned);
    }
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    let f = guard.get_or_insert_with(Fixture::new);
    let mut input = Bytes(data);
    let mode = input.byte();
    let reassigned = mode & 0x80 != 0;
    let visit = f.fresh[reassigned as usize];
    let phone_actor = automerge::ActorId::from(&[0xca_u8; 16][..]);
    let message = match mode % 4 {
        0 => input.0.to_vec(),
        1 => message_with_raw_changes(&mut f.phone.fork().with_actor(&phone_actor), input.0),
        _ => {
            let mut phone = f.phone.fork().with_actor(&phone_actor);
            let shared = phone.heads();
            run_program(&f.world, &mut phone, &mut input);
            match phone_message(&mut phone, shared) {
                Some(message) => message,
                None => return,
            }
        }
    };
    let store = f.server.store.clone();
    let stored_before = store.visit_chunk_hashes(visit).expect("chunk hashes");
    match f.server.visits.ingest(&f.server.carer, visit, &message, NOW) {
        Ok(Ingested::Refused(_)) => {
            let stored_after = store.visit_chunk_hashes(visit).expect("chunk hashes");
            assert_eq!(stored_before, stored_after, "a refused message stored a chunk");
        }
        Ok(Ingested::Accepted { .. }) => {
            let v = f
                .server
                .visits
                .read(visit)
                .expect("an accepted message leaves a readable visit");
            let mut schedule = f.world.schedule.clone();
            if reassigned {
                schedule.carers = vec![f.world.other_carer];
            }
            assert_eq!(v.schedule, schedule, "a carer's phone changed the schedule");
            assert!(v.amendments.is_empty(), "a carer's phone wrote an amendment");
            for e in &v.events {
                assert_eq!((e.carer_id, e.device_id), (f.world.carer, f.world.device));
                assert!(e.method != ClockMethod::Manual || e.reason.is_some());
                assert!(e.location.is_none_or(|l| l.is_valid()));
            }
            for n in &v.notes {
                assert_eq!((n.author_id, n.author_role), (f.world.carer, Role::Carer));
                assert!(!n.text.trim().is_empty() && n.text.chars().count() <= MAX_NOTE_CHARS);
            }
            for o in &v.task_outcomes {
                assert_eq!(o.carer_id, f.world.carer);
            }
            // The next input starts again from the office's document and a new sync state.
            f.replace(reassigned);
        }
        Err(e) => panic!("ingest failed as a whole (the phone's sync would get a 500): {e}"),
    }
});
