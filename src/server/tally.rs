//! Counts every call to the stylize service that ends before it streams (a refusal), whoever
//! refused it: the handlers' validation and admission, the bearer-token gate, or tonic itself
//! (an undecodable or oversized request, which never reaches a handler). Each is counted under
//! the outcome of the status the client receives, and logged. tonic's own two refusals are
//! reworded as the gRPC conventions want them: an oversized request is `RESOURCE_EXHAUSTED`
//! (not `OUT_OF_RANGE`) naming the flag, an undecodable one `INVALID_ARGUMENT` (not `INTERNAL`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use tonic::Code;

use super::outcome_of_code;
use crate::telemetry::metrics as names;

/// The calls this layer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Stylize,
    RegisterStyle,
}

impl Method {
    fn of(path: &str) -> Option<Method> {
        match path {
            "/stylize.v1.Stylizer/Stylize" | "/stylize.v1.Stylizer/StylizeSequence" => {
                Some(Method::Stylize)
            }
            "/stylize.v1.Stylizer/RegisterStyle" => Some(Method::RegisterStyle),
            _ => None,
        }
    }

    fn count(self, code: Code, since: Instant) {
        let outcome = outcome_of_code(code);
        match self {
            Method::Stylize => names::count_request(outcome),
            Method::RegisterStyle => {
                names::count_registration(outcome, since.elapsed().as_secs_f64())
            }
        }
    }
}

/// The status of a response that carries it in its headers (gRPC's trailers-only form,
/// which is how every call refused before streaming is answered).
fn refusal(headers: &HeaderMap) -> Option<Code> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    (code != 0).then(|| Code::from_i32(code))
}

fn message(headers: &HeaderMap) -> String {
    headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        // Percent-encoded on the wire; the log shows it plain.
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// tonic's refusals of a request it could not read, in the status they should have.
fn reworded(code: Code, message: &str) -> Option<(Code, &'static str)> {
    match code {
        // Only tonic's size limits answer OUT_OF_RANGE here.
        Code::OutOfRange => Some((
            Code::ResourceExhausted,
            "the request is larger than this server's --max-message-bytes",
        )),
        Code::Internal if message.starts_with("failed to decode Protobuf message") => Some((
            Code::InvalidArgument,
            "the request is not a valid message of this method's type",
        )),
        _ => None,
    }
}

fn set_status(headers: &mut HeaderMap, code: Code, message: &'static str) {
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    // Plain ASCII without '%': valid as a percent-encoded grpc-message as is.
    headers.insert("grpc-message", HeaderValue::from_static(message));
}

/// The tower layer (applied to the whole gRPC router).
pub fn layer()
-> impl tower::Layer<tonic::service::Routes, Service = Tallied<tonic::service::Routes>> + Clone {
    tower::layer::layer_fn(|inner| Tallied { inner })
}

#[derive(Debug, Clone)]
pub struct Tallied<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Tallied<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = Method::of(request.uri().path());
        let since = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let Some(method) = method else {
                return Ok(response);
            };
            if let Some(mut code) = refusal(response.headers()) {
                let mut said = message(response.headers());
                if let Some((better, text)) = reworded(code, &said) {
                    tracing::info!(?method, from = ?code, detail = %said, "request unreadable");
                    set_status(response.headers_mut(), better, text);
                    (code, said) = (better, text.to_string());
                }
                tracing::info!(?method, ?code, message = %said, "refused");
                method.count(code, since);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_only_statuses_are_read_and_tonics_refusals_reworded() {
        let mut headers = HeaderMap::new();
        assert_eq!(refusal(&headers), None);
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(refusal(&headers), None);
        headers.insert("grpc-status", HeaderValue::from_static("11"));
        assert_eq!(refusal(&headers), Some(Code::OutOfRange));
        headers.insert("grpc-message", HeaderValue::from_static("a%20b%25c%2"));
        assert_eq!(message(&headers), "a b%c%2");
        assert_eq!(
            reworded(Code::OutOfRange, "").map(|r| r.0),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(
            reworded(Code::Internal, "failed to decode Protobuf message: x").map(|r| r.0),
            Some(Code::InvalidArgument)
        );
        assert_eq!(reworded(Code::Internal, "a job panicked"), None);
        assert_eq!(reworded(Code::InvalidArgument, "size"), None);
    }
}
