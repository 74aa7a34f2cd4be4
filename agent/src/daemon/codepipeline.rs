//! Jobs of a CodePipeline custom action: the agent as the action's job worker.
//!
//! The protocol (PollForJobs, AcknowledgeJob with the job's nonce, then exactly one of
//! PutJobSuccessResult and PutJobFailureResult) is CodePipeline's; the agent's side of it:
//!
//! * `next` polls for one job of the action type (`owner` is always `Custom`), claims it
//!   with its nonce, fetches every input artifact with the job's own `artifactCredentials`
//!   and unpacks it under `<work_dir>/+codepipeline/codepipeline/<job id>/input/<artifact
//!   name>` (the source's own directory beside the workspaces); the first
//!   (primary) input becomes [`Delivery::attachments`], which the runner makes the build's
//!   source. The job becomes a JobSpec (see [`job_spec`]) with the id `cp-<job id>`.
//! * `complete` zips the build's primary artifacts directory into the first output
//!   artifact (and a build artifact whose directory is named like a further output artifact
//!   into that one, as CodeBuild matches secondary artifacts), SSE-KMS encrypted, then
//!   reports success with the build's exported variables as output variables, or failure
//!   with the status, the failing phase and the result's message (see [`failure_message`]).
//!   The failure type tells why (see [`failure_type`]): `JobFailed` for a build that ran
//!   and failed, `ConfigurationError` for a job refused or not runnable,
//!   `SystemUnavailable` when the agent could not run it (Docker or S3 down),
//!   `RevisionUnavailable` for an input no longer in the artifact store and
//!   `PermissionError` when the job's credentials do not reach the artifacts.
//! * `release` cannot give a job back: CodePipeline has no such call, and an unreported job
//!   only times out, hours later. It is failed at once with [`RELEASE_MESSAGE`], so the
//!   stage can be retried now.
//!
//! **Long builds.** An acknowledged job stays `InProgress` until it is reported or it
//! times out: after the custom action's 24 hours, or, for an action type made with
//! `CreateActionType`, after its own `jobTimeout` (60 s to 12 h; "an action execution can
//! have multiple jobs"). With `job_timeout` configured, a build still running at half of it
//! hands its job back done with a continuation token (see [`continuation`]) and carries on
//! under the job CodePipeline queues next, which the heartbeat polls for and acknowledges:
//! the build is never bound by one job's lifetime, and every report names its
//! `externalExecutionId`. A job whose pipeline was stopped meanwhile calls the build off:
//! every beat acknowledges the job again, which "returns information about a specified
//! job" (its status; `InProgress` while it runs), and a hand-back is refused. A polled job with another agent's token is left unacknowledged for
//! that agent; one with this agent's token for a build it no longer runs (it restarted) is
//! failed at once, so the stage can be retried.
//!
//! [`Delivery::handle`] is the CodePipeline job id alone: reporting a job needs nothing
//! else, and after a restart the artifact locations and fresh credentials come from
//! GetJobDetails. Credentials and configuration values are never logged: secret action
//! properties arrive in the configuration.

mod continuation;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agent_config::config::ActionCategory as CategoryConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_codepipeline::Client;
use aws_sdk_codepipeline::config::http::HttpResponse;
use aws_sdk_codepipeline::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_codepipeline::types::{
    ActionCategory, ActionOwner, ActionTypeId, Artifact, EncryptionKeyType, ExecutionDetails,
    FailureDetails, FailureType, JobData, JobStatus as CpJobStatus,
};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::result::{JobResult, JobStatus};
use super::source::{Delivery, JobSource, Lease, SourceError};
use crate::aws::error_text;
use crate::source::unpack;

/// The configuration properties the action type declares (`CreateCustomActionType`'s
/// `configurationProperties`, all `type: String` unless said, none required):
///
/// | name | meaning |
/// |---|---|
/// | `Buildspec` | A path in the primary input (`ci/buildspec.yml`), or the buildspec's YAML itself (any value with a line break, or starting with `{`). Default: `buildspec.yml`. |
/// | `Image` | The build image; the agent's `jobs.default_image` or one its `jobs.allowed_images` allows. Default: `jobs.default_image`. |
/// | `Timeout` | The build's time limit in whole minutes (`Number`), 1 to 1440 (CodePipeline's 24-hour custom-action timeout). Default: `jobs.default_timeout`. |
/// | `EnvironmentVariables` | A JSON list as CodeBuild's action takes it: `[{"name": "STAGE", "value": "prod", "type": "PLAINTEXT"}]`; `type` is `PLAINTEXT` (the default), `PARAMETER_STORE` (the value a parameter name or ARN) or `SECRETS_MANAGER` (`secret-id[:json-key[:version-stage[:version-id]]]`); the last two are fetched by the agent and masked in the log. |
/// | `Environment` | One of the agent's `[roles.environments]`: the role the build's AWS calls run as. Default: no role. |
/// | `Privileged` | `true` for a privileged container (`Boolean`); the agent must allow it. Default: `false`. |
///
/// Other properties are ignored; a queryable one that routes jobs to a fleet is matched by
/// PollForJobs against the source's `query_param`.
pub mod keys {
    pub const BUILDSPEC: &str = "Buildspec";
    pub const IMAGE: &str = "Image";
    pub const TIMEOUT: &str = "Timeout";
    pub const ENVIRONMENT_VARIABLES: &str = "EnvironmentVariables";
    pub const ENVIRONMENT: &str = "Environment";
    pub const PRIVILEGED: &str = "Privileged";
}

/// What a released job is failed with.
pub const RELEASE_MESSAGE: &str = "the agent stopped before finishing; retry the stage";

/// CodePipeline's custom-action timeout: a build allowed longer would be timed out by
/// CodePipeline first, its result refused.
pub const MAX_TIMEOUT_MINUTES: u32 = 24 * 60;

/// The name of the one file of the JobSpec's inline source: a JobSpec needs a source with a
/// file, and the runner replaces it with [`Delivery::attachments`].
pub const PLACEHOLDER_FILE: &str = ".codepipeline-job";

/// PutJobSuccessResult's and PutJobFailureResult's limits, in characters.
const SUMMARY_CHARS: usize = 2048;
const MESSAGE_CHARS: usize = 5000;
/// CodePipeline's quota on one action's output variables, names and values together.
pub const OUTPUT_VARIABLES_BYTES: usize = 122_880;

/// Attempts of a report: an unreported job stays in progress for hours, and the daemon
/// settles a delivery once, whatever the answer.
const REPORT_ATTEMPTS: u32 = 6;

/// Outputs up to this size go up in one PUT; larger ones in parts.
const SINGLE_PUT_BYTES: u64 = 64 * 1024 * 1024;
const PART_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct CodePipelineOptions {
    pub category: CategoryConfig,
    /// `[0-9A-Za-z_-]`, 1 to 35 characters.
    pub provider: String,
    /// `[0-9A-Za-z_-]`, 1 to 9 characters.
    pub version: String,
    /// The pause after a poll that found no job.
    pub poll_interval: Duration,
    /// The agent's work directory: downloads go under `codepipeline/` in it, on the same
    /// file system as the job workspaces the runner moves them into.
    pub work_dir: PathBuf,
    /// The action type's job timeout, when it has one: builds running longer go on under
    /// continuation jobs.
    pub job_timeout: Option<Duration>,
    /// The agent's name (`agent.name`), in continuation tokens: it tells this agent's
    /// continuation jobs from another's.
    pub agent: String,
    /// PollForJobs's `queryParam`: at most one queryable property and the value whose jobs
    /// this source takes.
    pub query_param: BTreeMap<String, String>,
}

pub struct CodePipelineSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The agent's AWS setup; artifact clients take its region and endpoint, not its
    /// credentials.
    sdk_config: aws_config::SdkConfig,
    action_type: ActionTypeId,
    options: CodePipelineOptions,
    name: String,
    /// Jobs handed to the daemon and not reported yet, by the CodePipeline job id they
    /// were delivered as.
    held: Mutex<HashMap<String, Held>>,
    /// Jobs a heartbeat polled while looking for a continuation, not acknowledged yet:
    /// the next [`JobSource::next`] takes them before it polls again.
    stash: Mutex<VecDeque<(Instant, aws_sdk_codepipeline::types::Job)>>,
}

/// A job the daemon runs.
struct Held {
    /// The job's data as polled (the artifact locations, and credentials to fall back on).
    data: JobData,
    /// The CodePipeline job the build reports to now: the one delivered, or the latest
    /// continuation of it.
    reporting: String,
    /// The nonce `reporting` was acknowledged with: acknowledging again tells its status.
    nonce: String,
    /// When `reporting` was acknowledged.
    since: Instant,
    /// When the build handed `reporting` back with a continuation token; the build is
    /// without a job until the next one is acknowledged.
    handed_back: Option<Instant>,
}

impl CodePipelineSource {
    /// The calls go to CodePipeline with `config`'s region, endpoint and credentials;
    /// nothing is called yet, since the only call that would prove access (PollForJobs)
    /// claims jobs.
    pub fn new(
        config: &aws_config::SdkConfig,
        options: CodePipelineOptions,
    ) -> Result<Self, SourceError> {
        check_options(&options)?;
        let action_type = ActionTypeId::builder()
            .category(category(options.category))
            .owner(ActionOwner::Custom)
            .provider(&options.provider)
            .version(&options.version)
            .build()
            .map_err(|e| SourceError::Fatal(format!("CodePipeline action type: {e}")))?;
        // The query is left out: journals name the source a job came from, and a job
        // journaled before `query_param` changed must still find its source at the next
        // start. Any source of the action type can report any of its jobs.
        let name = format!(
            "codepipeline:{}/{}/{}",
            action_type.category().as_str(),
            options.provider,
            options.version
        );
        Ok(CodePipelineSource {
            inner: Arc::new(Inner {
                client: Client::new(config),
                sdk_config: config.clone(),
                action_type,
                options,
                name,
                held: Mutex::new(HashMap::new()),
                stash: Mutex::new(VecDeque::new()),
            }),
        })
    }

    pub fn options(&self) -> &CodePipelineOptions {
        &self.inner.options
    }
}

fn check_options(options: &CodePipelineOptions) -> Result<(), SourceError> {
    let name_ok = |text: &str, max: usize| {
        (1..=max).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !name_ok(&options.provider, 35) {
        return Err(SourceError::Fatal(format!(
            "CodePipeline action provider `{}`: 1 to 35 of `0-9 A-Z a-z _ -`",
            options.provider
        )));
    }
    if !name_ok(&options.version, 9) {
        return Err(SourceError::Fatal(format!(
            "CodePipeline action version `{}`: 1 to 9 of `0-9 A-Z a-z _ -`",
            options.version
        )));
    }
    if options
        .job_timeout
        .is_some_and(|t| t < Duration::from_secs(2))
    {
        return Err(SourceError::Fatal(
            "CodePipeline job timeout must be at least 2s".to_string(),
        ));
    }
    if options.poll_interval.is_zero() {
        return Err(SourceError::Fatal(
            "CodePipeline poll interval must be more than 0s".to_string(),
        ));
    }
    if options.query_param.len() > 1 {
        return Err(SourceError::Fatal(
            "CodePipeline queries one property: query_param holds at most one entry".to_string(),
        ));
    }
    for (property, value) in &options.query_param {
        if !(1..=50).contains(&property.chars().count()) || !name_ok(value, 50) {
            return Err(SourceError::Fatal(format!(
                "CodePipeline query `{property} = {value}`: a name of 1 to 50 characters, a value of 1 to 50 of `0-9 A-Z a-z _ -`"
            )));
        }
    }
    Ok(())
}

fn category(category: CategoryConfig) -> ActionCategory {
    match category {
        CategoryConfig::Source => ActionCategory::Source,
        CategoryConfig::Build => ActionCategory::Build,
        CategoryConfig::Test => ActionCategory::Test,
        CategoryConfig::Deploy => ActionCategory::Deploy,
        CategoryConfig::Invoke => ActionCategory::Invoke,
        CategoryConfig::Approval => ActionCategory::Approval,
    }
}

impl JobSource for CodePipelineSource {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn next(&self) -> BoxFuture<'_, Result<Option<Delivery>, SourceError>> {
        Box::pin(async move {
            let stashed = self.inner.unstash();
            let job = match stashed {
                Some(job) => job,
                None => match self.inner.poll().await? {
                    Some(job) => job,
                    None => {
                        tokio::time::sleep(self.inner.options.poll_interval).await;
                        return Ok(None);
                    }
                },
            };
            // Past the poll, the job is claimed: the daemon dropping this future (a drain)
            // must not leave it claimed and unreported, so the rest runs on its own task,
            // and a delivery nobody waits for any more is failed for a retry.
            let inner = Arc::clone(&self.inner);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let taken = inner.take(job).await;
                if let Err(Ok(Some(delivery))) = tx.send(taken) {
                    tracing::warn!(source = %inner.name, job = %delivery.name(), "the daemon stopped taking jobs; failing the job for a retry");
                    if let Err(e) = inner.release(&delivery).await {
                        tracing::warn!(source = %inner.name, job = %delivery.name(), error = %e, "cannot fail the job; it stays in progress until CodePipeline times it out");
                    }
                }
            });
            rx.await.map_err(|_| {
                SourceError::Transient(format!(
                    "{}: the task fetching a job ended without an answer",
                    self.inner.name
                ))
            })?
        })
    }

    fn heartbeat(&self) -> Option<Duration> {
        // Each beat asks CodePipeline whether the job still runs (a stopped pipeline ends
        // it); with a job timeout, several beats come before half of it has passed.
        let options = &self.inner.options;
        Some(match options.job_timeout {
            Some(t) => (t / 8).clamp(Duration::from_millis(250), Duration::from_secs(60)),
            None => options
                .poll_interval
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
        })
    }

    fn extend<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<Lease, SourceError>> {
        Box::pin(self.inner.keep(delivery.name()))
    }

    fn complete<'a>(
        &'a self,
        delivery: &'a Delivery,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.inner.complete(delivery, result))
    }

    fn release<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.inner.release(delivery))
    }

    fn takes_artifacts(&self) -> bool {
        true
    }

    fn redelivers(&self) -> bool {
        false
    }

    fn reject<'a>(
        &'a self,
        delivery: &'a Delivery,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let job_id = delivery.name();
            let reporting = self.inner.reporting(job_id).await;
            let outcome = self
                .inner
                .fail(
                    &reporting,
                    FailureType::ConfigurationError,
                    &failure_message(result),
                    Some(&result.job_id),
                )
                .await;
            self.inner.forget(job_id);
            outcome
        })
    }
}

/// A job this agent cannot run, and the failure type CodePipeline shows for it.
#[derive(Debug, thiserror::Error)]
enum JobFailure {
    /// The action's configuration is not one the agent can run.
    #[error("{0}")]
    Configuration(String),
    /// The job's credentials do not reach its artifacts or their key.
    #[error("{0}")]
    Permission(String),
    /// An input artifact is not in the artifact store (any more): running the stage again
    /// cannot help, a new pipeline execution can.
    #[error("{0}")]
    Revision(String),
    /// The agent's side failed (S3 unreachable, its own disk): nothing about the job, so
    /// a retry of the stage may pass.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl JobFailure {
    fn failure_type(&self) -> FailureType {
        match self {
            JobFailure::Configuration(_) => FailureType::ConfigurationError,
            JobFailure::Permission(_) => FailureType::PermissionError,
            JobFailure::Revision(_) => FailureType::RevisionUnavailable,
            JobFailure::Unavailable(_) => FailureType::SystemUnavailable,
            JobFailure::Failed(_) => FailureType::JobFailed,
        }
    }
}

/// The failure type CodePipeline shows for a job that ended with `status`: the console
/// and any automation on the action's failure tell "the build failed" from "the action
/// is misconfigured" and "the worker was down" only by it.
fn failure_type(status: JobStatus) -> FailureType {
    match status {
        // The agent could not run the job at all (Docker or S3 gone).
        JobStatus::Fault => FailureType::SystemUnavailable,
        // Refused before it ran: not a valid JobSpec or buildspec, or not allowed.
        JobStatus::Rejected => FailureType::ConfigurationError,
        // The build ran and did not succeed. A success reaches here only if a caller
        // reports it as a failure, which the build itself then is not.
        JobStatus::Failed | JobStatus::TimedOut | JobStatus::Stopped | JobStatus::Succeeded => {
            FailureType::JobFailed
        }
    }
}

/// The first phase of a build summary that did not succeed, as `(phase, status,
/// message)`; in a batch build, the first such phase of the first member that did not
/// succeed, its phase named after the member.
fn failing_phase(summary: &Value) -> Option<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("").trim().to_string();
    if let Some(phase) = summary["phases"]
        .as_array()
        .and_then(|phases| phases.iter().find(|p| p["status"] != "SUCCEEDED"))
    {
        return Some((
            text(&phase["phase"]),
            text(&phase["status"]),
            text(&phase["message"]),
        ));
    }
    summary["builds"].as_array()?.iter().find_map(|member| {
        if member["status"] == "SUCCEEDED" {
            return None;
        }
        let identifier = text(&member["identifier"]);
        match failing_phase(&member["build"]) {
            Some((phase, status, message)) => {
                Some((format!("{identifier}/{phase}"), status, message))
            }
            None => Some((
                identifier,
                text(&member["status"]),
                text(&member["message"]),
            )),
        }
    })
}

/// What a failure report says. The console shows this message and nothing else of the
/// build, so it names the status, the phase that failed with its own message, the
/// result's message, the agent and where the log is.
fn failure_message(result: &JobResult) -> String {
    let message = result
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let mut text = format!("{} {}", result.job_id, result.status.as_str());
    let mut details = Vec::new();
    if let Some((phase, status, phase_message)) = failing_phase(&result.summary) {
        if !phase.is_empty() {
            text.push_str(&format!(" in phase {phase}"));
            if !status.is_empty() && status != result.status.as_str() {
                text.push_str(&format!(" ({status})"));
            }
        }
        // The runner's message is usually the phase's own: said once is enough.
        if !phase_message.is_empty() && !message.is_some_and(|m| m.contains(&phase_message)) {
            details.push(phase_message);
        }
    }
    if let Some(message) = message {
        details.push(message.to_string());
    }
    if !details.is_empty() {
        text.push_str(": ");
        text.push_str(&details.join("; "));
    }
    text.push_str(&format!(
        " (agent {}, {}",
        result.agent,
        seconds(result.duration_ms)
    ));
    if let Some(log) = result.log.as_deref().filter(|l| !l.is_empty()) {
        text.push_str(&format!(", log {log}"));
    }
    text.push(')');
    text
}

impl Inner {
    async fn poll(&self) -> Result<Option<aws_sdk_codepipeline::types::Job>, SourceError> {
        let output = self
            .client
            .poll_for_jobs()
            .action_type_id(self.action_type.clone())
            // One at a time: a job polled is claimed only after its acknowledgement, and a
            // second one would wait for a slot while its claim ran out.
            .max_batch_size(1)
            .set_query_param(
                (!self.options.query_param.is_empty())
                    .then(|| self.options.query_param.clone().into_iter().collect()),
            )
            .send()
            .await
            .map_err(|e| describe("PollForJobs", &self.name, e).into_error())?;
        Ok(output.jobs.unwrap_or_default().into_iter().next())
    }

    /// Claims a polled job and makes it a delivery; `None` when it went to another worker,
    /// is no longer waiting, or failed (and was reported) before it could run.
    async fn take(
        &self,
        job: aws_sdk_codepipeline::types::Job,
    ) -> Result<Option<Delivery>, SourceError> {
        let (Some(job_id), Some(nonce), Some(data)) = (job.id, job.nonce, job.data) else {
            return Err(SourceError::Transient(format!(
                "{}: PollForJobs answered a job without an id, nonce or data",
                self.name
            )));
        };
        if let Some(token) = data.continuation_token() {
            self.continue_from(&job_id, &nonce, token).await?;
            return Ok(None);
        }
        if !self.acknowledge(&job_id, &nonce).await? {
            return Ok(None);
        }
        tracing::info!(source = %self.name, job = %job_id, "acknowledged a job");
        let dir = self.job_dir(&job_id);
        // The configuration first: a job that cannot run is failed without a download.
        let prepared = match job_spec(&job_id, &data) {
            Ok(spec) => self
                .fetch_inputs(&data, &dir)
                .await
                .map(|primary| (primary, spec)),
            Err(e) => Err(JobFailure::Configuration(e)),
        };
        match prepared {
            Ok((primary, spec)) => {
                self.held_jobs().insert(
                    job_id.clone(),
                    Held {
                        data,
                        reporting: job_id.clone(),
                        nonce: nonce.clone(),
                        since: Instant::now(),
                        handed_back: None,
                    },
                );
                Ok(Some(Delivery {
                    handle: job_id,
                    body: spec.to_string().into_bytes(),
                    receive_count: 1,
                    attachments: Some(primary),
                    refused: None,
                }))
            }
            Err(failure) => {
                tracing::warn!(source = %self.name, job = %job_id, error = %failure, "cannot run the job; failing it");
                let external = spec_id(&job_id);
                let reported = self
                    .fail(
                        &job_id,
                        failure.failure_type(),
                        &failure.to_string(),
                        Some(&external),
                    )
                    .await;
                remove_dir(&dir);
                reported.map(|()| None)
            }
        }
    }

    /// Claims a polled job; `false` when it went to another worker or no longer waits.
    async fn acknowledge(&self, job_id: &str, nonce: &str) -> Result<bool, SourceError> {
        match self
            .client
            .acknowledge_job()
            .job_id(job_id)
            .nonce(nonce)
            .send()
            .await
        {
            Ok(ack) => match ack.status {
                Some(CpJobStatus::InProgress) => Ok(true),
                status => {
                    tracing::info!(source = %self.name, job = %job_id, status = ?status.as_ref().map(CpJobStatus::as_str), "the job is no longer waiting; not taking it");
                    Ok(false)
                }
            },
            Err(e) => {
                let failure = describe("AcknowledgeJob", &self.name, e);
                if matches!(
                    failure.code.as_str(),
                    "InvalidNonceException" | "JobNotFoundException"
                ) {
                    tracing::info!(source = %self.name, job = %job_id, code = %failure.code, "the job went to another worker or is gone");
                    return Ok(false);
                }
                Err(failure.into_error())
            }
        }
    }

    fn held_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn job_dir(&self, job_id: &str) -> PathBuf {
        self.options
            .work_dir
            .join("codepipeline")
            .join(safe_name(job_id))
    }

    /// Unpacks every input artifact under `<dir>/input/`; returns the primary's directory
    /// (an empty one when the action has no input).
    async fn fetch_inputs(&self, data: &JobData, dir: &Path) -> Result<PathBuf, JobFailure> {
        // The agent's own disk: nothing the job can fix.
        let local = |e: std::io::Error| JobFailure::Unavailable(format!("{}: {e}", dir.display()));
        remove_dir(dir);
        let inputs = dir.join("input");
        std::fs::create_dir_all(&inputs).map_err(local)?;
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads).map_err(local)?;
        let mut primary = None;
        if !data.input_artifacts().is_empty() {
            let client = self.artifact_client(data)?;
            for artifact in data.input_artifacts() {
                let (name, bucket, key) = artifact_location(artifact)?;
                let archive = downloads.join(format!("{name}.zip"));
                download(&client, bucket, key, &archive).await?;
                let dest = inputs.join(&name);
                let (from, to) = (archive.clone(), dest.clone());
                let unpacked = tokio::task::spawn_blocking(move || unpack::unpack(&from, &to))
                    .await
                    .map_err(|e| JobFailure::Unavailable(e.to_string()))?;
                let _ = std::fs::remove_file(&archive);
                let unpacked = unpacked.map_err(|e| {
                    JobFailure::Failed(format!(
                        "the input artifact `{name}` (s3://{bucket}/{key}) cannot be unpacked: {e}"
                    ))
                })?;
                tracing::debug!(source = %self.name, artifact = %name, files = unpacked.files, "fetched an input artifact");
                primary.get_or_insert(dest);
            }
        }
        let _ = std::fs::remove_dir(&downloads);
        match primary {
            Some(dir) => Ok(dir),
            None => {
                let empty = inputs.join("none");
                std::fs::create_dir_all(&empty).map_err(local)?;
                Ok(empty)
            }
        }
    }

    /// An S3 client that acts as the job, with its artifact credentials: the artifact
    /// store's bucket and key trust the pipeline, not the agent.
    fn artifact_client(&self, data: &JobData) -> Result<aws_sdk_s3::Client, JobFailure> {
        let creds = data.artifact_credentials().ok_or_else(|| {
            JobFailure::Permission("the job came without artifact credentials".to_string())
        })?;
        let credentials = Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_string()),
            None,
            "codepipeline-job",
        );
        let config = self
            .sdk_config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build();
        Ok(crate::aws::s3::client(&config))
    }

    async fn complete(&self, delivery: &Delivery, result: &JobResult) -> Result<(), SourceError> {
        let delivered = delivery.name();
        let reporting = self.reporting(delivered).await;
        let job_id = reporting.as_str();
        let outcome = if result.status == JobStatus::Succeeded {
            match self.upload_outputs(delivered, job_id, result).await {
                Ok(uploaded) => self.succeed(job_id, result, uploaded).await,
                Err(Ok(failure)) => {
                    tracing::warn!(source = %self.name, job = %job_id, error = %failure, "the build succeeded but its output cannot be delivered; failing the job");
                    self.fail(
                        job_id,
                        failure.failure_type(),
                        &failure.to_string(),
                        Some(&result.job_id),
                    )
                    .await
                }
                Err(Err(e)) => Err(e),
            }
        } else {
            self.fail(
                job_id,
                failure_type(result.status),
                &failure_message(result),
                Some(&result.job_id),
            )
            .await
        };
        self.forget(delivered);
        outcome
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), SourceError> {
        let delivered = delivery.name();
        let reporting = self.reporting(delivered).await;
        let outcome = self
            .fail(
                &reporting,
                FailureType::JobFailed,
                RELEASE_MESSAGE,
                Some(&spec_id(delivered)),
            )
            .await;
        self.forget(delivered);
        outcome
    }

    fn forget(&self, job_id: &str) {
        self.held_jobs().remove(job_id);
        remove_dir(&self.job_dir(job_id));
    }

    /// The job's data with fresh artifact credentials: they are short-lived, and a build
    /// may have outlasted the ones it was polled with. The data kept since the poll serves
    /// when the call fails; after a restart only the call has it.
    async fn fresh_data(&self, delivered: &str, job_id: &str) -> Result<JobData, SourceError> {
        let held = self.held_jobs().get(delivered).map(|h| h.data.clone());
        let fetched = self
            .client
            .get_job_details()
            .job_id(job_id)
            .customize()
            .config_override(report_config())
            .send()
            .await
            .map_err(|e| describe("GetJobDetails", &self.name, e));
        match (fetched, held) {
            (Ok(output), held) => match output.job_details.and_then(|d| d.data) {
                Some(data) => Ok(data),
                None => held.ok_or_else(|| {
                    SourceError::Transient(format!(
                        "{}: GetJobDetails answered no data for job {job_id}",
                        self.name
                    ))
                }),
            },
            (Err(failure), Some(held)) => {
                tracing::warn!(source = %self.name, job = %job_id, code = %failure.code, error = %failure.detail, "cannot refresh the job's artifact credentials; using those it came with");
                Ok(held)
            }
            (Err(failure), None) => Err(failure.into_error()),
        }
    }

    /// Zips the build's artifact directories into the job's output artifacts; returns the
    /// names delivered. `Err(Ok)` fails the job, `Err(Err)` leaves it unreported.
    async fn upload_outputs(
        &self,
        delivered: &str,
        job_id: &str,
        result: &JobResult,
    ) -> Result<Vec<String>, Result<JobFailure, SourceError>> {
        let held_outputs = self
            .held_jobs()
            .get(delivered)
            .map(|held| held.data.output_artifacts().is_empty());
        if held_outputs == Some(true) {
            return Ok(Vec::new());
        }
        let data = self.fresh_data(delivered, job_id).await.map_err(Err)?;
        let outputs = data.output_artifacts();
        if outputs.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.artifact_client(&data).map_err(Ok)?;
        let kms_key = data
            .encryption_key()
            .filter(|k| *k.r#type() == EncryptionKeyType::Kms)
            .map(|k| k.id().to_string());
        let scratch = self.job_dir(delivered);
        std::fs::create_dir_all(&scratch).map_err(|e| {
            Ok(JobFailure::Unavailable(format!(
                "{}: {e}",
                scratch.display()
            )))
        })?;
        let mut delivered = Vec::new();
        for (index, artifact) in outputs.iter().enumerate() {
            let (name, bucket, key) = artifact_location(artifact).map_err(Ok)?;
            let source = output_directory(result, index, &name).map_err(Ok)?;
            let zip_path = scratch.join(format!("output-{name}.zip"));
            let (from, to) = (source.clone(), zip_path.clone());
            let entries = tokio::task::spawn_blocking(move || zip_directory(&from, &to))
                .await
                .map_err(|e| Ok(JobFailure::Unavailable(e.to_string())))?
                .map_err(|e| {
                    Ok(JobFailure::Failed(format!(
                        "cannot zip the output artifact `{name}` from {}: {e}",
                        source.display()
                    )))
                })?;
            let uploaded = upload(&client, bucket, key, &zip_path, kms_key.as_deref()).await;
            let _ = std::fs::remove_file(&zip_path);
            uploaded.map_err(Ok)?;
            tracing::info!(source = %self.name, job = %job_id, artifact = %name, entries, "delivered an output artifact");
            delivered.push(name);
        }
        Ok(delivered)
    }

    async fn succeed(
        &self,
        job_id: &str,
        result: &JobResult,
        delivered: Vec<String>,
    ) -> Result<(), SourceError> {
        let (variables, left_out) = output_variables(&result.exported_variables);
        for (name, why) in &left_out {
            tracing::warn!(source = %self.name, job = %job_id, variable = %name, reason = %why, "an exported variable is not passed to CodePipeline");
        }
        let mut summary = format!(
            "{} SUCCEEDED on agent {} in {}",
            result.job_id,
            result.agent,
            seconds(result.duration_ms)
        );
        if !delivered.is_empty() {
            summary.push_str(&format!("; output artifacts: {}", delivered.join(", ")));
        }
        if !variables.is_empty() {
            summary.push_str(&format!("; {} output variables", variables.len()));
        }
        if !left_out.is_empty() {
            let names: Vec<&str> = left_out.iter().map(|(n, _)| n.as_str()).collect();
            summary.push_str(&format!("; left out: {}", names.join(", ")));
        }
        let details = ExecutionDetails::builder()
            .summary(clip(&summary, SUMMARY_CHARS))
            .external_execution_id(&result.job_id)
            .percent_complete(100)
            .build();
        let mut request = self
            .client
            .put_job_success_result()
            .job_id(job_id)
            .execution_details(details.clone());
        if !variables.is_empty() {
            request = request.set_output_variables(Some(variables.into_iter().collect()));
        }
        match request
            .customize()
            .config_override(report_config())
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(source = %self.name, job = %job_id, "reported the job's success");
                Ok(())
            }
            Err(e) => {
                let failure = describe("PutJobSuccessResult", &self.name, e);
                match failure.code.as_str() {
                    // The quota counts in ways the variables alone do not show; the
                    // build's success matters more than its variables.
                    "OutputVariablesSizeExceededException" => {
                        tracing::warn!(source = %self.name, job = %job_id, error = %failure.detail, "CodePipeline refused the output variables; reporting the success without them");
                        self.client
                            .put_job_success_result()
                            .job_id(job_id)
                            .execution_details(details)
                            .customize()
                            .config_override(report_config())
                            .send()
                            .await
                            .map(|_| ())
                            .or_else(|e| {
                                settled_already(
                                    describe("PutJobSuccessResult", &self.name, e),
                                    job_id,
                                )
                            })
                    }
                    _ => settled_already(failure, job_id),
                }
            }
        }
    }

    async fn fail(
        &self,
        job_id: &str,
        kind: FailureType,
        message: &str,
        external_id: Option<&str>,
    ) -> Result<(), SourceError> {
        let message = clip(message.trim(), MESSAGE_CHARS);
        let message = if message.is_empty() {
            "failed".to_string()
        } else {
            message
        };
        let details = FailureDetails::builder()
            .r#type(kind.clone())
            .message(message)
            .set_external_execution_id(external_id.map(str::to_string))
            .build()
            .map_err(|e| SourceError::Fatal(format!("CodePipeline failure details: {e}")))?;
        match self
            .client
            .put_job_failure_result()
            .job_id(job_id)
            .failure_details(details)
            .customize()
            .config_override(report_config())
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(source = %self.name, job = %job_id, failure = kind.as_str(), "reported the job's failure");
                Ok(())
            }
            Err(e) => settled_already(describe("PutJobFailureResult", &self.name, e), job_id),
        }
    }
}

fn report_config() -> aws_sdk_codepipeline::config::Builder {
    aws_sdk_codepipeline::config::Builder::default()
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(REPORT_ATTEMPTS))
}

/// A job CodePipeline no longer waits for (timed out, or reported before a restart) needs
/// no report; anything else is an error.
fn settled_already(failure: Failure, job_id: &str) -> Result<(), SourceError> {
    if matches!(
        failure.code.as_str(),
        "JobNotFoundException" | "InvalidJobStateException"
    ) {
        tracing::warn!(job = %job_id, code = %failure.code, error = %failure.detail, "CodePipeline no longer waits for this job's result");
        return Ok(());
    }
    Err(failure.into_error())
}

/// The build artifact directory for output artifact number `index` named `name`: the
/// primary one for the first, the one named like the output for the others.
fn output_directory(result: &JobResult, index: usize, name: &str) -> Result<PathBuf, JobFailure> {
    let found = if index == 0 {
        result.artifacts.first()
    } else {
        result.artifacts.iter().skip(1).find(|location| {
            Path::new(location)
                .file_name()
                .is_some_and(|file| file == name)
        })
    };
    let Some(location) = found else {
        let hint = if index == 0 {
            "give the buildspec an `artifacts` section".to_string()
        } else {
            format!("give the buildspec a `secondary-artifacts` entry `{name}`")
        };
        return Err(JobFailure::Failed(format!(
            "the action has the output artifact `{name}` but the build produced no artifacts for it; {hint}"
        )));
    };
    let path = PathBuf::from(location);
    if !path.is_absolute() || !path.is_dir() {
        return Err(JobFailure::Failed(format!(
            "the build's artifacts for `{name}` are not a local directory any more ({location})"
        )));
    }
    Ok(path)
}

/// The exported variables CodePipeline takes, and those left out with why: names of
/// `[A-Za-z0-9@_-]` only, and all together within the action's quota.
fn output_variables(
    exported: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let mut kept = BTreeMap::new();
    let mut left_out = Vec::new();
    let mut budget = OUTPUT_VARIABLES_BYTES;
    for (name, value) in exported {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '-' | '_'));
        if !valid {
            left_out.push((
                name.clone(),
                "CodePipeline variable names are letters, digits, `@`, `-` and `_`".to_string(),
            ));
            continue;
        }
        let size = name.len() + value.len();
        if size > budget {
            left_out.push((
                name.clone(),
                format!(
                    "past CodePipeline's quota of {OUTPUT_VARIABLES_BYTES} bytes of output variables"
                ),
            ));
            continue;
        }
        budget -= size;
        kept.insert(name.clone(), value.clone());
    }
    (kept, left_out)
}

/// The JobSpec v1 for a CodePipeline job: a build of the primary input artifact, as the
/// action's configuration (see [`keys`]) describes it. `Err` holds why the configuration
/// cannot be a job; values the JobSpec check judges (variable names, secret references,
/// image references) are passed through for it to explain.
pub fn job_spec(job_id: &str, data: &JobData) -> Result<Value, String> {
    let empty = HashMap::new();
    let config = data
        .action_configuration()
        .and_then(|c| c.configuration())
        .unwrap_or(&empty);
    let get = |key: &str| config.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());

    let mut spec = Map::new();
    spec.insert("version".into(), json!(1));
    spec.insert("id".into(), json!(spec_id(job_id)));
    spec.insert("kind".into(), json!("build"));
    spec.insert(
        "source".into(),
        json!({"type": "inline", "files": {PLACEHOLDER_FILE: format!("{job_id}\n")}}),
    );
    if let Some(buildspec) = config.get(keys::BUILDSPEC).filter(|v| !v.trim().is_empty()) {
        let inline = buildspec.contains('\n') || buildspec.trim_start().starts_with('{');
        let value = if inline {
            json!({"inline": buildspec})
        } else {
            json!({"path": buildspec.trim()})
        };
        spec.insert("buildspec".into(), value);
    }
    if let Some(image) = get(keys::IMAGE) {
        spec.insert("image".into(), json!(image));
    }
    if let Some(text) = get(keys::PRIVILEGED) {
        match text.to_ascii_lowercase().as_str() {
            "true" => {
                spec.insert("privileged".into(), json!(true));
            }
            "false" => {}
            _ => {
                return Err(format!(
                    "the action's `{}` is `{text}`; write `true` or `false`",
                    keys::PRIVILEGED
                ));
            }
        }
    }
    if let Some(text) = get(keys::TIMEOUT) {
        let minutes = text
            .parse::<u32>()
            .ok()
            .filter(|m| (1..=MAX_TIMEOUT_MINUTES).contains(m))
            .ok_or_else(|| {
                format!(
                    "the action's `{}` is `{text}`; write whole minutes from 1 to {MAX_TIMEOUT_MINUTES} (CodePipeline times a custom action out after 24 hours)",
                    keys::TIMEOUT
                )
            })?;
        spec.insert("timeout".into(), json!(format!("{minutes}m")));
    }
    if let Some(environment) = get(keys::ENVIRONMENT) {
        spec.insert("role".into(), json!({"environment": environment}));
    }

    let variables = match get(keys::ENVIRONMENT_VARIABLES) {
        Some(text) => environment_variables(text)?,
        None => Vec::new(),
    };
    let mut env = Map::new();
    let mut parameter_store = Map::new();
    let mut secrets_manager = Map::new();
    for variable in &variables {
        let target = match variable.kind {
            VariableKind::Plaintext => &mut env,
            VariableKind::ParameterStore => &mut parameter_store,
            VariableKind::SecretsManager => &mut secrets_manager,
        };
        target.insert(variable.name.clone(), json!(variable.value));
    }
    for (name, value) in context_variables(job_id, data) {
        if !variables.iter().any(|v| v.name == name) {
            env.insert(name.to_string(), json!(value));
        }
    }
    spec.insert("env".into(), Value::Object(env));
    let mut secrets = Map::new();
    if !parameter_store.is_empty() {
        secrets.insert("parameter_store".into(), Value::Object(parameter_store));
    }
    if !secrets_manager.is_empty() {
        secrets.insert("secrets_manager".into(), Value::Object(secrets_manager));
    }
    if !secrets.is_empty() {
        spec.insert("secrets".into(), Value::Object(secrets));
    }
    let labels = labels(data);
    if !labels.is_empty() {
        spec.insert("labels".into(), Value::Object(labels));
    }
    Ok(Value::Object(spec))
}

/// The JobSpec id of a CodePipeline job: `cp-` and the job id, within the id's alphabet
/// and length whatever the service sends.
pub fn spec_id(job_id: &str) -> String {
    format!("cp-{}", safe_name(job_id))
}

/// `text` with only `[A-Za-z0-9._-]`, at most 120 characters, never `.` or `..`: a job id
/// as a file name and in a JobSpec id.
fn safe_name(text: &str) -> String {
    let clean: String = text
        .chars()
        .take(120)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        format!("_{clean}")
    } else {
        clean
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VariableKind {
    Plaintext,
    ParameterStore,
    SecretsManager,
}

#[derive(Debug)]
struct Variable {
    name: String,
    value: String,
    kind: VariableKind,
}

/// CodeBuild's action format: `[{"name": …, "value": …, "type": …}]`.
fn environment_variables(text: &str) -> Result<Vec<Variable>, String> {
    let key = keys::ENVIRONMENT_VARIABLES;
    let shape =
        r#"write a JSON list like `[{"name": "STAGE", "value": "prod", "type": "PLAINTEXT"}]`"#;
    let list: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| format!("the action's `{key}` is not a JSON list ({e}); {shape}"))?;
    let mut out: Vec<Variable> = Vec::new();
    for (index, item) in list.iter().enumerate() {
        let at = format!("the action's `{key}`, entry {}", index + 1);
        let Some(object) = item.as_object() else {
            return Err(format!("{at} is not an object; {shape}"));
        };
        if let Some(unknown) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "name" | "value" | "type"))
        {
            return Err(format!(
                "{at} has `{unknown}`; entries take `name`, `value` and `type`"
            ));
        }
        let name = match object.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            _ => return Err(format!("{at} needs a `name` string")),
        };
        let value = match object.get("value") {
            Some(Value::String(value)) => value.clone(),
            _ => return Err(format!("{at} (`{name}`) needs a `value` string")),
        };
        let kind = match object.get("type") {
            None => VariableKind::Plaintext,
            Some(Value::String(t)) => match t.as_str() {
                "PLAINTEXT" => VariableKind::Plaintext,
                "PARAMETER_STORE" => VariableKind::ParameterStore,
                "SECRETS_MANAGER" => VariableKind::SecretsManager,
                other => {
                    return Err(format!(
                        "{at} (`{name}`) has the type `{other}`; write `PLAINTEXT`, `PARAMETER_STORE` or `SECRETS_MANAGER`"
                    ));
                }
            },
            Some(_) => return Err(format!("{at} (`{name}`): `type` is a string")),
        };
        if out.iter().any(|v| v.name == name) {
            return Err(format!("the action's `{key}` sets `{name}` twice"));
        }
        out.push(Variable { name, value, kind });
    }
    Ok(out)
}

/// Variables that tell a build where in the pipeline it runs; the action's own
/// `EnvironmentVariables` take precedence.
fn context_variables(job_id: &str, data: &JobData) -> Vec<(&'static str, String)> {
    let mut vars = vec![("CODEPIPELINE_JOB_ID", job_id.to_string())];
    if let Some(context) = data.pipeline_context() {
        let mut add = |name, value: Option<&str>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                vars.push((name, value.to_string()));
            }
        };
        add("CODEPIPELINE_PIPELINE_NAME", context.pipeline_name());
        add(
            "CODEPIPELINE_PIPELINE_EXECUTION_ID",
            context.pipeline_execution_id(),
        );
        add(
            "CODEPIPELINE_STAGE_NAME",
            context.stage().and_then(|s| s.name()),
        );
        add(
            "CODEPIPELINE_ACTION_NAME",
            context.action().and_then(|a| a.name()),
        );
    }
    if let Some(revision) = data
        .input_artifacts()
        .first()
        .and_then(|a| a.revision())
        .filter(|r| !r.is_empty())
    {
        vars.push(("CODEPIPELINE_SOURCE_REVISION", revision.to_string()));
    }
    vars
}

/// Labels on the result and the container, to find a pipeline's builds.
fn labels(data: &JobData) -> Map<String, Value> {
    let mut labels = Map::new();
    let Some(context) = data.pipeline_context() else {
        return labels;
    };
    let mut add = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            let clean: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(256)
                .collect();
            if !clean.is_empty() {
                labels.insert(key.to_string(), json!(clean));
            }
        }
    };
    add("codepipeline.pipeline", context.pipeline_name());
    add("codepipeline.stage", context.stage().and_then(|s| s.name()));
    add(
        "codepipeline.action",
        context.action().and_then(|a| a.name()),
    );
    add("codepipeline.execution", context.pipeline_execution_id());
    labels
}

/// `(name, bucket, key)` of an artifact in S3, the name safe as a directory name.
fn artifact_location(artifact: &Artifact) -> Result<(String, &str, &str), JobFailure> {
    let raw = artifact.name().unwrap_or("");
    let name_ok = !raw.is_empty()
        && raw.len() <= 100
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !name_ok {
        return Err(JobFailure::Configuration(format!(
            "the artifact name `{}` is not CodePipeline's `[A-Za-z0-9_-]{{1,100}}`",
            raw.escape_debug()
        )));
    }
    let Some(s3) = artifact.location().and_then(|l| l.s3_location()) else {
        return Err(JobFailure::Configuration(format!(
            "the artifact `{raw}` has no S3 location; the agent reads artifacts from S3 only"
        )));
    };
    Ok((raw.to_string(), s3.bucket_name(), s3.object_key()))
}

/// Downloads one object, streaming.
async fn download(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    dest: &Path,
) -> Result<(), JobFailure> {
    use tokio::io::AsyncWriteExt;
    let what = format!("the input artifact s3://{bucket}/{key}");
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            let missing = matches!(e.code(), Some("NoSuchKey" | "NoSuchBucket"));
            match s3_failure(&what, "GetObject", e) {
                // The revision the pipeline execution refers to is gone (a lifecycle
                // rule, a deleted bucket): only a new execution brings a revision back.
                JobFailure::Failed(text) if missing => JobFailure::Revision(format!(
                    "{text}; the revision is no longer in the artifact store: run the pipeline again"
                )),
                other => other,
            }
        })?;
    let local = |e: std::io::Error| JobFailure::Unavailable(format!("{what}: {e}"));
    let mut body = object.body;
    let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| JobFailure::Unavailable(format!("{what}: download broke off: {e}")))?
    {
        file.write_all(&chunk).await.map_err(local)?;
    }
    file.flush().await.map_err(local)?;
    Ok(())
}

/// Uploads the zip at `path` to the output location, SSE-KMS: with the pipeline's key when
/// it has one, else the account's `aws/s3` key, as artifact stores require.
async fn upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    path: &Path,
    kms_key: Option<&str>,
) -> Result<(), JobFailure> {
    let what = format!("the output artifact s3://{bucket}/{key}");
    // The zip on the agent's own disk.
    let local = |e: &dyn std::fmt::Display| JobFailure::Unavailable(format!("{what}: {e}"));
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| local(&e))?
        .len();
    if size <= SINGLE_PUT_BYTES {
        let body = ByteStream::from_path(path).await.map_err(|e| local(&e))?;
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/zip")
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(kms_key.map(str::to_string))
            .body(body)
            .send()
            .await
            .map_err(|e| s3_failure(&what, "PutObject", e))?;
        return Ok(());
    }
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/zip")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .set_ssekms_key_id(kms_key.map(str::to_string))
        .send()
        .await
        .map_err(|e| s3_failure(&what, "CreateMultipartUpload", e))?;
    let upload_id = created.upload_id.unwrap_or_default();
    let parts = async {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = PART_BYTES.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| local(&e))?;
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(|e| s3_failure(&what, "UploadPart", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag)
                    .build(),
            );
            offset += length;
            number += 1;
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_failure(&what, "CompleteMultipartUpload", e))?;
        Ok(())
    }
    .await;
    if parts.is_err() {
        // A multipart upload left open is billed storage that never becomes an object.
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await;
    }
    parts
}

/// Zips the directory `dir` into `dest`: files with their modes, symlinks as links,
/// directories as entries so empty ones survive. Returns the number of entries.
fn zip_directory(dir: &Path, dest: &Path) -> Result<usize, String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut entries = 0;
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| e.to_string())?;
        let relative = entry
            .path()
            .strip_prefix(dir)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let mode = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            zip.add_symlink(relative, target.to_string_lossy(), options)
                .map_err(|e| e.to_string())?;
        } else if meta.is_dir() {
            zip.add_directory(relative, options.unix_permissions(mode))
                .map_err(|e| e.to_string())?;
        } else if meta.is_file() {
            zip.start_file(relative, options.unix_permissions(mode))
                .map_err(|e| e.to_string())?;
            let mut source = std::fs::File::open(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            std::io::copy(&mut source, &mut zip)
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        } else {
            // Sockets and FIFOs left by a build have no place in an archive.
            continue;
        }
        entries += 1;
    }
    zip.finish()
        .map_err(|e| e.to_string())?
        .flush()
        .map_err(|e| e.to_string())?;
    Ok(entries)
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a job's downloads");
    }
}

/// At most `max` characters, an ellipsis marking a cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn seconds(millis: u64) -> String {
    format!("{:.1} s", millis as f64 / 1000.0)
}

/// What went wrong with one AWS call, kept apart from [`SourceError`] so each call can
/// decide about the codes that mean "this job", not "this source".
struct Failure {
    operation: &'static str,
    source_name: String,
    /// The AWS error code, empty when the service was not reached.
    code: String,
    detail: String,
    transient: bool,
}

const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "KMS.AccessDeniedException",
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
    // The JSON protocol's names for an unsigned or badly signed request.
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
];

impl Failure {
    fn into_error(self) -> SourceError {
        let Failure {
            operation,
            source_name,
            code,
            detail,
            transient,
        } = self;
        let text = if code.is_empty() {
            format!("{source_name}: CodePipeline {operation} failed: {detail}")
        } else if code == "ActionTypeNotFoundException" {
            format!(
                "{source_name}: CodePipeline knows no such custom action type ({code}): register it with CreateCustomActionType in this account and region, or fix category, provider and version"
            )
        } else if code == "ValidationException" && operation == "PollForJobs" {
            format!(
                "{source_name}: CodePipeline refused the poll ({code}): {detail}; an action type with a queryable property needs `query_param` naming it, one without needs none"
            )
        } else if DENIED_CODES.contains(&code.as_str()) {
            format!(
                "{source_name}: CodePipeline {operation} denied ({code}): {detail}; the agent's identity needs the AWSCodePipelineCustomActionAccess permissions"
            )
        } else {
            format!("{source_name}: CodePipeline {operation} failed ({code}): {detail}")
        };
        if transient {
            SourceError::Transient(text)
        } else {
            SourceError::Fatal(text)
        }
    }
}

fn describe<E>(
    operation: &'static str,
    source_name: &str,
    error: SdkError<E, HttpResponse>,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error.code().unwrap_or_default().to_string();
    let (detail, transient) = classify(&error, &code);
    Failure {
        operation,
        source_name: source_name.to_string(),
        code,
        detail,
        transient,
    }
}

/// `(detail, transient)` for any SDK error.
fn classify<E>(error: &SdkError<E, HttpResponse>, code: &str) -> (String, bool)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let transient = crate::aws::transient::is_transient(error, code);
    let detail = match error {
        SdkError::ServiceError(_) => error
            .message()
            .map_or_else(|| error_text(error), str::to_string),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            format!("not reached: {}", error_text(error))
        }
        _ => error_text(error),
    };
    (detail, transient)
}

/// An S3 error as the reason to fail the job.
fn s3_failure<E>(what: &str, operation: &str, error: SdkError<E, HttpResponse>) -> JobFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error.code().unwrap_or_default().to_string();
    let (detail, transient) = classify(&error, &code);
    let text = if code.is_empty() {
        format!("{what}: S3 {operation} failed: {detail}")
    } else {
        format!("{what}: S3 {operation} failed ({code}): {detail}")
    };
    if DENIED_CODES.contains(&code.as_str()) || code.starts_with("KMS.") {
        JobFailure::Permission(format!(
            "{text}; the pipeline's role must reach the artifact bucket and its KMS key"
        ))
    } else if transient {
        JobFailure::Unavailable(format!("{text}; retry the stage"))
    } else {
        JobFailure::Failed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_codepipeline::types::{
        ActionConfiguration, ActionContext, ArtifactLocation, PipelineContext, S3ArtifactLocation,
        StageContext,
    };

    fn data(config: &[(&str, &str)]) -> JobData {
        let mut action = ActionConfiguration::builder();
        for (k, v) in config {
            action = action.configuration(*k, *v);
        }
        JobData::builder()
            .action_configuration(action.build())
            .pipeline_context(
                PipelineContext::builder()
                    .pipeline_name("web")
                    .stage(StageContext::builder().name("Build").build())
                    .action(ActionContext::builder().name("Compile").build())
                    .pipeline_execution_id("exec-1")
                    .build(),
            )
            .input_artifacts(
                Artifact::builder()
                    .name("SourceOutput")
                    .revision("abc123")
                    .location(
                        ArtifactLocation::builder()
                            .s3_location(
                                S3ArtifactLocation::builder()
                                    .bucket_name("b")
                                    .object_key("k")
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    }

    const JOB: &str = "6c8f7a1e-1b2c-4d3e-8f90-123456789abc";

    fn parsed(value: &Value) -> agent_config::jobspec::JobSpec {
        agent_config::jobspec::parse(value.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{}\n{value:#}", e.render("job")))
    }

    #[test]
    fn a_bare_action_is_a_default_build() {
        let spec = job_spec(JOB, &data(&[])).unwrap();
        let job = parsed(&spec);
        assert_eq!(job.id, format!("cp-{JOB}"));
        assert_eq!(job.kind, agent_config::jobspec::JobKind::Build);
        assert_eq!(
            job.buildspec(),
            Some(agent_config::jobspec::Buildspec::Path(
                "buildspec.yml".into()
            ))
        );
        assert_eq!(job.env["CODEPIPELINE_JOB_ID"], JOB);
        assert_eq!(job.env["CODEPIPELINE_PIPELINE_NAME"], "web");
        assert_eq!(job.env["CODEPIPELINE_SOURCE_REVISION"], "abc123");
        assert_eq!(job.labels["codepipeline.stage"], "Build");
        assert!(job.timeout.is_none() && job.role.is_none() && job.image.is_none());
    }

    #[test]
    fn every_key_lands_in_the_jobspec() {
        let vars = r#"[{"name":"STAGE","value":"prod","type":"PLAINTEXT"},
            {"name":"DB_PASSWORD","value":"/team/db/password","type":"PARAMETER_STORE"},
            {"name":"TOKEN","value":"ci/token:api","type":"SECRETS_MANAGER"},
            {"name":"CODEPIPELINE_PIPELINE_NAME","value":"mine"}]"#;
        let spec = job_spec(
            JOB,
            &data(&[
                ("Buildspec", "ci/build.yml"),
                ("Image", "agent-standard:2"),
                ("Timeout", "90"),
                ("EnvironmentVariables", vars),
                ("Environment", "staging"),
                ("Privileged", "true"),
                ("SomethingElse", "ignored"),
            ]),
        )
        .unwrap();
        let job = parsed(&spec);
        assert_eq!(
            job.buildspec,
            Some(agent_config::jobspec::Buildspec::Path(
                "ci/build.yml".into()
            ))
        );
        assert_eq!(job.image.as_deref(), Some("agent-standard:2"));
        assert_eq!(job.timeout, Some(Duration::from_secs(90 * 60)));
        assert!(job.privileged);
        assert_eq!(job.env["STAGE"], "prod");
        assert_eq!(job.env["CODEPIPELINE_PIPELINE_NAME"], "mine");
        assert_eq!(
            job.secrets.parameter_store["DB_PASSWORD"],
            "/team/db/password"
        );
        assert_eq!(job.secrets.secrets_manager["TOKEN"], "ci/token:api");
        assert!(matches!(
            job.role,
            Some(agent_config::jobspec::JobRole::Environment { ref environment, .. }) if environment == "staging"
        ));
    }

    #[test]
    fn a_buildspec_with_lines_is_inline() {
        let text = "version: 0.2\nphases:\n  build:\n    commands: [make]\n";
        let job = parsed(&job_spec(JOB, &data(&[("Buildspec", text)])).unwrap());
        assert_eq!(
            job.buildspec,
            Some(agent_config::jobspec::Buildspec::Inline(text.into()))
        );
        let flow = "{version: 0.2, phases: {build: {commands: [make]}}}";
        let job = parsed(&job_spec(JOB, &data(&[("Buildspec", flow)])).unwrap());
        assert_eq!(
            job.buildspec,
            Some(agent_config::jobspec::Buildspec::Inline(flow.into()))
        );
    }

    #[test]
    fn configuration_errors_say_which_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("Timeout", "0")], "`Timeout`"),
            (&[("Timeout", "1441")], "1 to 1440"),
            (&[("Timeout", "1h")], "`Timeout`"),
            (&[("Privileged", "yes")], "`Privileged`"),
            (&[("EnvironmentVariables", "{")], "not a JSON list"),
            (
                &[("EnvironmentVariables", "[1]")],
                "entry 1 is not an object",
            ),
            (
                &[("EnvironmentVariables", r#"[{"name":"A","value":1}]"#)],
                "`value` string",
            ),
            (
                &[(
                    "EnvironmentVariables",
                    r#"[{"name":"A","value":"x","type":"VAULT"}]"#,
                )],
                "`VAULT`",
            ),
            (
                &[(
                    "EnvironmentVariables",
                    r#"[{"name":"A","value":"x"},{"name":"A","value":"y"}]"#,
                )],
                "twice",
            ),
            (
                &[(
                    "EnvironmentVariables",
                    r#"[{"name":"A","value":"x","extra":1}]"#,
                )],
                "`extra`",
            ),
        ];
        for (config, needle) in cases {
            let error = job_spec(JOB, &data(config)).unwrap_err();
            assert!(error.contains(needle), "{config:?}: {error}");
        }
    }

    #[test]
    fn values_the_jobspec_judges_pass_through() {
        let vars = r#"[{"name":"1BAD","value":"x"}]"#;
        let spec = job_spec(JOB, &data(&[("EnvironmentVariables", vars)])).unwrap();
        let error = agent_config::jobspec::parse(spec.to_string().as_bytes()).unwrap_err();
        assert!(
            error.render("job").contains("1BAD"),
            "{}",
            error.render("job")
        );
    }

    #[test]
    fn ids_stay_in_the_jobspec_alphabet() {
        assert_eq!(spec_id(JOB), format!("cp-{JOB}"));
        assert_eq!(safe_name("a/b c"), "a_b_c");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name(&"x".repeat(300)).len(), 120);
    }

    #[test]
    fn output_variables_within_codepipeline_rules() {
        let mut exported = BTreeMap::new();
        exported.insert("GOOD_1".to_string(), "v".to_string());
        exported.insert("has.dot".to_string(), "v".to_string());
        exported.insert("a@b-c".to_string(), "v".to_string());
        exported.insert("HUGE".to_string(), "x".repeat(OUTPUT_VARIABLES_BYTES));
        let (kept, left_out) = output_variables(&exported);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["GOOD_1", "a@b-c"]);
        let names: Vec<&str> = left_out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["HUGE", "has.dot"]);
        assert!(left_out[0].1.contains("122880"));
    }

    fn ended(status: JobStatus, message: Option<&str>, summary: Value) -> JobResult {
        JobResult {
            job_id: format!("cp-{JOB}"),
            kind: Some("build".into()),
            status,
            message: message.map(str::to_string),
            agent: "build-1".into(),
            agent_labels: Default::default(),
            labels: Default::default(),
            source: "codepipeline:Build/AgentBuild/1".into(),
            received_at: String::new(),
            finished_at: String::new(),
            duration_ms: 12_300,
            attempts: 1,
            log: Some("s3://logs/cp-job.log".into()),
            artifacts: Vec::new(),
            exported_variables: BTreeMap::new(),
            summary,
        }
    }

    #[test]
    fn each_status_has_its_failure_type() {
        let cases = [
            (JobStatus::Failed, FailureType::JobFailed),
            (JobStatus::TimedOut, FailureType::JobFailed),
            (JobStatus::Stopped, FailureType::JobFailed),
            (JobStatus::Fault, FailureType::SystemUnavailable),
            (JobStatus::Rejected, FailureType::ConfigurationError),
        ];
        for (status, kind) in cases {
            assert_eq!(failure_type(status), kind, "{status:?}");
        }
        let failures = [
            (
                JobFailure::Configuration("c".into()),
                FailureType::ConfigurationError,
            ),
            (
                JobFailure::Permission("p".into()),
                FailureType::PermissionError,
            ),
            (
                JobFailure::Revision("r".into()),
                FailureType::RevisionUnavailable,
            ),
            (
                JobFailure::Unavailable("u".into()),
                FailureType::SystemUnavailable,
            ),
            (JobFailure::Failed("f".into()), FailureType::JobFailed),
        ];
        for (failure, kind) in failures {
            assert_eq!(failure.failure_type(), kind, "{failure:?}");
        }
    }

    #[test]
    fn a_failure_message_names_the_status_and_the_failing_phase() {
        let summary = json!({"status": "FAILED", "phases": [
            {"phase": "INSTALL", "status": "SUCCEEDED", "message": null},
            {"phase": "BUILD", "status": "FAILED",
             "message": "Error while executing command: make. Reason: exit status 2"},
            {"phase": "POST_BUILD", "status": "SUCCEEDED", "message": null},
        ]});
        // The runner's message repeats the phase's: said once.
        let runner = "BUILD FAILED: Error while executing command: make. Reason: exit status 2";
        let text = failure_message(&ended(JobStatus::Failed, Some(runner), summary.clone()));
        assert_eq!(
            text,
            format!(
                "cp-{JOB} FAILED in phase BUILD: {runner} (agent build-1, 12.3 s, log s3://logs/cp-job.log)"
            )
        );
        // A message of its own (the build was called off) keeps the phase's too.
        let text = failure_message(&ended(
            JobStatus::Stopped,
            Some("the pipeline execution was stopped"),
            summary,
        ));
        assert!(
            text.starts_with(&format!(
                "cp-{JOB} STOPPED in phase BUILD (FAILED): Error while executing command: make. Reason: exit status 2; the pipeline execution was stopped"
            )),
            "{text}"
        );
        // No summary: the status and the message.
        let text = failure_message(&ended(
            JobStatus::Fault,
            Some("cannot start the container: Docker is not running"),
            Value::Null,
        ));
        assert!(
            text.starts_with(&format!(
                "cp-{JOB} FAULT: cannot start the container: Docker is not running (agent build-1"
            )),
            "{text}"
        );
        let mut bare = ended(JobStatus::TimedOut, None, Value::Null);
        bare.log = None;
        assert_eq!(
            failure_message(&bare),
            format!("cp-{JOB} TIMED_OUT (agent build-1, 12.3 s)")
        );
    }

    #[test]
    fn a_batch_failure_names_the_member_and_its_phase() {
        let summary = json!({"status": "FAILED", "phases": [], "builds": [
            {"identifier": "linux", "status": "SUCCEEDED", "build": {"phases": []}},
            {"identifier": "arm", "status": "FAILED", "build": {"phases": [
                {"phase": "BUILD", "status": "FAILED", "message": "exit status 1"}]}},
        ]});
        let text = failure_message(&ended(JobStatus::Failed, None, summary));
        assert!(
            text.starts_with(&format!(
                "cp-{JOB} FAILED in phase arm/BUILD: exit status 1 ("
            )),
            "{text}"
        );
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip(&"é".repeat(6000), 5000).chars().count(), 5000);
    }

    #[test]
    fn options_follow_codepipeline_names() {
        let options = CodePipelineOptions {
            category: CategoryConfig::Build,
            provider: "AgentBuild".into(),
            version: "1".into(),
            poll_interval: Duration::from_secs(30),
            work_dir: "/tmp/w".into(),
            job_timeout: Some(Duration::from_secs(60)),
            agent: "build-1".into(),
            query_param: BTreeMap::from([("Fleet".into(), "linux-large_2".into())]),
        };
        assert!(check_options(&options).is_ok());
        let queries: [&[(&str, &str)]; 4] = [
            &[("Fleet", "a"), ("Zone", "b")],
            &[("Fleet", "linux large")],
            &[("Fleet", "")],
            &[("", "linux")],
        ];
        for query in queries {
            let bad = CodePipelineOptions {
                query_param: query
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..options.clone()
            };
            assert!(matches!(check_options(&bad), Err(SourceError::Fatal(_))));
        }
        let short = CodePipelineOptions {
            job_timeout: Some(Duration::from_secs(1)),
            ..options.clone()
        };
        assert!(matches!(check_options(&short), Err(SourceError::Fatal(_))));
        for (provider, version) in [("", "1"), ("a b", "1"), ("p", "1234567890"), ("p", "")] {
            let bad = CodePipelineOptions {
                provider: provider.into(),
                version: version.into(),
                ..options.clone()
            };
            assert!(matches!(check_options(&bad), Err(SourceError::Fatal(_))));
        }
    }

    #[test]
    fn zips_files_links_and_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::create_dir_all(src.join("empty")).unwrap();
        std::fs::write(src.join("bin/run"), "run").unwrap();
        std::os::unix::fs::symlink("bin/run", src.join("current")).unwrap();
        let zip_path = dir.path().join("out.zip");
        assert_eq!(zip_directory(&src, &zip_path).unwrap(), 4);
        let out = dir.path().join("out");
        unpack::unpack(&zip_path, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("bin/run")).unwrap(), "run");
        assert_eq!(std::fs::read_to_string(out.join("current")).unwrap(), "run");
        assert!(out.join("empty").is_dir());
    }
}
