//! A load generator for the gRPC service: N concurrent clients share a fixed number of
//! requests, each read to its end, and every outcome is tallied by gRPC code with its
//! latency (`bench::quantile` summarises them). What `stylize loadgen` prints and what the load test checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use stylize::server::proto::{self, stylize_event::Event, stylizer_client::StylizerClient};
use stylize::telemetry::metrics::outcome;

/// One burst: `clients` tasks take requests from a shared count of `requests`.
#[derive(Clone)]
pub struct LoadPlan {
    pub clients: usize,
    pub requests: usize,
    pub request: proto::StylizeRequest,
    /// Sent as `authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

/// What the clients saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests per outcome: `ok` for a streamed result, else the gRPC code's name
    /// (`resource_exhausted`, ...) or `no_result` for a stream that ended without one.
    pub outcomes: BTreeMap<String, usize>,
    /// Seconds from sending to the result, for each completed request.
    pub completed_seconds: Vec<f64>,
    /// Seconds from sending to the refusal, for each refused request.
    pub refused_seconds: Vec<f64>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn count(&self, outcome: &str) -> usize {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.outcomes.values().sum()
    }

    /// Requests that ended any other way than a result or a prompt `RESOURCE_EXHAUSTED`.
    pub fn failures(&self) -> usize {
        self.total() - self.count(outcome::OK) - self.count(outcome::RESOURCE_EXHAUSTED)
    }

    /// Adds `other`'s requests to these.
    pub fn merge(&mut self, other: LoadReport) {
        for (outcome, n) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += n;
        }
        self.completed_seconds.extend(other.completed_seconds);
        self.refused_seconds.extend(other.refused_seconds);
    }
}

/// The lower-case, underscored name of a gRPC code (`ResourceExhausted` → `resource_exhausted`).
pub fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// Runs `plan` over `channel` (one HTTP/2 connection multiplexes every client's streams).
pub async fn run(channel: Channel, plan: LoadPlan) -> LoadReport {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let authorization: Option<MetadataValue<_>> = plan
        .token
        .as_ref()
        .and_then(|t| format!("Bearer {t}").parse().ok());
    let mut tasks = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients.max(1) {
        let (next, plan, authorization) = (next.clone(), plan.clone(), authorization.clone());
        let mut client = StylizerClient::new(channel.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        tasks.push(tokio::spawn(async move {
            let mut report = LoadReport::default();
            while next.fetch_add(1, Ordering::Relaxed) < plan.requests {
                let mut request = tonic::Request::new(plan.request.clone());
                if let Some(value) = &authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", value.clone());
                }
                let sent = Instant::now();
                let outcome = one_request(&mut client, request).await;
                let seconds = sent.elapsed().as_secs_f64();
                match outcome.as_str() {
                    outcome::OK => report.completed_seconds.push(seconds),
                    outcome::RESOURCE_EXHAUSTED => report.refused_seconds.push(seconds),
                    _ => {}
                }
                *report.outcomes.entry(outcome).or_default() += 1;
            }
            report
        }));
    }
    let mut report = LoadReport::default();
    for task in tasks {
        match task.await {
            Ok(part) => report.merge(part),
            Err(err) => {
                *report
                    .outcomes
                    .entry(format!("client_panicked: {err}"))
                    .or_default() += 1;
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Sends one request and reads its stream to the end; returns the outcome's name.
async fn one_request(
    client: &mut StylizerClient<Channel>,
    request: tonic::Request<proto::StylizeRequest>,
) -> String {
    let mut stream = match client.stylize(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return code_name(status.code()),
    };
    loop {
        match stream.message().await {
            Ok(Some(proto::StylizeEvent {
                event: Some(Event::Result(_)),
            })) => return outcome::OK.to_string(),
            Ok(Some(_)) => {}
            Ok(None) => return "no_result".to_string(),
            Err(status) => return code_name(status.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_match_the_metrics_outcome_labels() {
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            outcome::RESOURCE_EXHAUSTED
        );
        assert_eq!(
            code_name(tonic::Code::InvalidArgument),
            outcome::INVALID_ARGUMENT
        );
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            outcome::DEADLINE_EXCEEDED
        );
        assert_eq!(
            code_name(tonic::Code::Unauthenticated),
            outcome::UNAUTHENTICATED
        );
        assert_eq!(code_name(tonic::Code::Internal), outcome::INTERNAL);
    }
}
