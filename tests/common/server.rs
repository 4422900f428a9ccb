//! The test harness for the gRPC service: a `stylize serve` process on loopback ports with
//! its log captured, the requests and stream readers the server tests share, and the
//! process's memory figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use stylize::server::proto::{self, stylize_event::Event, stylizer_client::StylizerClient};
use tonic::transport::Channel;

pub const CONTENT: &[u8] = include_bytes!("../../assets/chelsea.png");
pub const STYLE: &[u8] = include_bytes!("../../assets/starry_night.jpg");

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics_port: u16,
    /// The server's stderr (its log), printed if the test fails.
    log: tempfile::NamedTempFile,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_stylize")), extra)
    }

    /// Starts the server through `sh -c script` (the script ends by exec-ing `"$0" "$@"`,
    /// which are the binary and its arguments), e.g. to join a cgroup first.
    pub fn start_wrapped(script: &str, extra: &[&str]) -> Server {
        let mut command = Command::new("sh");
        command.args(["-c", script, env!("CARGO_BIN_EXE_stylize")]);
        Self::spawn(command, extra)
    }

    fn spawn(mut command: Command, extra: &[&str]) -> Server {
        super::weights();
        super::ort_features(stylize::engine::Pooling::Max); // library in place
        let metrics_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen"])
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(extra)
            .env("STYLIZE_MODELS_DIR", super::models_dir())
            .env("RUST_LOG", "stylize=warn")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            metrics_port,
            log,
        }
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    pub async fn client(&self) -> StylizerClient<Channel> {
        StylizerClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    /// The value of one series (exact name with labels) in a scrape.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("series {series} missing"))
    }

    /// Waits until `series` reads `expected`, polling every 50 ms, for at most 10 s. A job's
    /// last bookkeeping (the in-flight gauge, a cancel noticed by its worker) lands just after
    /// the client saw it end, and later still on a loaded machine: a fixed sleep before one
    /// read races it, this does not.
    pub async fn metric_becomes(&self, series: &str, expected: f64) {
        let since = std::time::Instant::now();
        loop {
            let value = self.metric(series);
            if value == expected {
                return;
            }
            assert!(
                since.elapsed() < std::time::Duration::from_secs(10),
                "{series} is {value}, not {expected}, 10 s after the job ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log());
        }
    }
}

pub fn request(iterations: u32) -> proto::StylizeRequest {
    proto::StylizeRequest {
        request_id: String::new(),
        content: CONTENT.to_vec(),
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Image(STYLE.to_vec())),
        }],
        blend: vec![],
        options: Some(proto::Options {
            size: 32,
            iterations,
            optimizer: proto::Optimizer::Adam as i32,
            ..Default::default()
        }),
    }
}

/// RegisterStyle for `image` at 32 px.
pub fn registration(image: &[u8]) -> proto::RegisterStyleRequest {
    proto::RegisterStyleRequest {
        image: image.to_vec(),
        size: 32,
        ..Default::default()
    }
}

/// Registers `image` (at 32 px) on `server` and returns its key.
pub async fn registered_key(server: &Server, image: &[u8]) -> String {
    server
        .client()
        .await
        .register_style(registration(image))
        .await
        .unwrap()
        .into_inner()
        .key
}

/// `request(iterations)` on the style registered under `key`.
pub fn by_key(key: &str, iterations: u32) -> proto::StylizeRequest {
    proto::StylizeRequest {
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Key(key.to_string())),
        }],
        ..request(iterations)
    }
}

pub async fn collect(
    client: &mut StylizerClient<Channel>,
    request: proto::StylizeRequest,
) -> Result<Vec<Event>, tonic::Status> {
    let mut stream = client.stylize(request).await?.into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event.event.unwrap());
    }
    Ok(events)
}

/// Reads events until one matches, returning the stream for later use.
pub async fn until(
    stream: &mut tonic::Streaming<proto::StylizeEvent>,
    want: fn(&Event) -> bool,
) -> Event {
    loop {
        let event = stream
            .message()
            .await
            .unwrap()
            .expect("stream ended early")
            .event
            .unwrap();
        if want(&event) {
            return event;
        }
    }
}

pub type Events = tonic::Streaming<proto::StylizeEvent>;

/// Reads events until the stream fails, returning its status (a stream that ends
/// successfully fails the test).
pub async fn final_status(stream: &mut Events) -> tonic::Status {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error status"),
            Err(status) => return status,
        }
    }
}

/// Starts a long job (until it runs) and queues a short one behind it.
pub async fn occupy_worker_and_queue(client: &mut StylizerClient<Channel>) -> (Events, Events) {
    let mut long = client.stylize(request(10_000)).await.unwrap().into_inner();
    until(&mut long, |e| matches!(e, Event::Progress(_))).await;
    let mut next = client.stylize(request(1)).await.unwrap().into_inner();
    until(&mut next, |e| matches!(e, Event::Queued(_))).await;
    (long, next)
}

/// A memory figure of process `pid` from /proc (`VmHWM`: peak, `VmRSS`: now), in KiB.
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Peak resident memory of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    memory_kib(pid, "VmHWM:")
}
