//! The optional bearer token: an interceptor that admits a call only when its
//! `authorization` metadata is `Bearer <token>`, refusing the rest with UNAUTHENTICATED.
//! Installed on the stylize service and reflection; health stays open for probes.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// Checks calls against one shared token, or admits every call when none is configured.
#[derive(Clone, Default)]
pub struct TokenGate {
    /// The token's digest: comparing digests takes the same time wherever a guess differs.
    expected: Option<Arc<[u8; 32]>>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl std::fmt::Debug for TokenGate {
    /// Never prints the token's digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.expected.is_some() {
            "bearer"
        } else {
            "open"
        };
        write!(f, "TokenGate({kind})")
    }
}

impl TokenGate {
    /// A gate that admits every call (no token configured).
    pub fn open() -> Self {
        Self::default()
    }

    /// `token` as configured (surrounding whitespace, e.g. a file's newline, is dropped).
    /// An empty token or one that cannot travel in a header is an error naming `field`.
    pub fn bearer(token: &str, field: &str) -> Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::invalid(field, "the token is empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                field,
                "the token must be printable ASCII without spaces",
            ));
        }
        Ok(Self {
            expected: Some(Arc::new(digest(token.as_bytes()))),
        })
    }

    fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        header
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .is_some_and(|given| digest(given) == **expected)
    }
}

impl tonic::service::Interceptor for TokenGate {
    /// A call without the right token never reaches the service.
    fn call(&mut self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if self.admits(header) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_admitted() {
        assert!(TokenGate::open().admits(None));
        let auth = TokenGate::bearer("s3cret-token\n", "auth-token-file").unwrap();
        assert!(auth.admits(Some(b"Bearer s3cret-token")));
        for wrong in [
            &b"Bearer s3cret-toke"[..],
            b"Bearer s3cret-token ",
            b"bearer s3cret-token",
            b"s3cret-token",
            b"Basic s3cret-token",
            b"Bearer ",
        ] {
            assert!(
                !auth.admits(Some(wrong)),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!auth.admits(None));
        for bad in ["", "  \n", "two words"] {
            let err = TokenGate::bearer(bad, "auth-token-file")
                .unwrap_err()
                .to_string();
            assert!(err.contains("auth-token-file"), "{err}");
        }
    }
}
