//! The style-affinity routing key: a header clients set so a load balancer hashing it
//! (Envoy `ring_hash`, Istio `consistentHash`) sends requests that share a style to the
//! replica that already holds its Grams in cache. The server itself ignores the header.

use super::proto::{StyleInput, style_input::Source};
use crate::cache::StyleRegistry;

/// The header's name (gRPC metadata keys are lower-case).
pub const STYLE_KEY_HEADER: &str = "x-stylize-style-key";

/// The routing key for a request's styles: the first style's RegisterStyle key, or the hex
/// sha256 of its image bytes, which is the key RegisterStyle gives those bytes. `None`
/// without styles.
pub fn style_routing_key(styles: &[StyleInput]) -> Option<String> {
    match styles.first()?.source.as_ref()? {
        Source::Key(key) => Some(key.clone()),
        Source::Image(bytes) => Some(StyleRegistry::key_of(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_first_style() {
        let image = StyleInput {
            source: Some(Source::Image(b"png bytes".to_vec())),
        };
        let key = StyleInput {
            source: Some(Source::Key("style-abc".into())),
        };
        let from_image = style_routing_key(std::slice::from_ref(&image)).unwrap();
        assert_eq!(from_image.len(), 64);
        assert_eq!(
            style_routing_key(&[image.clone(), key.clone()]),
            Some(from_image)
        );
        assert_eq!(
            style_routing_key(&[key, image]).as_deref(),
            Some("style-abc")
        );
        assert_eq!(style_routing_key(&[]), None);
    }
}
