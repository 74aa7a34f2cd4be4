//! One delivery from receipt to settlement: read the JobSpec, refuse what the config does
//! not allow, skip what already has a result, prepare the workspace, run the job as a
//! child `agent run-local` or `agent deploy-local` (the same code an engineer runs on a
//! laptop, and a crash in one job cannot take the daemon down), keep the lease, store the
//! result, and only then settle the delivery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_config::Config;
use agent_config::config::{GitCredential, git_credential_for};
use agent_config::jobspec::{self, JobKind, JobSource as JobSourceSpec, JobSpec};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::git_credentials;
use super::lease::LeaseKeeper;
use super::metrics::Metrics;
use super::result::{JobResult, JobStatus};
use super::source::{Delivery, JobSource};
use super::state::{Announce, JournalEntry, State, Stored};
use super::webhook::{Event, Webhooks};

/// How a running job is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cancel {
    No,
    /// SIGTERM to the commands, `finally` runs, the job reports STOPPED.
    Graceful,
    /// Everything killed now.
    Now,
}

/// A job running now, for `/status.json`.
#[derive(Debug, Clone)]
pub struct Running {
    pub job_id: String,
    pub kind: String,
    pub source: String,
    pub started_at: String,
    pub started: Instant,
}

pub struct Runner {
    pub config: watch::Receiver<Arc<Config>>,
    pub state: State,
    pub metrics: Arc<Metrics>,
    /// This binary, run once per job.
    pub exe: PathBuf,
    pub running: Mutex<BTreeMap<String, Running>>,
    /// Job ids being handled now, from their parse to their settlement: a second delivery
    /// of one of them (a lease lost while it ran, a file dropped again) waits for the first
    /// instead of running beside it in the same workspace.
    pub active: Mutex<std::collections::BTreeSet<String>>,
    pub recent: Mutex<Vec<JobResult>>,
    /// Announces jobs' starts and ends.
    pub webhooks: Webhooks,
    /// The agent's own AWS setup: the fleet's result store (`storage.results`), git
    /// credentials from Secrets Manager.
    pub aws: super::aws_setup::AwsSetup,
}

/// How a delivery ended, which decides how it is settled.
enum Outcome {
    /// The job already has a result (this agent's, or another's in the shared store);
    /// `pending` when this agent kept it but may not have stored it everywhere or announced
    /// it, with what announcing it takes.
    Known {
        result: JobResult,
        pending: Option<Announce>,
    },
    /// Final: stored, then the delivery completed.
    Done(JobResult),
    /// Not a job, or delivered too often: stored, then rejected.
    Rejected(JobResult),
    /// Stopped by a drain: reported, the delivery given back for another run.
    Released(JobResult),
    /// Not run here at all: given back as it came.
    GiveBack,
}

/// Holds a job id in [`Runner::active`] until dropped.
struct Active<'a> {
    runner: &'a Runner,
    job_id: String,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Ok(mut active) = self.runner.active.lock() {
            active.remove(&self.job_id);
        }
    }
}

impl Runner {
    /// Runs `delivery` to its settlement. `max_receives` is the source's poison limit.
    pub async fn handle(
        self: Arc<Self>,
        source: Arc<dyn JobSource>,
        delivery: Delivery,
        keeper: LeaseKeeper,
        max_receives: Option<u32>,
        cancel: watch::Receiver<Cancel>,
    ) {
        let received = Instant::now();
        let received_at = super::now_rfc3339();
        let mut entry = JournalEntry {
            source: source.name().to_string(),
            handle: delivery.handle.clone(),
            receive_count: delivery.receive_count,
            received_at: received_at.clone(),
            job_id: None,
            pid: None,
            workspace: None,
        };
        if let Err(e) = self.journal(&entry).await {
            tracing::error!(error = %e, "cannot write the job journal; giving the job back");
            keeper.stop().await;
            let _ = source.release(&delivery).await;
            return;
        }
        let mut stopping = cancel.clone();
        let mut announce = Announce::default();
        // Held until the delivery is settled, so that a second delivery waiting on it finds
        // the result stored.
        let mut held = None;
        let outcome = self
            .run(
                &source,
                &delivery,
                &mut entry,
                &mut announce,
                &mut held,
                max_receives,
                cancel,
                keeper.called_off(),
                received,
                &received_at,
            )
            .await;
        // Stored or not, the settlement below decides; no beat may cross it.
        let store = match &outcome {
            Outcome::Done(result) | Outcome::Rejected(result) => {
                self.record(result, source.name());
                Some(self.store_patiently(result, &announce, &mut stopping).await)
            }
            _ => None,
        };
        let kept = match &outcome {
            Outcome::Known {
                result,
                pending: Some(kept),
            } => Some(self.finish_kept(result, kept, &mut stopping).await),
            _ => None,
        };
        keeper.stop().await;
        let settled = match &outcome {
            Outcome::Known { result, .. } => match kept {
                None => source.complete(&delivery, result).await,
                Some(Ok(last)) => source.complete(&delivery, &last).await,
                // What an earlier run of this agent kept but could not finish: this run did
                // not start the job, so there is no `job.released` to send.
                Some(Err(e)) => {
                    tracing::error!(job = %result.job_id, error = %e, "cannot store the result kept from an earlier run; the job will be delivered again");
                    source.release(&delivery).await
                }
            },
            Outcome::Done(result) | Outcome::Rejected(result) => {
                // The result is stored before the delivery is settled; if storing fails the
                // delivery is given back and comes again, never finished without a result.
                match store.unwrap_or(Ok(())) {
                    Err(e) => {
                        tracing::error!(job = %result.job_id, error = %e, "cannot store the result; the job will be delivered again");
                        self.announce_released(&announce, result);
                        if !source.redelivers() {
                            // Given back, the job ends at its source without this result;
                            // it must not be announced later.
                            self.discard(result);
                        }
                        source.release(&delivery).await
                    }
                    Ok(()) => {
                        self.announce_end(&announce, result).await;
                        match &outcome {
                            Outcome::Rejected(r) => source.reject(&delivery, r).await,
                            _ => {
                                let completed = source.complete(&delivery, result).await;
                                if completed.is_ok() && source.takes_artifacts() {
                                    let config = self.config.borrow().clone();
                                    let _ = std::fs::remove_dir_all(local_artifacts(
                                        &config,
                                        &result.job_id,
                                    ));
                                }
                                completed
                            }
                        }
                    }
                }
            }
            Outcome::Released(result) => {
                self.record(result, source.name());
                self.announce_released(&announce, result);
                source.release(&delivery).await
            }
            Outcome::GiveBack => source.release(&delivery).await,
        };
        if let Err(e) = settled {
            tracing::warn!(source = source.name(), delivery = %delivery.name(), error = %e, "cannot settle the delivery");
        }
        if let Some(ws) = &entry.workspace {
            self.remove_workspace(ws).await;
        }
        self.state.forget(&entry);
        drop(held);
    }

    async fn remove_workspace(&self, workspace: &Path) {
        let config = self.config.borrow().clone();
        if let Err(e) =
            super::workspace::remove(workspace, &config.jobs.default_image, &config.agent.name)
                .await
        {
            tracing::warn!(workspace = %workspace.display(), error = %e, "cannot remove the job's workspace; the janitor tries again at the next start");
        }
    }

    fn discard(&self, result: &JobResult) {
        if let Err(e) = self.state.discard_pending(&result.job_id) {
            tracing::warn!(job = %result.job_id, error = %e, "the result stays pending; the next start announces it");
        }
    }

    /// Finishes a result an earlier run of this agent kept: stores it everywhere and
    /// announces it, unless another agent of the fleet has stored a result of its own since
    /// (it ran the job again), which then stands. Returns the job's result.
    async fn finish_kept(
        &self,
        kept: &JobResult,
        announce: &Announce,
        stopping: &mut watch::Receiver<Cancel>,
    ) -> Result<JobResult, String> {
        if let Some(theirs) = self.fleet_result(&kept.job_id).await
            && (theirs.agent != kept.agent || theirs.finished_at != kept.finished_at)
        {
            tracing::info!(job = %kept.job_id, agent = %theirs.agent, "another agent ran the job again and stored its result; the result kept here is dropped");
            self.discard(kept);
            return Ok(theirs);
        }
        self.store_patiently(kept, announce, stopping).await?;
        self.announce_end(announce, kept).await;
        Ok(kept.clone())
    }

    /// Stores and announces the results an earlier run of this agent kept but stopped or
    /// crashed before it could store everywhere or announce: their deliveries were settled
    /// (at the restart, by the journal) or will be, and nothing else would finish them. A
    /// job being handled now is left to its handler. Several are finished at once, so one
    /// whose store keeps failing (its bucket gone, say) does not hold back the others.
    pub async fn finish_pending(&self, stopping: watch::Receiver<Cancel>) {
        use futures_util::StreamExt;
        futures_util::stream::iter(self.state.pending_jobs())
            .for_each_concurrent(PENDING_AT_ONCE, |job| {
                let stopping = stopping.clone();
                async move { self.finish_one_pending(&job, stopping).await }
            })
            .await;
    }

    async fn finish_one_pending(&self, job: &str, mut stopping: watch::Receiver<Cancel>) {
        // A drain leaves the rest for the next start: an announcement begun now would be
        // cut off by the exit.
        if *stopping.borrow() != Cancel::No {
            return;
        }
        let Some(_active) = self.activate(job) else {
            return;
        };
        // A delivery handled since the listing may have finished it.
        let Some(Stored {
            result,
            pending: Some(announce),
        }) = self.state.result(job)
        else {
            return;
        };
        match self.finish_kept(&result, &announce, &mut stopping).await {
            Ok(_) => {
                tracing::info!(job = %result.job_id, "finished the result an earlier run kept");
            }
            Err(e) => {
                tracing::warn!(job = %result.job_id, error = %e, "the result an earlier run kept is still not stored everywhere; the next start tries again");
            }
        }
    }

    fn webhook_url(&self, announce: &Announce) -> Option<String> {
        announce
            .webhook
            .clone()
            .or_else(|| self.config.borrow().notifications.webhook.clone())
    }

    /// Announces the job's end, and settles its result once the announcement is over (or at
    /// once with no webhook): a stop that cuts the announcement off leaves the result
    /// pending, for the next start to announce again under the same delivery id. Without a
    /// webhook the result is settled before this returns.
    async fn announce_end(&self, announce: &Announce, result: &JobResult) {
        let settle = {
            let state = self.state.clone();
            let job = result.job_id.clone();
            async move {
                let settled = job.clone();
                if let Err(e) = state.off_thread(move |s| s.settle_result(&settled)).await {
                    tracing::warn!(job = %job, error = %e, "the result stays pending; the next start announces it again");
                }
            }
        };
        match self.webhook_url(announce) {
            Some(url) => self.webhooks.notify_then(
                &url,
                Event::Finished {
                    result,
                    started_at: announce.started_at.as_deref(),
                },
                settle,
            ),
            None => settle.await,
        }
    }

    /// Writes the job's journal entry, off the runtime's workers.
    async fn journal(&self, entry: &JournalEntry) -> Result<(), String> {
        let entry = entry.clone();
        self.state.off_thread(move |s| s.journal(&entry)).await
    }

    /// Tells the receiver of a `job.started` that this run ended without a result and the
    /// job goes back to its source; a job whose start was not announced is not mentioned.
    fn announce_released(&self, announce: &Announce, result: &JobResult) {
        let Some(started_at) = announce.started_at.as_deref() else {
            return;
        };
        if let Some(url) = self.webhook_url(announce) {
            self.webhooks.notify(
                &url,
                Event::Released {
                    result,
                    started_at: Some(started_at),
                },
            );
        }
    }

    /// Stores the result, trying again with growing pauses (1 s to 30 s) for as long as it
    /// fails and the agent is not stopping: a finished job's result is not given up on
    /// because a disk or S3 had a bad minute. A drain or a stop gives up, and the delivery
    /// goes back for another run.
    async fn store_patiently(
        &self,
        result: &JobResult,
        announce: &Announce,
        cancel: &mut watch::Receiver<Cancel>,
    ) -> Result<(), String> {
        let mut pause = Duration::from_secs(1);
        loop {
            let error = match self.store(result, announce).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if *cancel.borrow() != Cancel::No {
                return Err(error);
            }
            tracing::warn!(job = %result.job_id, error = %error, retry_in_s = pause.as_secs(), "cannot store the result; trying again");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() != Cancel::No {
                        return Err(error);
                    }
                }
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Stores the result here and, when the fleet shares a store, in S3.
    async fn store(&self, result: &JobResult, announce: &Announce) -> Result<(), String> {
        let (kept, with) = (result.clone(), announce.clone());
        self.state
            .off_thread(move |s| s.store_result(&kept, &with))
            .await?;
        let config = self.config.borrow().clone();
        if let (Some(client), Some(url)) = (
            self.aws.results_store(&config).await,
            &config.storage.results,
        ) {
            let json = serde_json::to_vec_pretty(result).map_err(|e| e.to_string())?;
            client
                .put_object()
                .bucket(&url.bucket)
                .key(result_key(url, &result.job_id))
                .content_type("application/json")
                .body(json.into())
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "cannot store the result in {url}: {}",
                        crate::aws::error_text(&e)
                    )
                })?;
        }
        Ok(())
    }

    /// The AWS setup a job's own calls made by the daemon run with: the agent's, then the
    /// job's role assumed from it.
    async fn job_aws(
        &self,
        config: &Config,
        job_id: &str,
        role: Option<&jobspec::ResolvedRole>,
    ) -> Result<aws_config::SdkConfig, PrepareError> {
        let base = self.aws.get(config).await;
        let Some(role) = role else {
            return Ok(base);
        };
        let options = crate::aws::RoleOptions {
            roles: vec![role.arn.as_str().to_string()],
            external_id: role.external_id.clone(),
            session_name: crate::aws::roles::session_name(&format!("agent-{job_id}")),
            duration: None,
            tags: role
                .session_tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            source_identity: None,
        };
        crate::aws::assume_from(base, &options, Vec::new())
            .await
            .map(|aws| aws.config)
            .map_err(|e| {
                use crate::aws::{AwsError, RoleError};
                // A role the job may not assume stays refused; the agent's own credentials
                // or STS being away may pass.
                let permanent = matches!(
                    e,
                    AwsError::Role(
                        RoleError::AccessDenied { .. }
                            | RoleError::RegionDisabled { .. }
                            | RoleError::DurationTooLong { .. }
                            | RoleError::Invalid(_)
                    )
                );
                PrepareError::permanent_if(
                    permanent,
                    format!(
                        "cannot assume the job's role to read its git credentials or buildspec: {e}"
                    ),
                )
            })
    }

    fn activate(&self, job_id: &str) -> Option<Active<'_>> {
        let mut active = self.active.lock().ok()?;
        active.insert(job_id.to_string()).then(|| Active {
            runner: self,
            job_id: job_id.to_string(),
        })
    }

    /// A delivery of a job this agent is handling already: waits (its lease kept) until the
    /// first delivery is settled, then acknowledges it with that result, or gives it back
    /// when the first ended without one. It holds the job once the first lets go, so that
    /// of several waiting deliveries only one finishes a pending result.
    async fn after_first<'s>(
        &'s self,
        delivery: &Delivery,
        job_id: &str,
        held: &mut Option<Active<'s>>,
        mut cancel: watch::Receiver<Cancel>,
    ) -> Outcome {
        tracing::info!(job = %job_id, delivery = %delivery.name(), "delivered again while it runs here; waiting for the first delivery");
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            if let Some(active) = self.activate(job_id) {
                *held = Some(active);
                break;
            }
            tokio::select! {
                _ = check.tick() => {}
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() != Cancel::No {
                        return Outcome::GiveBack;
                    }
                }
            }
        }
        match self.known_result(job_id).await {
            Some((result, pending)) => Outcome::Known { result, pending },
            None => Outcome::GiveBack,
        }
    }

    /// A result stored by this agent (with what announcing it takes, when it is pending),
    /// or by any agent of the fleet.
    async fn known_result(&self, job_id: &str) -> Option<(JobResult, Option<Announce>)> {
        if let Some(stored) = self.state.result(job_id) {
            return Some((stored.result, stored.pending));
        }
        self.fleet_result(job_id).await.map(|r| (r, None))
    }

    /// The job's result in the fleet's store, when the fleet shares one and it has one.
    async fn fleet_result(&self, job_id: &str) -> Option<JobResult> {
        let config = self.config.borrow().clone();
        let url = config.storage.results.as_ref()?;
        let client = self.aws.results_store(&config).await?;
        let object = client
            .get_object()
            .bucket(&url.bucket)
            .key(result_key(url, job_id))
            .send()
            .await
            .ok()?;
        let bytes = object.body.collect().await.ok()?.into_bytes();
        serde_json::from_slice(&bytes).ok()
    }

    fn record(&self, result: &JobResult, source: &str) {
        let kind = result.kind.as_deref().unwrap_or("unknown");
        if result.status == JobStatus::Rejected {
            self.metrics.rejected(source);
        }
        self.metrics.job_finished(
            kind,
            result.status,
            Duration::from_millis(result.duration_ms),
        );
        tracing::info!(
            job = %result.job_id,
            status = result.status.as_str(),
            duration_ms = result.duration_ms,
            message = result.message.as_deref().unwrap_or(""),
            "job finished"
        );
        if let Ok(mut recent) = self.recent.lock() {
            recent.push(result.clone());
            let excess = recent.len().saturating_sub(20);
            recent.drain(..excess);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run<'s>(
        &'s self,
        source: &Arc<dyn JobSource>,
        delivery: &Delivery,
        entry: &mut JournalEntry,
        announce: &mut Announce,
        held: &mut Option<Active<'s>>,
        max_receives: Option<u32>,
        cancel: watch::Receiver<Cancel>,
        called_off: watch::Receiver<Option<String>>,
        received: Instant,
        received_at: &str,
    ) -> Outcome {
        let config = self.config.borrow().clone();
        let blank = |job_id: &str, status: JobStatus, message: String| JobResult {
            job_id: job_id.to_string(),
            kind: None,
            status,
            message: Some(message),
            agent: config.agent.name.clone(),
            agent_labels: config.agent.labels.clone(),
            labels: BTreeMap::new(),
            source: source.name().to_string(),
            received_at: received_at.to_string(),
            finished_at: super::now_rfc3339(),
            duration_ms: millis(received.elapsed()),
            attempts: delivery.receive_count,
            log: None,
            artifacts: Vec::new(),
            exported_variables: BTreeMap::new(),
            summary: serde_json::Value::Null,
        };
        if let Some(reason) = &delivery.refused {
            let id = rejected_id(delivery.name());
            return Outcome::Rejected(blank(
                &id,
                JobStatus::Rejected,
                format!("not a valid JobSpec: {reason}"),
            ));
        }
        let job = match jobspec::parse(&delivery.body) {
            Ok(job) => job,
            Err(e) => {
                let id = rejected_id(delivery.name());
                let message = format!("not a valid JobSpec:\n{}", e.render(delivery.name()));
                return Outcome::Rejected(blank(&id, JobStatus::Rejected, message));
            }
        };
        entry.job_id = Some(job.id.clone());
        announce.webhook = job.notify.as_ref().map(|n| n.webhook.clone());
        let kind = match job.kind {
            JobKind::Build => "build",
            JobKind::Deploy => "deploy",
        };
        let with_kind = |mut r: JobResult| {
            r.kind = Some(kind.to_string());
            r.labels.clone_from(&job.labels);
            r
        };
        match self.activate(&job.id) {
            Some(active) => *held = Some(active),
            None => return self.after_first(delivery, &job.id, held, cancel).await,
        }
        if let Some((result, pending)) = self.known_result(&job.id).await {
            tracing::info!(job = %job.id, "already has a result; acknowledging the delivery without running it again");
            return Outcome::Known { result, pending };
        }
        if let Some(max) = max_receives
            && delivery.receive_count > max
        {
            let message = format!(
                "delivered {} times without a result (the limit is {max}); not run again",
                delivery.receive_count
            );
            return Outcome::Rejected(with_kind(blank(&job.id, JobStatus::Failed, message)));
        }
        let resolved = match jobspec::check_policy(&job, &config) {
            Ok(resolved) => resolved,
            Err(refused) => {
                let message = refused
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                return Outcome::Done(with_kind(blank(&job.id, JobStatus::Rejected, message)));
            }
        };
        // Called off while it waited for a slot: nothing is fetched, nothing runs.
        let called_before = called_off.borrow().clone();
        if let Some(reason) = called_before {
            return Outcome::Done(with_kind(blank(&job.id, JobStatus::Stopped, reason)));
        }
        let workspace = config.agent.work_dir.join(&job.id);
        self.remove_workspace(&workspace).await;
        entry.workspace = Some(workspace.clone());
        if let Err(e) = self.journal(entry).await {
            return Outcome::Released(with_kind(blank(&job.id, JobStatus::Fault, e)));
        }
        // Started once the agent works on it: fetching its source is part of the job (as
        // CodeBuild's DOWNLOAD_SOURCE), so a job whose fetch fails is announced twice too.
        let started_at = super::now_rfc3339();
        announce.started_at = Some(started_at.clone());
        if let Some(url) = self.webhook_url(announce) {
            self.webhooks.notify(
                &url,
                Event::Started {
                    job_id: &job.id,
                    kind,
                    source: source.name(),
                    received_at,
                    started_at: &started_at,
                },
            );
        }
        let needs_aws = matches!(&job.source, JobSourceSpec::Git(git) if git.credentials_secret.is_some())
            || matches!(job.buildspec(), Some(jobspec::Buildspec::S3(_)));
        // Secrets and buildspecs are read as the job: with its role when it has one, so a
        // job cannot have the agent read what its own role may not.
        let aws = if needs_aws {
            match self.job_aws(&config, &job.id, resolved.role.as_ref()).await {
                Ok(aws) => Some(aws),
                Err(e) => {
                    return Outcome::Done(with_kind(blank(&job.id, e.status, e.message)));
                }
            }
        } else {
            None
        };
        let fetchers = Fetchers {
            git_cache: config.agent.state_dir.join("git"),
            aws: aws.as_ref(),
            configured: &config.git_credentials,
            git_paths: &config.jobs.allowed_git_paths,
        };
        let prepared =
            match prepare(&job, &workspace, delivery.attachments.as_deref(), &fetchers).await {
                Ok(p) => p,
                Err(e) => {
                    return Outcome::Done(with_kind(blank(&job.id, e.status, e.message)));
                }
            };
        if let Ok(mut running) = self.running.lock() {
            running.insert(
                job.id.clone(),
                Running {
                    job_id: job.id.clone(),
                    kind: kind.to_string(),
                    source: source.name().to_string(),
                    started_at,
                    started: Instant::now(),
                },
            );
        }
        self.metrics.job_started();
        let child = self
            .run_child(
                &config, &job, &resolved, &prepared, delivery, entry, cancel, called_off,
            )
            .await;
        self.metrics.job_ended();
        if let Ok(mut running) = self.running.lock() {
            running.remove(&job.id);
        }
        let mut result = with_kind(blank(&job.id, JobStatus::Fault, String::new()));
        result.message = None;
        result.duration_ms = millis(received.elapsed());
        result.finished_at = super::now_rfc3339();
        match child {
            Err(message) => {
                result.status = JobStatus::Fault;
                result.message = Some(message);
                Outcome::Done(result)
            }
            Ok(ran) => {
                fill_from_summary(&mut result, &ran.summary, kind);
                if let Some(bytes) = ran.summary["uploaded_bytes"].as_u64() {
                    self.metrics.bytes_uploaded(bytes);
                }
                let kept = self.state.log_path(&job.id);
                if let Some(log) = find_log(&prepared.log_dir)
                    && std::fs::copy(&log, &kept).is_ok()
                {
                    result.log.get_or_insert_with(|| kept.display().to_string());
                }
                if result.summary.is_null() {
                    result.status = JobStatus::Fault;
                    result.message = Some(format!(
                        "the job's process ended without a result ({}): {}",
                        ran.exit,
                        ran.stderr_tail.trim()
                    ));
                }
                if let Some(reason) = ran.called_off {
                    // Whatever the child made of its stop, the job ended because it was
                    // called off; a drain at the same moment does not give it back.
                    result.status = JobStatus::Stopped;
                    result.message = Some(reason);
                    return Outcome::Done(result);
                }
                if ran.cancelled {
                    result.status = JobStatus::Stopped;
                    result.message =
                        Some("stopped by the agent's drain; given back for another run".into());
                    return Outcome::Released(result);
                }
                Outcome::Done(result)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_child(
        &self,
        config: &Config,
        job: &JobSpec,
        resolved: &jobspec::Resolved,
        prepared: &Prepared,
        delivery: &Delivery,
        entry: &mut JournalEntry,
        mut cancel: watch::Receiver<Cancel>,
        mut lease: watch::Receiver<Option<String>>,
    ) -> Result<Ran, String> {
        // The child's summary and diagnostics live in the state directory, not the
        // workspace: a build that fills its workspace's disk must not take its own result
        // (or the child's error messages) down with it.
        let scratch = self.state.scratch(&job.id);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let summary_path = scratch.join("summary.json");
        // A job run again (after a drain gave it back) starts with no artifacts of before.
        let _ = std::fs::remove_dir_all(local_artifacts(config, &job.id));
        let stderr_path = scratch.join("agent.stderr");
        let args = match job.kind {
            JobKind::Build => build_args(config, job, resolved, prepared, &summary_path),
            JobKind::Deploy => deploy_args(
                config,
                job,
                resolved,
                prepared,
                &summary_path,
                delivery.receive_count,
            ),
        };
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .args(&args)
            .env(crate::exec::owner::INSTANCE_ENV, &config.agent.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .current_dir(&prepared.root)
            // Its own process group: the daemon's SIGTERM (a drain) must not reach the
            // job; the daemon decides when and how the job stops.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(endpoint) = &config.aws.endpoint_url {
            command.env("AWS_ENDPOINT_URL", endpoint);
        }
        if let Some(region) = &config.aws.region {
            command.env("AWS_REGION", region);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        entry.pid = child.id();
        let _ = self.journal(entry).await;
        let mut stdin = child.stdin.take();
        if let Some(pipe) = stdin.as_mut() {
            let mut env = prepared.env.clone();
            env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let control = match job.kind {
                // Secret references, not values: the build resolves them with its own
                // credentials (the job's role), so a job reads only what its role may read.
                JobKind::Build => serde_json::json!({
                    "env": env,
                    "parameter_store": job.secrets.parameter_store,
                    "secrets_manager": job.secrets.secrets_manager,
                }),
                JobKind::Deploy => serde_json::json!({ "env": env }),
            };
            let line = format!("{control}\n");
            if let Err(e) = pipe.write_all(line.as_bytes()).await {
                return Err(format!("cannot hand the job its environment: {e}"));
            }
        }
        let timeout = resolved.timeout + Duration::from_secs(60);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut cancelled = false;
        let mut called_off = None;
        let mut overdue = false;
        let mut killed = false;
        // A job called off before it started stops now.
        lease.mark_changed();
        let mut lease_open = true;
        let mut cancel_open = true;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                changed = lease.changed(), if lease_open => {
                    if changed.is_err() {
                        lease_open = false;
                        continue;
                    }
                    let reason = lease.borrow_and_update().clone();
                    if let (Some(reason), None) = (reason, &called_off) {
                        tracing::info!(job = %job.id, reason = %reason, "the job's source called it off; stopping it");
                        stop_gracefully(&mut stdin, &child, job.kind);
                        called_off = Some(reason);
                    }
                }
                changed = cancel.changed(), if cancel_open => {
                    if changed.is_err() {
                        cancel_open = false;
                        continue;
                    }
                    let level = *cancel.borrow();
                    match level {
                        Cancel::No => {}
                        Cancel::Graceful => {
                            cancelled = true;
                            stop_gracefully(&mut stdin, &child, job.kind);
                        }
                        Cancel::Now => {
                            cancelled = true;
                            killed = true;
                            signal_group(child.id(), nix::sys::signal::Signal::SIGKILL);
                        }
                    }
                }
                () = &mut deadline, if !overdue => {
                    // The build enforces its own timeout; this one catches a child that hangs.
                    // A completed sleep is ready at every poll: fire once, then wait for the exit.
                    overdue = true;
                    killed = true;
                    tracing::warn!(job = %job.id, timeout_s = timeout.as_secs(), "the job outlived its timeout; killing it");
                    signal_group(child.id(), nix::sys::signal::Signal::SIGKILL);
                }
            }
        };
        if killed {
            // A killed process cannot remove its container, whose commands would go on
            // running while the slot is given to the next job.
            let left = super::janitor::remove_job_leftovers(&config.agent.name, &job.id).await;
            if left.containers > 0 {
                tracing::warn!(job = %job.id, containers = left.containers, "removed the killed job's containers");
            }
        }
        let exit = match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        let summary = std::fs::read(&summary_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let stderr_tail = std::fs::read_to_string(&stderr_path)
            .map(|s| tail(&s, 2000))
            .unwrap_or_default();
        let _ = std::fs::remove_dir_all(&scratch);
        Ok(Ran {
            exit,
            summary,
            stderr_tail,
            cancelled,
            called_off,
        })
    }
}

/// Asks the job to stop as a drain does: `finally` runs, the result says STOPPED.
fn stop_gracefully(
    stdin: &mut Option<tokio::process::ChildStdin>,
    child: &tokio::process::Child,
    kind: JobKind,
) {
    // The end of its standard input is a build's stop signal.
    drop(stdin.take());
    if kind == JobKind::Deploy {
        signal_group(child.id(), nix::sys::signal::Signal::SIGTERM);
    }
}

struct Ran {
    exit: String,
    summary: serde_json::Value,
    stderr_tail: String,
    /// Stopped by the daemon (a drain): the delivery goes back to its source.
    cancelled: bool,
    /// Called off by its source, with the reason: the job is finished, STOPPED.
    called_off: Option<String>,
}

/// The job's directories.
struct Prepared {
    root: PathBuf,
    /// The source: a directory, or a URL the child fetches itself.
    source: String,
    buildspec: Option<PathBuf>,
    log_dir: PathBuf,
    /// Variables the source sets (`CODEBUILD_SOURCE_REPO_URL` and the versions for git).
    env: BTreeMap<String, String>,
}

/// A source error that may go away if the fetch is tried again.
trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for crate::source::https::HttpsError {
    fn is_transient(&self) -> bool {
        crate::source::https::HttpsError::is_transient(self)
    }
}

impl Transient for crate::source::git_fetch::GitError {
    fn is_transient(&self) -> bool {
        crate::source::git_fetch::GitError::is_transient(self)
    }
}

/// Kept results finished at once after a start.
const PENDING_AT_ONCE: usize = 8;

/// Pauses before the second and third tries of a source fetch.
const SOURCE_RETRY_PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// Fetches a source into `dest` (a new directory each try), trying again after a pause
/// when the failure looks transient: a source host's hiccup should not fail a build.
async fn with_retries<T, E, F, Fut>(url: &str, dest: &Path, mut fetch: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pauses = SOURCE_RETRY_PAUSES.iter();
    loop {
        let _ = std::fs::remove_dir_all(dest);
        match fetch().await {
            Err(e) if e.is_transient() => match pauses.next() {
                Some(pause) => {
                    tracing::warn!(url = %crate::source::https::redacted_text(url), error = %e, retry_in_s = pause.as_secs(), "source fetch failed; trying again");
                    tokio::time::sleep(*pause).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// What preparing a workspace needs from the agent.
struct Fetchers<'a> {
    git_cache: PathBuf,
    aws: Option<&'a aws_config::SdkConfig>,
    /// The config's `[[git_credentials]]`.
    configured: &'a [GitCredential],
    /// The config's `jobs.allowed_git_paths`.
    git_paths: &'a [PathBuf],
}

/// Why a workspace could not be prepared, and whose fault that is: the job's (a missing
/// ref, refused credentials, a buildspec outside the source) fails it; the agent's or the
/// network's (a full disk, a source host still down after the retries) is a FAULT.
struct PrepareError {
    status: JobStatus,
    message: String,
}

impl From<String> for PrepareError {
    fn from(message: String) -> Self {
        PrepareError {
            status: JobStatus::Fault,
            message,
        }
    }
}

impl PrepareError {
    fn job(message: String) -> Self {
        PrepareError {
            status: JobStatus::Failed,
            message,
        }
    }

    /// A failure that will recur (a refusal, a missing object) is the job's to fix: its
    /// role, its names; one that may pass (the network, throttling, an outage) is a FAULT.
    fn permanent_if(permanent: bool, message: String) -> Self {
        if permanent {
            PrepareError::job(message)
        } else {
            PrepareError::from(message)
        }
    }

    fn fetch<E: Transient>(what: &str, e: &E) -> Self {
        PrepareError::permanent_if(!e.is_transient(), format!("{what}: {e}"))
    }
}

async fn prepare(
    job: &JobSpec,
    root: &Path,
    attached: Option<&Path>,
    fetchers: &Fetchers<'_>,
) -> Result<Prepared, PrepareError> {
    let mut env = BTreeMap::new();
    let src = root.join("src");
    let log_dir = root.join("logs");
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    if let Some(dir) = attached {
        // A source that fetched the job's input itself (CodePipeline) hands it over.
        std::fs::rename(dir, &src)
            .map_err(|e| format!("cannot take the job's input from {}: {e}", dir.display()))?;
    } else {
        std::fs::create_dir_all(&src)
            .map_err(|e| format!("cannot create {}: {e}", src.display()))?;
    }
    let source = match &job.source {
        _ if attached.is_some() => src.display().to_string(),
        JobSourceSpec::Inline(inline) => {
            for (name, text) in &inline.files {
                let relative = crate::source::unpack::enclosed(name).ok_or_else(|| {
                    PrepareError::job(format!("inline file `{name}` leaves the source"))
                })?;
                let path = src.join(relative);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            src.display().to_string()
        }
        JobSourceSpec::S3(s3) => s3.url.to_string(),
        JobSourceSpec::Git(git) => {
            let credentials = match &git.credentials_secret {
                Some(secret) => Some(
                    git_credentials::from_secret(secret, fetchers.aws)
                        .await
                        .map_err(|e| PrepareError::permanent_if(e.permanent, e.message))?,
                ),
                None => git_credential_for(fetchers.configured, &git.url)
                    .map(git_credentials::from_config)
                    .transpose()?,
            };
            let request = crate::source::git_fetch::GitRequest {
                url: &git.url,
                git_ref: git.git_ref.as_deref(),
                depth: git.depth,
                submodules: git.submodules,
                credentials: credentials.as_ref(),
                local_roots: fetchers.git_paths,
            };
            let fetched = with_retries(&git.url, &src, || {
                crate::source::git_fetch::fetch(&fetchers.git_cache, &request, &src)
            })
            .await
            .map_err(|e| PrepareError::fetch("cannot fetch the git source", &e))?;
            env.insert("CODEBUILD_SOURCE_REPO_URL".into(), git.url.clone());
            env.insert(
                "CODEBUILD_SOURCE_VERSION".into(),
                git.git_ref
                    .clone()
                    .unwrap_or_else(|| fetched.commit.clone()),
            );
            env.insert("CODEBUILD_RESOLVED_SOURCE_VERSION".into(), fetched.commit);
            src.display().to_string()
        }
        JobSourceSpec::Https(https) => {
            let limits = crate::source::https::FetchLimits::default();
            with_retries(&https.url, &src, || {
                crate::source::https::fetch(&https.url, https.sha256.as_deref(), &src, &limits)
            })
            .await
            .map_err(|e| PrepareError::fetch("cannot fetch the https source", &e))?;
            src.display().to_string()
        }
    };
    let buildspec = match job.buildspec() {
        Some(jobspec::Buildspec::Inline(text)) => {
            let path = root.join("buildspec.inline.yml");
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(path)
        }
        Some(jobspec::Buildspec::S3(url)) => {
            let path = root.join("buildspec.s3.yml");
            fetch_buildspec(fetchers.aws, &url, &path).await?;
            Some(path)
        }
        Some(jobspec::Buildspec::Path(path)) => {
            let relative = crate::source::unpack::enclosed(&path).ok_or_else(|| {
                PrepareError::job(format!("the buildspec path `{path}` leaves the source"))
            })?;
            if source.starts_with("s3://") {
                Some(relative)
            } else {
                Some(src.join(relative))
            }
        }
        None => None,
    };
    if matches!(job.buildspec(), Some(jobspec::Buildspec::Path(_)))
        && !source.starts_with("s3://")
        && let Some(path) = &buildspec
    {
        enclosed_in(path, &src)?;
    }
    Ok(Prepared {
        root: root.to_path_buf(),
        source,
        buildspec,
        log_dir,
        env,
    })
}

/// The most a buildspec kept in S3 may hold.
const BUILDSPEC_MAX: u64 = 1 << 20;

/// Reads a buildspec kept in S3 to `dest`, with the job's credentials.
async fn fetch_buildspec(
    aws: Option<&aws_config::SdkConfig>,
    url: &agent_config::values::S3Url,
    dest: &Path,
) -> Result<(), PrepareError> {
    let Some(aws) = aws else {
        return Err(PrepareError::from(format!(
            "no AWS setup to read the buildspec {url}"
        )));
    };
    let object = crate::aws::s3::client(aws)
        .get_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            PrepareError::permanent_if(
                !crate::aws::transient::is_transient(&e, e.code().unwrap_or_default()),
                format!(
                    "cannot read the buildspec {url}: {}",
                    crate::aws::error_text(&e)
                ),
            )
        })?;
    if object
        .content_length()
        .is_some_and(|n| u64::try_from(n).unwrap_or(0) > BUILDSPEC_MAX)
    {
        return Err(PrepareError::job(format!(
            "the buildspec {url} is larger than 1 MiB"
        )));
    }
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| format!("cannot read the buildspec {url}: {e}"))?
        .into_bytes();
    if bytes.len() as u64 > BUILDSPEC_MAX {
        return Err(PrepareError::job(format!(
            "the buildspec {url} is larger than 1 MiB"
        )));
    }
    std::fs::write(dest, &bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(())
}

/// Refuses a buildspec that is a link out of the source: the job's author chose the
/// source, and the buildspec's text (diagnostics included) reaches the result.
fn enclosed_in(path: &Path, src: &Path) -> Result<(), PrepareError> {
    let Ok(real) = path.canonicalize() else {
        // Missing: the build says so with its own hint.
        return Ok(());
    };
    let root = src
        .canonicalize()
        .map_err(|e| format!("{}: {e}", src.display()))?;
    if real.starts_with(&root) {
        Ok(())
    } else {
        let shown = path.strip_prefix(src).unwrap_or(path);
        Err(PrepareError::job(format!(
            "the buildspec `{}` is a link that leads out of the source; the agent reads buildspecs only from inside the source",
            shown.display()
        )))
    }
}

fn build_args(
    config: &Config,
    job: &JobSpec,
    resolved: &jobspec::Resolved,
    prepared: &Prepared,
    summary: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["run-local".into()];
    if let Some(buildspec) = &prepared.buildspec {
        args.push(buildspec.display().to_string());
    }
    let mut flag = |name: &str, value: String| {
        args.push(name.to_string());
        args.push(value);
    };
    flag("--source", prepared.source.clone());
    flag("--executor", "docker".into());
    flag("--summary", summary.display().to_string());
    flag("--log-dir", prepared.log_dir.display().to_string());
    flag("--build-id", job.id.clone());
    flag(
        "--timeout",
        format!("{}s", resolved.timeout.as_secs().max(1)),
    );
    // As the job wrote it: the allow-list already checked its normalised form.
    let image = job
        .image
        .clone()
        .unwrap_or_else(|| config.jobs.default_image.clone());
    flag("--image", image);
    flag("--memory", config.jobs.memory.to_string());
    flag("--cpus", config.jobs.cpus.to_string());
    flag("--pids-limit", config.jobs.pids.to_string());
    flag(
        "--cache-dir",
        config.agent.state_dir.join("cache").display().to_string(),
    );
    match (&resolved.artifacts, &job.artifacts) {
        (Some(url), spec) => {
            flag("--artifacts", url.to_string());
            if let Some(spec) = spec {
                if spec.packaging == jobspec::Packaging::Zip {
                    flag("--artifacts-packaging", "zip".into());
                }
                if spec.namespace == jobspec::Namespace::BuildId {
                    flag("--artifacts-namespace", "build-id".into());
                }
                if let Some(key) = &spec.kms_key_id {
                    flag("--artifacts-kms-key-id", key.clone());
                }
            }
        }
        // Kept beside the job's log: the workspace is removed once the job is settled.
        (None, _) => flag(
            "--artifacts",
            local_artifacts(config, &job.id).display().to_string(),
        ),
    }
    if let Some(logs) = &config.storage.logs {
        flag("--logs", logs.to_string());
    }
    if let Some(cache) = job
        .cache
        .as_ref()
        .map(|c| &c.s3)
        .or(config.storage.cache.as_ref())
    {
        flag("--cache", cache.to_string());
    }
    for (name, value) in resolved.role.iter().flat_map(role_flags) {
        flag(name, value);
    }
    if let Some(profile) = &config.aws.profile {
        flag("--profile", profile.clone());
    }
    if let Some(region) = &config.aws.region {
        flag("--region", region.clone());
    }
    for (key, value) in &job.labels {
        flag("--label", format!("{key}={value}"));
    }
    if resolved.privileged {
        args.push("--privileged".into());
    }
    args.push("--quiet".into());
    args.push("--control-stdin".into());
    args
}

/// The role flags run-local and deploy-local share.
fn role_flags(role: &jobspec::ResolvedRole) -> Vec<(&'static str, String)> {
    let mut flags = vec![("--role-arn", role.arn.as_str().to_string())];
    if let Some(id) = &role.external_id {
        flags.push(("--external-id", id.clone()));
    }
    for (k, v) in &role.session_tags {
        flags.push(("--session-tag", format!("{k}={v}")));
    }
    flags
}

/// Where the artifacts of a build with no S3 destination are kept.
fn local_artifacts(config: &Config, job_id: &str) -> PathBuf {
    config.agent.state_dir.join("artifacts").join(job_id)
}

fn deploy_args(
    config: &Config,
    job: &JobSpec,
    resolved: &jobspec::Resolved,
    prepared: &Prepared,
    summary: &Path,
    attempt: u32,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["deploy-local".into()];
    let mut flag = |name: &str, value: String| {
        args.push(name.to_string());
        args.push(value);
    };
    flag("--bundle", prepared.source.clone());
    flag("--root", config.deploy.root.display().to_string());
    flag("--summary", summary.display().to_string());
    flag("--max-revisions", config.deploy.max_revisions.to_string());
    flag(
        "--timeout",
        format!("{}s", resolved.timeout.as_secs().max(1)),
    );
    for (name, value) in resolved.role.iter().flat_map(role_flags) {
        flag(name, value);
    }
    // A redelivered job is a new deployment of the same revision.
    let id = if attempt > 1 {
        format!("{}.{attempt}", job.id)
    } else {
        job.id.clone()
    };
    flag("--deployment-id", id);
    for dir in &config.deploy.allowed_destinations {
        flag("--allow-destination", dir.display().to_string());
    }
    if let Some(deploy) = &job.deploy {
        flag("--application-name", deploy.application_name.clone());
        flag("--deployment-group", deploy.deployment_group.clone());
        let behavior = match deploy.file_exists_behavior {
            jobspec::FileExistsBehavior::Disallow => "DISALLOW",
            jobspec::FileExistsBehavior::Overwrite => "OVERWRITE",
            jobspec::FileExistsBehavior::Retain => "RETAIN",
        };
        flag("--file-exists-behavior", behavior.into());
        if let Some(appspec) = &deploy.appspec {
            flag("--appspec", appspec.clone());
        }
        if let Some(events) = &deploy.events {
            let names: Vec<&str> = events
                .iter()
                .map(|e| {
                    jobspec::LifecycleEvent::NAMES[jobspec::LifecycleEvent::ALL
                        .iter()
                        .position(|x| x == e)
                        .unwrap_or(0)]
                })
                .collect();
            flag("--events", names.join(","));
        }
        if deploy.rollback_on_failure {
            args.push("--rollback-on-failure".into());
        }
        if deploy.traffic {
            args.push("--traffic".into());
        }
        if deploy.ignore_application_stop_failures {
            args.push("--ignore-application-stop-failures".into());
        }
    }
    if let Some(profile) = &config.aws.profile {
        args.push("--profile".into());
        args.push(profile.clone());
    }
    if let Some(region) = &config.aws.region {
        args.push("--region".into());
        args.push(region.clone());
    }
    if config.deploy.allowed_destinations.is_empty() {
        // The config's empty list means no files, not deploy-local's own defaults.
        args.push("--no-destinations".into());
    }
    args.push("--quiet".into());
    args.push("--control-stdin".into());
    args
}

/// Reads a run-local or deploy-local summary into the result.
fn fill_from_summary(result: &mut JobResult, summary: &serde_json::Value, kind: &str) {
    if summary.is_null() {
        return;
    }
    let status = summary["status"].as_str().unwrap_or("");
    result.status = match (kind, status) {
        (_, "SUCCEEDED" | "Succeeded") => JobStatus::Succeeded,
        (_, "TIMED_OUT" | "TimedOut") => JobStatus::TimedOut,
        (_, "STOPPED" | "Stopped") => JobStatus::Stopped,
        (_, "FAULT") => JobStatus::Fault,
        _ => JobStatus::Failed,
    };
    if result.status != JobStatus::Succeeded {
        let message = summary["message"].as_str().map(str::to_string).or_else(|| {
            summary["phases"].as_array().and_then(|phases| {
                phases.iter().find(|p| p["status"] != "SUCCEEDED").map(|p| {
                    format!(
                        "{} {}: {}",
                        p["phase"].as_str().unwrap_or("?"),
                        p["status"].as_str().unwrap_or("?"),
                        p["message"].as_str().unwrap_or("")
                    )
                })
            })
        });
        result.message = message;
    }
    if let Some(vars) = summary["exported_variables"].as_object() {
        for (k, v) in vars {
            if let Some(v) = v.as_str() {
                result.exported_variables.insert(k.clone(), v.to_string());
            }
        }
    }
    if let Some(artifacts) = summary["artifacts"].as_array() {
        result.artifacts = artifacts
            .iter()
            .filter_map(|a| a["location"].as_str().map(str::to_string))
            .collect();
    }
    if let Some(log) = summary["log"].as_str() {
        result.log = Some(log.to_string());
    }
    result.summary = summary.clone();
}

fn find_log(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
}

fn signal_group(pid: Option<u32>, signal: nix::sys::signal::Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

fn result_key(url: &agent_config::values::S3Url, job_id: &str) -> String {
    let prefix = url.key.trim_end_matches('/');
    if prefix.is_empty() {
        format!("{job_id}.json")
    } else {
        format!("{prefix}/{job_id}.json")
    }
}

/// A result id for a message that has none: its handle, made safe for a file name.
fn rejected_id(handle: &str) -> String {
    let clean: String = handle
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("rejected-{}", clean.trim_start_matches('.'))
}

fn tail(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut cut = text.len() - limit;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The child's command line as the real `agent` parses it.
    #[derive(Parser)]
    struct Child {
        #[command(subcommand)]
        command: ChildCommand,
    }

    #[derive(clap::Subcommand)]
    enum ChildCommand {
        RunLocal(Box<crate::run_local::RunLocalArgs>),
        DeployLocal(Box<crate::deploy_local::DeployLocalArgs>),
    }

    fn parse_child(args: &[String]) -> Result<ChildCommand, clap::Error> {
        Child::try_parse_from(std::iter::once("agent".to_string()).chain(args.iter().cloned()))
            .map(|c| c.command)
    }

    fn prepared() -> Prepared {
        Prepared {
            root: PathBuf::from("/w/job"),
            source: "/w/job/src".into(),
            buildspec: None,
            log_dir: PathBuf::from("/w/job/logs"),
            env: BTreeMap::new(),
        }
    }

    fn job(json: &str) -> JobSpec {
        jobspec::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{}", e.render("job")))
    }

    /// Every config shape the daemon meets (the defaults, and every field set) gives child
    /// command lines that the child accepts.
    #[test]
    fn child_command_lines_parse() {
        let configs = [
            "version = 1\n[[sources]]\ntype = \"spool\"\npath = \"/s\"\n",
            "version = 1\n[aws]\nregion = \"eu-west-1\"\nprofile = \"ci\"\n[roles]\nallowed = [\"arn:aws:iam::123456789012:role/*\"]\n[deploy]\nallowed_destinations = [\"/srv\"]\n[storage]\nlogs = \"s3://bucket-a/logs\"\ncache = \"s3://bucket-a/cache\"\n[jobs]\nallow_privileged = true\n[[sources]]\ntype = \"spool\"\npath = \"/s\"\n",
        ];
        let build = job(
            r#"{"version": 1, "id": "b-1", "kind": "build", "source": {"type": "inline", "files": {"buildspec.yml": "x"}},
                "privileged": true, "labels": {"team": "a"},
                "artifacts": {"s3": "s3://bucket-a/art", "packaging": "ZIP", "namespace": "BUILD_ID", "kms_key_id": "k"},
                "role": {"arn": "arn:aws:iam::123456789012:role/r", "external_id": "ext-id-0001", "session_tags": {"t": "v"}}}"#,
        );
        let deploy = job(
            r#"{"version": 1, "id": "d-1", "kind": "deploy", "source": {"type": "inline", "files": {"appspec.yml": "x"}},
                "role": {"arn": "arn:aws:iam::123456789012:role/r"}, "timeout": "10m",
                "deploy": {"application_name": "web", "deployment_group": "prod", "events": ["BeforeInstall"],
                           "rollback_on_failure": true, "traffic": true, "ignore_application_stop_failures": true}}"#,
        );
        let plain_build = job(
            r#"{"version": 1, "id": "b-0", "kind": "build", "source": {"type": "inline", "files": {"buildspec.yml": "x"}}}"#,
        );
        let plain_deploy = job(
            r#"{"version": 1, "id": "d-0", "kind": "deploy", "source": {"type": "inline", "files": {"appspec.yml": "x"}},
                "deploy": {"application_name": "web", "deployment_group": "prod"}}"#,
        );
        for (n, text) in configs.iter().enumerate() {
            let config =
                agent_config::config::parse(text, "agent.toml").unwrap_or_else(|e| panic!("{e}"));
            // The plain jobs under every config; the full ones where the config allows them.
            let mut jobs = vec![(&plain_build, false), (&plain_deploy, true)];
            if n == 1 {
                jobs.extend([(&build, false), (&deploy, true)]);
            }
            for (job, deploy_kind) in jobs {
                let resolved = jobspec::check_policy(job, &config)
                    .unwrap_or_else(|v| panic!("{}: {v:?}", job.id));
                let summary = Path::new("/state/running/x/summary.json");
                let args = if deploy_kind {
                    deploy_args(&config, job, &resolved, &prepared(), summary, 2)
                } else {
                    build_args(&config, job, &resolved, &prepared(), summary)
                };
                match parse_child(&args) {
                    Ok(ChildCommand::RunLocal(_)) => assert!(!deploy_kind, "{args:?}"),
                    Ok(ChildCommand::DeployLocal(parsed)) => {
                        assert!(deploy_kind, "{args:?}");
                        assert_eq!(
                            parsed.no_destinations,
                            config.deploy.allowed_destinations.is_empty()
                        );
                    }
                    Err(e) => panic!("{args:?}\n{e}"),
                }
            }
        }
    }
}
