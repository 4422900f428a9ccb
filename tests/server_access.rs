//! Access to the server: TLS on the gRPC port and the bearer token, with health left open.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stylize::server::proto::{stylize_event::Event, stylizer_client::StylizerClient};
use tonic::Code;
use tonic::transport::Channel;

use common::server::{CONTENT, STYLE, Server, collect, registration, request};

/// A throwaway authority and a `localhost` certificate it signed, as PEM files.
struct TestPki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TestPki {
    fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A TLS channel to `url` trusting only the authority `ca_pem` (the configuration must be
/// valid; only connecting may fail).
async fn trusting(url: &str, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

#[tokio::test]
async fn tls_serves_trusting_clients_only() {
    let pki = TestPki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server = Server::start(&["--workers", "1", "--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("https://localhost:{}", server.addr.port());
    let channel = trusting(&url, &pki.ca_pem).await.unwrap();
    let events = collect(&mut StylizerClient::new(channel), request(2))
        .await
        .unwrap();
    assert!(
        matches!(events.last(), Some(Event::Result(_))),
        "{events:?}"
    );

    // Plaintext gRPC against the TLS port gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Ok(channel) = plain.connect().await {
        let err = collect(&mut StylizerClient::new(channel), request(1)).await;
        assert!(err.is_err(), "plaintext call answered: {err:?}");
    }
    // A client trusting another authority refuses the server's certificate.
    let stranger = TestPki::new();
    let untrusted = trusting(&url, &stranger.ca_pem).await;
    assert!(untrusted.is_err(), "an untrusted certificate was accepted");

    // The CLI's health probe over TLS.
    let probe = |ca: &str| {
        Command::new(env!("CARGO_BIN_EXE_stylize"))
            .args(["probe", "--server", &url, "--ca-cert", ca])
            .output()
            .unwrap()
    };
    let ok = probe(&pki.path("ca.pem"));
    assert!(ok.status.success(), "{ok:?}");
    let refused = probe(&stranger.path("ca.pem"));
    assert!(!refused.status.success(), "{refused:?}");
}

#[tokio::test]
async fn a_bearer_token_guards_the_service_but_not_health() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "correct-horse-battery-staple\n").unwrap();
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "correct-horse-battery-stapler").unwrap();
    let token_path = token_file.display().to_string();
    let server = Server::start(&["--workers", "1", "--auth-token-file", &token_path]);
    let mut client = server.client().await;
    let with_token = |token: Option<&str>| {
        let mut request = tonic::Request::new(request(2));
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        request
    };
    for token in [None, Some("correct-horse-battery-stapler"), Some("")] {
        let err = client.stylize(with_token(token)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    let err = client
        .register_style(registration(STYLE))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // Nothing ran for them: no job started, no style was computed. Each is counted under
    // its own method.
    assert_eq!(
        server.metric("stylize_requests_total{outcome=\"unauthenticated\"}"),
        3.0
    );
    assert_eq!(
        server.metric("stylize_register_style_total{outcome=\"unauthenticated\"}"),
        1.0
    );
    assert_eq!(server.metric("stylize_iterations_total"), 0.0);
    assert_eq!(server.metric("stylize_style_cache_misses_total"), 0.0);

    let mut stream = client
        .stylize(with_token(Some("correct-horse-battery-staple")))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(event) = stream.message().await.unwrap() {
        last = event.event;
    }
    assert!(matches!(last, Some(Event::Result(_))), "{last:?}");

    // Probes need no token.
    let status = HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: "stylize.v1.Stylizer".into(),
        })
        .await
        .unwrap();
    assert_eq!(status.into_inner().status, 1);

    // The CLI client sends the token from a file.
    let out_dir = tempfile::tempdir().unwrap();
    let content = out_dir.path().join("content.png");
    std::fs::write(&content, CONTENT).unwrap();
    let style = out_dir.path().join("style.jpg");
    std::fs::write(&style, STYLE).unwrap();
    let submit = |token: &Path| {
        Command::new(env!("CARGO_BIN_EXE_stylize"))
            .args(["submit", "--server", &format!("http://{}", server.addr)])
            .args(["--content", content.to_str().unwrap()])
            .args(["--style", style.to_str().unwrap()])
            .args(["--size", "32", "--iterations", "1", "--quiet", "--out"])
            .arg(out_dir.path().join("out.png"))
            .arg("--token-file")
            .arg(token)
            .output()
            .unwrap()
    };
    let ok = submit(&token_file);
    assert!(ok.status.success(), "{ok:?}");
    let refused = submit(&wrong_file);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"),
        "{refused:?}"
    );
}
