//! The daemon's HTTP endpoint: Prometheus metrics, liveness and readiness probes, and the
//! JSON status that `agent status` reads.
//!
//! Meant for a trusted network (a loopback address, a pod network), so it has no
//! authentication; it still bounds what a client can make it hold (header size, connection
//! count, connection age) because a probe port is easy to reach by accident.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::metrics::{self, Metrics};
use super::result::JobStatus;

/// Connections served at once; more are closed on accept. Scrapers and probes need a
/// handful.
const MAX_CONNECTIONS: usize = 64;
/// Request line and headers; nothing this endpoint answers needs more.
const MAX_HEADER_BYTES: usize = 16 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections are not timed out by hyper, so a connection is closed
/// (after its current request) once this old, to free the slot of a client that went away.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A status with a long history is still far below this.
const MAX_STATUS_BYTES: usize = 8 * 1024 * 1024;

/// What the daemon knows about itself, for the probes and `/status.json`. Called on every
/// request, so it must answer without waiting on jobs or sources.
pub trait StatusProvider: Send + Sync {
    fn status(&self) -> Status;
    /// The daemon works (its loops are alive); `false` means restart it.
    fn healthy(&self) -> bool;
    /// The daemon takes jobs: its sources are healthy and it is not draining.
    fn ready(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The agent instance's name.
    pub agent: String,
    /// The config's `agent.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub version: String,
    /// RFC 3339.
    pub started_at: String,
    /// `running`, `draining` or `stopping`.
    pub state: String,
    pub concurrency: usize,
    pub running: Vec<RunningJob>,
    pub sources: Vec<SourceStatus>,
    /// The latest results, newest first.
    pub recent: Vec<RecentJob>,
    /// Jobs finished since start, by status.
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningJob {
    pub job_id: String,
    pub kind: String,
    pub source: String,
    pub started_at: String,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    pub healthy: bool,
    pub last_poll: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentJob {
    pub job_id: String,
    pub status: JobStatus,
    pub finished_at: String,
    pub duration_ms: u64,
}

/// A server that is listening; it stops when the `shutdown` future given to [`serve`]
/// completes, and `handle` completes once it has.
#[derive(Debug)]
pub struct BoundServer {
    /// The address actually bound (the port the system chose for port 0).
    pub local_addr: SocketAddr,
    pub handle: JoinHandle<()>,
}

struct Shared {
    state: Arc<dyn StatusProvider>,
    metrics: Arc<Metrics>,
}

/// Binds `addr` and serves `/metrics`, `/healthz`, `/readyz` and `/status.json` until
/// `shutdown` completes; then stops accepting, lets requests in flight finish (up to a few
/// seconds) and closes every connection.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<dyn StatusProvider>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<BoundServer, io::Error> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let shared = Arc::new(Shared { state, metrics });
    let handle = tokio::spawn(accept_loop(listener, shared, shutdown));
    Ok(BoundServer { local_addr, handle })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::debug!(%peer, "too many connections to the status endpoint; closing");
                        continue;
                    }
                    connections.spawn(connection(stream, Arc::clone(&shared), stopped.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: a pause keeps the loop from
                    // spinning until some are free.
                    tracing::warn!(error = %e, "status endpoint cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Closing the listener first makes new connections fail at once instead of queueing.
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("status endpoint connections outlived the grace period; closing them");
        connections.shutdown().await;
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = answer(&shared, request.method(), request.uri().path());
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "status endpoint connection ended with an error");
            }
            return;
        }
        // An error means the server is gone, which is a stop as well.
        _ = stopped.wait_for(|stop| *stop) => {}
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

fn answer(shared: &Shared, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let route = match path {
        "/metrics" | "/healthz" | "/readyz" | "/status.json" => path,
        _ => return text(StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    // HEAD too, because HTTP requires it wherever GET works; hyper leaves out the body.
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_string(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match route {
        "/metrics" => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            shared.metrics.render(),
        ),
        "/healthz" => {
            if shared.state.healthy() {
                text(StatusCode::OK, "ok\n".to_string())
            } else {
                let reason = not_ok_reason(&shared.state.status(), "the agent is not healthy");
                text(StatusCode::SERVICE_UNAVAILABLE, reason)
            }
        }
        "/readyz" => {
            if shared.state.ready() {
                text(StatusCode::OK, "ok\n".to_string())
            } else {
                let reason = not_ok_reason(&shared.state.status(), "the agent is not ready");
                text(StatusCode::SERVICE_UNAVAILABLE, reason)
            }
        }
        _ => match serde_json::to_string(&shared.state.status()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the status: {e}\n"),
            ),
        },
    }
}

/// Why a probe fails, from what the status shows: the state when not running, and each
/// unhealthy source with its last error. Falls back to `fallback` when the status shows
/// nothing wrong.
fn not_ok_reason(status: &Status, fallback: &str) -> String {
    let mut reasons = Vec::new();
    if status.state != "running" {
        reasons.push(format!("the agent is {}", one_line(&status.state)));
    }
    for source in status.sources.iter().filter(|s| !s.healthy) {
        match &source.last_error {
            Some(error) => reasons.push(format!(
                "source {} is down: {}",
                one_line(&source.name),
                one_line(error)
            )),
            None => reasons.push(format!("source {} is down", one_line(&source.name))),
        }
    }
    if reasons.is_empty() {
        reasons.push(fallback.to_string());
    }
    let mut body = reasons.join("\n");
    body.push('\n');
    body
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer describes this moment; a cached probe or status would mislead.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Reads a running daemon's status from `addr` (`host:port`, or `http://host:port`), giving
/// up after 5 seconds.
pub async fn fetch_status(addr: &str) -> Result<Status, String> {
    let authority = authority(addr)?;
    tokio::time::timeout(FETCH_TIMEOUT, get_status(&authority))
        .await
        .map_err(|_| format!("no answer from the agent at {authority} within 5 seconds"))?
}

fn authority(addr: &str) -> Result<String, String> {
    let trimmed = addr.trim();
    if trimmed.starts_with("https://") {
        return Err(format!(
            "{addr}: the agent's status endpoint speaks plain HTTP, not HTTPS"
        ));
    }
    let authority = trimmed
        .strip_prefix("http://")
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{addr}: expected the agent's status address as host:port"
        ));
    }
    // Checked here so a bad address reads as one, not as a failed request.
    authority
        .parse::<hyper::http::uri::Authority>()
        .map_err(|e| format!("{addr}: not a host:port ({e})"))?;
    Ok(authority.to_string())
}

async fn get_status(authority: &str) -> Result<Status, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to the agent at {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("cannot talk HTTP to {authority}: {e}"))?;
    let conn = tokio::spawn(conn);
    let request = Request::get("/status.json")
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build the request to {authority}: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request to {authority} failed: {e}"))?;
        let code = response.status();
        let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the status from {authority}: {e}"))?
            .to_bytes();
        if code != StatusCode::OK {
            return Err(format!(
                "the agent at {authority} answered {code}: {}",
                one_line(String::from_utf8_lossy(&body).trim())
            ));
        }
        serde_json::from_slice::<Status>(&body)
            .map_err(|e| format!("the agent at {authority} sent an unreadable status: {e}"))
    }
    .await;
    conn.abort();
    result
}

/// The status as `agent status` prints it.
pub fn render_status(status: &Status) -> String {
    let mut out = format!(
        "Agent {} {}, {} since {}, up to {} job{} at once\n",
        one_line(&status.agent),
        one_line(&status.version),
        one_line(&status.state),
        one_line(&status.started_at),
        status.concurrency,
        if status.concurrency == 1 { "" } else { "s" },
    );

    out.push_str(&format!("\nRunning jobs ({}):\n", status.running.len()));
    if status.running.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut rows = vec![row(["JOB", "KIND", "SOURCE", "STARTED", "ELAPSED"])];
        rows.extend(status.running.iter().map(|job| {
            row([
                &job.job_id,
                &job.kind,
                &job.source,
                &job.started_at,
                &human_duration(job.elapsed_ms),
            ])
        }));
        table(&mut out, &rows);
    }

    out.push_str(&format!("\nSources ({}):\n", status.sources.len()));
    if status.sources.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut rows = vec![row(["SOURCE", "HEALTH", "LAST POLL", "LAST ERROR"])];
        rows.extend(status.sources.iter().map(|source| {
            row([
                &source.name,
                if source.healthy { "up" } else { "DOWN" },
                source.last_poll.as_deref().unwrap_or("-"),
                source.last_error.as_deref().unwrap_or("-"),
            ])
        }));
        table(&mut out, &rows);
    }

    out.push_str(&format!("\nRecent results ({}):\n", status.recent.len()));
    if status.recent.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut rows = vec![row(["JOB", "STATUS", "FINISHED", "DURATION"])];
        rows.extend(status.recent.iter().map(|job| {
            row([
                &job.job_id,
                job.status.as_str(),
                &job.finished_at,
                &human_duration(job.duration_ms),
            ])
        }));
        table(&mut out, &rows);
    }

    if !status.counts.is_empty() {
        let counts: Vec<String> = status
            .counts
            .iter()
            .map(|(status, n)| format!("{} {n}", one_line(status)))
            .collect();
        out.push_str(&format!("\nSince start: {}\n", counts.join(", ")));
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|cell| one_line(cell)).collect()
}

/// Left-aligned columns two spaces apart, indented; the last column is not padded so long
/// errors do not leave trailing blanks.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Control characters (a multi-line error, an escape sequence in a job id) would break the
/// table or the terminal; each becomes a space.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `850ms`, `42s`, `5m07s`, `2h03m`.
fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use crate::daemon::metrics::exposition;

    struct Fake {
        healthy: AtomicBool,
        ready: AtomicBool,
        status: Mutex<Status>,
    }

    impl StatusProvider for Fake {
        fn status(&self) -> Status {
            self.status.lock().unwrap().clone()
        }
        fn healthy(&self) -> bool {
            self.healthy.load(Ordering::SeqCst)
        }
        fn ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
    }

    fn sample_status() -> Status {
        Status {
            agent: "ci-1".into(),
            labels: Default::default(),
            version: "0.1.0".into(),
            started_at: "2025-01-02T03:04:05Z".into(),
            state: "running".into(),
            concurrency: 2,
            running: vec![RunningJob {
                job_id: "job-42".into(),
                kind: "build".into(),
                source: "sqs:jobs".into(),
                started_at: "2025-01-02T03:10:00Z".into(),
                elapsed_ms: 307_000,
            }],
            sources: vec![
                SourceStatus {
                    name: "sqs:jobs".into(),
                    healthy: true,
                    last_poll: Some("2025-01-02T03:15:00Z".into()),
                    last_error: None,
                },
                SourceStatus {
                    name: "spool:/var/lib/agent/spool".into(),
                    healthy: true,
                    last_poll: None,
                    last_error: None,
                },
            ],
            recent: vec![RecentJob {
                job_id: "job-41".into(),
                status: JobStatus::Failed,
                finished_at: "2025-01-02T03:09:00Z".into(),
                duration_ms: 42_500,
            }],
            counts: BTreeMap::from([("SUCCEEDED".into(), 7), ("FAILED".into(), 1)]),
        }
    }

    struct Running {
        addr: SocketAddr,
        fake: Arc<Fake>,
        metrics: Arc<Metrics>,
        stop: oneshot::Sender<()>,
        handle: JoinHandle<()>,
    }

    async fn start() -> Running {
        let fake = Arc::new(Fake {
            healthy: AtomicBool::new(true),
            ready: AtomicBool::new(true),
            status: Mutex::new(sample_status()),
        });
        let metrics = Arc::new(Metrics::new("0.1.0"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = serve(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            Arc::clone(&fake) as Arc<dyn StatusProvider>,
            Arc::clone(&metrics),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        assert_ne!(server.local_addr.port(), 0);
        Running {
            addr: server.local_addr,
            fake,
            metrics,
            stop,
            handle: server.handle,
        }
    }

    type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

    async fn connect(addr: SocketAddr) -> Sender {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn send(
        sender: &mut Sender,
        method: Method,
        path: &str,
    ) -> (StatusCode, hyper::HeaderMap, String) {
        sender.ready().await.unwrap();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let code = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
        let (code, _, body) = send(&mut connect(addr).await, Method::GET, path).await;
        (code, body)
    }

    #[tokio::test]
    async fn metrics_are_scraped_with_exact_lines() {
        let server = start().await;
        let m = &server.metrics;
        m.job_finished("build", JobStatus::Succeeded, Duration::from_secs(12));
        m.job_finished("build", JobStatus::Succeeded, Duration::from_secs(40));
        m.job_finished("build", JobStatus::Fault, Duration::from_secs(7200));
        m.job_started();
        m.poll(
            "odd \"name\" \\ here",
            Duration::from_millis(70),
            false,
            true,
        );
        m.set_source_healthy("odd \"name\" \\ here", false);
        m.set_capacity(3);

        let (code, headers, body) =
            send(&mut connect(server.addr).await, Method::GET, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        exposition::parse(&body).unwrap();
        let lines: Vec<&str> = body.lines().collect();
        for want in [
            r#"agent_jobs_total{kind="build",status="SUCCEEDED"} 2"#,
            r#"agent_jobs_total{kind="build",status="FAULT"} 1"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="5"} 0"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="15"} 1"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="30"} 1"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="60"} 2"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="3600"} 2"#,
            r#"agent_job_duration_seconds_bucket{kind="build",le="+Inf"} 3"#,
            r#"agent_job_duration_seconds_sum{kind="build"} 7252"#,
            r#"agent_job_duration_seconds_count{kind="build"} 3"#,
            "agent_jobs_running 1",
            "agent_concurrency 3",
            r#"agent_poll_latency_seconds_bucket{source="odd \"name\" \\ here",le="0.05"} 0"#,
            r#"agent_poll_latency_seconds_bucket{source="odd \"name\" \\ here",le="0.1"} 1"#,
            r#"agent_poll_errors_total{source="odd \"name\" \\ here"} 1"#,
            r#"agent_source_up{source="odd \"name\" \\ here"} 0"#,
            r#"agent_build_info{version="0.1.0"} 1"#,
        ] {
            assert!(lines.contains(&want), "missing {want}\n{body}");
        }

        // Later recordings show in the next scrape, on the same kept-alive connection.
        let mut sender = connect(server.addr).await;
        m.job_finished("build", JobStatus::Succeeded, Duration::from_secs(1));
        let (_, _, first) = send(&mut sender, Method::GET, "/metrics").await;
        m.job_finished("build", JobStatus::Succeeded, Duration::from_secs(1));
        let (_, _, second) = send(&mut sender, Method::GET, "/metrics?x=1").await;
        assert!(first.contains(r#"agent_jobs_total{kind="build",status="SUCCEEDED"} 3"#));
        assert!(second.contains(r#"agent_jobs_total{kind="build",status="SUCCEEDED"} 4"#));
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn probes_follow_the_provider() {
        let server = start().await;
        assert_eq!(
            get(server.addr, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            get(server.addr, "/readyz").await,
            (StatusCode::OK, "ok\n".into())
        );

        {
            let mut status = server.fake.status.lock().unwrap();
            status.state = "draining".into();
            status.sources[0].healthy = false;
            status.sources[0].last_error = Some("AccessDenied:\nnot allowed".into());
        }
        server.fake.ready.store(false, Ordering::SeqCst);
        let (code, body) = get(server.addr, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "the agent is draining\nsource sqs:jobs is down: AccessDenied: not allowed\n"
        );
        assert_eq!(get(server.addr, "/healthz").await.0, StatusCode::OK);

        server.fake.healthy.store(false, Ordering::SeqCst);
        let (code, body) = get(server.addr, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("the agent is draining"), "{body}");

        *server.fake.status.lock().unwrap() = sample_status();
        let (code, body) = get(server.addr, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "the agent is not healthy\n");

        server.fake.healthy.store(true, Ordering::SeqCst);
        server.fake.ready.store(true, Ordering::SeqCst);
        assert_eq!(get(server.addr, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(server.addr, "/readyz").await.0, StatusCode::OK);
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn status_round_trips_through_fetch_status() {
        let server = start().await;
        let fetched = fetch_status(&server.addr.to_string()).await.unwrap();
        assert_eq!(fetched, sample_status());
        let fetched = fetch_status(&format!("http://{}/", server.addr))
            .await
            .unwrap();
        assert_eq!(fetched, sample_status());

        let (code, headers, body) =
            send(&mut connect(server.addr).await, Method::GET, "/status.json").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["recent"][0]["status"], "FAILED");
        assert_eq!(json["sources"][1]["last_poll"], serde_json::Value::Null);
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn fetch_status_explains_failures() {
        let server = start().await;
        let addr = server.addr;
        let _ = server.stop.send(());
        server.handle.await.unwrap();
        let err = fetch_status(&addr.to_string()).await.unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
        let err = fetch_status("https://127.0.0.1:1").await.unwrap_err();
        assert!(err.contains("HTTPS"), "{err}");
        let err = fetch_status("127.0.0.1:1/status.json").await.unwrap_err();
        assert!(err.contains("host:port"), "{err}");

        // A listener that never answers: the timeout, not a hang.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let started = std::time::Instant::now();
        let err = fetch_status(&silent_addr.to_string()).await.unwrap_err();
        assert!(err.contains("within 5 seconds"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(8));
        drop(silent);
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_refused() {
        let server = start().await;
        let mut sender = connect(server.addr).await;
        let (code, _, _) = send(&mut sender, Method::GET, "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _, _) = send(&mut sender, Method::GET, "/metrics/").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, headers, _) = send(&mut sender, Method::POST, "/metrics").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET, HEAD");
        let (code, _, _) = send(&mut sender, Method::DELETE, "/status.json").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        let (code, _, body) = send(&mut sender, Method::HEAD, "/healthz").await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, ""));
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn garbage_and_oversized_requests_do_not_hurt_the_server() {
        let server = start().await;
        let raw = |bytes: Vec<u8>| async move {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            // The server may answer and close before reading everything.
            let _ = stream.write_all(&bytes).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
                .await
                .unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        };
        let answer = raw(b"\x00\xff\x16\x03\x01 garbage\r\n\r\n".to_vec()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
        huge.extend(b"\r\n\r\n");
        let answer = raw(huge).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        let answer =
            raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        assert_eq!(get(server.addr, "/healthz").await.0, StatusCode::OK);
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let server = start().await;
        // A kept-alive idle connection must not hold the shutdown up.
        let mut idle = connect(server.addr).await;
        assert_eq!(
            send(&mut idle, Method::GET, "/healthz").await.0,
            StatusCode::OK
        );
        server.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), server.handle)
            .await
            .unwrap()
            .unwrap();
        let refused = TcpStream::connect(server.addr).await;
        assert_eq!(
            refused.unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        assert!(
            idle.ready().await.is_err(),
            "the idle connection was closed"
        );
    }

    #[test]
    fn status_renders_as_a_table() {
        let mut status = sample_status();
        status.sources[1].healthy = false;
        status.sources[1].last_error = Some("No such directory\n(os error 2)".into());
        let text = render_status(&status);
        let want = "\
Agent ci-1 0.1.0, running since 2025-01-02T03:04:05Z, up to 2 jobs at once

Running jobs (1):
  JOB     KIND   SOURCE    STARTED               ELAPSED
  job-42  build  sqs:jobs  2025-01-02T03:10:00Z  5m07s

Sources (2):
  SOURCE                      HEALTH  LAST POLL             LAST ERROR
  sqs:jobs                    up      2025-01-02T03:15:00Z  -
  spool:/var/lib/agent/spool  DOWN    -                     No such directory (os error 2)

Recent results (1):
  JOB     STATUS  FINISHED              DURATION
  job-41  FAILED  2025-01-02T03:09:00Z  42s

Since start: FAILED 1, SUCCEEDED 7
";
        assert_eq!(text, want);

        let empty = Status {
            running: vec![],
            sources: vec![],
            recent: vec![],
            counts: BTreeMap::new(),
            concurrency: 1,
            ..sample_status()
        };
        let text = render_status(&empty);
        assert!(text.starts_with(
            "Agent ci-1 0.1.0, running since 2025-01-02T03:04:05Z, up to 1 job at once\n"
        ));
        assert_eq!(text.matches("  none\n").count(), 3, "{text}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(42_999), "42s");
        assert_eq!(human_duration(307_000), "5m07s");
        assert_eq!(human_duration(7_380_000), "2h03m");
    }
}
