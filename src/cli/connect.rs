//! How the CLI clients reach a server: the address, TLS trust (`--ca-cert` for https://)
//! and the bearer token, shared by `submit`, `register-style` and `probe`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::args::{read_flag_file, read_flag_text};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A server that did not answer a connection (worth trying again, or another replica), as
/// opposed to a bad address or TLS settings.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--server {}: cannot connect", self.0)
    }
}

#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// The server: http://HOST:PORT, or https://HOST:PORT for TLS (with --ca-cert). Several,
    /// comma-separated, are tried in turn: each retry goes to the next.
    #[arg(long, env = "STYLIZE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// PEM certificate of the authority that signed the server's certificate.
    #[arg(long, env = "STYLIZE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// File holding the bearer token the server requires.
    #[arg(long, env = "STYLIZE_AUTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// The same connection settings aimed at the server attempt `attempt` (from 1) uses:
    /// the addresses of --server in turn.
    pub fn for_attempt(&self, attempt: u32) -> Self {
        let addresses: Vec<&str> = self.server.split(',').map(str::trim).collect();
        let index = (attempt.max(1) as usize - 1) % addresses.len();
        Self {
            server: addresses[index].to_string(),
            ..self.clone()
        }
    }

    /// A connected channel to the first --server, over TLS for https:// addresses.
    pub async fn channel(&self) -> Result<Channel> {
        let first = self.for_attempt(1);
        let server = &first.server;
        let mut endpoint = Endpoint::from_shared(server.clone())
            .with_context(|| format!("--server {server}: not a URL"))?;
        match (server.starts_with("https://"), &self.ca_cert) {
            (true, Some(path)) => {
                let pem = read_flag_file("ca-cert", path)?;
                let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
                endpoint = endpoint
                    .tls_config(tls)
                    .with_context(|| format!("--ca-cert: {}", path.display()))?;
            }
            (true, None) => bail!("--ca-cert: needed to trust the https:// server {server}"),
            (false, Some(_)) => {
                bail!("--ca-cert: given for a plaintext server {server} (use https://)")
            }
            (false, None) => {}
        }
        endpoint
            .connect()
            .await
            .map_err(|e| anyhow::Error::new(e).context(Unreachable(server.clone())))
    }

    /// The bearer token from --token-file, if one is given.
    pub fn token(&self) -> Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        Ok(Some(read_flag_text("token-file", path)?.trim().to_string()))
    }

    /// Adds the bearer token, when one is configured, to `request`, and the caller's trace
    /// context (`TRACEPARENT` in the environment, as a farm task or an instrumented script
    /// sets it) as `traceparent`, so the server's spans join the caller's trace.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<()> {
        use stylize::telemetry::traces::{TRACEPARENT, caller_traceparent};
        if let Some(traceparent) = caller_traceparent()
            && let Ok(value) = traceparent.parse()
        {
            request.metadata_mut().insert(TRACEPARENT, value);
        }
        let Some(token) = self.token()? else {
            return Ok(());
        };
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .context("--token-file: not a valid header value")?;
        request.metadata_mut().insert("authorization", value);
        Ok(())
    }
}
