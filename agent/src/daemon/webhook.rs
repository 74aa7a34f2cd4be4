//! Webhooks: a JSON POST when a job starts and when it ends, to the URL the job names or the
//! config's `notifications.webhook`.
//!
//! Each notification is delivered by its own task, so a slow or dead receiver never holds up
//! or fails a job. Failures that may pass (no connection, a timeout, 408, 429, 5xx) are
//! retried with exponential backoff and jitter for about a minute; anything else is given up
//! at once. Every attempt carries the same `X-Agent-Delivery` id, so a receiver that saw a
//! delivery whose answer got lost can tell the retry apart from a new event.
//!
//! Webhook URLs often carry a token in the query string, so logs show only
//! `scheme://host[:port]/path`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use tokio::sync::watch;

use super::result::JobResult;
use crate::source::https::{check_url, describe, redacted};

const USER_AGENT: &str = concat!("agent/", env!("CARGO_PKG_VERSION"));

/// What happened to a job.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The job's workspace is ready and its process is about to start.
    Started {
        job_id: &'a str,
        /// `build` or `deploy`.
        kind: &'a str,
        source: &'a str,
        received_at: &'a str,
        started_at: &'a str,
    },
    /// The job's result is stored. `started_at` is `None` for a job refused before it ran.
    Finished {
        result: &'a JobResult,
        started_at: Option<&'a str>,
    },
    /// A started job ended without a stored result (a drain stopped it, or its result could
    /// not be stored) and went back to its source, which delivers it again: a later
    /// `job.finished` (from this agent or another) has its result. `result` says how this
    /// run ended and is not stored.
    Released {
        result: &'a JobResult,
        started_at: Option<&'a str>,
    },
}

impl Event<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "job.started",
            Event::Finished { .. } => "job.finished",
            Event::Released { .. } => "job.released",
        }
    }

    fn job_id(&self) -> &str {
        match self {
            Event::Started { job_id, .. } => job_id,
            Event::Finished { result, .. } | Event::Released { result, .. } => &result.job_id,
        }
    }
}

/// A random id per notification, except for `job.finished`: its id is derived from the job
/// and the result's end, so a result announced again (by a redelivery or a restart that
/// finished storing it) carries the id it had the first time and receivers drop it.
fn delivery_id(event: &Event<'_>) -> String {
    use sha2::{Digest, Sha256};
    match event {
        Event::Finished { result, .. } => {
            let digest = Sha256::digest(
                format!(
                    "job.finished\n{}\n{}\n{}",
                    result.job_id,
                    result.status.as_str(),
                    result.finished_at
                )
                .as_bytes(),
            );
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_custom_bytes(bytes)
                .into_uuid()
                .to_string()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

#[derive(Serialize)]
struct StartedPayload<'a> {
    event: &'static str,
    agent: &'a str,
    job_id: &'a str,
    kind: &'a str,
    source: &'a str,
    received_at: &'a str,
    started_at: &'a str,
}

/// Every key is always present (null or empty when unknown), so receivers need no guessing.
#[derive(Serialize)]
struct FinishedPayload<'a> {
    event: &'static str,
    agent: &'a str,
    job_id: &'a str,
    kind: Option<&'a str>,
    source: &'a str,
    status: &'static str,
    message: Option<&'a str>,
    received_at: &'a str,
    started_at: Option<&'a str>,
    finished_at: &'a str,
    duration_ms: u64,
    log: Option<&'a str>,
    artifacts: &'a [String],
    exported_variables: &'a std::collections::BTreeMap<String, String>,
}

fn payload(agent: &str, event: &Event<'_>) -> serde_json::Result<Vec<u8>> {
    match *event {
        Event::Started {
            job_id,
            kind,
            source,
            received_at,
            started_at,
        } => serde_json::to_vec(&StartedPayload {
            event: event.name(),
            agent,
            job_id,
            kind,
            source,
            received_at,
            started_at,
        }),
        Event::Finished { result, started_at } | Event::Released { result, started_at } => {
            serde_json::to_vec(&FinishedPayload {
                event: event.name(),
                // The agent that ran it, which after a redelivery need not be this one.
                agent: &result.agent,
                job_id: &result.job_id,
                kind: result.kind.as_deref(),
                source: &result.source,
                status: result.status.as_str(),
                message: result.message.as_deref(),
                received_at: &result.received_at,
                started_at,
                finished_at: &result.finished_at,
                duration_ms: result.duration_ms,
                log: result.log.as_deref(),
                artifacts: &result.artifacts,
                exported_variables: &result.exported_variables,
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot set up the HTTP client for webhooks: {0}")]
    Client(String),
}

/// How deliveries are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The pause before each retry; one attempt more than there are pauses.
    pub delays: Vec<Duration>,
    /// One attempt, from connecting to the answer.
    pub attempt_timeout: Duration,
    /// The longest `Retry-After` that is waited for; a receiver asking for more is given up.
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delays: [1, 2, 4, 8, 16, 30]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            attempt_timeout: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Sends webhook notifications in the background; see the module docs.
pub struct Webhooks {
    /// Made at the first notification: an agent that never sends one keeps none of the
    /// HTTP client's TLS setup (certificate store, code pages) in memory.
    client: std::sync::OnceLock<reqwest::Client>,
    agent: String,
    backoff: Arc<Backoff>,
    /// How many notifications are still being delivered, for [`Webhooks::flush`].
    in_flight: Arc<watch::Sender<usize>>,
}

impl Webhooks {
    /// `agent_name` goes into `job.started` payloads; `job.finished` ones name the result's agent.
    pub fn new(agent_name: &str) -> Result<Self, WebhookError> {
        Self::with_backoff(agent_name, Backoff::default())
    }

    pub(crate) fn with_backoff(agent_name: &str, backoff: Backoff) -> Result<Self, WebhookError> {
        Ok(Self {
            client: std::sync::OnceLock::new(),
            agent: agent_name.to_string(),
            backoff: Arc::new(backoff),
            in_flight: Arc::new(watch::Sender::new(0)),
        })
    }

    fn client(&self) -> Result<reqwest::Client, WebhookError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A redirected POST may turn into a GET or land on plain http; receivers
            // that moved must be given their new URL.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.backoff.attempt_timeout)
            .build()
            .map_err(|e| WebhookError::Client(describe(e)))?;
        Ok(self.client.get_or_init(|| client).clone())
    }

    /// Posts `event` to `url` in the background. Never blocks and never fails: a URL that may
    /// not be used, or a receiver that does not take it, is logged.
    pub fn notify(&self, url: &str, event: Event<'_>) {
        self.notify_then(url, event, async {});
    }

    /// As [`Webhooks::notify`], and runs `done` once the notification is over: delivered,
    /// refused for good, given up after its retries, or never sendable (a URL that may not be
    /// used). [`Webhooks::flush`] waits for `done` too. A notification cut off by the
    /// process's end never runs it, so a caller can keep what it must announce again until
    /// then.
    pub fn notify_then(
        &self,
        url: &str,
        event: Event<'_>,
        done: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let job = event.job_id();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                job,
                event = event.name(),
                "no async runtime to send the webhook from"
            );
            return;
        };
        let url = match check_url(url) {
            Ok(url) => url,
            Err(e) => {
                tracing::error!(job, event = event.name(), error = %e, "not sending the webhook");
                return self.run_done(&runtime, done);
            }
        };
        let body = match payload(&self.agent, &event) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(job, event = event.name(), error = %e, "cannot write the webhook's payload");
                return self.run_done(&runtime, done);
            }
        };
        let notification = Notification {
            url,
            event: event.name(),
            job: job.to_string(),
            delivery: delivery_id(&event),
            body,
        };
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(job, event = event.name(), error = %e, "not sending the webhook");
                return;
            }
        };
        let guard = InFlight::enter(&self.in_flight);
        let backoff = self.backoff.clone();
        runtime.spawn(async move {
            let _guard = guard;
            deliver(&client, &backoff, &notification).await;
            done.await;
        });
    }

    /// Runs what follows a notification that was never sent, counted as in flight.
    fn run_done(
        &self,
        runtime: &tokio::runtime::Handle,
        done: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let guard = InFlight::enter(&self.in_flight);
        runtime.spawn(async move {
            let _guard = guard;
            done.await;
        });
    }

    /// Waits up to `timeout` for the notifications still being delivered; returns how many
    /// are left. A draining daemon calls it last, so a job's end is announced before exit.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let mut count = self.in_flight.subscribe();
        let _ = tokio::time::timeout(timeout, count.wait_for(|n| *n == 0)).await;
        let left = *count.borrow();
        if left > 0 {
            tracing::warn!(
                left,
                "webhook notifications still being delivered after waiting for them"
            );
        }
        left
    }
}

/// Counts a notification as in flight until dropped, which also covers a task that panics
/// or is cancelled with the runtime.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn enter(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

struct Notification {
    url: Url,
    event: &'static str,
    job: String,
    delivery: String,
    body: Bytes,
}

/// How a notification ended, for the tests; the log already says it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivered {
    Yes { attempts: usize },
    GaveUp { attempts: usize, reason: String },
}

/// What one failed attempt means for the next.
enum Failure {
    /// Worth another attempt, after at least `wait` when the receiver said so.
    Retry {
        reason: String,
        wait: Option<Duration>,
    },
    Final(String),
}

async fn deliver(client: &reqwest::Client, backoff: &Backoff, n: &Notification) -> Delivered {
    let shown = redacted(&n.url);
    let attempts = backoff.delays.len() + 1;
    for attempt in 1..=attempts {
        let failure = match attempt_once(client, n).await {
            Ok(()) => {
                tracing::info!(url = %shown, event = n.event, job = %n.job, delivery = %n.delivery, attempt, "webhook delivered");
                return Delivered::Yes { attempts: attempt };
            }
            Err(failure) => failure,
        };
        let (reason, asked) = match failure {
            Failure::Final(reason) => return give_up(&shown, n, attempt, reason),
            Failure::Retry { reason, wait } => (reason, wait),
        };
        let Some(delay) = backoff.delays.get(attempt - 1) else {
            return give_up(&shown, n, attempt, reason);
        };
        let wait = match asked {
            Some(asked) if asked > backoff.max_retry_after => {
                let reason = format!(
                    "{reason}; the receiver asked to wait {}s, longer than the agent waits",
                    asked.as_secs()
                );
                return give_up(&shown, n, attempt, reason);
            }
            Some(asked) => asked.max(jittered(*delay)),
            None => jittered(*delay),
        };
        tracing::debug!(url = %shown, event = n.event, job = %n.job, delivery = %n.delivery, attempt, error = %reason, wait_ms = wait.as_millis(), "webhook not delivered; retrying");
        tokio::time::sleep(wait).await;
    }
    // The loop returns on its last attempt: either delivered or out of delays.
    Delivered::GaveUp {
        attempts,
        reason: String::from("no attempts left"),
    }
}

fn give_up(shown: &str, n: &Notification, attempts: usize, reason: String) -> Delivered {
    tracing::warn!(url = %shown, event = n.event, job = %n.job, delivery = %n.delivery, attempts, error = %reason, "webhook not delivered; giving up");
    Delivered::GaveUp { attempts, reason }
}

async fn attempt_once(client: &reqwest::Client, n: &Notification) -> Result<(), Failure> {
    let sent = client
        .post(n.url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("X-Agent-Event", n.event)
        .header("X-Agent-Delivery", &n.delivery)
        .body(n.body.clone())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        // A request that could not even be built will not build next time either.
        Err(e) if e.is_builder() => return Err(Failure::Final(describe(e))),
        // Connection refused or reset, DNS, TLS, timeouts: the receiver may be back soon.
        Err(e) => {
            return Err(Failure::Retry {
                reason: describe(e),
                wait: None,
            });
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let reason = format!("the receiver answered HTTP {}", status.as_u16());
    match status.as_u16() {
        408 | 429 | 500..=599 => Err(Failure::Retry {
            wait: retry_after(response.headers().get(RETRY_AFTER)),
            reason,
        }),
        300..=399 => Err(Failure::Final(format!(
            "{reason}, a redirect; webhooks are not redirected, so configure the new URL"
        ))),
        _ => Err(Failure::Final(reason)),
    }
}

/// `Retry-After` in seconds; the HTTP-date form is rare from webhook receivers and falls back
/// to the backoff.
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds = value?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

/// `delay` scaled by a random factor in [0.8, 1.2), so agents that lost the same receiver at
/// the same moment do not all come back at the same moment.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + 0.4 * random_unit())
}

/// A number in [0, 1). `RandomState` is seeded randomly per process and differs per
/// instance, which is all the randomness jitter needs.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::time::Instant;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use tokio::sync::mpsc;

    use crate::daemon::result::JobStatus;

    /// One request as the receiver saw it.
    #[derive(Debug)]
    struct Seen {
        headers: hyper::HeaderMap,
        body: serde_json::Value,
        at: Instant,
    }

    /// How the receiver answers each request in turn; the last answer repeats.
    #[derive(Clone)]
    struct Answer {
        status: u16,
        retry_after: Option<&'static str>,
        delay: Duration,
    }

    fn status(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }

    async fn receiver(answers: Vec<Answer>) -> (String, mpsc::UnboundedReceiver<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let answers = std::sync::Arc::new(Mutex::new(answers));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (answers, seen_tx) = (answers.clone(), seen_tx.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (answers, seen_tx) = (answers.clone(), seen_tx.clone());
                        async move {
                            let headers = request.headers().clone();
                            let bytes = request.into_body().collect().await.unwrap().to_bytes();
                            let _ = seen_tx.send(Seen {
                                headers,
                                body: serde_json::from_slice(&bytes).unwrap(),
                                at: Instant::now(),
                            });
                            let answer = {
                                let mut answers = answers.lock().unwrap();
                                if answers.len() > 1 {
                                    answers.remove(0)
                                } else {
                                    answers[0].clone()
                                }
                            };
                            tokio::time::sleep(answer.delay).await;
                            let mut response = Response::builder().status(answer.status);
                            if let Some(after) = answer.retry_after {
                                response = response.header("retry-after", after);
                            }
                            Ok::<_, Infallible>(
                                response
                                    .body(Full::new(bytes::Bytes::from_static(b"{}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (base, seen_rx)
    }

    fn quick() -> Backoff {
        Backoff {
            delays: vec![Duration::from_millis(10); 5],
            attempt_timeout: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(5),
        }
    }

    fn result() -> JobResult {
        JobResult {
            job_id: "job-1".into(),
            kind: Some("build".into()),
            status: JobStatus::Failed,
            message: Some("BUILD FAILED: exit 1".into()),
            agent: "runner-a".into(),
            agent_labels: Default::default(),
            labels: Default::default(),
            source: "sqs:jobs".into(),
            received_at: "2025-01-01T00:00:00Z".into(),
            finished_at: "2025-01-01T00:01:00Z".into(),
            duration_ms: 60_000,
            attempts: 1,
            log: Some("s3://logs/job-1.log".into()),
            artifacts: vec!["s3://art/job-1.zip".into()],
            exported_variables: BTreeMap::from([("VERSION".into(), "1.2.3".into())]),
            summary: serde_json::json!({"big": "not sent"}),
        }
    }

    fn started() -> Event<'static> {
        Event::Started {
            job_id: "job-1",
            kind: "build",
            source: "sqs:jobs",
            received_at: "2025-01-01T00:00:00Z",
            started_at: "2025-01-01T00:00:01Z",
        }
    }

    fn header<'h>(seen: &'h Seen, name: &str) -> &'h str {
        seen.headers.get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn posts_exact_payloads_and_headers() {
        let (base, mut seen) = receiver(vec![status(200)]).await;
        let hooks = Webhooks::with_backoff("runner-a", quick()).unwrap();
        let url = format!("{base}/hook?token=t");

        hooks.notify(&url, started());
        let first = seen.recv().await.unwrap();
        assert_eq!(
            first.body,
            serde_json::json!({
                "event": "job.started",
                "agent": "runner-a",
                "job_id": "job-1",
                "kind": "build",
                "source": "sqs:jobs",
                "received_at": "2025-01-01T00:00:00Z",
                "started_at": "2025-01-01T00:00:01Z",
            })
        );
        assert_eq!(header(&first, "x-agent-event"), "job.started");
        assert_eq!(header(&first, "content-type"), "application/json");
        assert_eq!(
            header(&first, "user-agent"),
            format!("agent/{}", env!("CARGO_PKG_VERSION"))
        );
        let delivery = header(&first, "x-agent-delivery");
        assert!(uuid::Uuid::parse_str(delivery).is_ok(), "{delivery}");

        let result = result();
        hooks.notify(
            &url,
            Event::Finished {
                result: &result,
                started_at: Some("2025-01-01T00:00:01Z"),
            },
        );
        let second = seen.recv().await.unwrap();
        assert_eq!(
            second.body,
            serde_json::json!({
                "event": "job.finished",
                "agent": "runner-a",
                "job_id": "job-1",
                "kind": "build",
                "source": "sqs:jobs",
                "status": "FAILED",
                "message": "BUILD FAILED: exit 1",
                "received_at": "2025-01-01T00:00:00Z",
                "started_at": "2025-01-01T00:00:01Z",
                "finished_at": "2025-01-01T00:01:00Z",
                "duration_ms": 60000,
                "log": "s3://logs/job-1.log",
                "artifacts": ["s3://art/job-1.zip"],
                "exported_variables": {"VERSION": "1.2.3"},
            })
        );
        assert_eq!(header(&second, "x-agent-event"), "job.finished");
        assert_ne!(header(&second, "x-agent-delivery"), delivery);

        let mut rejected = JobResult {
            kind: None,
            status: JobStatus::Rejected,
            message: None,
            log: None,
            artifacts: Vec::new(),
            exported_variables: BTreeMap::new(),
            ..result
        };
        rejected.job_id = "rejected-x".into();
        hooks.notify(
            &url,
            Event::Finished {
                result: &rejected,
                started_at: None,
            },
        );
        let third = seen.recv().await.unwrap();
        for key in ["kind", "message", "started_at", "log"] {
            assert_eq!(third.body[key], serde_json::Value::Null, "{key}");
        }
        assert_eq!(third.body["status"], "REJECTED");
        assert_eq!(third.body["artifacts"], serde_json::json!([]));
        assert_eq!(third.body["exported_variables"], serde_json::json!({}));
        assert_eq!(hooks.flush(Duration::from_secs(5)).await, 0);
    }

    #[test]
    fn a_result_announced_again_keeps_its_delivery_id() {
        let result = result();
        let finished = |r: &JobResult| {
            delivery_id(&Event::Finished {
                result: r,
                started_at: None,
            })
        };
        let first = finished(&result);
        assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
        // Started or not, from whichever agent: the same result is the same delivery.
        assert_eq!(
            delivery_id(&Event::Finished {
                result: &result,
                started_at: Some("2025-01-01T00:00:01Z"),
            }),
            first
        );
        let rerun = JobResult {
            finished_at: "2025-01-01T00:02:00Z".into(),
            ..result.clone()
        };
        assert_ne!(finished(&rerun), first);
        let other = JobResult {
            job_id: "job-2".into(),
            ..result.clone()
        };
        assert_ne!(finished(&other), first);
        let released = |r: &JobResult| {
            delivery_id(&Event::Released {
                result: r,
                started_at: None,
            })
        };
        assert_ne!(released(&result), released(&result));
        assert_ne!(delivery_id(&started()), delivery_id(&started()));
    }

    #[tokio::test]
    async fn retries_5xx_with_the_same_delivery_id() {
        let (base, mut seen) = receiver(vec![status(500), status(503), status(204)]).await;
        let hooks = Webhooks::with_backoff("a", quick()).unwrap();
        hooks.notify(&format!("{base}/hook"), started());
        assert_eq!(hooks.flush(Duration::from_secs(10)).await, 0);
        let mut ids = Vec::new();
        while let Ok(s) = seen.try_recv() {
            ids.push(header(&s, "x-agent-delivery").to_string());
        }
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    }

    #[tokio::test]
    async fn honours_retry_after() {
        let slow = Answer {
            status: 429,
            retry_after: Some("1"),
            delay: Duration::ZERO,
        };
        let (base, mut seen) = receiver(vec![slow, status(200)]).await;
        let hooks = Webhooks::with_backoff("a", quick()).unwrap();
        let url = check_url(&format!("{base}/hook")).unwrap();
        let notification = Notification {
            url,
            event: "job.started",
            job: "j".into(),
            delivery: "d".into(),
            body: Bytes::from_static(b"{}"),
        };
        let outcome = deliver(&hooks.client().unwrap(), &hooks.backoff, &notification).await;
        assert_eq!(outcome, Delivered::Yes { attempts: 2 });
        let (first, second) = (seen.recv().await.unwrap(), seen.recv().await.unwrap());
        let waited = second.at - first.at;
        assert!(waited >= Duration::from_secs(1), "{waited:?}");

        let too_long = Answer {
            status: 503,
            retry_after: Some("3600"),
            delay: Duration::ZERO,
        };
        let (base, _seen) = receiver(vec![too_long]).await;
        let notification = Notification {
            url: check_url(&format!("{base}/hook")).unwrap(),
            ..notification
        };
        let outcome = deliver(&hooks.client().unwrap(), &hooks.backoff, &notification).await;
        assert!(
            matches!(&outcome, Delivered::GaveUp { attempts: 1, reason } if reason.contains("3600s")),
            "{outcome:?}"
        );
    }

    fn notification(url: &str) -> Notification {
        Notification {
            url: check_url(url).unwrap(),
            event: "job.finished",
            job: "j".into(),
            delivery: "d".into(),
            body: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn gives_up_at_once_on_other_4xx_and_redirects() {
        for code in [404, 400, 410, 301] {
            let (base, mut seen) = receiver(vec![status(code)]).await;
            let hooks = Webhooks::with_backoff("a", quick()).unwrap();
            let outcome = deliver(
                &hooks.client().unwrap(),
                &hooks.backoff,
                &notification(&format!("{base}/hook")),
            )
            .await;
            assert!(
                matches!(&outcome, Delivered::GaveUp { attempts: 1, reason } if reason.contains(&code.to_string())),
                "{code}: {outcome:?}"
            );
            assert!(seen.recv().await.is_some());
            assert!(seen.try_recv().is_err(), "{code} was retried");
        }
    }

    #[tokio::test]
    async fn retries_408_and_429() {
        let (base, _seen) = receiver(vec![status(408), status(429), status(200)]).await;
        let hooks = Webhooks::with_backoff("a", quick()).unwrap();
        let outcome = deliver(
            &hooks.client().unwrap(),
            &hooks.backoff,
            &notification(&format!("{base}/hook")),
        )
        .await;
        assert_eq!(outcome, Delivered::Yes { attempts: 3 });
    }

    #[tokio::test]
    async fn an_unreachable_receiver_is_given_up_after_every_attempt() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let hooks = Webhooks::with_backoff("a", quick()).unwrap();
        let outcome = deliver(
            &hooks.client().unwrap(),
            &hooks.backoff,
            &notification(&format!("http://127.0.0.1:{port}/hook")),
        )
        .await;
        assert!(
            matches!(outcome, Delivered::GaveUp { attempts: 6, .. }),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_receiver_is_timed_out_and_retried() {
        let hang = Answer {
            status: 200,
            retry_after: None,
            delay: Duration::from_secs(30),
        };
        let (base, mut seen) = receiver(vec![hang, status(200)]).await;
        let backoff = Backoff {
            attempt_timeout: Duration::from_millis(200),
            ..quick()
        };
        let hooks = Webhooks::with_backoff("a", backoff).unwrap();
        let outcome = deliver(
            &hooks.client().unwrap(),
            &hooks.backoff,
            &notification(&format!("{base}/hook")),
        )
        .await;
        assert_eq!(outcome, Delivered::Yes { attempts: 2 });
        assert!(seen.recv().await.is_some());
    }

    #[tokio::test]
    async fn flush_waits_for_deliveries_in_flight() {
        let slow = Answer {
            status: 200,
            retry_after: None,
            delay: Duration::from_millis(300),
        };
        let (base, mut seen) = receiver(vec![slow]).await;
        let hooks = Webhooks::with_backoff("a", quick()).unwrap();
        assert_eq!(hooks.flush(Duration::from_millis(1)).await, 0);
        hooks.notify(&format!("{base}/hook"), started());
        hooks.notify(&format!("{base}/hook"), started());
        assert_eq!(hooks.flush(Duration::from_millis(50)).await, 2);
        let started = Instant::now();
        assert_eq!(hooks.flush(Duration::from_secs(5)).await, 0);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(seen.recv().await.is_some());
        assert!(seen.recv().await.is_some());
    }

    /// Collects what the daemon would log.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // A current-thread runtime, so the delivery tasks log on the thread that holds the
    // test's subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn logs_never_show_the_query_string() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        let (base, _seen) = receiver(vec![status(500), status(200)]).await;
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let hooks = Webhooks::with_backoff("a", quick()).unwrap();
        hooks.notify(&format!("{base}/hook?token=SECRET1"), started());
        hooks.notify(
            &format!("http://127.0.0.1:{port}/down?token=SECRET2"),
            started(),
        );
        hooks.notify("http://example.com/plain?token=SECRET3", started());
        hooks.notify("ftp://u:SECRET4@example.com/x?token=SECRET5", started());
        hooks.notify("not a url ?token=SECRET6", started());
        assert_eq!(hooks.flush(Duration::from_secs(10)).await, 0);

        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!logs.contains("SECRET"), "{logs}");
        assert!(logs.contains(&format!("{base}/hook")), "{logs}");
        assert!(logs.contains("webhook delivered"), "{logs}");
        assert!(
            logs.contains(&format!("http://127.0.0.1:{port}/down")),
            "{logs}"
        );
        assert!(logs.contains("giving up"), "{logs}");
        assert!(logs.contains("http://example.com/plain"), "{logs}");
        assert!(logs.contains("use https"), "{logs}");
    }

    #[test]
    fn notify_outside_a_runtime_only_logs() {
        let hooks = Webhooks::new("a").unwrap();
        hooks.notify("https://example.com/hook", started());
        assert_eq!(*hooks.in_flight.borrow(), 0);
    }

    #[test]
    fn the_default_schedule_spans_about_a_minute() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delays.len() + 1, 7);
        let total: Duration = backoff.delays.iter().sum();
        assert_eq!(total, Duration::from_secs(61));
        assert_eq!(backoff.attempt_timeout, Duration::from_secs(10));
        for _ in 0..100 {
            let wait = jittered(Duration::from_secs(10));
            assert!(
                wait >= Duration::from_secs(8) && wait < Duration::from_secs(12),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let value = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(retry_after(Some(&value("7"))), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some(&value(" 0 "))), Some(Duration::ZERO));
        assert_eq!(
            retry_after(Some(&value("Wed, 21 Oct 2015 07:28:00 GMT"))),
            None
        );
        assert_eq!(retry_after(None), None);
    }
}
