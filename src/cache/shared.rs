//! The store replicas share (`--registry redis://…`): registered styles as the encoded files
//! their keys hash, and computed style targets under their target identity, each with a
//! time to live that every use renews. It moves bytes; what they mean is the caller's.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::telemetry::metrics::STORE_ERRORS_TOTAL;

/// The operations whose failures are counted (the `op` label).
pub const OPS: [&str; 4] = ["ping", "put", "get", "touch"];

/// How long an entry lives after its last use (7 days: longer than a shot's render).
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a request waits for a connection before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take (a style's targets are a few MB).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connection, how long operations fail at once instead of waiting for
/// `CONNECT_TIMEOUT` again (a store that is down costs each request nothing).
const BACKOFF: Duration = Duration::from_secs(5);
/// Connections kept open per replica (one per worker and registration is plenty).
const MAX_CONNECTIONS: u32 = 8;
/// Every key this server writes starts so; the version changes if the layout does.
const NAMESPACE: &str = "stylize:v1";

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

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedStore({}, ttl {:?})", self.shown, self.ttl)
    }
}

pub struct SharedStore {
    pool: r2d2::Pool<redis::Client>,
    ttl: Duration,
    /// The URL without its password, for logs.
    shown: String,
    /// Until when the store counts as down (after a failed connection).
    down_until: Mutex<Option<Instant>>,
}

impl SharedStore {
    /// A store at `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS).
    /// Nothing is connected yet: a store that is down makes requests that need it answer
    /// `UNAVAILABLE`, not the server fail to start.
    pub fn open(url: &str, ttl: Duration) -> Result<Self> {
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
        Ok(Self {
            pool,
            ttl,
            shown,
            down_until: Mutex::new(None),
        })
    }

    /// Where the store is (host and port, no credentials).
    pub fn address(&self) -> &str {
        &self.shown
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Checks the store answers.
    pub fn ping(&self) -> Result<()> {
        self.run("ping", |conn| {
            redis::cmd("PING").query::<String>(conn).map(drop)
        })
    }

    /// Writes `bytes` under `entry` with the time to live.
    pub fn put(&self, entry: Entry<'_>, bytes: &[u8]) -> Result<()> {
        self.run("put", |conn| {
            redis::cmd("SET")
                .arg(entry.redis_key())
                .arg(bytes)
                .arg("EX")
                .arg(self.ttl.as_secs())
                .query::<()>(conn)
        })
    }

    /// The bytes under `entry`, renewing its time to live; `None` if absent (never written,
    /// expired or evicted by the store's memory policy).
    pub fn get(&self, entry: Entry<'_>) -> Result<Option<Vec<u8>>> {
        self.run("get", |conn| {
            redis::cmd("GETEX")
                .arg(entry.redis_key())
                .arg("EX")
                .arg(self.ttl.as_secs())
                .query::<Option<Vec<u8>>>(conn)
        })
    }

    /// Renews `entry`'s time to live; false if it is gone.
    pub fn touch(&self, entry: Entry<'_>) -> Result<bool> {
        self.run("touch", |conn| {
            redis::cmd("EXPIRE")
                .arg(entry.redis_key())
                .arg(self.ttl.as_secs())
                .query::<bool>(conn)
        })
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
        let outcome = match self.still_down_for() {
            Some(left) => Err(format!(
                "not answering (next try in {:.1} s)",
                left.as_secs_f64()
            )),
            None => match self.pool.get() {
                Ok(mut conn) => command(&mut conn).map_err(|e| e.to_string()),
                Err(e) => {
                    if let Ok(mut until) = self.down_until.lock() {
                        *until = Some(Instant::now() + BACKOFF);
                    }
                    Err(e.to_string())
                }
            },
        };
        outcome.map_err(|reason| {
            metrics::counter!(STORE_ERRORS_TOTAL, "op" => op).increment(1);
            tracing::warn!(store = %self.shown, op, %reason, "shared registry failed");
            Error::SharedStore(format!("{}: {reason}", self.shown))
        })
    }
}
