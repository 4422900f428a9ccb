//! The accept loop's gate: a connection reaches the gRPC transport only once it has sent the
//! start of its handshake (the 24-byte HTTP/2 preface, or a TLS ClientHello's first byte)
//! within `HANDSHAKE_TIMEOUT`. Neither hyper nor h2 bound that wait, so without the gate a
//! client can hold connections (and file descriptors) open forever by saying nothing.

use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::telemetry::metrics::HANDSHAKE_TIMEOUTS_TOTAL;

/// How long a new connection may take to start its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What a plaintext HTTP/2 client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Connections that passed the gate and wait for the transport to take them.
const WAITING: usize = 64;

/// The connections `listener` accepts that start their handshake in time, as the stream the
/// transport serves. `tls`: the first bytes are a TLS record, not the preface.
pub fn gated(
    listener: TcpListener,
    tls: bool,
    timeout: Duration,
) -> ReceiverStream<io::Result<TcpStream>> {
    let (admit, admitted) = mpsc::channel(WAITING);
    tokio::spawn(accept(
        listener,
        admit,
        if tls { 1 } else { PREFACE.len() },
        timeout,
    ));
    ReceiverStream::new(admitted)
}

async fn accept(
    listener: TcpListener,
    admit: mpsc::Sender<io::Result<TcpStream>>,
    needed: usize,
    timeout: Duration,
) {
    loop {
        let (connection, peer) = tokio::select! {
            // The transport stopped: dropping the listener closes the port.
            () = admit.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admit = admit.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, started(&connection, needed)).await {
                Ok(Ok(true)) => {
                    let _ = admit.send(Ok(connection)).await;
                }
                // Closed or failed before its handshake: nothing to serve.
                Ok(_) => {}
                Err(_) => {
                    metrics::counter!(HANDSHAKE_TIMEOUTS_TOTAL).increment(1);
                    tracing::info!(%peer, timeout_s = timeout.as_secs_f64(), "no handshake in time; closing");
                }
            }
        });
    }
}

/// Whether `connection` sent `needed` bytes before closing (they stay unread).
async fn started(connection: &TcpStream, needed: usize) -> io::Result<bool> {
    let mut first = [0u8; PREFACE.len()];
    loop {
        let seen = connection.peek(&mut first[..needed]).await?;
        if seen == 0 {
            return Ok(false);
        }
        if seen >= needed {
            return Ok(true);
        }
        // peek answers as soon as anything is there: wait for the rest.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
