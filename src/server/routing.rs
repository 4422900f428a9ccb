//! How clients route across replicas: the style-affinity key, a header clients set so a
//! load balancer hashing it (Envoy `ring_hash`, Istio `consistentHash`) sends requests that
//! share a style to the replica that already holds its Grams in cache (the server itself
//! ignores the header), and which failures a client retries on another replica.

use super::proto::{StyleInput, style_input::Source};
use crate::registry::StyleRegistry;

/// The header's name (gRPC metadata keys are lower-case).
pub const STYLE_KEY_HEADER: &str = "x-stylize-style-key";

/// The routing key for a request's styles: the first style's RegisterStyle key, or the hex
/// sha256 of its image bytes, which is the key RegisterStyle gives those bytes. `None`
/// without styles, or when the first is a name: a client resolves the name (`GetStyle`)
/// and routes by the key it points at, as `resolved_name` says.
pub fn style_routing_key(styles: &[StyleInput]) -> Option<String> {
    match styles.first()?.source.as_ref()? {
        Source::Key(key) => Some(key.clone()),
        Source::Image(bytes) => Some(StyleRegistry::key_of(bytes)),
        Source::Name(_) => None,
    }
}

/// Whether a request that failed with `status` should be sent again (to any replica): the
/// status carries `RetryInfo` (a full queue, a draining replica), the replica answered
/// `UNAVAILABLE` (draining, handed the job back, shared registry down), or
/// the connection broke before any status arrived (the replica died). Other clients see the
/// latter as `UNAVAILABLE`; tonic reports it as `UNKNOWN` carrying the transport error.
pub fn retryable(status: &tonic::Status) -> bool {
    if super::details::says_retry(status) {
        // The server says so (`RetryInfo`): draining, a full queue, too many open shots.
        return true;
    }
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown => {
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                if cause.is::<std::io::Error>() {
                    return true;
                }
                source = cause.source();
            }
            status.message().starts_with("h2 protocol error")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_and_broken_connections_are_retried_nothing_else() {
        assert!(retryable(&tonic::Status::unavailable("draining")));
        let broken = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert!(retryable(&broken));
        assert!(!retryable(&tonic::Status::unknown(
            "a handler's own unknown"
        )));
        assert!(!retryable(&tonic::Status::invalid_argument("size")));
        assert!(!retryable(&tonic::Status::resource_exhausted("queue full")));
        assert!(!retryable(&tonic::Status::internal("bug")));
    }

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
        let name = StyleInput {
            source: Some(Source::Name("look@v1".into())),
        };
        assert_eq!(style_routing_key(&[name]), None);
    }
}
