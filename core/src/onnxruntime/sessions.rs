//! A small bounded table of ONNX Runtime sessions keyed by graph structure. A session holds
//! its weights and arena (hundreds of MiB), so the table keeps only the few most recently
//! used; a session is built outside the table's lock, so one slow build never blocks the
//! lookups of jobs whose sessions exist.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use ort::session::Session;

use crate::error::{Error, Result};

/// A session shared by the jobs that use its graph (one run at a time).
pub type SharedSession = Arc<Mutex<Session>>;

/// How many sessions each table keeps by default.
pub const DEFAULT_SESSIONS: usize = 4;

pub struct SessionTable<K: Hash + Eq> {
    sessions: Mutex<lru::LruCache<K, SharedSession>>,
}

impl<K: Hash + Eq + Clone> SessionTable<K> {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            sessions: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    fn table(&self) -> Result<std::sync::MutexGuard<'_, lru::LruCache<K, SharedSession>>> {
        self.sessions
            .lock()
            .map_err(|_| Error::OnnxRuntime("session table: lock poisoned".into()))
    }

    /// The session for `key` if the table holds it.
    pub fn get(&self, key: &K) -> Result<Option<SharedSession>> {
        Ok(self.table()?.get(key).cloned())
    }

    /// The session for `key`, built by `build` (outside the lock) when absent. Two jobs that
    /// miss together both build; the first to finish is kept and both use it. The least
    /// recently used session beyond the capacity is dropped (its memory goes when the last
    /// job using it ends).
    pub fn get_or_build(
        &self,
        key: &K,
        build: impl FnOnce() -> Result<Session>,
    ) -> Result<SharedSession> {
        if let Some(session) = self.get(key)? {
            return Ok(session);
        }
        let built = Arc::new(Mutex::new(build()?));
        let mut table = self.table()?;
        if let Some(existing) = table.get(key) {
            return Ok(existing.clone());
        }
        table.put(key.clone(), built.clone());
        Ok(built)
    }

    pub fn len(&self) -> usize {
        self.table().map_or(0, |t| t.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
