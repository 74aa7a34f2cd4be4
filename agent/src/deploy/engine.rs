//! One deployment, event by event, as `reference/aws-spec.md` §3 describes; then, when
//! asked and when it failed, the rollback that redeploys the last successful revision.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use buildspec::Source;
use buildspec::appspec::{AppSpec, FileExistsBehavior, LifecycleEvent, MAX_EVENT_SECONDS, Os};
use tokio::sync::watch;

use super::allowed::AllowedRoots;
use super::bundle::{self, ARCHIVE_DIR, Bundle, BundleError, Fetched};
use super::hooks::{self, ErrorCode, Interrupt, LineSink, ScriptSpec, Stream};
use super::install;
use super::lifecycle::{self, Step};
use super::root::{DeploymentRoot, Pointer, STARTED};
use super::summary::{
    DeployStatus, DeploySummary, EventResult, EventStatus, ScriptResult, tail_2k,
};

/// What to deploy, and how.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub bundle: Bundle,
    pub application_name: String,
    pub deployment_group_name: String,
    pub deployment_group_id: String,
    pub deployment_id: String,
    /// A subset of events, as codedeploy-local's `--events`.
    pub events: Option<Vec<String>>,
    /// The deployment's option; the appspec's own `file_exists_behavior` wins over it.
    pub file_exists_behavior: FileExistsBehavior,
    /// Run the traffic events (BeforeBlockTraffic … AfterAllowTraffic).
    pub traffic: bool,
    pub ignore_application_stop_failures: bool,
    pub rollback_on_failure: bool,
    /// Appspec file names tried in the revision root, in order.
    pub appspec_names: Vec<String>,
    pub max_revisions: usize,
    /// How long a script's output may stay open after it exits.
    pub output_wait: Duration,
    /// The deployment this one rolls back, if it is a rollback.
    pub rollback_of: Option<String>,
    /// The limit for the whole run, rollback included: past it the running hook is stopped
    /// and the deployment ends `TimedOut`.
    pub timeout: Option<Duration>,
    /// Variables of the deployment job for every hook, under CodeDeploy's own.
    pub job_env: JobEnv,
}

/// A job's variables; their values stay out of `Debug` output, as they may be secret.
#[derive(Clone, Default)]
pub struct JobEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for JobEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Why a deployment ends before its events are done.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Halt {
    /// The request's `timeout` passed.
    TimedOut(Duration),
    /// A stop was asked for; the text says how (`SIGTERM`, `the end of standard input`).
    Stopped(String),
}

impl Halt {
    fn reason(&self) -> String {
        match self {
            Halt::TimedOut(limit) => format!(
                "the deployment did not finish within {} (--timeout)",
                agent_config::values::format_duration(*limit)
            ),
            Halt::Stopped(how) => format!("the deployment was stopped ({how})"),
        }
    }

    fn interrupt(&self) -> Interrupt {
        Interrupt {
            // CodeDeploy's codes have nothing for a stop; a timeout is a timeout.
            code: match self {
                Halt::TimedOut(_) => ErrorCode::ScriptTimedOut,
                Halt::Stopped(_) => ErrorCode::UnknownError,
            },
            reason: self.reason(),
        }
    }

    fn status(&self) -> DeployStatus {
        match self {
            Halt::TimedOut(_) => DeployStatus::TimedOut,
            Halt::Stopped(_) => DeployStatus::Stopped,
        }
    }
}

/// What can end a run early: one deadline for the deployment and its rollback, and the
/// stop channel.
#[derive(Clone)]
struct Halts {
    deadline: Option<(tokio::time::Instant, Duration)>,
    stop: watch::Receiver<Option<String>>,
}

impl Halts {
    /// The halt already due, if any; a stop wins over a timeout that passed meanwhile,
    /// because it says why the run was cut short from outside.
    fn now(&self) -> Option<Halt> {
        if let Some(how) = self.stop.borrow().clone() {
            return Some(Halt::Stopped(how));
        }
        match self.deadline {
            Some((at, limit)) if tokio::time::Instant::now() >= at => Some(Halt::TimedOut(limit)),
            _ => None,
        }
    }

    /// Resolves at the first halt; never when there is no deadline and no stop comes.
    async fn wait(&self) -> Halt {
        let mut stop = self.stop.clone();
        let stopped = async move {
            let how = match stop.wait_for(Option::is_some).await {
                Ok(how) => (*how).clone(),
                // The sender is gone: no stop can come any more.
                Err(_) => None,
            };
            match how {
                Some(how) => how,
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match self.deadline {
                Some((at, limit)) => {
                    tokio::time::sleep_until(at).await;
                    limit
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            how = stopped => Halt::Stopped(how),
            limit = deadline => Halt::TimedOut(limit),
        }
    }
}

/// Sees a deployment as it goes (the terminal, a job's log).
pub trait Observer: Send {
    fn event_started(&mut self, event: &str, revision: Option<&str>);
    fn line(&mut self, event: &str, stream: Stream, line: &str);
    fn event_finished(&mut self, result: &EventResult);
    fn note(&mut self, text: &str);
}

/// Why a deployment did not succeed, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The bundle or its appspec is wrong; nothing on the host was changed.
    BadInput,
    /// The agent could not fetch the bundle or write its state.
    CannotRun,
    /// An event failed.
    Lifecycle,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    CannotRun(String),
}

pub struct Deployer<'a> {
    pub root: DeploymentRoot,
    pub allowed: AllowedRoots,
    pub s3: Option<aws_sdk_s3::Client>,
    pub observer: &'a mut dyn Observer,
    /// Holds a reason once the deployment is to stop (the running hook is stopped, no
    /// later one runs, no rollback starts).
    pub stop: watch::Receiver<Option<String>>,
}

/// A revision whose scripts can run: its deployment, unpacked archive and appspec.
struct Revision {
    deployment_id: String,
    archive: PathBuf,
    appspec: AppSpec,
}

impl Deployer<'_> {
    /// Runs the deployment and, if it failed and the request asks, the rollback; the
    /// summary of the rollback is nested in the deployment's.
    pub async fn deploy(
        &mut self,
        request: &DeployRequest,
    ) -> Result<(DeploySummary, Option<Failure>), DeployError> {
        let halts = Halts {
            deadline: request
                .timeout
                .map(|limit| (later(tokio::time::Instant::now(), limit), limit)),
            stop: self.stop.clone(),
        };
        let (mut summary, failure) = self.deploy_once(request, &halts).await?;
        let touched = summary
            .events
            .iter()
            .any(|e| e.status != EventStatus::Skipped && e.event != "DownloadBundle");
        if failure.is_some() && request.rollback_on_failure && request.rollback_of.is_none() {
            if summary.status.halted() {
                // A rollback is a deployment of its own: after a timeout it would run past
                // the limit the caller set, after a stop against the caller's wish.
                let why = match summary.status {
                    DeployStatus::TimedOut => "the time limit covers the rollback too",
                    _ => "the deployment was asked to stop",
                };
                let message = summary.message.take().unwrap_or_default();
                summary.message = Some(format!(
                    "{message}; no rollback was started (--rollback-on-failure): {why}"
                ));
            } else if !touched {
                summary.notes.push(
                    "no rollback: the deployment failed before changing anything on this host"
                        .into(),
                );
            } else if let Some(good) = self.root.pointer(
                &request.deployment_group_id,
                Pointer::LastSuccessfulDeployment,
            ) {
                let rollback = DeployRequest {
                    bundle: Bundle::Local(good.join(ARCHIVE_DIR)),
                    deployment_id: super::new_deployment_id(),
                    events: None,
                    rollback_of: Some(request.deployment_id.clone()),
                    ..request.clone()
                };
                let from = good
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.observer.note(&format!(
                    "rolling back: deployment {} redeploys the revision of {from}",
                    rollback.deployment_id
                ));
                match self.deploy_once(&rollback, &halts).await {
                    Ok((done, _)) => summary.rollback = Some(Box::new(done)),
                    Err(e) => summary
                        .notes
                        .push(format!("the rollback could not run: {e}")),
                }
                self.write_summary(&summary);
            } else {
                summary.notes.push(
                    "no rollback: this deployment group has no earlier successful deployment"
                        .into(),
                );
            }
        }
        self.write_summary(&summary);
        Ok((summary, failure))
    }

    fn write_summary(&self, summary: &DeploySummary) {
        let path = Path::new(&summary.directory).join("summary.json");
        if let Ok(json) = serde_json::to_vec_pretty(summary) {
            let _ = super::root::write_atomically(&path, &json);
        }
    }

    async fn deploy_once(
        &mut self,
        request: &DeployRequest,
        halts: &Halts,
    ) -> Result<(DeploySummary, Option<Failure>), DeployError> {
        let started = Instant::now();
        let started_at = super::now_rfc3339();
        let group = &request.deployment_group_id;
        let steps = lifecycle::steps(request.traffic, request.events.as_deref())
            .map_err(DeployError::BadInput)?;
        let _lock = self
            .root
            .lock_group(group)
            .map_err(|e| DeployError::CannotRun(e.to_string()))?;
        let dir = self.root.deployment_dir(group, &request.deployment_id);
        if dir.exists() {
            return Err(DeployError::BadInput(format!(
                "deployment id {} was already used in group {group} ({}); give a new --deployment-id",
                request.deployment_id,
                dir.display()
            )));
        }
        let interrupted = self.recover_interrupted(group);
        let pruned = self.root.prune(group, request.max_revisions);
        let cannot = |e: std::io::Error| DeployError::CannotRun(format!("{}: {e}", dir.display()));
        fs::create_dir_all(dir.join("logs")).map_err(cannot)?;
        fs::File::create(dir.join(STARTED)).map_err(cannot)?;
        self.root
            .mark_ongoing(
                &request.deployment_id,
                &format!("{}\n{}\n", group, dir.display()),
            )
            .map_err(|e| DeployError::CannotRun(e.to_string()))?;
        let mut run = Run {
            request,
            dir: dir.clone(),
            log: ScriptsLog::open(&dir, &self.root.deployments_log(), &request.deployment_id)
                .map_err(cannot)?,
            results: Vec::new(),
            failure: None,
            install: None,
            notes: interrupted
                .into_iter()
                .chain(
                    pruned
                        .iter()
                        .map(|p| format!("removed the old revision {}", p.display())),
                )
                .collect(),
            fetched: Fetched::default(),
            current: None,
            halt: halts.now(),
        };
        // The bundle is fetched and checked before anything runs, so a bad bundle never
        // stops the running application; DownloadBundle is reported in its place.
        let download = match &run.halt {
            Some(halt) => halted_before("DownloadBundle", halt),
            None => {
                // A large S3 bundle may take long: a limit or a stop ends its fetch too.
                let fetched = tokio::select! {
                    result = self.download(&mut run) => Ok(result),
                    halt = halts.wait() => Err(halt),
                };
                match fetched {
                    Ok(result) => result,
                    Err(halt) => {
                        let mut result = EventResult::new("DownloadBundle", EventStatus::Failed);
                        result.error_code = Some(halt.interrupt().code.as_str());
                        result.message =
                            Some(format!("the download was stopped: {}", halt.reason()));
                        run.halt = Some(halt);
                        result
                    }
                }
            }
        };
        for step in &steps {
            if run.halt.is_none() && *step != Step::DownloadBundle {
                run.halt = halts.now();
            }
            if run.halt.is_some() {
                run.failure.get_or_insert(Failure::Lifecycle);
            }
            if run.failure.is_some() && *step != Step::DownloadBundle {
                let skipped = EventResult::new(step.name(), EventStatus::Skipped);
                self.observer.event_finished(&skipped);
                run.results.push(skipped);
                continue;
            }
            let mut result = match step {
                Step::DownloadBundle => download.clone(),
                Step::Install => self.install(&mut run).await,
                Step::Hook(event) => self.hook_event(&mut run, event, halts).await,
            };
            if result.status == EventStatus::Failed && run.halt.is_none() {
                // A hook that failed as the halt came was most likely stopped by it.
                run.halt = halts.now();
            }
            if run.halt.is_some() && result.status == EventStatus::Failed {
                // --ignore-application-stop-failures forgives a hook's failure, not a halt.
                result.ignored = false;
            }
            if result.status == EventStatus::Failed && !result.ignored && run.failure.is_none() {
                run.failure = Some(Failure::Lifecycle);
            }
            if result.event == "Install" && result.status == EventStatus::Succeeded {
                self.root
                    .set_pointer(group, Pointer::LastSuccessfulInstall, &dir)
                    .map_err(|e| DeployError::CannotRun(e.to_string()))?;
            }
            self.observer.event_finished(&result);
            run.results.push(result);
        }
        if run.failure.is_none() {
            self.root
                .set_pointer(group, Pointer::LastSuccessfulDeployment, &dir)
                .map_err(|e| DeployError::CannotRun(e.to_string()))?;
        }
        self.root.clear_ongoing(&request.deployment_id);
        let message = match &run.halt {
            Some(halt) => Some(halt.reason()),
            None => run
                .results
                .iter()
                .find(|e| e.status == EventStatus::Failed && !e.ignored)
                .map(|e| format!("{} failed: {}", e.event, e.message.as_deref().unwrap_or(""))),
        };
        let summary = DeploySummary {
            deployment_id: request.deployment_id.clone(),
            application_name: request.application_name.clone(),
            deployment_group_name: request.deployment_group_name.clone(),
            deployment_group_id: group.clone(),
            status: match (&run.halt, run.failure) {
                (Some(halt), _) => halt.status(),
                (None, None) => DeployStatus::Succeeded,
                (None, Some(_)) => DeployStatus::Failed,
            },
            creator: if request.rollback_of.is_some() {
                "rollback"
            } else {
                "user"
            },
            rollback_of: request.rollback_of.clone(),
            bundle: request.bundle.describe(),
            directory: dir.display().to_string(),
            started_at,
            duration_ms: millis(started.elapsed()),
            events: run.results,
            install: run.install,
            message,
            notes: run.notes,
            rollback: None,
        };
        self.write_summary(&summary);
        Ok((summary, run.failure))
    }

    /// Deployments of `group` that an agent started and never finished (it was killed or
    /// the host rebooted): with the group's lock held, nobody is running them any more.
    /// Each gets a final summary, as the CodeDeploy agent reports FAILED_AFTER_RESTART,
    /// instead of staying "in progress" forever.
    fn recover_interrupted(&self, group: &str) -> Vec<String> {
        let mut notes = Vec::new();
        for (id, body) in self.root.ongoing() {
            let mut lines = body.lines();
            if lines.next() != Some(group) {
                continue;
            }
            let dir = lines.next().map(PathBuf::from);
            if let Some(dir) = dir.filter(|d| d.is_dir() && !d.join("summary.json").exists()) {
                let summary = serde_json::json!({
                    "deployment_id": id,
                    "deployment_group_id": group,
                    "status": "Failed",
                    "error_code": "FailedAfterRestart",
                    "message": "the agent stopped during this deployment; it did not finish",
                    "directory": dir.display().to_string(),
                });
                let _ = super::root::write_atomically(
                    &dir.join("summary.json"),
                    summary.to_string().as_bytes(),
                );
            }
            self.root.clear_ongoing(&id);
            notes.push(format!(
                "deployment {id} of this group was interrupted (the agent stopped); it is marked Failed (FailedAfterRestart)"
            ));
        }
        notes
    }

    /// DownloadBundle and the checks that need the revision: its appspec, the
    /// destinations, the scripts and users its hooks name.
    async fn download(&mut self, run: &mut Run<'_>) -> EventResult {
        let started = Instant::now();
        self.observer.event_started("DownloadBundle", None);
        let mut result = EventResult::new("DownloadBundle", EventStatus::Succeeded);
        let outcome = async {
            let fetched = bundle::fetch(
                &run.request.bundle,
                self.s3.as_ref(),
                &run.dir,
                &run.request.appspec_names,
            )
            .await
            .map_err(|e| match e {
                BundleError::Input(m) => (Failure::BadInput, m),
                BundleError::Fetch(m) => (Failure::CannotRun, m),
            })?;
            let archive = run.dir.join(ARCHIVE_DIR);
            let appspec = load_appspec(&archive, &run.request.appspec_names)
                .map_err(|m| (Failure::BadInput, m))?;
            self.preflight(run.request, &archive, &appspec)
                .map_err(|m| (Failure::BadInput, m))?;
            Ok::<_, (Failure, String)>((fetched, archive, appspec))
        }
        .await;
        match outcome {
            Ok((fetched, archive, appspec)) => {
                run.fetched = fetched;
                run.current = Some(Revision {
                    deployment_id: run.request.deployment_id.clone(),
                    archive,
                    appspec,
                });
                if let Err(e) = self.root.set_pointer(
                    &run.request.deployment_group_id,
                    Pointer::MostRecentInstall,
                    &run.dir,
                ) {
                    run.failure = Some(Failure::CannotRun);
                    result.status = EventStatus::Failed;
                    result.error_code = Some("UnknownError");
                    result.message = Some(e.to_string());
                }
            }
            Err((failure, message)) => {
                run.failure = Some(failure);
                result.status = EventStatus::Failed;
                result.error_code = Some("UnknownError");
                result.message = Some(message);
            }
        }
        result.duration_ms = millis(started.elapsed());
        result
    }

    /// What would fail later, found now: before ApplicationStop stops anything.
    fn preflight(
        &self,
        request: &DeployRequest,
        archive: &Path,
        appspec: &AppSpec,
    ) -> Result<(), String> {
        let mut problems = Vec::new();
        if appspec.os == Os::Windows {
            problems.push(
                "the appspec says `os: windows`; this agent deploys to Linux hosts (use `os: linux`, or deploy this revision to a Windows host)".to_string(),
            );
        }
        for mapping in &appspec.files {
            if let Err(e) = self.allowed.check(&mapping.destination.value) {
                problems.push(e);
            }
        }
        if let Some(only) = &request.events {
            for name in only {
                let event = LifecycleEvent::from_name(name);
                if matches!(event, LifecycleEvent::Custom(_))
                    && !matches!(name.as_str(), "DownloadBundle" | "Install")
                    && appspec.scripts(&event).is_empty()
                {
                    problems.push(format!(
                        "--events names `{name}`, which the appspec has no hooks for"
                    ));
                }
            }
        }
        let steps = lifecycle::steps(request.traffic, request.events.as_deref())?;
        for step in &steps {
            let Step::Hook(event) = step else { continue };
            if lifecycle::from_previous(event) {
                continue;
            }
            for script in appspec.scripts(event) {
                let location = &script.location.value;
                match crate::source::unpack::enclosed(location.trim_start_matches('/')) {
                    None => problems.push(format!(
                        "{}: the script `{location}` is outside the revision",
                        event.name()
                    )),
                    Some(relative) => {
                        if fs::symlink_metadata(archive.join(&relative)).is_err() {
                            problems.push(format!(
                                "{}: Script does not exist at specified location: {location}",
                                event.name()
                            ));
                        }
                    }
                }
                if let Some(user) = &script.runas
                    && nix::unistd::User::from_name(user).ok().flatten().is_none()
                {
                    problems.push(format!(
                        "{}: `{location}` runs as `{user}`, which does not exist on this host",
                        event.name()
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    async fn install(&mut self, run: &mut Run<'_>) -> EventResult {
        let started = Instant::now();
        self.observer.event_started("Install", None);
        let mut result = EventResult::new("Install", EventStatus::Succeeded);
        let Some(current) = &run.current else {
            result.status = EventStatus::Failed;
            result.message = Some("the revision was not downloaded".into());
            return result;
        };
        let appspec = current.appspec.clone();
        let archive = current.archive.clone();
        let behavior = appspec
            .file_exists_behavior
            .unwrap_or(run.request.file_exists_behavior);
        let allowed = self.allowed.clone();
        let cleanup = self.root.cleanup_file(&run.request.deployment_group_id);
        let install_file = self.root.install_file(&run.request.deployment_group_id);
        let work = tokio::task::spawn_blocking(move || {
            let plan = install::plan(&appspec, &archive, behavior, &allowed, &cleanup)?;
            install::execute(&plan, &allowed, &cleanup, &install_file)
        })
        .await;
        match work {
            Ok(Ok(done)) => {
                self.observer.note(&format!(
                    "installed {} files and {} directories, removed {} from the previous revision{}",
                    done.files,
                    done.directories,
                    done.removed,
                    if done.retained > 0 {
                        format!(", kept {} existing (RETAIN)", done.retained)
                    } else {
                        String::new()
                    }
                ));
                run.install = Some(done);
            }
            Ok(Err(e)) => {
                result.status = EventStatus::Failed;
                result.error_code = Some("UnknownError");
                result.message = Some(e.to_string());
            }
            Err(e) => {
                result.status = EventStatus::Failed;
                result.error_code = Some("UnknownError");
                result.message = Some(e.to_string());
            }
        }
        result.duration_ms = millis(started.elapsed());
        result
    }

    async fn hook_event(
        &mut self,
        run: &mut Run<'_>,
        event: &LifecycleEvent,
        halts: &Halts,
    ) -> EventResult {
        let started = Instant::now();
        let name = event.name().to_string();
        let mut result = EventResult::new(&name, EventStatus::Succeeded);
        let ignorable =
            run.request.ignore_application_stop_failures && lifecycle::from_previous(event);
        let previous;
        let revision = if lifecycle::from_previous(event) {
            match self.previous_revision(&run.request.deployment_group_id) {
                Ok(Some(found)) => {
                    previous = found;
                    &previous
                }
                Ok(None) => {
                    result.status = EventStatus::Skipped;
                    result.message = Some(
                        "first deployment of this group on this host: no earlier revision to run it from"
                            .into(),
                    );
                    return result;
                }
                Err(message) => {
                    result.status = EventStatus::Failed;
                    result.error_code = Some("UnknownError");
                    result.message = Some(message);
                    result.ignored = ignorable;
                    return result;
                }
            }
        } else {
            match &run.current {
                Some(current) => current,
                None => {
                    result.status = EventStatus::Skipped;
                    return result;
                }
            }
        };
        result.revision = Some(revision.deployment_id.clone());
        let scripts = revision.appspec.scripts(event).to_vec();
        self.observer
            .event_started(&name, Some(&revision.deployment_id));
        if scripts.is_empty() {
            result.duration_ms = millis(started.elapsed());
            return result;
        }
        run.log.header(&format!("LifecycleEvent - {name}"));
        let budget = Duration::from_secs(u64::from(MAX_EVENT_SECONDS));
        let mut log = String::new();
        for script in &scripts {
            let location = script.location.value.clone();
            if let Some(halt) = halts.now() {
                result.status = EventStatus::Failed;
                result.error_code = Some(halt.interrupt().code.as_str());
                result.script_name = Some(location.clone());
                result.message = Some(format!("{location} did not run: {}", halt.reason()));
                break;
            }
            let relative = crate::source::unpack::enclosed(location.trim_start_matches('/'))
                .unwrap_or_else(|| PathBuf::from(&location));
            let remaining = budget.saturating_sub(started.elapsed());
            let spec = ScriptSpec {
                script: revision.archive.join(relative),
                location: location.clone(),
                runas: script.runas.clone(),
                sudo: script.sudo,
                job_env: run.request.job_env.0.clone(),
                env: hook_env(run.request, &name, &run.fetched),
                remove_env: crate::exec::host::AGENT_CREDENTIALS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                cwd: revision.archive.clone(),
                timeout: Duration::from_secs(u64::from(script.timeout_seconds())).min(remaining),
                output_wait: run.request.output_wait,
            };
            run.log.header(&format!("Script - {location}"));
            let mut sink = EventSink {
                log: &mut run.log,
                observer: &mut *self.observer,
                event: &name,
            };
            let halted = halts.clone();
            let outcome = hooks::run_script_until(&spec, &mut sink, async move {
                halted.wait().await.interrupt()
            })
            .await;
            log.push_str(&outcome.log_tail);
            let failed = outcome.code != hooks::ErrorCode::Succeeded;
            result.scripts.push(ScriptResult {
                location: location.clone(),
                runas: script.runas.clone(),
                error_code: outcome.code.as_str(),
                exit_code: outcome.exit_code,
                duration_ms: millis(outcome.duration),
                message: outcome.message.clone(),
                lingering: outcome
                    .lingering
                    .iter()
                    .map(|(pid, name)| format!("{pid} {name}"))
                    .collect(),
            });
            if failed {
                result.status = EventStatus::Failed;
                result.error_code = Some(outcome.code.as_str());
                result.script_name = Some(location);
                result.message = Some(outcome.message);
                result.ignored = ignorable;
                break;
            }
        }
        result.log = tail_2k(&log);
        result.duration_ms = millis(started.elapsed());
        result
    }

    /// The revision the last successful Install left, with its appspec.
    fn previous_revision(&self, group: &str) -> Result<Option<Revision>, String> {
        let Some(dir) = self.root.pointer(group, Pointer::LastSuccessfulInstall) else {
            return Ok(None);
        };
        let archive = dir.join(ARCHIVE_DIR);
        if !archive.is_dir() {
            return Err(format!(
                "the last successful revision ({}) no longer exists; restore it, or run with --ignore-application-stop-failures",
                archive.display()
            ));
        }
        let appspec = load_appspec(&archive, &["appspec.yml".into(), "appspec.yaml".into()])?;
        Ok(Some(Revision {
            deployment_id: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            archive,
            appspec,
        }))
    }
}

struct Run<'r> {
    request: &'r DeployRequest,
    dir: PathBuf,
    log: ScriptsLog,
    results: Vec<EventResult>,
    failure: Option<Failure>,
    install: Option<install::Installed>,
    notes: Vec<String>,
    fetched: Fetched,
    current: Option<Revision>,
    /// Set once the run is halted: no later event runs, and the status says why.
    halt: Option<Halt>,
}

/// DownloadBundle when the run was halted before it began (a rollback after the limit).
fn halted_before(event: &str, halt: &Halt) -> EventResult {
    let mut result = EventResult::new(event, EventStatus::Failed);
    result.error_code = Some(halt.interrupt().code.as_str());
    result.message = Some(format!("{event} did not run: {}", halt.reason()));
    result
}

fn later(base: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    // A limit of centuries is no limit; adding it must not overflow.
    base.checked_add(by)
        .unwrap_or_else(|| base + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// The hook environment of `reference/aws-spec.md` §3.3, nothing more.
fn hook_env(request: &DeployRequest, event: &str, fetched: &Fetched) -> Vec<(String, String)> {
    let mut env = vec![
        ("LIFECYCLE_EVENT".to_string(), event.to_string()),
        ("DEPLOYMENT_ID".to_string(), request.deployment_id.clone()),
        (
            "APPLICATION_NAME".to_string(),
            request.application_name.clone(),
        ),
        (
            "DEPLOYMENT_GROUP_NAME".to_string(),
            request.deployment_group_name.clone(),
        ),
        (
            "DEPLOYMENT_GROUP_ID".to_string(),
            request.deployment_group_id.clone(),
        ),
    ];
    env.extend(fetched.env.iter().cloned());
    env
}

/// Reads and checks the revision's appspec; the message carries every problem with
/// file:line:column.
fn load_appspec(archive: &Path, names: &[String]) -> Result<AppSpec, String> {
    let Some(path) = names.iter().map(|n| archive.join(n)).find(|p| p.is_file()) else {
        return Err(format!(
            "the revision has no {} at its root",
            names.join(" or ")
        ));
    };
    let text =
        agent_config::files::read_bounded(&path, agent_config::files::MAX_FILE_BYTES, "an appspec")
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .strip_prefix(archive)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string());
    let source = Source::new(name, text);
    let parsed = buildspec::parse_appspec(&source);
    if parsed.errors().next().is_some() {
        let errors: Vec<_> = parsed.errors().cloned().collect();
        return Err(buildspec::render_all(&source, &errors, false)
            .trim_end()
            .to_string());
    }
    parsed
        .value
        .ok_or_else(|| format!("{}: not an appspec", source.name()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `logs/scripts.log` of the deployment and the host's deployments log, in the CodeDeploy
/// agent's line formats.
struct ScriptsLog {
    scripts: fs::File,
    deployments: Option<fs::File>,
    deployment_id: String,
}

impl ScriptsLog {
    fn open(dir: &Path, deployments_log: &Path, deployment_id: &str) -> std::io::Result<Self> {
        let scripts = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("logs").join("scripts.log"))?;
        let deployments = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(deployments_log)
            .ok();
        Ok(ScriptsLog {
            scripts,
            deployments,
            deployment_id: deployment_id.to_string(),
        })
    }

    fn header(&mut self, text: &str) {
        let _ = writeln!(self.scripts, "{} {text}", super::now_log());
    }

    fn line(&mut self, stream: Stream, line: &str) {
        let tag = match stream {
            Stream::Stdout => "[stdout]",
            Stream::Stderr => "[stderr]",
        };
        let now = super::now_log();
        let _ = writeln!(self.scripts, "{now} {tag}{line}");
        if let Some(file) = &mut self.deployments {
            let _ = writeln!(file, "[{now}] [{}]{tag}{line}", self.deployment_id);
        }
    }
}

struct EventSink<'a> {
    log: &'a mut ScriptsLog,
    observer: &'a mut dyn Observer,
    event: &'a str,
}

impl LineSink for EventSink<'_> {
    fn line(&mut self, stream: Stream, line: &str) {
        self.log.line(stream, line);
        self.observer.line(self.event, stream, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_wins_over_a_passed_deadline() {
        let (tx, rx) = watch::channel(None);
        let halts = Halts {
            deadline: Some((tokio::time::Instant::now(), Duration::from_secs(1))),
            stop: rx,
        };
        assert_eq!(halts.now(), Some(Halt::TimedOut(Duration::from_secs(1))));
        tx.send_replace(Some("SIGTERM".into()));
        assert_eq!(halts.now(), Some(Halt::Stopped("SIGTERM".into())));
        assert_eq!(halts.wait().await, Halt::Stopped("SIGTERM".into()));
    }
}
