//! Runs the phases of a buildspec with CodeBuild's rules (see aws-spec §1.4):
//!
//! - INSTALL or PRE_BUILD failed: the build goes straight to FINALIZING;
//! - BUILD failed: POST_BUILD still runs, with `CODEBUILD_BUILD_SUCCEEDING=0`;
//! - POST_BUILD failed: UPLOAD_ARTIFACTS is still attempted;
//! - `on-failure: ABORT` skips every later phase but FINALIZING; `CONTINUE` goes on;
//!   `RETRY…` runs the phase again while the failure matches;
//! - `finally` runs after `commands`, whether they failed or not.

use std::collections::BTreeMap;
use std::time::Instant;

use buildspec::buildspec::{OnFailure, Phase, PhaseName, Shell as ShellKind, Version};
use tokio::sync::watch;

use super::shell::Shell;
use super::summary::{BuildStatus, PhaseRecord, Summary};
use super::{BuildRequest, env};
use crate::exec::{Executor, ShellSpec, Signal};
use crate::logs::Log;

/// What the user asked for with Ctrl-C (or the daemon with a cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    Running,
    /// Stop the running command, run `finally`, report STOPPED.
    Graceful,
    /// Kill everything now.
    Now,
}

/// How the command phases ended.
enum Flow {
    /// Go on to UPLOAD_ARTIFACTS.
    Upload,
    /// Skip to FINALIZING (INSTALL or PRE_BUILD failed, or ABORT).
    Finalize,
    Stopped,
    TimedOut,
}

enum Outcome {
    Succeeded,
    Failed(String),
    Stopped,
}

pub struct Build<'a, E: Executor> {
    executor: &'a E,
    request: &'a BuildRequest,
    log: Log,
    token: String,
    env: Vec<(String, String)>,
    shell: Option<(Option<String>, Shell)>,
    cwd: String,
    succeeding: bool,
    failed: bool,
    records: Vec<PhaseRecord>,
    current: Option<(&'static str, Instant)>,
    stop: watch::Receiver<Stop>,
}

impl<'a, E: Executor> Build<'a, E> {
    pub fn new(
        executor: &'a E,
        request: &'a BuildRequest,
        log: Log,
        stop: watch::Receiver<Stop>,
    ) -> Self {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let env = build_env(executor, request);
        Build {
            executor,
            request,
            log,
            token,
            env,
            shell: None,
            cwd: executor.src_dir().to_string(),
            succeeding: true,
            failed: false,
            records: Vec::new(),
            current: None,
            stop,
        }
    }

    pub async fn run(mut self) -> Summary {
        self.log
            .agent(&format!("Running build {}", self.request.build_id));
        self.download_source();
        let deadline = self
            .request
            .timeout
            .map(|t| tokio::time::Instant::now() + t);
        let mut stop = self.stop.clone();
        let flow = tokio::select! {
            flow = self.command_phases() => flow,
            () = sleep_until(deadline) => Flow::TimedOut,
            () = wait_for(&mut stop, Stop::Now) => Flow::Stopped,
        };
        let exported = match flow {
            Flow::TimedOut => {
                self.log.agent(&format!(
                    "Build timed out after {} minutes",
                    self.request.timeout.map_or(0, |t| t.as_secs().div_ceil(60))
                ));
                self.abandon(BuildStatus::TimedOut, "Build timed out").await;
                BTreeMap::new()
            }
            Flow::Stopped if self.current.is_some() => {
                self.abandon(BuildStatus::Stopped, "Build stopped").await;
                BTreeMap::new()
            }
            Flow::Stopped => BTreeMap::new(),
            Flow::Upload | Flow::Finalize => self.exported_variables().await,
        };
        if matches!(flow, Flow::Upload) {
            self.upload_artifacts().await;
        }
        self.finalize().await;
        let status = match flow {
            Flow::TimedOut => BuildStatus::TimedOut,
            Flow::Stopped => BuildStatus::Stopped,
            _ if self.failed => BuildStatus::Failed,
            _ => BuildStatus::Succeeded,
        };
        self.log.agent(&format!(
            "Build complete: {} State: {}",
            self.request.build_id,
            status.as_str()
        ));
        self.log.flush();
        Summary {
            build_id: self.request.build_id.clone(),
            status,
            phases: self.records,
            exported_variables: exported,
            artifacts: Vec::new(),
            reports: Vec::new(),
        }
    }

    fn download_source(&mut self) {
        self.begin("DOWNLOAD_SOURCE");
        self.log
            .agent(&format!("CODEBUILD_SRC_DIR={}", self.executor.src_dir()));
        self.log
            .agent(&format!("YAML location is {}", self.request.buildspec_path));
        self.end(BuildStatus::Succeeded, None);
    }

    async fn command_phases(&mut self) -> Flow {
        let spec = &self.request.buildspec;
        self.log.agent(&format!(
            "Phases found in YAML: {}",
            spec.phases.iter().count()
        ));
        for (name, phase) in spec.phases.iter() {
            if self.stopping() {
                return Flow::Stopped;
            }
            match self.run_phase(name, phase).await {
                Outcome::Succeeded => {}
                Outcome::Stopped => return Flow::Stopped,
                Outcome::Failed(_) => {
                    self.failed = true;
                    self.set_succeeding(false).await;
                    match &phase.on_failure.as_ref().map(|s| &s.value) {
                        Some(OnFailure::Abort) => {
                            self.log.agent(&format!("Phase {} failed with on-failure ABORT: skipping the remaining phases", name.codebuild_name()));
                            return Flow::Finalize;
                        }
                        Some(OnFailure::Continue) => {}
                        _ if matches!(name, PhaseName::Install | PhaseName::PreBuild) => {
                            return Flow::Finalize;
                        }
                        _ => {}
                    }
                }
            }
        }
        Flow::Upload
    }

    /// Runs a phase, again while `on-failure: RETRY…` says so.
    async fn run_phase(&mut self, name: PhaseName, phase: &Phase) -> Outcome {
        let retry = match phase.on_failure.as_ref().map(|s| &s.value) {
            Some(OnFailure::Retry { count, pattern }) => {
                let regex = pattern.as_deref().and_then(|p| regex::Regex::new(p).ok());
                Some((*count, regex))
            }
            _ => None,
        };
        self.begin(name.codebuild_name());
        let mut attempt = 0;
        let outcome = loop {
            self.log.start_capture();
            let outcome = self.run_phase_once(name, phase).await;
            let output = self.log.take_capture();
            let Outcome::Failed(message) = &outcome else {
                break outcome;
            };
            let Some((count, regex)) = &retry else {
                break outcome;
            };
            let matches = regex
                .as_ref()
                .is_none_or(|re| re.is_match(message) || re.is_match(&output));
            if attempt >= *count || !matches || self.stopping() {
                break outcome;
            }
            attempt += 1;
            self.log.agent(&format!(
                "Phase {} failed: retrying, attempt {} of {count}",
                name.codebuild_name(),
                attempt
            ));
        };
        let (status, message) = match &outcome {
            Outcome::Succeeded => (BuildStatus::Succeeded, None),
            Outcome::Failed(message) => (BuildStatus::Failed, Some(message.clone())),
            Outcome::Stopped => (BuildStatus::Stopped, Some("Build stopped".to_string())),
        };
        self.end(status, message);
        outcome
    }

    async fn run_phase_once(&mut self, name: PhaseName, phase: &Phase) -> Outcome {
        self.log
            .agent(&format!("Entering phase {}", name.codebuild_name()));
        if !phase.runtime_versions.is_empty() {
            self.log.agent("Skipping install of runtimes. Runtime version selection is not supported by this build image");
        }
        let user = phase
            .run_as
            .as_ref()
            .or(self.request.buildspec.run_as.as_ref())
            .map(|u| u.value.clone());
        let mut failure = None;
        for command in &phase.commands {
            if self.stopping() {
                break;
            }
            if let Err(message) = self.command(&command.text, &user).await {
                failure = Some(message);
                break;
            }
        }
        for command in &phase.finally {
            if self.stop_now() {
                break;
            }
            if let Err(message) = self.command(&command.text, &user).await {
                failure.get_or_insert(message);
                break;
            }
        }
        if self.stopping() {
            return Outcome::Stopped;
        }
        match failure {
            None => Outcome::Succeeded,
            Some(message) => Outcome::Failed(message),
        }
    }

    /// Runs one buildspec command, logging it as CodeBuild does.
    async fn command(&mut self, text: &str, user: &Option<String>) -> Result<(), String> {
        self.log.agent(&format!("Running command {text}"));
        let log = self.log.clone();
        let finished = match self.shell_for(user).await {
            Ok(shell) => shell.run(text, &log).await,
            Err(message) => {
                self.log.agent(&message);
                return Err(message);
            }
        };
        match &finished.cwd {
            Some(cwd) => self.cwd.clone_from(cwd),
            None => self.shell = None,
        }
        if self.request.buildspec.version == Version::V0_1 {
            // Each 0.1 command is a fresh shell: nothing carries, not even the directory.
            self.close_shell().await;
            self.cwd = self.executor.src_dir().to_string();
        }
        if finished.exit_code == 0 {
            return Ok(());
        }
        self.log.agent(&format!(
            "Command did not exit successfully {text} exit status {}",
            finished.exit_code
        ));
        Err(format!(
            "Error while executing command: {text}. Reason: exit status {}",
            finished.exit_code
        ))
    }

    /// The shell for `user`, started when there is none or it belongs to another user.
    async fn shell_for(&mut self, user: &Option<String>) -> Result<&mut Shell, String> {
        let reusable = matches!(&self.shell, Some((u, s)) if u == user && s.is_alive());
        if !reusable {
            self.close_shell().await;
            let spec = ShellSpec {
                argv: shell_argv(self.request.buildspec.env.shell),
                env: self.shell_env(),
                cwd: self.cwd.clone(),
                user: user.clone(),
            };
            let shell = Shell::start(self.executor, spec, &self.token)
                .await
                .map_err(|e| format!("Cannot start the build shell: {e}"))?;
            self.shell = Some((user.clone(), shell));
        }
        match &mut self.shell {
            Some((_, shell)) => Ok(shell),
            None => Err("the build shell is gone".to_string()),
        }
    }

    async fn close_shell(&mut self) {
        if let Some((_, shell)) = self.shell.take() {
            shell.close(&self.log).await;
        }
    }

    fn shell_env(&self) -> Vec<(String, String)> {
        let succeeding = [(
            "CODEBUILD_BUILD_SUCCEEDING".to_string(),
            if self.succeeding { "1" } else { "0" }.to_string(),
        )];
        env::merge(&[&self.env, &succeeding])
    }

    async fn set_succeeding(&mut self, value: bool) {
        self.succeeding = value;
        let script = format!("export CODEBUILD_BUILD_SUCCEEDING={}", u8::from(value));
        if let Some((_, shell)) = &mut self.shell
            && shell.is_alive()
        {
            shell.control(&script, &self.log).await;
        }
    }

    /// `env.exported-variables`, read from the build shell once the command phases end.
    async fn exported_variables(&mut self) -> BTreeMap<String, String> {
        let names = &self.request.buildspec.env.exported_variables;
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return out;
        }
        let user = self
            .request
            .buildspec
            .run_as
            .as_ref()
            .map(|u| u.value.clone());
        let log = self.log.clone();
        let Ok(shell) = self.shell_for(&user).await else {
            return out;
        };
        for name in names {
            if let Some(Some(value)) = shell.variable(name, &log).await {
                out.insert(
                    name.value.clone(),
                    log.mask(&String::from_utf8_lossy(&value)),
                );
            }
        }
        out
    }

    async fn upload_artifacts(&mut self) {
        self.begin("UPLOAD_ARTIFACTS");
        self.log.agent("Entering phase UPLOAD_ARTIFACTS");
        self.end(BuildStatus::Succeeded, None);
    }

    async fn finalize(&mut self) {
        self.begin("FINALIZING");
        self.log.agent("Entering phase FINALIZING");
        self.close_shell().await;
        self.end(BuildStatus::Succeeded, None);
    }

    /// After a timeout or an immediate stop: the running phase ends with `status`, and
    /// every process of the build is killed.
    async fn abandon(&mut self, status: BuildStatus, message: &str) {
        // Dropping the shell closes its streams; the processes are killed below.
        self.shell = None;
        self.executor.signal_all(Signal::Kill).await;
        if self.current.is_some() {
            self.end(status, Some(message.to_string()));
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() >= Stop::Graceful
    }

    fn stop_now(&self) -> bool {
        *self.stop.borrow() == Stop::Now
    }

    fn begin(&mut self, phase: &'static str) {
        self.current = Some((phase, Instant::now()));
    }

    fn end(&mut self, status: BuildStatus, message: Option<String>) {
        let Some((phase, started)) = self.current.take() else {
            return;
        };
        let duration = started.elapsed();
        self.log.agent(&format!(
            "Phase complete: {phase} State: {}",
            status.as_str()
        ));
        if let Some(message) = &message {
            let code = match status {
                BuildStatus::Failed => "COMMAND_EXECUTION_ERROR",
                BuildStatus::TimedOut => "BUILD_TIMED_OUT",
                _ => "BUILD_STOPPED",
            };
            self.log.agent(&format!(
                "Phase context status code: {code} Message: {message}"
            ));
        }
        self.records.push(PhaseRecord {
            phase,
            status,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            message: message.map(|m| self.log.mask(&m)),
        });
    }
}

/// The environment every build shell starts with.
fn build_env<E: Executor>(executor: &E, request: &BuildRequest) -> Vec<(String, String)> {
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut builtin = vec![
        ("CODEBUILD_BUILD_ID".to_string(), request.build_id.clone()),
        ("CODEBUILD_BUILD_NUMBER".to_string(), "1".to_string()),
        ("CODEBUILD_BUILD_SUCCEEDING".to_string(), "1".to_string()),
        ("CODEBUILD_CI".to_string(), "true".to_string()),
        ("CODEBUILD_INITIATOR".to_string(), request.initiator.clone()),
        (
            "CODEBUILD_SRC_DIR".to_string(),
            executor.src_dir().to_string(),
        ),
        ("CODEBUILD_START_TIME".to_string(), start_ms.to_string()),
        (
            "CODEBUILD_BUILD_IMAGE".to_string(),
            request.image.clone().unwrap_or_else(|| "host".to_string()),
        ),
    ];
    for (id, dir) in executor.secondary_dirs() {
        builtin.push((format!("CODEBUILD_SRC_DIR_{id}"), dir.clone()));
    }
    if let Some(sha) = crate::source::git::head_commit(&request.source_dir) {
        builtin.push(("CODEBUILD_RESOLVED_SOURCE_VERSION".to_string(), sha));
        let version =
            crate::source::git::head_branch(&request.source_dir).map(|b| format!("refs/heads/{b}"));
        if let Some(version) = version {
            builtin.push(("CODEBUILD_SOURCE_VERSION".to_string(), version));
        }
    }
    let spec = env::buildspec_variables(&request.buildspec);
    env::merge(&[
        executor.base_env(),
        &builtin,
        &spec,
        &request.env,
        &request.secrets,
    ])
}

fn shell_argv(kind: Option<ShellKind>) -> Vec<String> {
    let argv: &[&str] = match kind {
        Some(ShellKind::Bash) => &["bash", "--noprofile", "--norc", "-s"],
        _ => &["/bin/sh", "-s"],
    };
    argv.iter().map(|s| (*s).to_string()).collect()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wait_for(stop: &mut watch::Receiver<Stop>, level: Stop) {
    if stop.wait_for(|s| *s >= level).await.is_err() {
        std::future::pending::<()>().await;
    }
}
