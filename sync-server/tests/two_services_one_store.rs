//! Two visit services over one store stand in for two server instances on one database: each has
//! its own document cache, so each sees a stale copy whenever the other has written. Nothing may
//! be lost or duplicated, compaction included.

use caresync_core::domain::*;
use caresync_core::visit_document::Note;
use caresync_core::Schedule;
use caresync_server::services::visits::{VisitService, VisitServiceError};
use caresync_server::store::sqlite::SqliteStore;
use caresync_server::store::ServerStore;
use std::sync::Arc;

fn schedule(carer: PersonId, start: Millis) -> Schedule {
    caresync_core::test_kit::schedule(vec![carer], start)
}

fn add_note(service: &VisitService, visit: VisitId, author: PersonId, text: String) {
    service
        .edit(visit, 1_000, |doc, _| {
            doc.append_note(&Note {
                id: NoteId::new(),
                author_id: author,
                author_role: Role::Office,
                written_at: 1_000,
                category: NoteCategory::General,
                text,
            })
            .map(|_| ())
            .map_err(|e| VisitServiceError::Invalid(e.to_string()))
        })
        .expect("edit");
}

#[test]
fn two_caches_over_one_store_lose_nothing_through_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two services over one store, as two instances over one PostgreSQL database.
    let store: Arc<dyn ServerStore> = Arc::new(
        SqliteStore::open(&dir.path().join("server.db"))
            .expect("open")
            .shared_by_several_services(),
    );
    let a = VisitService::new(store.clone(), 100);
    let b = VisitService::new(store.clone(), 100);
    let (office, carer) = (PersonId::new(), PersonId::new());
    let visit = VisitId::new();
    // Planned in 2026: visits are planned between 2000 and 2100 (services::validation).
    a.create(
        visit,
        &schedule(carer, 1_795_000_000_000 + 10 * HOUR_MS),
        office,
        500,
    )
    .expect("create");

    // Alternating writers (each write starts from a stale cache), then both at once.
    for i in 0..20 {
        add_note(&a, visit, office, format!("a{i}"));
        add_note(&b, visit, office, format!("b{i}"));
    }
    std::thread::scope(|s| {
        s.spawn(|| (20..50).for_each(|i| add_note(&a, visit, office, format!("a{i}"))));
        s.spawn(|| (20..50).for_each(|i| add_note(&b, visit, office, format!("b{i}"))));
    });

    let fresh = VisitService::new(store.clone(), 10);
    for (name, service) in [("a", &a), ("b", &b), ("fresh", &fresh)] {
        let notes = service.read(visit).expect("read").notes;
        let mut texts: Vec<String> = notes.iter().map(|n| n.text.clone()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(notes.len(), 100, "{name} sees every note once");
        assert_eq!(texts.len(), 100, "{name}");
    }
    let chunks = store.visit_chunk_hashes(visit).expect("hashes").len();
    assert!(chunks < 40, "compaction ran ({chunks} chunks left)");
    // The visit row was projected from a document that had seen every chunk.
    // `Heads` are sorted.
    let heads = fresh.heads(visit).expect("heads");
    let row_heads = store.visit_row(visit).expect("row").expect("exists").heads;
    assert_eq!(row_heads, heads);
}
