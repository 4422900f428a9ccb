//! Names and labels of registered styles, and the facts kept about each style (file size,
//! dimensions, registration and last-use times): what they may look like, and the book that
//! keeps them. This replica's book is [`LocalBook`]; the shared store keeps the same in Redis
//! (`shared_book`), so every replica resolves and lists the same names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Most labels on one name.
pub const MAX_LABELS: usize = 32;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 63;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 200;
/// Styles whose facts one process keeps without a shared store; past it, the facts of the
/// least recently used style no name points at are dropped (its `GetStyle` by key then
/// answers NOT_FOUND, as an expired entry does with a store).
pub const MAX_LOCAL_FACTS: usize = 65_536;
/// Names per `ListStyles` page when the request does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most names per page.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A name's labels, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks `name` (sent in `field`) is a style name: 1-200 bytes of ASCII letters, digits and
/// `. _ - / @ : +`, starting with a letter or digit, and not something a key could be.
pub fn check_name(field: &str, name: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::invalid(field, why.to_string()));
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse(&format!(
            "{} bytes; a name has at most {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return refuse("a name starts with a letter or a digit");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-/@:+".contains(*c)))
    {
        return refuse(&format!(
            "`{}` is not allowed in a name (letters, digits and . _ - / @ : +)",
            bad.escape_default()
        ));
    }
    if super::StyleRegistry::is_key(name) {
        return refuse("64 hex digits is a key, not a name");
    }
    Ok(())
}

/// Checks a listing's name prefix (sent in `field`): what a name may hold, any length up to
/// a name's.
pub fn check_prefix(field: &str, prefix: &str) -> Result<()> {
    if prefix.len() > MAX_NAME_BYTES
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/@:+".contains(c))
    {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_NAME_BYTES} bytes of letters, digits and . _ - / @ : +"),
        ));
    }
    Ok(())
}

/// Checks a name's labels (sent in `field`): at most 32, keys 1-63 bytes of ASCII letters,
/// digits and `. _ - /`, values at most 200 bytes.
pub fn check_labels(field: &str, labels: &Labels) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            field,
            format!("{} labels; at most {MAX_LABELS}", labels.len()),
        ));
    }
    for (key, value) in labels {
        let shown = crate::error::quoted(key);
        let well_formed = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY_BYTES
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if !well_formed {
            return Err(Error::invalid(
                field,
                format!(
                    "label key `{shown}`: 1-{MAX_LABEL_KEY_BYTES} bytes of letters, digits and . _ - /"
                ),
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(Error::invalid(
                format!("{field}[{shown}]"),
                format!(
                    "{} bytes; a label's value has at most {MAX_LABEL_VALUE_BYTES}",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

/// What a name points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    /// The style's key.
    pub key: String,
    pub labels: Labels,
    /// When the name was last pointed at `key`.
    pub named_at_ms: u64,
}

/// What is known about a registered style besides its pixels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StyleFacts {
    pub file_bytes: u64,
    pub width: u32,
    pub height: u32,
    /// Hex sha256 of the decoded pixels: what the target cache knows the style by.
    pub pixels_sha256: String,
    /// The key's first registration.
    pub registered_at_ms: u64,
    /// The last request that used it by key or by name (0: none yet).
    pub last_used_ms: u64,
}

/// A name to give a style as it is registered.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    pub name: String,
    pub labels: Labels,
    /// Re-point the name if it points at another style.
    pub replace: bool,
}

/// Which names a listing wants.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub prefix: String,
    /// Every one of these must be among a name's labels.
    pub labels: Labels,
    /// Names after this one (the previous page's last).
    pub after: Option<String>,
    pub page_size: usize,
}

impl Listing {
    pub fn wants(&self, record: &NameRecord) -> bool {
        self.labels
            .iter()
            .all(|(key, value)| record.labels.get(key) == Some(value))
    }
}

/// Where names and facts live: this process ([`LocalBook`]) or the shared store.
pub trait NameBook: Send + Sync {
    /// Points `name` at `record.key`. A name that points at another key is refused
    /// ([`Error::NameTaken`], naming `field`) unless `replace`; returns the key it pointed at
    /// before if it moved.
    fn point(
        &self,
        field: &str,
        name: &str,
        record: &NameRecord,
        replace: bool,
    ) -> Result<Option<String>>;
    /// What `name` points at, if anything.
    fn name(&self, name: &str) -> Result<Option<NameRecord>>;
    /// Up to `limit` names starting with `prefix`, after `after`, in byte order, each with
    /// its record (`None`: it expired as it was listed). Fewer than `limit`: no more.
    fn names(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Option<NameRecord>)>>;
    /// Keeps the facts of `key`, keeping the first registration time if there is one.
    fn record_facts(&self, key: &str, facts: &StyleFacts) -> Result<()>;
    fn facts(&self, key: &str) -> Result<Option<StyleFacts>>;
    /// Notes a use of `key` (through `name` if given) now: its last-use time, and the
    /// entries' lifetimes where they have one. Never fails the request that used it.
    fn mark_used(&self, key: &str, name: Option<&str>);
}

/// Names and facts held by this process (one replica, no shared store).
#[derive(Default)]
pub struct LocalBook {
    state: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    names: BTreeMap<String, NameRecord>,
    facts: HashMap<String, StyleFacts>,
}

impl LocalState {
    /// Drops the facts of the least recently used style no name points at (never `keep`).
    fn forget_least_used(&mut self, keep: &str) {
        let named: std::collections::HashSet<&str> = self
            .names
            .values()
            .map(|record| record.key.as_str())
            .collect();
        let oldest = self
            .facts
            .iter()
            .filter(|(key, _)| key.as_str() != keep && !named.contains(key.as_str()))
            .min_by_key(|(_, facts)| facts.last_used_ms.max(facts.registered_at_ms))
            .map(|(key, _)| key.clone());
        if let Some(oldest) = oldest {
            self.facts.remove(&oldest);
        }
    }
}

impl LocalBook {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, LocalState>> {
        self.state
            .lock()
            .map_err(|_| Error::StylePrecompute("style names lock poisoned".into()))
    }
}

/// Whether `record` may replace `current` under a name: the same key always (labels are
/// set anew), another only with `replace`. `Ok(Some(previous))` when the name moves.
pub fn may_point(
    field: &str,
    name: &str,
    current: Option<&NameRecord>,
    record: &NameRecord,
    replace: bool,
) -> Result<Option<String>> {
    match current {
        Some(current) if current.key != record.key => {
            if replace {
                Ok(Some(current.key.clone()))
            } else {
                Err(Error::NameTaken {
                    field: field.to_string(),
                    name: name.to_string(),
                    key: current.key.clone(),
                })
            }
        }
        _ => Ok(None),
    }
}

impl NameBook for LocalBook {
    fn point(
        &self,
        field: &str,
        name: &str,
        record: &NameRecord,
        replace: bool,
    ) -> Result<Option<String>> {
        let mut state = self.state()?;
        let previous = may_point(field, name, state.names.get(name), record, replace)?;
        state.names.insert(name.to_string(), record.clone());
        Ok(previous)
    }

    fn name(&self, name: &str) -> Result<Option<NameRecord>> {
        Ok(self.state()?.names.get(name).cloned())
    }

    fn names(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Option<NameRecord>)>> {
        use std::ops::Bound;
        let state = self.state()?;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        Ok(state
            .names
            .range((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit)
            .map(|(name, record)| (name.clone(), Some(record.clone())))
            .collect())
    }

    fn record_facts(&self, key: &str, facts: &StyleFacts) -> Result<()> {
        let mut state = self.state()?;
        let mut kept = facts.clone();
        if let Some(known) = state.facts.get(key) {
            kept.registered_at_ms = known.registered_at_ms;
            kept.last_used_ms = known.last_used_ms;
        }
        state.facts.insert(key.to_string(), kept);
        if state.facts.len() > MAX_LOCAL_FACTS {
            state.forget_least_used(key);
        }
        Ok(())
    }

    fn facts(&self, key: &str) -> Result<Option<StyleFacts>> {
        Ok(self.state()?.facts.get(key).cloned())
    }

    fn mark_used(&self, key: &str, _name: Option<&str>) {
        if let Ok(mut state) = self.state()
            && let Some(facts) = state.facts.get_mut(key)
        {
            facts.last_used_ms = now_ms();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: char) -> NameRecord {
        NameRecord {
            key: key.to_string().repeat(64),
            labels: Labels::new(),
            named_at_ms: 1,
        }
    }

    /// The field a refusal names.
    fn field(refused: Error) -> String {
        match refused {
            Error::InvalidOption { field, .. } => field,
            other => panic!("not a refusal naming a field: {other}"),
        }
    }

    #[test]
    fn names_are_short_plain_and_never_keys() {
        for good in ["vangogh/starry-night@v2", "a", "look:v1+grade", "A.b_c-d"] {
            check_name("name", good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("/abs", "starts with"),
            ("has space", "not allowed"),
            ("é", "starts with"),
            ("ok\u{7f}", "not allowed"),
        ] {
            let refused = check_name("name", bad).unwrap_err();
            assert!(refused.to_string().contains(why), "{bad}: {refused}");
            assert_eq!(field(refused), "name");
        }
        assert!(check_name("name", &"a".repeat(64)).is_err(), "a key");
        assert!(check_name("name", &"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(check_name("name", &"x".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn labels_are_bounded_and_named_in_the_refusal() {
        let mut labels = Labels::from([("team".into(), "lookdev".into())]);
        check_labels("labels", &labels).unwrap();
        labels.insert("bad key".into(), "x".into());
        assert!(
            check_labels("labels", &labels)
                .unwrap_err()
                .to_string()
                .contains("bad key")
        );
        let long = Labels::from([("show".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1))]);
        assert_eq!(
            field(check_labels("labels", &long).unwrap_err()),
            "labels[show]"
        );
        let many: Labels = (0..=MAX_LABELS)
            .map(|k| (format!("k{k}"), "v".into()))
            .collect();
        assert!(check_labels("labels", &many).is_err());
    }

    #[test]
    fn a_name_moves_only_with_replace_and_says_where_it_was() {
        let book = LocalBook::default();
        assert_eq!(
            book.point("name", "look", &record('a'), false).unwrap(),
            None
        );
        // The same key again: accepted, labels set anew.
        let mut relabelled = record('a');
        relabelled.labels.insert("show".into(), "x".into());
        assert_eq!(
            book.point("name", "look", &relabelled, false).unwrap(),
            None
        );
        assert_eq!(book.name("look").unwrap().unwrap().labels.len(), 1);
        let taken = book.point("name", "look", &record('b'), false).unwrap_err();
        assert!(matches!(&taken, Error::NameTaken { key, .. } if key == &"a".repeat(64)));
        assert_eq!(
            book.point("name", "look", &record('b'), true).unwrap(),
            Some("a".repeat(64))
        );
        assert_eq!(book.name("look").unwrap().unwrap().key, "b".repeat(64));
    }

    #[test]
    fn names_list_in_order_by_prefix_from_a_page_token() {
        let book = LocalBook::default();
        for name in ["b/2", "a/1", "b/1", "c", "b/3"] {
            book.point("name", name, &record('a'), false).unwrap();
        }
        let listed = |prefix: &str, after: Option<&str>, limit| -> Vec<String> {
            book.names(prefix, after, limit)
                .unwrap()
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        assert_eq!(listed("b/", None, 2), ["b/1", "b/2"]);
        assert_eq!(listed("b/", Some("b/2"), 10), ["b/3"]);
        assert_eq!(listed("", Some("b/3"), 10), ["c"]);
        assert!(listed("d", None, 10).is_empty());
    }

    #[test]
    fn local_facts_are_bounded_keeping_named_and_recent_styles() {
        let book = LocalBook::default();
        let key = |k: usize| format!("{k:064x}");
        let facts = |at: u64| StyleFacts {
            registered_at_ms: at,
            ..StyleFacts::default()
        };
        // The oldest style has a name: the second oldest goes first.
        book.record_facts(&key(0), &facts(1)).unwrap();
        let mut named = record('a');
        named.key = key(0);
        book.point("name", "kept", &named, false).unwrap();
        for k in 1..=MAX_LOCAL_FACTS {
            book.record_facts(&key(k), &facts(1 + k as u64)).unwrap();
        }
        let state = book.state().unwrap();
        assert_eq!(state.facts.len(), MAX_LOCAL_FACTS);
        assert!(state.facts.contains_key(&key(0)), "named");
        assert!(!state.facts.contains_key(&key(1)), "least recently used");
        assert!(state.facts.contains_key(&key(MAX_LOCAL_FACTS)));
    }

    #[test]
    fn facts_keep_the_first_registration_and_the_last_use() {
        let book = LocalBook::default();
        let key = "a".repeat(64);
        let facts = StyleFacts {
            registered_at_ms: 5,
            ..StyleFacts::default()
        };
        book.record_facts(&key, &facts).unwrap();
        book.mark_used(&key, None);
        let used = book.facts(&key).unwrap().unwrap().last_used_ms;
        assert!(used > 5);
        let again = StyleFacts {
            registered_at_ms: 9,
            ..StyleFacts::default()
        };
        book.record_facts(&key, &again).unwrap();
        let kept = book.facts(&key).unwrap().unwrap();
        assert_eq!((kept.registered_at_ms, kept.last_used_ms), (5, used));
    }
}
