//! The store replicas share (`--registry redis://…`): registered styles as the encoded files
//! their keys hash, and computed style targets under their target identity, sealed with a
//! secret the replicas share. Each entry has a time to live that every checked use renews.
//! An entry that fails its check (another writer's, damaged, oversized, of another type) is
//! a miss and is deleted, never renewed. Reads that only save work are bounded in time and
//! writes that only share work happen in the background, so a stalled store costs requests
//! that carry their style nothing.

mod book;

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::telemetry::metrics::{STORE_DAMAGED_TOTAL, STORE_ERRORS_TOTAL};

/// The operations whose failures are counted (the `op` label).
pub const OPS: [&str; 5] = ["ping", "put", "get", "touch", "delete"];
/// The kinds of entry (the `kind` label of damaged entries).
pub const KINDS: [&str; 3] = ["style", "targets", "name"];

/// How long an entry lives after its last use (7 days: longer than a shot's render).
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a request waits for a connection before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take (a style's targets are a few MB).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read that only saves work (stored targets) may take before the work is done
/// here instead; a loopback or same-zone read of a few MB takes milliseconds.
pub const OPTIONAL_READ_LIMIT: Duration = Duration::from_millis(300);
/// After a failed connection or a read past its limit, how long operations fail at once
/// instead of waiting again (a store that is down or stalled costs each request nothing).
const BACKOFF: Duration = Duration::from_secs(5);
/// Connections kept open per replica (one per worker, registration and the writer).
const MAX_CONNECTIONS: u32 = 8;
/// Background writes waiting at most; more are dropped (counted as failed puts).
const PENDING_WRITES: usize = 32;
/// Every key this server writes starts so; the version changes if the layout does.
const NAMESPACE: &str = "stylize:v1";
/// Bytes of a seal (HMAC-SHA256).
const SEAL_BYTES: usize = 32;
/// Shortest secret accepted (128 bits).
pub const MIN_SECRET_BYTES: usize = 16;

/// Creates the store's series at zero, so dashboards see them before the first failure.
pub fn publish_initial() {
    for op in OPS {
        metrics::counter!(STORE_ERRORS_TOTAL, "op" => op).increment(0);
    }
    for kind in KINDS {
        metrics::counter!(STORE_DAMAGED_TOTAL, "kind" => kind).increment(0);
    }
}

/// What one entry is.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A registered style's encoded file, by its key (hex sha256 of those bytes).
    Style(&'a str),
    /// A style's targets, by the hex digest of everything that determines them.
    Targets(&'a str),
}

impl Entry<'_> {
    fn redis_key(self) -> String {
        match self {
            Entry::Style(key) => format!("{NAMESPACE}:style:{key}"),
            Entry::Targets(id) => format!("{NAMESPACE}:targets:{id}"),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Entry::Style(_) => KINDS[0],
            Entry::Targets(_) => KINDS[1],
        }
    }
}

/// The key replicas share to seal what they compute, so a writer without it cannot plant
/// targets (`--registry-secret-file`).
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret from a file's contents, surrounding whitespace removed; at least 16 bytes.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(Error::invalid(
                "registry-secret-file",
                format!(
                    "{} bytes; a secret needs at least {MIN_SECRET_BYTES}",
                    trimmed.len()
                ),
            ));
        }
        Ok(Self(Arc::from(trimmed)))
    }

    /// HMAC-SHA256 over the entry's name and its payload, so a sealed payload cannot be
    /// moved under another name either.
    fn seal(&self, name: &str, payload: &[u8]) -> [u8; SEAL_BYTES] {
        self.mac(name, payload).finalize().into_bytes().into()
    }

    fn verifies(&self, name: &str, payload: &[u8], seal: &[u8]) -> bool {
        self.mac(name, payload).verify_slice(seal).is_ok()
    }

    fn mac(&self, name: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }
}

/// Sets command timeouts on each connection the pool opens.
#[derive(Debug)]
struct Timeouts;

impl r2d2::CustomizeConnection<redis::Connection, redis::RedisError> for Timeouts {
    fn on_acquire(
        &self,
        conn: &mut redis::Connection,
    ) -> std::result::Result<(), redis::RedisError> {
        conn.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        conn.set_write_timeout(Some(COMMAND_TIMEOUT))
    }
}

/// The connections and their health, shared with the background writer and bounded reads.
struct Link {
    pool: r2d2::Pool<redis::Client>,
    /// The URL without its password, for logs.
    shown: String,
    /// Until when the store counts as down (after a failed connection or a stalled read).
    down_until: Mutex<Option<Instant>>,
}

/// A command's outcome before it is counted: a failure, or an entry that is not ours.
enum Failure {
    Failed(String),
    Foreign(&'static str),
}

impl Link {
    fn mark_down(&self) {
        if let Ok(mut until) = self.down_until.lock() {
            *until = Some(Instant::now() + BACKOFF);
        }
    }

    /// How long the store still counts as down, if it does.
    fn still_down_for(&self) -> Option<Duration> {
        let until = (*self.down_until.lock().ok()?)?;
        until.checked_duration_since(Instant::now())
    }

    fn run<T>(
        &self,
        op: &'static str,
        command: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        // A trace's span for a registry call a request waits on (background writes, which
        // no request waits on, start none).
        let _span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!("registry", op)
        }
        .entered();
        let outcome = match self.still_down_for() {
            Some(left) => Err(format!(
                "not answering (next try in {:.1} s)",
                left.as_secs_f64()
            )),
            None => match self.pool.get() {
                Ok(mut conn) => command(&mut conn).map_err(|e| e.to_string()),
                Err(e) => {
                    self.mark_down();
                    Err(e.to_string())
                }
            },
        };
        outcome.map_err(|reason| self.failed(op, &reason))
    }

    fn failed(&self, op: &'static str, reason: &str) -> Error {
        metrics::counter!(STORE_ERRORS_TOTAL, "op" => op).increment(1);
        tracing::warn!(store = %self.shown, op, %reason, "shared registry failed");
        Error::SharedStore(format!("{}: {reason}", self.shown))
    }

    /// At most `max + 1` bytes of the value under `name` (more than `max` means oversized);
    /// `Foreign` if it is not a string.
    fn read(&self, name: &str, max: usize) -> Result<std::result::Result<Vec<u8>, Failure>> {
        self.run("get", |conn| {
            match redis::cmd("GETRANGE")
                .arg(name)
                .arg(0)
                .arg(max)
                .query::<Vec<u8>>(conn)
            {
                Ok(bytes) => Ok(Ok(bytes)),
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    Ok(Err(Failure::Foreign("not a string")))
                }
                Err(e) => Err(e),
            }
        })
    }
}

/// A write the background writer makes.
enum Write {
    Put {
        name: String,
        bytes: Vec<u8>,
    },
    /// Renews `name`'s time to live, putting `bytes` back if the store lost it.
    Renew {
        name: String,
        bytes: Option<Arc<[u8]>>,
    },
    /// A style used (by key, or through the name stored under `name`) at `at_ms`.
    Used {
        facts: String,
        name: Option<String>,
        at_ms: u64,
    },
}

pub struct SharedStore {
    link: Arc<Link>,
    ttl: Duration,
    /// Largest entry read back; a larger one is not ours.
    max_entry_bytes: usize,
    secret: Option<Secret>,
    writes: SyncSender<Write>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedStore({}, ttl {:?}, targets {})",
            self.link.shown,
            self.ttl,
            if self.secret.is_some() {
                "sealed"
            } else {
                "not shared"
            }
        )
    }
}

impl SharedStore {
    /// A store at `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS).
    /// Nothing is connected yet: a store that is down makes requests that need it answer
    /// `UNAVAILABLE`, not the server fail to start. Entries larger than `max_entry_bytes`
    /// are not read. Without a `secret`, only registered styles are shared (their keys
    /// authenticate them); computed targets stay on the replica that computed them.
    pub fn open(
        url: &str,
        ttl: Duration,
        max_entry_bytes: usize,
        secret: Option<Secret>,
    ) -> Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| Error::invalid("registry", e.to_string()))?;
        if ttl.as_secs() == 0 {
            return Err(Error::invalid(
                "registry-ttl",
                "must be at least one second",
            ));
        }
        let shown = client.get_connection_info().addr().to_string();
        let pool = r2d2::Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT)
            .connection_customizer(Box::new(Timeouts))
            .build_unchecked(client);
        let link = Arc::new(Link {
            pool,
            shown,
            down_until: Mutex::new(None),
        });
        let (writes, pending) = mpsc::sync_channel(PENDING_WRITES);
        let (writer, seconds) = (link.clone(), ttl.as_secs());
        std::thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || {
                for write in pending {
                    write_now(&writer, write, seconds);
                }
            })
            .map_err(|e| Error::SharedStore(format!("registry writer: {e}")))?;
        Ok(Self {
            link,
            ttl,
            max_entry_bytes,
            secret,
            writes,
        })
    }

    /// Where the store is (host and port, no credentials).
    pub fn address(&self) -> &str {
        &self.link.shown
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether computed targets are shared (the replicas hold a secret to seal them).
    pub fn shares_targets(&self) -> bool {
        self.secret.is_some()
    }

    /// Checks the store answers.
    pub fn ping(&self) -> Result<()> {
        self.link.run("ping", |conn| {
            redis::cmd("PING").query::<String>(conn).map(drop)
        })
    }

    /// Writes `bytes` under `entry` with the time to live, now: what a registration waits
    /// for before it returns a key every replica can use.
    pub fn put(&self, entry: Entry<'_>, bytes: &[u8]) -> Result<()> {
        let Some(stored) = self.stored_form(entry, bytes) else {
            return Ok(());
        };
        let name = entry.redis_key();
        self.link.run("put", |conn| {
            put_command(&name, &stored, self.ttl.as_secs(), conn)
        })
    }

    /// Writes `bytes` under `entry` in the background; dropped (and counted) if the writer
    /// is behind or the store is down.
    pub fn put_later(&self, entry: Entry<'_>, bytes: &[u8]) {
        if let Some(stored) = self.stored_form(entry, bytes) {
            self.queue(Write::Put {
                name: entry.redis_key(),
                bytes: stored,
            });
        }
    }

    /// Renews `entry`'s time to live in the background, writing `bytes` back if the store
    /// lost it (expired or evicted), so other replicas keep resolving it.
    pub fn renew_later(&self, entry: Entry<'_>, bytes: Option<&Arc<[u8]>>) {
        let bytes = match (entry, bytes) {
            (Entry::Targets(_), Some(payload)) => self
                .stored_form(entry, payload)
                .map(|sealed| Arc::from(sealed.as_slice())),
            (_, bytes) => bytes.cloned(),
        };
        self.queue(Write::Renew {
            name: entry.redis_key(),
            bytes,
        });
    }

    fn queue(&self, write: Write) {
        if self.link.still_down_for().is_some() {
            metrics::counter!(STORE_ERRORS_TOTAL, "op" => "put").increment(1);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.writes.try_send(write)
        {
            let _ = self
                .link
                .failed("put", "the background writer is behind; write dropped");
        }
    }

    /// The checked bytes under `entry`: a registered style's file, which hashes to its key,
    /// or targets sealed with this replica's secret. `None` if absent or not ours (then
    /// deleted and counted). A checked entry's time to live is renewed; nothing else's is.
    /// Targets are read within `OPTIONAL_READ_LIMIT`: past it the store counts as down for a
    /// while and this is a miss, so the caller computes instead of waiting.
    pub fn get(&self, entry: Entry<'_>) -> Result<Option<Vec<u8>>> {
        let name = entry.redis_key();
        let read = match entry {
            Entry::Style(_) => self.link.read(&name, self.max_entry_bytes)?,
            Entry::Targets(_) => {
                if self.secret.is_none() {
                    return Ok(None);
                }
                match self.read_within(&name, OPTIONAL_READ_LIMIT) {
                    Some(read) => read?,
                    None => return Ok(None),
                }
            }
        };
        let checked = read.and_then(|bytes| self.check(entry, &name, bytes));
        match checked {
            Ok(None) => Ok(None),
            Ok(Some(payload)) => {
                self.renew_later(entry, None);
                Ok(Some(payload))
            }
            Err(Failure::Foreign(why)) => {
                self.discard(entry, &name, why);
                Ok(None)
            }
            Err(Failure::Failed(reason)) => Err(self.link.failed("get", &reason)),
        }
    }

    /// `read` on another thread, given up after `limit` (the store then counts as down).
    fn read_within(
        &self,
        name: &str,
        limit: Duration,
    ) -> Option<Result<std::result::Result<Vec<u8>, Failure>>> {
        let (link, owned, max) = (self.link.clone(), name.to_string(), self.max_entry_bytes);
        let (answer, answered) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("registry-read".into())
            .spawn(move || {
                let _ = answer.send(link.read(&owned, max));
            })
            .ok()?;
        match answered.recv_timeout(limit) {
            Ok(read) => Some(read),
            Err(_) => {
                self.link.mark_down();
                let _ = self
                    .link
                    .failed("get", &format!("no answer within {} ms", limit.as_millis()));
                None
            }
        }
    }

    /// The payload of `bytes` read under `name`, or why it is not `entry`'s.
    fn check(
        &self,
        entry: Entry<'_>,
        name: &str,
        bytes: Vec<u8>,
    ) -> std::result::Result<Option<Vec<u8>>, Failure> {
        if bytes.is_empty() {
            // GETRANGE answers an absent key with nothing.
            return Ok(None);
        }
        if bytes.len() > self.max_entry_bytes {
            return Err(Failure::Foreign("larger than any entry this server writes"));
        }
        match entry {
            Entry::Style(key) => {
                if hex::encode(Sha256::digest(&bytes)) == key {
                    Ok(Some(bytes))
                } else {
                    Err(Failure::Foreign("does not hash to its key"))
                }
            }
            Entry::Targets(_) => {
                let secret = self
                    .secret
                    .as_ref()
                    .ok_or(Failure::Failed("targets read without a secret".into()))?;
                if bytes.len() < SEAL_BYTES {
                    return Err(Failure::Foreign("shorter than a seal"));
                }
                let (seal, payload) = bytes.split_at(SEAL_BYTES);
                if secret.verifies(name, payload, seal) {
                    Ok(Some(payload.to_vec()))
                } else {
                    Err(Failure::Foreign("not sealed with this registry's secret"))
                }
            }
        }
    }

    /// Deletes an entry that failed its check: a miss from now on, for every replica.
    fn discard(&self, entry: Entry<'_>, name: &str, why: &str) {
        metrics::counter!(STORE_DAMAGED_TOTAL, "kind" => entry.kind()).increment(1);
        tracing::warn!(store = %self.link.shown, entry = name, why, "deleting a registry entry that is not ours");
        let _ = self.link.run("delete", |conn| {
            redis::cmd("DEL").arg(name).query::<i64>(conn)
        });
    }

    /// What is stored for `bytes`: a style's file as is, targets sealed (`None` without a
    /// secret: they are not shared).
    fn stored_form(&self, entry: Entry<'_>, bytes: &[u8]) -> Option<Vec<u8>> {
        match entry {
            Entry::Style(_) => Some(bytes.to_vec()),
            Entry::Targets(_) => {
                let secret = self.secret.as_ref()?;
                let mut sealed = secret.seal(&entry.redis_key(), bytes).to_vec();
                sealed.extend_from_slice(bytes);
                Some(sealed)
            }
        }
    }
}

fn put_command(
    name: &str,
    bytes: &[u8],
    ttl_seconds: u64,
    conn: &mut redis::Connection,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(name)
        .arg(bytes)
        .arg("EX")
        .arg(ttl_seconds)
        .query::<()>(conn)
}

/// One background write; failures are counted and logged by `run`.
fn write_now(link: &Link, write: Write, ttl_seconds: u64) {
    match write {
        Write::Put { name, bytes } => {
            let _ = link.run("put", |conn| put_command(&name, &bytes, ttl_seconds, conn));
        }
        Write::Renew { name, bytes } => {
            let renewed = link.run("touch", |conn| {
                redis::cmd("EXPIRE")
                    .arg(&name)
                    .arg(ttl_seconds)
                    .query::<bool>(conn)
            });
            if let (Ok(false), Some(bytes)) = (renewed, bytes) {
                let _ = link.run("put", |conn| put_command(&name, &bytes, ttl_seconds, conn));
            }
        }
        Write::Used { facts, name, at_ms } => {
            let _ = link.run("touch", |conn| {
                book::write_use(conn, &facts, name.as_deref(), at_ms, ttl_seconds)
            });
        }
    }
}

/// The style cache reads and writes targets through the store: sealed by a replica holding
/// the same secret, read within a bound, written in the background.
impl stylize_core::cache::TargetStore for SharedStore {
    fn read_targets(&self, id: &str) -> Option<Vec<u8>> {
        self.get(Entry::Targets(id)).ok().flatten()
    }

    fn shares_targets(&self) -> bool {
        SharedStore::shares_targets(self)
    }

    fn write_targets_later(&self, id: &str, bytes: &[u8]) {
        self.put_later(Entry::Targets(id), bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_binds_the_secret_the_name_and_the_payload() {
        let secret = Secret::new(b"0123456789abcdef\n").unwrap();
        let seal = secret.seal("a", b"payload");
        assert!(secret.verifies("a", b"payload", &seal));
        assert!(!secret.verifies("b", b"payload", &seal), "moved");
        assert!(!secret.verifies("a", b"payloae", &seal), "altered");
        let other = Secret::new(b"0123456789abcdeF").unwrap();
        assert!(!other.verifies("a", b"payload", &seal), "another secret");
    }

    #[test]
    fn short_secrets_are_refused_naming_the_flag() {
        let refused = Secret::new(b"  short secret \n").err().unwrap();
        assert!(
            refused.to_string().contains("registry-secret-file"),
            "{refused}"
        );
    }
}
