//! The registry's wire: a registration's name and labels as the request gives them, and
//! `ListStyles` / `GetStyle` answered from the registry, with the targets the answering
//! replica's cache holds for each style.

use crate::cache::StyleCache;
use crate::error::{Error, Result};
use crate::registry::names::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, check_labels, check_name};
use crate::registry::{Described, Labels, Listing, Naming, StyleRegistry};

use super::proto;

/// The name a registration asks for, checked; `None` without one.
pub fn naming(request: &proto::RegisterStyleRequest) -> Result<Option<Naming>> {
    if request.name.is_empty() {
        if !request.labels.is_empty() {
            return Err(Error::invalid(
                "labels",
                "labels belong to a name: set name",
            ));
        }
        if request.replace {
            return Err(Error::invalid("replace", "replaces a name: set name"));
        }
        return Ok(None);
    }
    check_name("name", &request.name)?;
    let labels: Labels = request.labels.clone().into_iter().collect();
    check_labels("labels", &labels)?;
    Ok(Some(Naming {
        name: request.name.clone(),
        labels,
        replace: request.replace,
    }))
}

/// One page of `ListStyles`.
pub fn list(
    registry: &StyleRegistry,
    cache: &StyleCache,
    request: &proto::ListStylesRequest,
) -> Result<proto::ListStylesResponse> {
    let page_size = match request.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        size if size > MAX_PAGE_SIZE => {
            return Err(Error::invalid(
                "page_size",
                format!("{size}; at most {MAX_PAGE_SIZE}"),
            ));
        }
        size => size,
    };
    let after = match request.page_token.as_str() {
        "" => None,
        token => {
            check_name("page_token", token)
                .map_err(|_| Error::invalid("page_token", "not a token ListStyles gave"))?;
            Some(token.to_string())
        }
    };
    let labels: Labels = request.labels.clone().into_iter().collect();
    check_labels("labels", &labels)?;
    let page = registry.list(&Listing {
        prefix: request.name_prefix.clone(),
        labels,
        after,
        page_size,
    })?;
    Ok(proto::ListStylesResponse {
        styles: page
            .styles
            .iter()
            .map(|style| style_info(style, cache))
            .collect(),
        next_page_token: page.next.unwrap_or_default(),
    })
}

/// `GetStyle`: one style by name or by key.
pub fn get(
    registry: &StyleRegistry,
    cache: &StyleCache,
    request: &proto::GetStyleRequest,
) -> Result<proto::GetStyleResponse> {
    use proto::get_style_request::Style;
    let described = match &request.style {
        Some(Style::Name(name)) => {
            check_name("name", name)?;
            registry.describe_name(name)?.ok_or_else(|| {
                Error::NotFound(format!("name: `{name}` is not a registered style name"))
            })?
        }
        Some(Style::Key(key)) => {
            if !StyleRegistry::is_key(key) {
                return Err(Error::invalid(
                    "key",
                    "not a style key (64 lowercase hex digits)",
                ));
            }
            registry.describe_key(key)?.ok_or_else(|| {
                Error::NotFound(format!("key: {key} is not registered, or expired"))
            })?
        }
        None => return Err(Error::invalid("style", "set name or key")),
    };
    Ok(proto::GetStyleResponse {
        style: Some(style_info(&described, cache)),
    })
}

fn style_info(style: &Described, cache: &StyleCache) -> proto::StyleInfo {
    let facts = style.facts.clone().unwrap_or_default();
    let cached_targets = pixels_digest(&facts.pixels_sha256)
        .map(|digest| {
            cache
                .held_for(&digest)
                .into_iter()
                .map(|(longest_side, layers)| proto::CachedTargets {
                    longest_side,
                    layers: layers.iter().map(ToString::to_string).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let record = style.record.as_ref();
    proto::StyleInfo {
        name: style.name.clone().unwrap_or_default(),
        key: style.key.clone(),
        labels: record
            .map(|record| record.labels.clone().into_iter().collect())
            .unwrap_or_default(),
        file_bytes: facts.file_bytes,
        width: facts.width,
        height: facts.height,
        registered_at: timestamp(facts.registered_at_ms),
        named_at: record.and_then(|record| timestamp(record.named_at_ms)),
        last_used_at: timestamp(facts.last_used_ms),
        cached_targets,
    }
}

fn pixels_digest(hex_digest: &str) -> Option<[u8; 32]> {
    hex::decode(hex_digest).ok()?.try_into().ok()
}

/// Milliseconds since the epoch as a protobuf timestamp; `None` for 0 (never).
fn timestamp(ms: u64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field a refusal names.
    fn field<T: std::fmt::Debug>(answer: Result<T>) -> String {
        match answer {
            Err(Error::InvalidOption { field, .. }) => field,
            other => panic!("not a refusal naming a field: {other:?}"),
        }
    }

    #[test]
    fn labels_and_replace_need_a_name_and_each_refusal_names_its_field() {
        let mut request = proto::RegisterStyleRequest {
            replace: true,
            ..Default::default()
        };
        assert_eq!(field(naming(&request)), "replace");
        request.labels.insert("team".into(), "lookdev".into());
        assert_eq!(field(naming(&request)), "labels");
        request.name = "look with space".into();
        assert_eq!(field(naming(&request)), "name");
        request.name = "vangogh/starry-night@v2".into();
        let named = naming(&request).unwrap().unwrap();
        assert_eq!(named.labels["team"], "lookdev");
        assert!(named.replace);
    }

    #[test]
    fn a_timestamp_keeps_milliseconds_and_never_is_absent() {
        let at = timestamp(1_700_000_000_123).unwrap();
        assert_eq!((at.seconds, at.nanos), (1_700_000_000, 123_000_000));
        assert_eq!(timestamp(0), None);
    }

    #[test]
    fn pages_are_bounded_and_tokens_checked() {
        let (registry, cache) = (StyleRegistry::new(1 << 20), StyleCache::new(1 << 20));
        let huge = proto::ListStylesRequest {
            page_size: MAX_PAGE_SIZE as u32 + 1,
            ..Default::default()
        };
        assert_eq!(field(list(&registry, &cache, &huge)), "page_size");
        let forged = proto::ListStylesRequest {
            page_token: "no spaces here".into(),
            ..Default::default()
        };
        assert_eq!(field(list(&registry, &cache, &forged)), "page_token");
        let missing = proto::GetStyleRequest {
            style: Some(proto::get_style_request::Style::Name("absent".into())),
        };
        assert!(matches!(
            get(&registry, &cache, &missing),
            Err(Error::NotFound(_))
        ));
    }
}
