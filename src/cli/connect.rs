//! How the CLI clients reach a server: the address, TLS trust (`--ca-cert` for https://)
//! and the bearer token, shared by `submit`, `register-style` and `probe`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::args::{read_flag_file, read_flag_text};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// The server: http://HOST:PORT, or https://HOST:PORT for TLS (with --ca-cert).
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
    /// A connected channel, over TLS for https:// addresses.
    pub async fn channel(&self) -> Result<Channel> {
        let server = &self.server;
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
            .with_context(|| format!("--server {server}: cannot connect"))
    }

    /// The bearer token from --token-file, if one is given.
    pub fn token(&self) -> Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        Ok(Some(read_flag_text("token-file", path)?.trim().to_string()))
    }

    /// Adds the bearer token, when one is configured, to `request`.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<()> {
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
