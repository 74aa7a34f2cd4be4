//! Builds that outlive one CodePipeline job.
//!
//! A job worker keeps an action running past one job by reporting the job a success with a
//! `continuationToken`; CodePipeline then queues a new job for the same action execution
//! whose `data.continuationToken` carries the token, for a worker to poll and acknowledge.
//! The agent's token names itself and the job it was first delivered:
//! `{"agent":"build-7","job":"<job id>"}`, so any of its pollers can tell its own
//! continuation jobs from another agent's, and after a restart, from a build it no longer
//! runs.
//!
//! While a build runs, the heartbeat ([`Inner::keep`]) hands the job back once half of the
//! job timeout has passed and polls until the continuation job is acknowledged; a report
//! of the build's end waits for that first ([`Inner::reporting`]). Jobs the heartbeat's
//! polls bring that are not continuations are kept for the daemon's next poll rather than
//! left to wait out their acknowledgement timeout.

use std::time::{Duration, Instant};

use aws_sdk_codepipeline::types::{ExecutionDetails, FailureType, Job};
use serde::{Deserialize, Serialize};

use super::{Inner, SUMMARY_CHARS, clip, describe, spec_id};
use crate::daemon::source::{Lease, SourceError};

/// How long a polled, unacknowledged job is worth keeping: CodePipeline hands it to
/// another worker once its acknowledgement is overdue.
const STASH_FOR: Duration = Duration::from_secs(20);
const STASH_MAX: usize = 16;

/// What this agent puts in a continuation token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Token {
    /// The agent's name.
    pub agent: String,
    /// The job the build was delivered as.
    pub job: String,
}

impl Token {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for a token another kind of worker wrote.
    pub fn decode(text: &str) -> Option<Token> {
        serde_json::from_str(text).ok()
    }
}

impl Inner {
    /// The heartbeat of a running build: hands its job back before the job times out and
    /// takes up the continuation job. `Cancelled` when CodePipeline no longer wants the
    /// build (the pipeline was stopped, or the job timed out).
    pub(super) async fn keep(&self, delivered: &str) -> Result<Lease, SourceError> {
        let Some((reporting, nonce, since, handed_back)) = self
            .held_jobs()
            .get(delivered)
            .map(|h| (h.reporting.clone(), h.nonce.clone(), h.since, h.handed_back))
        else {
            return Ok(Lease::Held);
        };
        let Some(job_timeout) = self.options.job_timeout else {
            return self.still_running(&reporting, &nonce).await;
        };
        if let Some(at) = handed_back {
            self.look_for_continuation().await?;
            let still = self
                .held_jobs()
                .get(delivered)
                .is_some_and(|h| h.handed_back.is_some());
            if still && at.elapsed() > job_timeout {
                return Ok(Lease::Cancelled(format!(
                    "CodePipeline did not hand out the job continuing {} within the job \
                     timeout of {}s; the action has ended",
                    spec_id(delivered),
                    job_timeout.as_secs()
                )));
            }
            return Ok(Lease::Held);
        }
        if since.elapsed() < job_timeout / 2 {
            return self.still_running(&reporting, &nonce).await;
        }
        let token = Token {
            agent: self.options.agent.clone(),
            job: delivered.to_string(),
        };
        let summary = format!(
            "{} still running on agent {}; continued in a new job",
            spec_id(delivered),
            self.options.agent
        );
        let details = ExecutionDetails::builder()
            .summary(clip(&summary, SUMMARY_CHARS))
            .external_execution_id(spec_id(delivered))
            .build();
        let sent = self
            .client
            .put_job_success_result()
            .job_id(&reporting)
            .continuation_token(token.encode())
            .execution_details(details)
            .send()
            .await;
        if let Err(e) = sent {
            let failure = describe("PutJobSuccessResult", &self.name, e);
            if matches!(
                failure.code.as_str(),
                "JobNotFoundException" | "InvalidJobStateException"
            ) {
                return Ok(Lease::Cancelled(format!(
                    "CodePipeline ended job {reporting} ({}): the pipeline execution was \
                     stopped or the job timed out",
                    failure.code
                )));
            }
            return Err(failure.into_error());
        }
        if let Some(held) = self.held_jobs().get_mut(delivered) {
            held.handed_back = Some(Instant::now());
        }
        tracing::info!(source = %self.name, job = %delivered, handed_back = %reporting, "handed the job back with a continuation token; the build goes on");
        // The continuation is usually there at once; a miss is retried at the next beat.
        if let Err(e) = self.look_for_continuation().await {
            tracing::warn!(source = %self.name, job = %delivered, error = %e, "cannot poll for the continuation job yet");
        }
        Ok(Lease::Held)
    }

    /// Whether CodePipeline still has `job` in progress, asked by acknowledging it again.
    /// A job that ended without this worker's report was stopped with its pipeline
    /// execution, or timed out: the build is called off. A status the worker cannot act
    /// on, or no answer, keeps the build going.
    async fn still_running(&self, job: &str, nonce: &str) -> Result<Lease, SourceError> {
        use aws_sdk_codepipeline::types::JobStatus as CpJobStatus;
        let answer = self
            .client
            .acknowledge_job()
            .job_id(job)
            .nonce(nonce)
            .send()
            .await;
        let status = match answer {
            Ok(ack) => ack.status,
            Err(e) => {
                let failure = describe("AcknowledgeJob", &self.name, e);
                if failure.code == "JobNotFoundException" {
                    return Ok(Lease::Cancelled(format!(
                        "CodePipeline no longer knows job {job}: the pipeline execution was \
                         stopped or the job timed out"
                    )));
                }
                return Err(failure.into_error());
            }
        };
        match status {
            Some(
                ended @ (CpJobStatus::Failed | CpJobStatus::TimedOut | CpJobStatus::Succeeded),
            ) => Ok(Lease::Cancelled(format!(
                "CodePipeline reports job {job} as {}: the pipeline execution was stopped \
                     or the job timed out",
                ended.as_str()
            ))),
            _ => Ok(Lease::Held),
        }
    }

    /// The job a report of the build delivered as `delivered` goes to; when the build
    /// handed its job back, waits (up to the job timeout) for the continuation first.
    pub(super) async fn reporting(&self, delivered: &str) -> String {
        let deadline = self.options.job_timeout.map(|t| Instant::now() + t);
        loop {
            let (reporting, waiting) = match self.held_jobs().get(delivered) {
                Some(h) => (h.reporting.clone(), h.handed_back.is_some()),
                None => return delivered.to_string(),
            };
            if !waiting || deadline.is_none_or(|d| Instant::now() >= d) {
                if waiting {
                    tracing::warn!(source = %self.name, job = %delivered, "the continuation job never came; the report goes to the job handed back, which CodePipeline refuses");
                }
                return reporting;
            }
            if let Err(e) = self.look_for_continuation().await {
                tracing::warn!(source = %self.name, job = %delivered, error = %e, "cannot poll for the continuation job");
            }
            if self
                .held_jobs()
                .get(delivered)
                .is_some_and(|h| h.handed_back.is_some())
            {
                tokio::time::sleep(self.options.poll_interval.min(Duration::from_secs(1))).await;
            }
        }
    }

    /// A polled job that carries a continuation token: this agent's goes on with its
    /// build, or is failed when the build is gone; another worker's is left alone.
    pub(super) async fn continue_from(
        &self,
        job_id: &str,
        nonce: &str,
        token: &str,
    ) -> Result<(), SourceError> {
        let ours = Token::decode(token).filter(|t| t.agent == self.options.agent);
        let Some(token) = ours else {
            tracing::info!(source = %self.name, job = %job_id, "a job continues an action another worker started; leaving it for that worker");
            return Ok(());
        };
        if !self.acknowledge(job_id, nonce).await? {
            return Ok(());
        }
        let adopted = match self.held_jobs().get_mut(&token.job) {
            Some(held) => {
                let expected = held.handed_back.is_some();
                held.reporting = job_id.to_string();
                held.nonce = nonce.to_string();
                held.since = Instant::now();
                held.handed_back = None;
                Some(expected)
            }
            None => None,
        };
        if let Some(expected) = adopted {
            if expected {
                tracing::info!(source = %self.name, job = %token.job, continuation = %job_id, "the build goes on under the continuation job");
            } else {
                // Not asked for; the newest job of the action execution is the one that
                // can still take the build's result.
                tracing::warn!(source = %self.name, job = %token.job, continuation = %job_id, "an unexpected continuation of a running build; reporting to it from now on");
            }
            return Ok(());
        }
        tracing::warn!(source = %self.name, job = %job_id, build = %token.job, "a continuation of a build this agent no longer runs (it restarted); failing it");
        let message = format!(
            "agent {} stopped before the build {} finished; retry the stage",
            self.options.agent,
            spec_id(&token.job)
        );
        self.fail(
            job_id,
            FailureType::JobFailed,
            &message,
            Some(&spec_id(&token.job)),
        )
        .await
    }

    /// One poll, for a build waiting for its continuation job.
    async fn look_for_continuation(&self) -> Result<(), SourceError> {
        let Some(job) = self.poll().await? else {
            return Ok(());
        };
        let token = job
            .data
            .as_ref()
            .and_then(|d| d.continuation_token())
            .map(str::to_string);
        match (token, job.id.clone(), job.nonce.clone()) {
            (Some(token), Some(id), Some(nonce)) => self.continue_from(&id, &nonce, &token).await,
            (None, Some(_), Some(_)) => {
                self.stash(job);
                Ok(())
            }
            _ => Err(SourceError::Transient(format!(
                "{}: PollForJobs answered a job without an id or nonce",
                self.name
            ))),
        }
    }

    fn stash(&self, job: Job) {
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        if stash.len() >= STASH_MAX {
            // Left to wait out its acknowledgement timeout, for this or another worker.
            stash.pop_front();
        }
        stash.push_back((Instant::now(), job));
    }

    /// The oldest job a heartbeat polled that may still be acknowledged.
    pub(super) fn unstash(&self) -> Option<Job> {
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, job)) = stash.pop_front() {
            if at.elapsed() < STASH_FOR {
                return Some(job);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_the_agent_and_the_first_job() {
        let token = Token {
            agent: "build-7".into(),
            job: "0d1c3e5a-1111-4222-8333-444455556666".into(),
        };
        let text = token.encode();
        assert!(text.len() <= 2048);
        assert_eq!(Token::decode(&text), Some(token));
    }

    #[test]
    fn another_workers_token_is_not_ours() {
        assert_eq!(Token::decode("jenkins-build-42"), None);
        assert_eq!(Token::decode(r#"{"agent":"x"}"#), None);
    }
}
