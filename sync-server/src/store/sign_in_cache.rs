//! Presented tokens answered from memory: every request signs in, and the token's row changes
//! only when someone enrols, revokes, rotates or deactivates.
//!
//! What is cached is the token as stored ([`SignIn`]: person, active flag, revocation, expiry),
//! never the verdict, so expiry is judged against each request's own time. A store clears the
//! cache after every write of its own that could change a token's standing, so on this instance
//! a revocation or deactivation takes effect from the next request. Writes this process does not
//! see (another server instance sharing a PostgreSQL database, the `bootstrap` command on the
//! same file) take effect within [`SIGN_IN_TTL`]: an entry older than that is read again.
//! Unknown tokens are not cached (a guess costs the query it always cost).
//!
//! The embedded store's file is also written by the command-line tools (`deactivate`,
//! `revoke-token`, `bootstrap`...) beside the running server, and there a revocation must take
//! effect at once. So every write of a token's standing, in any process, also appends a byte to
//! a stamp file beside the database ([`WriteStamp`]), after it commits; the server looks at the
//! stamp's length (one `stat`) before answering from memory, and forgets what it cached when the
//! length moved. The TTL still bounds a stamp that could not be written.

use super::SignIn;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token's row is trusted without reading it again: the bound on how late another
/// instance's revocation takes effect here.
pub const SIGN_IN_TTL: Duration = Duration::from_secs(5);

/// Tokens held at once (an entry is about 200 bytes); past this the cache starts afresh.
const CAPACITY: usize = 20_000;

#[derive(Default)]
pub(crate) struct SignInCache {
    /// Bumped (under the map's lock) by every invalidation, so a read that began before a
    /// revocation committed cannot put its stale answer back afterwards.
    epoch: AtomicU64,
    entries: Mutex<HashMap<String, (SignIn, Instant)>>,
}

impl SignInCache {
    /// The cached row of a token read within the TTL, or the epoch to pass to [`Self::insert`]
    /// after reading it from the database.
    pub(crate) fn get(&self, token_hash: &str) -> Result<SignIn, u64> {
        let Ok(entries) = self.entries.lock() else {
            return Err(u64::MAX);
        };
        match entries.get(token_hash) {
            Some((sign_in, read_at)) if read_at.elapsed() < SIGN_IN_TTL => Ok(sign_in.clone()),
            _ => Err(self.epoch.load(Ordering::SeqCst)),
        }
    }

    /// Keep a row read from the database, unless an invalidation happened since `epoch`.
    pub(crate) fn insert(&self, token_hash: &str, sign_in: &SignIn, epoch: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(token_hash.to_owned(), (sign_in.clone(), Instant::now()));
    }

    /// The token's row from the cache, else from `read` (the database), kept for the next
    /// request unless an invalidation happened while it was read.
    pub(crate) fn get_or_read(
        &self,
        token_hash: &str,
        read: impl FnOnce() -> super::Result<Option<SignIn>>,
    ) -> super::Result<Option<SignIn>> {
        let epoch = match self.get(token_hash) {
            Ok(cached) => return Ok(Some(cached)),
            Err(epoch) => epoch,
        };
        let found = read()?;
        if let Some(sign_in) = &found {
            self.insert(token_hash, sign_in, epoch);
        }
        Ok(found)
    }

    /// Forget everything: called after a write commits that may change any token's standing.
    pub(crate) fn invalidate(&self) {
        // A poisoned lock still gets its epoch bumped, so nothing read before is kept.
        match self.entries.lock() {
            Ok(mut entries) => {
                self.epoch.fetch_add(1, Ordering::SeqCst);
                entries.clear();
            }
            Err(poisoned) => {
                self.epoch.fetch_add(1, Ordering::SeqCst);
                poisoned.into_inner().clear();
            }
        }
    }
}

/// The embedded store's sign-in stamp: a file beside the database that grows by a byte with every
/// committed write of a token's standing, in whichever process made it (see the module's
/// documentation). Its length, not its time, is compared: a file's modification time moves in
/// steps of a clock tick, so two writes in one tick would look like one.
pub(crate) struct WriteStamp {
    path: PathBuf,
    /// The length last seen; `u64::MAX` before the first look.
    seen: AtomicU64,
}

impl WriteStamp {
    /// The stamp of the database at `db` (`server.db` → `server.db-signins`).
    pub(crate) fn beside(db: &Path) -> Self {
        let mut path = db.as_os_str().to_owned();
        path.push("-signins");
        WriteStamp {
            path: path.into(),
            seen: AtomicU64::new(u64::MAX),
        }
    }

    /// Say that a write of a token's standing committed. Called after the commit, so a process
    /// that sees the new length reads the new rows. A stamp that cannot be written is logged: the
    /// other processes then see the write within [`SIGN_IN_TTL`].
    pub(crate) fn bump(&self) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(b"."));
        if let Err(e) = appended {
            tracing::warn!(path = %self.path.display(), error = %e,
                "sign-in stamp not written; other processes see this revocation within the sign-in TTL");
        }
    }

    /// Whether `cache` may answer now: false if the stamp cannot be read. When it moved since
    /// the last look, the cache is forgotten first, then the new length recorded, so a request
    /// that sees the recorded length finds the cache already cleared.
    pub(crate) fn check(&self, cache: &SignInCache) -> bool {
        let len = match std::fs::metadata(&self.path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(_) => {
                cache.invalidate();
                return false;
            }
        };
        if self.seen.load(Ordering::SeqCst) != len {
            cache.invalidate();
            self.seen.store(len, Ordering::SeqCst);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Person, Principal};
    use caresync_core::domain::*;

    fn row(revoked_at: Option<Millis>) -> SignIn {
        SignIn {
            principal: Principal {
                person: Person {
                    id: PersonId::new(),
                    name: "Ann".into(),
                    role: Role::Carer,
                    team_id: None,
                    active: true,
                },
                device_id: Some(DeviceId::new()),
            },
            revoked_at,
            expires_at: None,
        }
    }

    #[test]
    fn kept_until_invalidated() {
        let cache = SignInCache::default();
        let Err(epoch) = cache.get("tok") else {
            panic!("nothing cached yet");
        };
        let live = row(None);
        cache.insert("tok", &live, epoch);
        assert_eq!(cache.get("tok"), Ok(live));
        cache.invalidate();
        assert!(cache.get("tok").is_err());
    }

    /// Another process's bump (a second stamp on the same file stands in for it) clears what
    /// this one cached, at its next look; its own looks in between keep the cache.
    #[test]
    fn another_process_bump_clears_the_cache_at_the_next_look() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("server.db");
        let (server, cli) = (WriteStamp::beside(&db), WriteStamp::beside(&db));
        let cache = SignInCache::default();
        assert!(server.check(&cache), "a missing stamp reads as empty");
        let Err(epoch) = cache.get("tok") else {
            panic!("nothing cached yet");
        };
        cache.insert("tok", &row(None), epoch);
        assert!(server.check(&cache));
        assert!(cache.get("tok").is_ok(), "an unmoved stamp keeps the cache");
        cli.bump();
        assert!(server.check(&cache));
        assert!(cache.get("tok").is_err(), "the bump was not seen");
        // Two bumps in a row are two lengths, however close in time.
        let Err(epoch) = cache.get("tok") else {
            panic!("cleared");
        };
        cache.insert("tok", &row(None), epoch);
        cli.bump();
        cli.bump();
        assert!(server.check(&cache));
        assert!(cache.get("tok").is_err());
    }

    /// A lookup that read the row before a revocation committed, and finishes after it, must not
    /// put the unrevoked row back.
    #[test]
    fn a_read_that_overlaps_a_revocation_is_not_kept() {
        let cache = SignInCache::default();
        let Err(epoch) = cache.get("tok") else {
            panic!("nothing cached yet");
        };
        let read_before_revocation = row(None);
        cache.invalidate();
        cache.insert("tok", &read_before_revocation, epoch);
        assert!(cache.get("tok").is_err(), "the stale row was kept");
    }
}
