//! Style names and facts in the shared store, so every replica resolves and lists the same
//! names. A name is a small JSON record under `stylize:v1:name:<name>` with the store's time
//! to live, indexed for listing in the sorted set `stylize:v1:names` (by name, lexically); a
//! style's facts are a hash under `stylize:v1:facts:<key>`. A use renews both in the
//! background. Names are not sealed: whoever may write the store may point them, as they
//! may delete styles. Two registrations re-pointing one name at once: the last one wins.

use redis::Connection;

use super::{NAMESPACE, SharedStore, Write};
use crate::error::Result;
use crate::registry::names::{NameBook, NameRecord, StyleFacts, may_point, now_ms};
use crate::telemetry::metrics::STORE_DAMAGED_TOTAL;

/// The sorted set of every name, for listing.
fn index() -> String {
    format!("{NAMESPACE}:names")
}

pub(super) fn name_key(name: &str) -> String {
    format!("{NAMESPACE}:name:{name}")
}

pub(super) fn facts_key(key: &str) -> String {
    format!("{NAMESPACE}:facts:{key}")
}

/// A record as stored, or `None` if it is not one of ours.
fn parse(bytes: &[u8]) -> Option<NameRecord> {
    serde_json::from_slice(bytes).ok()
}

impl SharedStore {
    /// Writes `record` under `name` and indexes it.
    fn write_name(&self, name: &str, record: &NameRecord) -> Result<()> {
        let json = serde_json::to_vec(record)
            .map_err(|e| crate::error::Error::SharedStore(format!("name record: {e}")))?;
        let seconds = self.ttl.as_secs();
        self.link.run("put", |conn| {
            redis::pipe()
                .cmd("SET")
                .arg(name_key(name))
                .arg(&json)
                .arg("EX")
                .arg(seconds)
                .ignore()
                .cmd("ZADD")
                .arg(index())
                .arg(0)
                .arg(name)
                .ignore()
                .query::<()>(conn)
        })
    }

    /// The record under `name`; one that does not parse is deleted and counted.
    fn read_name(&self, name: &str) -> Result<Option<NameRecord>> {
        let stored = name_key(name);
        let bytes = self.link.run("get", |conn| {
            redis::cmd("GET")
                .arg(&stored)
                .query::<Option<Vec<u8>>>(conn)
        })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        match parse(&bytes) {
            Some(record) => Ok(Some(record)),
            None => {
                self.drop_foreign_name(name, "not a name record");
                Ok(None)
            }
        }
    }

    fn drop_foreign_name(&self, name: &str, why: &str) {
        metrics::counter!(STORE_DAMAGED_TOTAL, "kind" => super::KINDS[2]).increment(1);
        tracing::warn!(store = %self.link.shown, name, why, "deleting a name that is not ours");
        let _ = self.link.run("delete", |conn| {
            redis::pipe()
                .cmd("DEL")
                .arg(name_key(name))
                .ignore()
                .cmd("ZREM")
                .arg(index())
                .arg(name)
                .ignore()
                .query::<()>(conn)
        });
    }
}

impl NameBook for SharedStore {
    fn point(
        &self,
        field: &str,
        name: &str,
        record: &NameRecord,
        replace: bool,
    ) -> Result<Option<String>> {
        let current = self.read_name(name)?;
        let previous = may_point(field, name, current.as_ref(), record, replace)?;
        self.write_name(name, record)?;
        Ok(previous)
    }

    fn name(&self, name: &str) -> Result<Option<NameRecord>> {
        self.read_name(name)
    }

    fn names(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Option<NameRecord>)>> {
        let from = match after {
            Some(after) if after >= prefix => format!("({after}"),
            _ if prefix.is_empty() => "-".to_string(),
            _ => format!("[{prefix}"),
        };
        // No name holds DEL (0x7f): every name with the prefix sorts before this.
        let to = if prefix.is_empty() {
            "+".to_string()
        } else {
            format!("[{prefix}\u{7f}")
        };
        let names: Vec<String> = self.link.run("get", |conn| {
            redis::cmd("ZRANGEBYLEX")
                .arg(index())
                .arg(&from)
                .arg(&to)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query(conn)
        })?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Option<Vec<u8>>> = self.link.run("get", |conn| {
            let mut get = redis::cmd("MGET");
            for name in &names {
                get.arg(name_key(name));
            }
            get.query(conn)
        })?;
        let mut listed = Vec::with_capacity(names.len());
        let mut expired = Vec::new();
        for (name, bytes) in names.into_iter().zip(stored) {
            let record = bytes.as_deref().and_then(parse);
            if record.is_none() {
                expired.push(name.clone());
            }
            listed.push((name, record));
        }
        if !expired.is_empty() {
            // Names whose record expired leave the index (a renewed one is written back
            // with its record).
            let _ = self.link.run("delete", |conn| {
                redis::cmd("ZREM")
                    .arg(index())
                    .arg(&expired)
                    .query::<i64>(conn)
            });
        }
        Ok(listed)
    }

    fn record_facts(&self, key: &str, facts: &StyleFacts) -> Result<()> {
        let (stored, seconds) = (facts_key(key), self.ttl.as_secs());
        self.link.run("put", |conn| {
            redis::pipe()
                .cmd("HSET")
                .arg(&stored)
                .arg("file_bytes")
                .arg(facts.file_bytes)
                .arg("width")
                .arg(facts.width)
                .arg("height")
                .arg(facts.height)
                .arg("pixels_sha256")
                .arg(&facts.pixels_sha256)
                .ignore()
                .cmd("HSETNX")
                .arg(&stored)
                .arg("registered_at_ms")
                .arg(facts.registered_at_ms)
                .ignore()
                .cmd("EXPIRE")
                .arg(&stored)
                .arg(seconds)
                .ignore()
                .query::<()>(conn)
        })
    }

    fn facts(&self, key: &str) -> Result<Option<StyleFacts>> {
        let stored = facts_key(key);
        let fields: std::collections::HashMap<String, String> = self
            .link
            .run("get", |conn| redis::cmd("HGETALL").arg(&stored).query(conn))?;
        if fields.is_empty() {
            return Ok(None);
        }
        let number = |field: &str| fields.get(field).and_then(|v| v.parse::<u64>().ok());
        let facts = StyleFacts {
            file_bytes: number("file_bytes").unwrap_or(0),
            width: number("width").unwrap_or(0) as u32,
            height: number("height").unwrap_or(0) as u32,
            pixels_sha256: fields.get("pixels_sha256").cloned().unwrap_or_default(),
            registered_at_ms: number("registered_at_ms").unwrap_or(0),
            last_used_ms: number("last_used_ms").unwrap_or(0),
        };
        Ok(Some(facts))
    }

    fn mark_used(&self, key: &str, name: Option<&str>) {
        self.queue(Write::Used {
            facts: facts_key(key),
            name: name.map(name_key),
            at_ms: now_ms(),
        });
    }
}

/// A use, written by the background writer: the facts' last-use time (if they are still
/// there) and both entries' time to live.
pub(super) fn write_use(
    conn: &mut Connection,
    facts: &str,
    name: Option<&str>,
    at_ms: u64,
    ttl_seconds: u64,
) -> redis::RedisResult<()> {
    let present: bool = redis::cmd("EXPIRE")
        .arg(facts)
        .arg(ttl_seconds)
        .query(conn)?;
    if present {
        redis::cmd("HSET")
            .arg(facts)
            .arg("last_used_ms")
            .arg(at_ms)
            .query::<()>(conn)?;
    }
    if let Some(name) = name {
        redis::cmd("EXPIRE")
            .arg(name)
            .arg(ttl_seconds)
            .query::<()>(conn)?;
    }
    Ok(())
}
