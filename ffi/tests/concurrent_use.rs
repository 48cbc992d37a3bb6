//! The phone object is used from several threads at once, as an app does: a background sync
//! running while the UI clocks in never loses the clock-in.

use caresync_ffi::{CarerPhone, ClockMethod, NoteCategory};
use caresync_tests::{now, World};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[test]
fn a_sync_running_while_the_ui_clocks_in_keeps_every_clock_in() -> TestResult {
    let world = World::start()?;
    let carer = world.office.create_person("Ann", "carer")?;
    let code = world.office.enrolment_code(carer)?;
    let visits: Vec<_> = (0..6)
        .map(|k| world.office.create_visit(&[carer], now() + k * 3_600_000))
        .collect::<Result<_, _>>()?;
    let phone = CarerPhone::open(world.dir.path().join("phone.db").display().to_string())?;
    phone.enrol(world.server.url.clone(), code, "Ann's phone".into())?;
    phone.sync_now()?;

    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (phone, stop) = (phone.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut syncs = 0;
            while !stop.load(Ordering::SeqCst) {
                if phone.sync_now().is_ok() {
                    syncs += 1;
                }
            }
            syncs
        })
    };
    let mut clocked = Vec::new();
    for v in &visits {
        let id = v.to_string();
        clocked.push(
            phone
                .clock_in(id.clone(), ClockMethod::App, None, None, None)?
                .event_id,
        );
        phone.add_note(id.clone(), NoteCategory::General, "all well".into())?;
        clocked.push(phone.clock_out(id, ClockMethod::App, None, None, None)?.event_id);
    }
    stop.store(true, Ordering::SeqCst);
    let syncs = background.join().map_err(|_| "sync thread panicked")?;
    assert!(syncs > 0, "the background thread never synced");
    let last = phone.sync_now()?;
    assert_eq!(last.pending_after, 0);

    let mut on_server = Vec::new();
    for v in &visits {
        let view = world.office.visit(*v)?;
        for e in view["events"].as_array().ok_or("no events")? {
            on_server.push(e["event_id"].as_str().ok_or("no id")?.to_string());
        }
        assert_eq!(view["visit"]["notes"].as_array().map(Vec::len), Some(1));
    }
    clocked.sort();
    on_server.sort();
    assert_eq!(
        clocked, on_server,
        "every clock-in and clock-out reached the server once"
    );
    Ok(())
}
