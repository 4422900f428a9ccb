//! A throwaway `redis-server` (Debian's package) on a loopback port for the shared-registry
//! tests, configured like the cluster's (an LRU memory cap), without persistence.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
    /// The secret replicas seal targets with (`--registry-secret-file`).
    secret: tempfile::NamedTempFile,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server: {e} (install Debian's redis-server package)")
            });
        let mut secret = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut secret, b"a test secret of 32 bytes, plus\n").unwrap();
        let redis = Redis {
            child,
            port,
            secret,
        };
        let client = redis::Client::open(redis.url()).unwrap();
        let started = Instant::now();
        while client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The secret file replicas share.
    pub fn secret_file(&self) -> String {
        self.secret.path().display().to_string()
    }

    /// Freezes the store (SIGSTOP): connections stay open and commands get no answer.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused store (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let sent = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {which}");
    }

    /// Runs one command, e.g. `["EXPIRE", key, "100"]`.
    pub fn command<T: redis::FromRedisValue>(&self, words: &[&str]) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let mut command = redis::cmd(words[0]);
        for word in &words[1..] {
            command.arg(*word);
        }
        command.query(&mut conn).unwrap()
    }

    /// Writes `bytes` under `key` (no expiry), replacing whatever was there.
    pub fn set(&self, key: &str, bytes: &[u8]) {
        let _: i64 = self.command(&["DEL", key]);
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(bytes)
            .query(&mut conn)
            .unwrap();
    }

    /// Keys under `pattern` (e.g. `stylize:v1:style:*`).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.command(&["KEYS", pattern])
    }

    /// Seconds `key` has left to live (-1: no expiry, -2: absent).
    pub fn ttl(&self, key: &str) -> i64 {
        self.command(&["TTL", key])
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica sharing `redis` as its registry (with the secret, so targets are shared too),
/// one worker, and `extra` flags.
pub fn replica(redis: &Redis, extra: &[&str]) -> super::server::Server {
    let (url, secret) = (redis.url(), redis.secret_file());
    let mut args = vec![
        "--registry",
        url.as_str(),
        "--registry-secret-file",
        secret.as_str(),
        "--workers",
        "1",
    ];
    args.extend_from_slice(extra);
    super::server::Server::start(&args)
}
