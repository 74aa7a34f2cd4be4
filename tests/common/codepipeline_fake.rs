//! A stand-in for CodePipeline's job-worker API, on a loopback port: PollForJobs,
//! AcknowledgeJob, GetJobDetails, PutJobSuccessResult and PutJobFailureResult, over the
//! service's JSON 1.1 protocol (`POST /`, `X-Amz-Target: CodePipeline_20150709.<Operation>`,
//! `Content-Type: application/x-amz-json-1.1`; errors are HTTP 400 with
//! `{"__type": …, "message": …}`), with the shapes and checks of the service model.
//!
//! Job life: [`Fake::add_job`] queues a job (`Queued`). PollForJobs hands out queued jobs
//! of the action type asked for, oldest first, up to `maxBatchSize`, each with a fresh nonce
//! (`Dispatched`); for an action type with a queryable property ([`ActionType::queryable`])
//! only those whose configuration has the value `queryParam` asks for. A dispatched job is not handed out again unless it stays unacknowledged
//! for the acknowledgement timeout ([`Fake::set_ack_timeout`], 30 s unless set); then the next
//! poll hands it out with a new nonce and the old one is refused. AcknowledgeJob with the
//! current nonce makes it `InProgress` (or reports the status it has, if it is past that);
//! any other nonce is an `InvalidNonceException`. Exactly one result is taken from an
//! `InProgress` job; a second, or one for a job never acknowledged, is an
//! `InvalidJobStateException`. A success with a continuation token queues a new job for the
//! same action execution that carries the token, as the service does. With a job timeout
//! ([`Fake::set_job_timeout`], as `CreateActionType`'s `jobTimeout`), a job in progress that
//! long without a result is `TimedOut`, as is a queued continuation nobody acknowledged in
//! that time. [`Fake::stop_execution`] ends a job as stopping its pipeline execution does.
//!
//! Requests that are not CodePipeline's (no `X-Amz-Target`: the worker's S3 calls) are
//! passed on unchanged to the server given to [`Fake::start`] (moto), so one endpoint
//! serves both, as `aws.endpoint_url` does in the agent's config. Moto takes any
//! credentials, so the fake records who signed each of them ([`Fake::s3_requests`]): a
//! test can tell the job's artifact credentials from the worker's own.
//!
//! Credentials: CodePipeline calls must carry a SigV4 `Authorization` header (else
//! `MissingAuthenticationTokenException` or `IncompleteSignatureException`, HTTP 403, as
//! the service answers); the signatures themselves are not checked. GetJobDetails hands
//! out fresh artifact credentials each time, unlike the ones the job was polled with, as
//! the service does for a long-running job ([`Fake::issued`] lists them).

#![allow(dead_code)] // each test uses its own part of this

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const TARGET_PREFIX: &str = "CodePipeline_20150709.";
const ACCOUNT: &str = "123456789012";

/// `{category, owner: Custom, provider, version}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionType {
    pub category: String,
    pub provider: String,
    pub version: String,
    /// The action type's one queryable configuration property, if it has one.
    pub queryable: Option<String>,
}

impl ActionType {
    pub fn new(category: &str, provider: &str, version: &str) -> Self {
        ActionType {
            category: category.to_string(),
            provider: provider.to_string(),
            version: version.to_string(),
            queryable: None,
        }
    }

    /// The same action type with a queryable property `name`: PollForJobs must then name
    /// it in `queryParam`, and hands out only jobs whose configuration has the value asked.
    pub fn queryable(mut self, name: &str) -> Self {
        self.queryable = Some(name.to_string());
        self
    }

    /// Category, provider and version name one action type; the rest describes it.
    fn same(&self, other: &ActionType) -> bool {
        (&self.category, &self.provider, &self.version)
            == (&other.category, &other.provider, &other.version)
    }

    fn json(&self) -> Value {
        json!({"category": self.category, "owner": "Custom", "provider": self.provider, "version": self.version})
    }
}

/// An artifact in S3.
#[derive(Debug, Clone)]
pub struct ArtifactAt {
    pub name: String,
    pub bucket: String,
    pub key: String,
    pub revision: Option<String>,
}

impl ArtifactAt {
    pub fn new(name: &str, bucket: &str, key: &str) -> Self {
        ArtifactAt {
            name: name.to_string(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            revision: None,
        }
    }

    fn json(&self) -> Value {
        let mut artifact = json!({
            "name": self.name,
            "location": {"type": "S3", "s3Location": {"bucketName": self.bucket, "objectKey": self.key}},
        });
        if let Some(revision) = &self.revision {
            artifact["revision"] = json!(revision);
        }
        artifact
    }
}

/// A job for [`Fake::add_job`].
#[derive(Debug, Clone)]
pub struct NewJob {
    pub action_type: ActionType,
    pub configuration: BTreeMap<String, String>,
    pub inputs: Vec<ArtifactAt>,
    pub outputs: Vec<ArtifactAt>,
    /// `(accessKeyId, secretAccessKey, sessionToken)` of the job's artifact credentials.
    pub credentials: (String, String, String),
    /// The pipeline's KMS key id or ARN.
    pub encryption_key: Option<String>,
    pub pipeline_name: String,
}

impl NewJob {
    pub fn new(action_type: ActionType) -> Self {
        NewJob {
            action_type,
            configuration: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            credentials: (
                "ASIAJOBARTIFACTS0001".to_string(),
                "job-artifact-secret".to_string(),
                "job-artifact-session-token".to_string(),
            ),
            encryption_key: None,
            pipeline_name: "web".to_string(),
        }
    }

    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.configuration
            .insert(key.to_string(), value.to_string());
        self
    }

    pub fn input(mut self, artifact: ArtifactAt) -> Self {
        self.inputs.push(artifact);
        self
    }

    pub fn output(mut self, artifact: ArtifactAt) -> Self {
        self.outputs.push(artifact);
        self
    }

    pub fn encryption_key(mut self, key: &str) -> Self {
        self.encryption_key = Some(key.to_string());
        self
    }
}

/// A result a worker reported: the operation and its request, as sent.
#[derive(Debug, Clone)]
pub struct Reported {
    pub job_id: String,
    /// `PutJobSuccessResult` or `PutJobFailureResult`.
    pub operation: String,
    pub request: Value,
}

impl Reported {
    pub fn succeeded(&self) -> bool {
        self.operation == "PutJobSuccessResult"
    }

    pub fn failure_type(&self) -> &str {
        self.request["failureDetails"]["type"]
            .as_str()
            .unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.request["failureDetails"]["message"]
            .as_str()
            .unwrap_or("")
    }

    pub fn external_execution_id(&self) -> &str {
        self.request["failureDetails"]["externalExecutionId"]
            .as_str()
            .or_else(|| self.request["executionDetails"]["externalExecutionId"].as_str())
            .unwrap_or("")
    }

    pub fn output_variables(&self) -> BTreeMap<String, String> {
        self.request["outputVariables"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An S3 request the fake passed on, and who signed it.
#[derive(Debug, Clone)]
pub struct S3Request {
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// From SigV4's `Credential=<access key id>/…` (the header's, or a presigned URL's).
    pub access_key_id: Option<String>,
    /// `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl S3Request {
    /// A download (`GET`/`HEAD` of an object), as opposed to an upload or its parts.
    pub fn reads(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

/// Artifact credentials the fake handed out for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub job_id: String,
    /// `PollForJobs` or `GetJobDetails`.
    pub operation: String,
    pub access_key_id: String,
    pub session_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Queued,
    Dispatched { at: Instant },
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Status::Queued => "Queued",
            Status::Dispatched { .. } => "Dispatched",
            Status::InProgress => "InProgress",
            Status::Succeeded => "Succeeded",
            Status::Failed => "Failed",
            Status::TimedOut => "TimedOut",
        }
    }
}

struct Job {
    id: String,
    action_type: ActionType,
    data: Value,
    status: Status,
    /// The nonce of the latest dispatch; `None` before the first.
    nonce: Option<String>,
    /// The job times out between its dispatch and its acknowledgement.
    times_out_on_ack: bool,
    /// When the job was queued, and when it was acknowledged.
    queued_at: Instant,
    acknowledged_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    jobs: Vec<Job>,
    /// Action types that exist, whether or not they have jobs.
    action_types: Vec<ActionType>,
    ack_timeout: Option<Duration>,
    /// Calls of an operation still to be answered with a ThrottlingException.
    throttles: HashMap<String, u32>,
    calls: Vec<String>,
    /// The access key id that signed each call in `calls`.
    signers: Vec<String>,
    s3_requests: Vec<S3Request>,
    issued: Vec<Issued>,
    reported: Vec<Reported>,
    counter: u64,
    /// How long requests passed on to S3 are held first.
    forward_delay: Duration,
    job_timeout: Option<Duration>,
}

impl Job {
    /// The action execution the job belongs to (continuations share their first job's).
    fn execution(&self) -> &Value {
        &self.data["pipelineContext"]["action"]["actionExecutionId"]
    }
}

impl State {
    fn execution_of(&self, job_id: &str) -> Option<Value> {
        self.jobs
            .iter()
            .find(|j| j.id == job_id)
            .map(|j| j.execution().clone())
    }

    /// Times out the jobs past the job timeout, as the service does on its own.
    fn expire(&mut self) {
        let Some(timeout) = self.job_timeout else {
            return;
        };
        for job in &mut self.jobs {
            let overdue = match job.status {
                Status::InProgress => job.acknowledged_at.is_some_and(|at| at.elapsed() > timeout),
                Status::Queued | Status::Dispatched { .. } => {
                    job.data.get("continuationToken").is_some() && job.queued_at.elapsed() > timeout
                }
                _ => false,
            };
            if overdue {
                job.status = Status::TimedOut;
            }
        }
    }
}

/// The running fake; it stops with the test's runtime.
#[derive(Clone)]
pub struct Fake {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Fake {
    /// Listens on a free loopback port; requests that are not CodePipeline's go to
    /// `forward` (`http://host:port`).
    pub async fn start(forward: Option<&str>) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let forward = forward.map(|f| f.trim_start_matches("http://").to_string());
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, forward) = (shared.clone(), forward.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (state, forward) = (state.clone(), forward.clone());
                        async move { Ok::<_, hyper::Error>(serve(state, forward, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake { url, state }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Makes an action type exist without queuing a job for it.
    pub fn register(&self, action_type: &ActionType) {
        let mut state = self.lock();
        if !state.action_types.iter().any(|t| t.same(action_type)) {
            state.action_types.push(action_type.clone());
        }
    }

    /// Queues a job (its action type made to exist); returns its id.
    pub fn add_job(&self, job: NewJob) -> String {
        self.register(&job.action_type);
        let mut state = self.lock();
        state.counter += 1;
        let n = state.counter;
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            0x6c8f_7a1e_u32.wrapping_add(n as u32 * 7919),
            n & 0xffff,
            n & 0xfff,
            (n * 31) & 0xfff,
            n
        );
        let mut data = json!({
            "actionTypeId": job.action_type.json(),
            "actionConfiguration": {"configuration": job.configuration},
            "pipelineContext": {
                "pipelineName": job.pipeline_name,
                "stage": {"name": "Build"},
                "action": {"name": "Compile", "actionExecutionId": format!("action-exec-{n}")},
                "pipelineArn": format!("arn:aws:codepipeline:us-east-1:{ACCOUNT}:{}", job.pipeline_name),
                "pipelineExecutionId": format!("pipeline-exec-{n}"),
            },
            "inputArtifacts": job.inputs.iter().map(ArtifactAt::json).collect::<Vec<_>>(),
            "outputArtifacts": job.outputs.iter().map(ArtifactAt::json).collect::<Vec<_>>(),
            "artifactCredentials": {
                "accessKeyId": job.credentials.0,
                "secretAccessKey": job.credentials.1,
                "sessionToken": job.credentials.2,
            },
        });
        if let Some(key) = &job.encryption_key {
            data["encryptionKey"] = json!({"id": key, "type": "KMS"});
        }
        state.jobs.push(Job {
            id: id.clone(),
            action_type: job.action_type,
            data,
            status: Status::Queued,
            nonce: None,
            times_out_on_ack: false,
            queued_at: Instant::now(),
            acknowledged_at: None,
        });
        id
    }

    /// Jobs in progress (or continuations waiting) longer than this time out.
    pub fn set_job_timeout(&self, timeout: Duration) {
        self.lock().job_timeout = Some(timeout);
    }

    /// Stops the pipeline execution of the job (the first one, given by its id): every job
    /// of its action execution not finished yet fails, without a result from a worker.
    pub fn stop_execution(&self, job_id: &str) {
        let mut state = self.lock();
        let Some(execution) = state.execution_of(job_id) else {
            return;
        };
        for job in &mut state.jobs {
            let unfinished = matches!(
                job.status,
                Status::Queued | Status::Dispatched { .. } | Status::InProgress
            );
            if unfinished && job.execution() == &execution {
                job.status = Status::Failed;
            }
        }
    }

    /// Every job of the action execution of `job_id`, in order, with its status: the
    /// first job and its continuations.
    pub fn execution(&self, job_id: &str) -> Vec<(String, String)> {
        let state = self.lock();
        let Some(execution) = state.execution_of(job_id) else {
            return Vec::new();
        };
        state
            .jobs
            .iter()
            .filter(|j| j.execution() == &execution)
            .map(|j| (j.id.clone(), j.status.name().to_string()))
            .collect()
    }

    /// The job times out between its dispatch and its acknowledgement, which then reports
    /// `TimedOut`.
    pub fn time_out_on_acknowledge(&self, job_id: &str) {
        if let Some(job) = self.lock().jobs.iter_mut().find(|j| j.id == job_id) {
            job.times_out_on_ack = true;
        }
    }

    /// Holds every S3 request this long before passing it on: a slow artifact store.
    pub fn delay_s3(&self, delay: Duration) {
        self.lock().forward_delay = delay;
    }

    pub fn set_ack_timeout(&self, timeout: Duration) {
        self.lock().ack_timeout = Some(timeout);
    }

    /// The next `times` calls of `operation` are answered with a ThrottlingException.
    pub fn throttle(&self, operation: &str, times: u32) {
        self.lock().throttles.insert(operation.to_string(), times);
    }

    /// The job's status as the service would name it.
    pub fn status(&self, job_id: &str) -> String {
        self.lock()
            .jobs
            .iter()
            .find(|j| j.id == job_id)
            .map(|j| j.status.name().to_string())
            .unwrap_or_default()
    }

    /// Every result reported, in order.
    pub fn results(&self) -> Vec<Reported> {
        self.lock().reported.clone()
    }

    /// The operations called, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The access key ids that signed the CodePipeline calls, in the order of
    /// [`Fake::calls`].
    pub fn call_signers(&self) -> Vec<String> {
        self.lock().signers.clone()
    }

    /// Every S3 request passed on, in order.
    pub fn s3_requests(&self) -> Vec<S3Request> {
        self.lock().s3_requests.clone()
    }

    /// The artifact credentials handed out for `job_id`, in order: the poll's, then one
    /// fresh set per GetJobDetails.
    pub fn issued(&self, job_id: &str) -> Vec<Issued> {
        self.lock()
            .issued
            .iter()
            .filter(|i| i.job_id == job_id)
            .cloned()
            .collect()
    }
}

/// The access key id of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/<service>/aws4_request, …`.
fn sigv4_access_key(authorization: &str) -> Option<String> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let (mut headers, mut signature) = (false, false);
    for part in rest.split(',').map(str::trim) {
        if let Some(value) = part.strip_prefix("Credential=") {
            credential = value.split('/').next().filter(|id| !id.is_empty());
        } else if part.starts_with("SignedHeaders=") {
            headers = true;
        } else if part.starts_with("Signature=") {
            signature = true;
        }
    }
    credential
        .filter(|_| headers && signature)
        .map(str::to_string)
}

/// Who signed an S3 request: the header's credential, or a presigned URL's
/// `X-Amz-Credential` (percent-encoded `/` as `%2F`).
fn s3_request(request: &Request<Incoming>) -> S3Request {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let query = request.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.replace("%2F", "/").replace("%2f", "/"))
    };
    let access_key_id = header("authorization")
        .as_deref()
        .and_then(sigv4_access_key)
        .or_else(|| {
            param("X-Amz-Credential")
                .and_then(|c| c.split('/').next().map(str::to_string))
                .filter(|id| !id.is_empty())
        });
    S3Request {
        method: request.method().to_string(),
        uri: request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        access_key_id,
        session_token: header("x-amz-security-token").or_else(|| param("X-Amz-Security-Token")),
    }
}

type Answer = Response<Full<Bytes>>;

async fn serve(
    state: Arc<Mutex<State>>,
    forward: Option<String>,
    request: Request<Incoming>,
) -> Answer {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(target) = target else {
        let delay = {
            let mut state = state.lock().unwrap();
            state.s3_requests.push(s3_request(&request));
            state.forward_delay
        };
        tokio::time::sleep(delay).await;
        return match forward {
            Some(to) => pass_on(&to, request).await,
            None => plain(StatusCode::NOT_FOUND, "not a CodePipeline request"),
        };
    };
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let post_root = request.method() == hyper::Method::POST && request.uri().path() == "/";
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return error("SerializationException", &e.to_string()),
    };
    if !post_root || !content_type.starts_with("application/x-amz-json-1.1") {
        return error(
            "SerializationException",
            "CodePipeline takes POST / with application/x-amz-json-1.1",
        );
    }
    // The service authenticates before it looks at the operation.
    let signer = match authorization.as_deref() {
        None => {
            return denied(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            );
        }
        Some(header) => match sigv4_access_key(header) {
            Some(id) => id,
            None => {
                return denied(
                    "IncompleteSignatureException",
                    "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters (AWS4-HMAC-SHA256)",
                );
            }
        },
    };
    let Some(operation) = target.strip_prefix(TARGET_PREFIX) else {
        return error(
            "UnknownOperationException",
            &format!("unknown target {target}"),
        );
    };
    let input: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => return error("SerializationException", "the body is not a JSON object"),
    };
    let mut state = state.lock().unwrap();
    state.expire();
    state.calls.push(operation.to_string());
    state.signers.push(signer);
    if let Some(left) = state.throttles.get_mut(operation)
        && *left > 0
    {
        *left -= 1;
        return error("ThrottlingException", "Rate exceeded");
    }
    let answer = match operation {
        "PollForJobs" => poll_for_jobs(&mut state, &input),
        "AcknowledgeJob" => acknowledge_job(&mut state, &input),
        "GetJobDetails" => get_job_details(&mut state, &input),
        "PutJobSuccessResult" => put_job_success_result(&mut state, &input),
        "PutJobFailureResult" => put_job_failure_result(&mut state, &input),
        other => Err((
            "UnknownOperationException",
            format!("the fake does not implement {other}"),
        )),
    };
    match answer {
        Ok(value) => json_answer(StatusCode::OK, &value),
        Err((code, message)) => error(code, &message),
    }
}

type Outcome = Result<Value, (&'static str, String)>;

fn invalid(message: impl Into<String>) -> (&'static str, String) {
    ("ValidationException", message.into())
}

fn string<'a>(input: &'a Value, key: &str) -> Result<&'a str, (&'static str, String)> {
    input[key]
        .as_str()
        .ok_or_else(|| invalid(format!("1 validation error detected: Value null at '{key}' failed to satisfy constraint: Member must not be null")))
}

/// `JobId`: the service's UUID pattern.
fn job_id(input: &Value) -> Result<&str, (&'static str, String)> {
    let id = string(input, "jobId")?;
    let groups: Vec<&str> = id.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(id)
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{id}' at 'jobId' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}"
        )))
    }
}

fn find<'a>(state: &'a mut State, id: &str) -> Result<&'a mut Job, (&'static str, String)> {
    state
        .jobs
        .iter_mut()
        .find(|j| j.id == id)
        .ok_or_else(|| ("JobNotFoundException", format!("Job not found: {id}")))
}

fn poll_for_jobs(state: &mut State, input: &Value) -> Outcome {
    let wanted = &input["actionTypeId"];
    let field = |name: &str| wanted[name].as_str().filter(|s| !s.is_empty());
    let (Some(category), Some(owner), Some(provider), Some(version)) = (
        field("category"),
        field("owner"),
        field("provider"),
        field("version"),
    ) else {
        return Err(invalid(
            "actionTypeId needs category, owner, provider and version",
        ));
    };
    if owner != "Custom" {
        return Err(invalid(
            "PollForJobs is only valid for actions owned by Custom",
        ));
    }
    let batch = match &input["maxBatchSize"] {
        Value::Null => 1,
        value => match value.as_i64() {
            Some(n) if n >= 1 => n as usize,
            _ => return Err(invalid("maxBatchSize must be an integer of at least 1")),
        },
    };
    let query = match &input["queryParam"] {
        Value::Null => BTreeMap::new(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        _ => return Err(invalid("queryParam must be a map")),
    };
    if query.len() > 1 {
        return Err(invalid("queryParam holds at most one entry"));
    }
    let value_ok = |v: &str| {
        (1..=50).contains(&v.len())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if query
        .iter()
        .any(|(k, v)| !(1..=50).contains(&k.len()) || !value_ok(v))
    {
        return Err(invalid(
            "queryParam: a key of 1 to 50 characters, a value matching [a-zA-Z0-9_-]{1,50}",
        ));
    }
    let wanted = ActionType::new(category, provider, version);
    let Some(registered) = state.action_types.iter().find(|t| t.same(&wanted)) else {
        return Err((
            "ActionTypeNotFoundException",
            format!("Action type not found: {category}/Custom/{provider}/{version}"),
        ));
    };
    // "For an action type with no queryable properties, this value must be null or an
    // empty map. For an action type with a queryable property, you must supply that
    // property as a key in the map." (API reference)
    let matching = match (&registered.queryable, query.iter().next()) {
        (None, None) => None,
        (None, Some((key, _))) => {
            return Err(invalid(format!(
                "queryParam names {key}, but the action type has no queryable property"
            )));
        }
        (Some(property), Some((key, value))) if key == property => {
            Some((property.clone(), value.clone()))
        }
        (Some(property), _) => {
            return Err(invalid(format!(
                "the action type's queryable property {property} must be in queryParam"
            )));
        }
    };
    let timeout = state.ack_timeout.unwrap_or(Duration::from_secs(30));
    let mut out = Vec::new();
    for index in 0..state.jobs.len() {
        if out.len() >= batch {
            break;
        }
        let job = &state.jobs[index];
        let due = match job.status {
            Status::Queued => true,
            Status::Dispatched { at } => at.elapsed() >= timeout,
            _ => false,
        };
        let configured = |(property, value): &(String, String)| {
            job.data["actionConfiguration"]["configuration"][property] == value.as_str()
        };
        if !due || !job.action_type.same(&wanted) || !matching.as_ref().is_none_or(configured) {
            continue;
        }
        state.counter += 1;
        let nonce = format!("nonce-{}", state.counter);
        let job = &mut state.jobs[index];
        job.status = Status::Dispatched { at: Instant::now() };
        job.nonce = Some(nonce.clone());
        out.push(json!({"id": job.id, "data": job.data, "nonce": nonce, "accountId": ACCOUNT}));
        let issued = issued(&job.id, "PollForJobs", &job.data["artifactCredentials"]);
        state.issued.push(issued);
    }
    Ok(json!({"jobs": out}))
}

fn issued(job_id: &str, operation: &str, credentials: &Value) -> Issued {
    let field = |name: &str| credentials[name].as_str().unwrap_or("").to_string();
    Issued {
        job_id: job_id.to_string(),
        operation: operation.to_string(),
        access_key_id: field("accessKeyId"),
        session_token: field("sessionToken"),
    }
}

fn acknowledge_job(state: &mut State, input: &Value) -> Outcome {
    let id = job_id(input)?.to_string();
    let nonce = string(input, "nonce")?;
    if !(1..=50).contains(&nonce.len()) {
        return Err(invalid("nonce is 1 to 50 characters"));
    }
    let job = find(state, &id)?;
    if job.nonce.as_deref() != Some(nonce) {
        return Err((
            "InvalidNonceException",
            format!("The nonce is not valid for job {id}"),
        ));
    }
    if matches!(job.status, Status::Dispatched { .. }) {
        job.status = if job.times_out_on_ack {
            Status::TimedOut
        } else {
            Status::InProgress
        };
        job.acknowledged_at = Some(Instant::now());
    }
    Ok(json!({"status": job.status.name()}))
}

/// The job's data with artifact credentials of their own, never the poll's: a test can
/// tell whether the worker used the fresh ones.
fn get_job_details(state: &mut State, input: &Value) -> Outcome {
    let id = job_id(input)?.to_string();
    state.counter += 1;
    let n = state.counter;
    let job = find(state, &id)?;
    let mut data = job.data.clone();
    data["artifactCredentials"] = json!({
        "accessKeyId": format!("ASIAJOBFRESH{n:08}"),
        "secretAccessKey": format!("job-fresh-secret-{n}"),
        "sessionToken": format!("job-fresh-session-token-{n}"),
    });
    let answer = json!({"jobDetails": {"id": job.id, "data": data, "accountId": ACCOUNT}});
    let issued = issued(&id, "GetJobDetails", &data["artifactCredentials"]);
    state.issued.push(issued);
    Ok(answer)
}

fn in_progress(job: &Job) -> Result<(), (&'static str, String)> {
    if job.status == Status::InProgress {
        Ok(())
    } else {
        Err((
            "InvalidJobStateException",
            format!(
                "Job {} is in state {}; a result is accepted only from InProgress",
                job.id,
                job.status.name()
            ),
        ))
    }
}

fn put_job_success_result(state: &mut State, input: &Value) -> Outcome {
    let id = job_id(input)?.to_string();
    let token = input["continuationToken"].as_str();
    if let Some(token) = token
        && !(1..=2048).contains(&token.chars().count())
    {
        return Err(invalid("continuationToken is 1 to 2048 characters"));
    }
    let details = &input["executionDetails"];
    if let Some(summary) = details.get("summary") {
        let n = summary.as_str().map_or(0, |s| s.chars().count());
        if !(1..=2048).contains(&n) {
            return Err(invalid("executionDetails.summary is 1 to 2048 characters"));
        }
    }
    if let Some(id) = details.get("externalExecutionId") {
        let n = id.as_str().map_or(0, |s| s.chars().count());
        if !(1..=1500).contains(&n) {
            return Err(invalid(
                "executionDetails.externalExecutionId is 1 to 1500 characters",
            ));
        }
    }
    if let Some(percent) = details.get("percentComplete")
        && !percent.as_i64().is_some_and(|p| (0..=100).contains(&p))
    {
        return Err(invalid("executionDetails.percentComplete is 0 to 100"));
    }
    if let Some(variables) = input.get("outputVariables") {
        let Some(variables) = variables.as_object() else {
            return Err(invalid("outputVariables is a map of strings"));
        };
        if token.is_some() {
            return Err(invalid(
                "outputVariables can be given only when the action is complete, without a continuationToken",
            ));
        }
        let mut size = 0;
        for (key, value) in variables {
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '-' | '_'));
            let Some(value) = value.as_str().filter(|_| key_ok) else {
                return Err(invalid(format!(
                    "outputVariables: `{key}` does not match [A-Za-z0-9@\\-_]+ or its value is not a string"
                )));
            };
            size += key.len() + value.len();
        }
        if size > 122_880 {
            return Err((
                "OutputVariablesSizeExceededException",
                "The output variables exceed the size limit".to_string(),
            ));
        }
    }
    let job = find(state, &id)?;
    in_progress(job)?;
    job.status = Status::Succeeded;
    let continued = token.map(|token| {
        let mut data = job.data.clone();
        data["continuationToken"] = json!(token);
        (job.action_type.clone(), data)
    });
    state.reported.push(Reported {
        job_id: id,
        operation: "PutJobSuccessResult".to_string(),
        request: input.clone(),
    });
    if let Some((action_type, data)) = continued {
        state.counter += 1;
        let n = state.counter;
        state.jobs.push(Job {
            id: format!("c0ffee00-0000-4000-8000-{n:012x}"),
            action_type,
            data,
            status: Status::Queued,
            nonce: None,
            times_out_on_ack: false,
            queued_at: Instant::now(),
            acknowledged_at: None,
        });
    }
    Ok(json!({}))
}

fn put_job_failure_result(state: &mut State, input: &Value) -> Outcome {
    let id = job_id(input)?.to_string();
    let details = &input["failureDetails"];
    if !details.is_object() {
        return Err(invalid("failureDetails is required"));
    }
    let kind = details["type"].as_str().unwrap_or("");
    const TYPES: &[&str] = &[
        "JobFailed",
        "ConfigurationError",
        "PermissionError",
        "RevisionOutOfSync",
        "RevisionUnavailable",
        "SystemUnavailable",
    ];
    if !TYPES.contains(&kind) {
        return Err(invalid(format!(
            "failureDetails.type `{kind}` is not one of {}",
            TYPES.join(", ")
        )));
    }
    let n = details["message"].as_str().map_or(0, |m| m.chars().count());
    if !(1..=5000).contains(&n) {
        return Err(invalid("failureDetails.message is 1 to 5000 characters"));
    }
    if let Some(external) = details.get("externalExecutionId") {
        let n = external.as_str().map_or(0, |s| s.chars().count());
        if !(1..=1500).contains(&n) {
            return Err(invalid(
                "failureDetails.externalExecutionId is 1 to 1500 characters",
            ));
        }
    }
    let job = find(state, &id)?;
    in_progress(job)?;
    job.status = Status::Failed;
    state.reported.push(Reported {
        job_id: id,
        operation: "PutJobFailureResult".to_string(),
        request: input.clone(),
    });
    Ok(json!({}))
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "00000000-0000-4000-8000-000000000000")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

fn error(code: &str, message: &str) -> Answer {
    json_answer(
        StatusCode::BAD_REQUEST,
        &json!({"__type": code, "message": message}),
    )
}

/// An authentication failure as the service's front end answers it: HTTP 403, the type
/// in the body with its namespace (the SDK keeps the part after `#`).
fn denied(code: &str, message: &str) -> Answer {
    let mut answer = json_answer(
        StatusCode::FORBIDDEN,
        &json!({"__type": format!("com.amazon.coral.service#{code}"), "message": message}),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(code) {
        answer.headers_mut().insert("x-amzn-errortype", value);
    }
    answer
}

fn plain(status: StatusCode, text: &str) -> Answer {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text.to_string())))
        .unwrap()
}

/// Sends the request on to `to` as it came and answers with what comes back.
async fn pass_on(to: &str, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return plain(StatusCode::BAD_GATEWAY, "cannot read the request");
    };
    let Ok(stream) = tokio::net::TcpStream::connect(to).await else {
        return plain(StatusCode::BAD_GATEWAY, "cannot reach the S3 stand-in");
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return plain(StatusCode::BAD_GATEWAY, "cannot talk to the S3 stand-in");
    };
    tokio::spawn(connection);
    let mut onward = Request::builder()
        .method(parts.method)
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "keep-alive" | "upgrade"
        ) {
            onward = onward.header(name, value);
        }
    }
    if !parts.headers.contains_key("content-length") && !body.is_empty() {
        onward = onward.header("content-length", body.len());
    }
    let Ok(onward) = onward.body(Full::new(body)) else {
        return plain(StatusCode::BAD_GATEWAY, "cannot build the request");
    };
    let Ok(response) = sender.send_request(onward).await else {
        return plain(StatusCode::BAD_GATEWAY, "the S3 stand-in did not answer");
    };
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut back = Response::builder().status(parts.status);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "keep-alive"
        ) {
            back = back.header(name, value);
        }
    }
    back.body(Full::new(body)).unwrap()
}
