//! The server is killed with SIGKILL while many phones sync in a loop; after restart nothing
//! it acknowledged is lost and every phone converges with it.

use caresync_core::domain::*;
use caresync_core::{ClockRequest, VisitDocument};
use caresync_tests::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PHONES: usize = 8;
const VISITS_PER_PHONE: usize = 4;
const KILLS: usize = 4;

#[test]
fn nothing_acknowledged_is_lost_when_the_server_is_killed_mid_sync() -> TestResult {
    let mut world = World::start()?;
    let mut phones = Vec::new();
    let mut visits = Vec::new();
    for i in 0..PHONES {
        let phone = world.carer_with_phone(&format!("Carer {i}"))?;
        let mine: Vec<VisitId> = (0..VISITS_PER_PHONE)
            .map(|k| {
                world
                    .office
                    .create_visit(&[phone.carer], now() + k as i64 * HOUR_MS)
            })
            .collect::<TestResult<_>>()?;
        phone.sync()?;
        visits.push(mine);
        phones.push(Arc::new(phone));
    }

    // Event ids each phone holds, and those the server acknowledged: a sync that returned Ok
    // with nothing left pending acknowledges every event the phone had before it started.
    let acknowledged: Arc<Mutex<HashSet<EventId>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (phone, mine) in phones.iter().cloned().zip(visits.clone()) {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        workers.push(std::thread::spawn(move || -> TestResult<usize> {
            let mut step = 0usize;
            let mut syncs_ok = 0;
            while !stop.load(Ordering::SeqCst) {
                let visit = mine[step % mine.len()];
                match step % 3 {
                    0 => drop(phone.store.clock_in(visit, &ClockRequest::app())),
                    1 => drop(
                        phone
                            .store
                            .add_note(visit, NoteCategory::General, &format!("note {step}")),
                    ),
                    _ => drop(phone.store.clock_out(visit, &ClockRequest::app())),
                }
                step += 1;
                let held: Vec<EventId> = mine
                    .iter()
                    .flat_map(|v| phone.store.visit(*v).map(|d| d.visit.events).unwrap_or_default())
                    .map(|e| e.id)
                    .collect();
                if let Ok(summary) = phone.sync() {
                    if summary.pending_after == 0 && summary.errors.is_empty() {
                        acknowledged.lock().map_err(|_| "poisoned")?.extend(held);
                        syncs_ok += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(syncs_ok)
        }));
    }

    let mut seed = now() as u64 | 1;
    for _ in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 400));
        world.server.kill();
        std::thread::sleep(Duration::from_millis(50 + seed % 100));
        world.server.restart()?;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut total_ok = 0;
    for w in workers {
        total_ok += w.join().map_err(|_| "worker panicked")??;
    }
    assert!(total_ok > 0, "no sync succeeded at all");

    // Everyone syncs until nothing is pending; the server restarted once more first.
    world.server.kill();
    world.server.restart()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for phone in &phones {
        loop {
            let s = phone.sync()?;
            assert!(s.errors.is_empty(), "{:?}", s.errors);
            if s.pending_after == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "phone never drained its outbox");
        }
    }

    let acknowledged = acknowledged.lock().map_err(|_| "poisoned")?.clone();
    let mut on_server = HashSet::new();
    let mut on_phones = HashSet::new();
    for (phone, mine) in phones.iter().zip(&visits) {
        for &visit in mine {
            let view = world.office.visit(visit)?;
            for e in view["events"].as_array().ok_or("no events")? {
                on_server.insert(e["event_id"].as_str().ok_or("no id")?.parse::<EventId>()?);
            }
            let server_heads: Vec<String> = serde_json::from_value(view["heads"].clone())?;
            assert_eq!(
                phone.heads(visit)?,
                server_heads,
                "phone and server differ on {visit}"
            );
            let doc = VisitDocument::load(&phone.store.visit_bytes(visit)?)?.read()?;
            assert_eq!(serde_json::to_value(&doc)?, without_rfc3339(&view["visit"]));
            on_phones.extend(doc.events.iter().map(|e| e.id));
        }
    }
    let lost: Vec<&EventId> = acknowledged.difference(&on_server).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost", lost.len());
    assert_eq!(on_server, on_phones);
    eprintln!(
        "{} events, {} acknowledged during the storm, {total_ok} successful syncs, {KILLS} kills",
        on_server.len(),
        acknowledged.len()
    );
    Ok(())
}
