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

use std::path::Path;

use buildspec::Spanned;
use buildspec::buildspec::{
    Artifacts, Cache, CacheAction, OnFailure, Phase, PhaseName, Shell as ShellKind, Version,
};
use tokio::sync::watch;

use super::artifacts::{ArtifactSpec, copy_into, select};
use super::shell::Shell;
use super::summary::{ArtifactRecord, BuildStatus, PhaseRecord, ReportRecord, Summary};
use super::{BuildRequest, cache, env, reports};
use crate::exec::{Ending, Executor, ShellSpec, Signal};
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
    /// The environment is gone (FAULT): only FINALIZING's bookkeeping is left.
    Fault,
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
    /// Why the build's environment can run nothing more, once it is gone.
    lost: Option<String>,
    /// Why nothing the build shell reports is believed any more: the build tampered with
    /// the agent's command channel. Nothing more runs, and the build fails.
    tampered: Option<String>,
    records: Vec<PhaseRecord>,
    current: Option<(&'static str, Instant)>,
    stop: watch::Receiver<Stop>,
    artifacts: Vec<ArtifactRecord>,
    reports: Vec<ReportRecord>,
    /// The cache key, expanded once at the start so save and restore agree.
    cache_key: Option<String>,
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
            lost: None,
            tampered: None,
            records: Vec::new(),
            current: None,
            stop,
            artifacts: Vec::new(),
            reports: Vec::new(),
            cache_key: None,
        }
    }

    pub async fn run(mut self) -> Summary {
        self.log
            .agent(&format!("Running build {}", self.request.build_id));
        self.download_source().await;
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
        // Nothing leaves the build (exported variables, artifacts, cache) before the shell
        // has shown that every command the agent counted as run reached it.
        let flow = match flow {
            Flow::Upload | Flow::Finalize if !self.channel_intact().await => Flow::Finalize,
            flow => flow,
        };
        let exported = match flow {
            Flow::TimedOut => {
                self.log.agent(&format!(
                    "Build timed out after {}",
                    agent_config::units::describe_timeout(self.request.timeout.unwrap_or_default())
                ));
                self.abandon(BuildStatus::TimedOut, "Build timed out").await;
                BTreeMap::new()
            }
            Flow::Stopped if self.current.is_some() => {
                self.abandon(BuildStatus::Stopped, "Build stopped").await;
                BTreeMap::new()
            }
            Flow::Stopped | Flow::Fault => BTreeMap::new(),
            Flow::Upload | Flow::Finalize => self.exported_variables().await,
        };
        if matches!(flow, Flow::Upload) {
            self.upload_artifacts().await;
        }
        let completed = matches!(flow, Flow::Upload | Flow::Finalize);
        self.finalize(completed).await;
        let status = match flow {
            Flow::TimedOut => BuildStatus::TimedOut,
            Flow::Stopped => BuildStatus::Stopped,
            Flow::Fault => BuildStatus::Fault,
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
            artifacts: self.artifacts,
            reports: self.reports,
            builds: Vec::new(),
        }
    }

    async fn download_source(&mut self) {
        self.begin("DOWNLOAD_SOURCE");
        self.log
            .agent(&format!("CODEBUILD_SRC_DIR={}", self.executor.src_dir()));
        self.log
            .agent(&format!("YAML location is {}", self.request.buildspec_path));
        self.restore_cache().await;
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
            let outcome = self.run_phase(name, phase).await;
            if self.tampered.is_some() {
                self.failed = true;
                return Flow::Finalize;
            }
            if self.lost.is_some() {
                self.failed = true;
                return Flow::Fault;
            }
            match outcome {
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
            if attempt >= *count
                || !matches
                || self.stopping()
                || self.lost.is_some()
                || self.tampered.is_some()
            {
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
        self.log.set_command(None);
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
        for (index, command) in phase.commands.iter().enumerate() {
            self.log.set_command(Some(index));
            if self.stopping() {
                break;
            }
            if let Err(message) = self.command(&command.text, &user).await {
                failure = Some(message);
                break;
            }
        }
        for (index, command) in phase.finally.iter().enumerate() {
            if self.stop_now() || self.lost.is_some() || self.tampered.is_some() {
                break;
            }
            self.log.set_command(Some(phase.commands.len() + index));
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
        if let Some(why) = finished.tampered {
            return Err(self.on_tampering(why).await);
        }
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
        let why = match self.executor.explain_exit(finished.exit_code).await {
            Some(Ending::Killed(why)) => {
                self.log.agent(&format!("Command was killed: {why}"));
                format!(" ({why})")
            }
            Some(Ending::Lost(why)) => {
                self.log.agent(&format!(
                    "The build environment is gone: {why}; no further commands can run"
                ));
                self.shell = None;
                self.lost = Some(why.clone());
                format!(" ({why})")
            }
            None => String::new(),
        };
        Err(format!(
            "Error while executing command: {text}. Reason: exit status {}{why}",
            finished.exit_code
        ))
    }

    /// The shell for `user`, started when there is none or it belongs to another user.
    async fn shell_for(&mut self, user: &Option<String>) -> Result<&mut Shell, String> {
        if let Some(why) = &self.tampered {
            return Err(why.clone());
        }
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
        if let Some((_, shell)) = self.shell.take()
            && let Err(why) = shell.close(&self.log).await
            && self.tampered.is_none()
        {
            self.on_tampering(why).await;
        }
    }

    /// Checks the running shell's count of commands received against the agent's: false
    /// when the build tampered with the channel.
    async fn channel_intact(&mut self) -> bool {
        if self.tampered.is_some() {
            return false;
        }
        let log = self.log.clone();
        let why = match &mut self.shell {
            Some((_, shell)) if shell.is_alive() => {
                shell.control(":", &log).await;
                shell.tampered().map(str::to_string)
            }
            _ => None,
        };
        match why {
            Some(why) => {
                self.on_tampering(why).await;
                false
            }
            None => true,
        }
    }

    /// The build tampered with the agent's channel: it fails, and every process it started
    /// is stopped, so nothing it left running acts on a later phase.
    async fn on_tampering(&mut self, why: String) -> String {
        self.failed = true;
        self.shell = None;
        self.tampered = Some(why.clone());
        self.executor.signal_all(Signal::Term).await;
        why
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

    /// The buildspec's top-level `run-as`: whom expansions and exported variables run as.
    fn global_user(&self) -> Option<String> {
        self.request
            .buildspec
            .run_as
            .as_ref()
            .map(|u| u.value.clone())
    }

    /// `env.exported-variables`, read from the build shell once the command phases end.
    async fn exported_variables(&mut self) -> BTreeMap<String, String> {
        let names = &self.request.buildspec.env.exported_variables;
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return out;
        }
        let user = self.global_user();
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
        self.process_reports().await;
        let failure = match &self.request.buildspec.artifacts {
            Some(primary) => {
                let blocks: Vec<&Artifacts> =
                    std::iter::once(primary).chain(&primary.secondary).collect();
                let mut failure = None;
                for block in blocks {
                    if let Err(message) = self.collect(block).await {
                        self.log.agent(&message);
                        failure.get_or_insert(message);
                    }
                }
                failure
            }
            None => None,
        };
        match failure {
            None => self.end(BuildStatus::Succeeded, None),
            Some(message) => {
                self.failed = true;
                self.end(BuildStatus::Failed, Some(message));
            }
        }
    }

    /// Expands a buildspec value in the build shell, as CodeBuild does for `name`,
    /// `base-directory` and `cache.key`.
    async fn expand(&mut self, text: &str) -> Result<String, String> {
        if !text.contains(['$', '`']) {
            return Ok(text.to_string());
        }
        let user = self.global_user();
        let log = self.log.clone();
        let shell = self.shell_for(&user).await?;
        shell
            .expand(text, &log)
            .await
            .ok_or_else(|| format!("the build shell ended while expanding `{text}`"))
    }

    /// A base directory as a host path: relative ones stay relative to the source.
    async fn base_directory(
        &mut self,
        base: Option<&Spanned<String>>,
    ) -> Result<Option<String>, String> {
        let Some(base) = base else { return Ok(None) };
        let expanded = self.expand(base).await?;
        if !expanded.starts_with('/') {
            return Ok(Some(expanded));
        }
        match self.executor.host_path(&expanded) {
            Some(host) => Ok(Some(host.display().to_string())),
            None => Err(format!(
                "CLIENT_ERROR: base-directory {expanded} is outside the build's source directories"
            )),
        }
    }

    /// Copies one artifact block to `<artifacts>/<identifier>/`.
    async fn collect(&mut self, block: &Artifacts) -> Result<(), String> {
        let Some(out_dir) = self.request.artifacts_dir.clone() else {
            return Ok(());
        };
        let name = match &block.name {
            Some(name) => Some(self.expand(name).await?),
            None => None,
        };
        let base = self.base_directory(block.base_directory.as_ref()).await?;
        let files: Vec<String> = block.files.iter().map(|f| f.value.clone()).collect();
        let excludes: Vec<String> = block
            .exclude_paths
            .iter()
            .map(|f| f.value.clone())
            .collect();
        let spec = ArtifactSpec {
            files: &files,
            base_directory: base.as_deref(),
            discard_paths: block.discard_paths,
            exclude_paths: &excludes,
            enable_symlinks: block.enable_symlinks,
        };
        let roots = self.executor.source_roots();
        let selected = select(&self.request.source_dir, &roots, &spec)
            .map_err(|e| format!("CLIENT_ERROR: {e}"))?;
        if let Some(s3) = self.request.artifacts_s3.clone() {
            return self.upload_s3(block, name, &selected, &s3).await;
        }
        let dest = out_dir.join(&block.identifier);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)
                .map_err(|e| format!("cannot clear {}: {e}", dest.display()))?;
        }
        let written = copy_into(&selected, &dest).map_err(|e| format!("CLIENT_ERROR: {e}"))?;
        self.log.agent(&format!(
            "Uploaded {} files of artifact {} to {}",
            written.len(),
            block.identifier,
            dest.display()
        ));
        self.artifacts.push(ArtifactRecord {
            identifier: block.identifier.clone(),
            name,
            location: dest.display().to_string(),
            files: written,
        });
        Ok(())
    }

    /// Uploads one artifact block to S3, laid out as CodeBuild lays it out:
    /// `<prefix>/[<s3-prefix>/][<build id>/]<name>`, a folder of objects or one zip.
    async fn upload_s3(
        &mut self,
        block: &Artifacts,
        name: Option<String>,
        selected: &[super::artifacts::Selected],
        s3: &super::S3Artifacts,
    ) -> Result<(), String> {
        let object_name = name.clone().unwrap_or_else(|| {
            if s3.zip {
                format!("{}.zip", block.identifier)
            } else {
                block.identifier.clone()
            }
        });
        let s3_prefix = match &block.s3_prefix {
            Some(prefix) => self.expand(prefix).await?,
            None => String::new(),
        };
        let build = self
            .request
            .build_id
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let namespace = if s3.build_id_namespace {
            build.as_str()
        } else {
            ""
        };
        let key = s3.url.key(&[&s3_prefix, namespace, &object_name]);
        let location = format!("s3://{}/{key}", s3.url.bucket);
        self.log.agent(&format!(
            "Uploading artifact {} to {location}",
            block.identifier
        ));
        let progress = crate::aws::s3::Progress::default();
        let started = Instant::now();
        let files: Vec<(std::path::PathBuf, String)> = selected
            .iter()
            .map(|f| (f.source.clone(), f.relative.clone()))
            .collect();
        let relative: Vec<String> = files.iter().map(|(_, r)| r.clone()).collect();
        // Long uploads show their progress every few seconds.
        let ticker = {
            let (log, progress, id) =
                (self.log.clone(), progress.clone(), block.identifier.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                every.tick().await;
                loop {
                    every.tick().await;
                    log.agent(&format!(
                        "Uploading artifact {id}: {}",
                        progress.describe(started)
                    ));
                }
            })
        };
        let uploaded = if s3.zip {
            crate::aws::s3::upload_zip(
                &s3.client,
                &s3.url.bucket,
                &key,
                files,
                block.enable_symlinks,
                &s3.put,
                &progress,
            )
            .await
        } else {
            let keyed = files
                .into_iter()
                .map(|(p, r)| (p, format!("{key}/{r}")))
                .collect();
            crate::aws::s3::upload_files(&s3.client, &s3.url.bucket, keyed, &s3.put, &progress)
                .await
        };
        ticker.abort();
        uploaded.map_err(|e| format!("CLIENT_ERROR: {}", self.log.mask(&e.to_string())))?;
        self.log.agent(&format!(
            "Uploaded {} files of artifact {} to {location} ({})",
            relative.len(),
            block.identifier,
            progress.describe(started)
        ));
        self.artifacts.push(ArtifactRecord {
            identifier: block.identifier.clone(),
            name,
            location,
            files: relative,
        });
        Ok(())
    }

    /// Copies and counts every report group; a report problem never fails the build.
    async fn process_reports(&mut self) {
        let Some(out_dir) = self.request.artifacts_dir.clone() else {
            return;
        };
        let groups = &self.request.buildspec.reports;
        for group in groups {
            let outcome = async {
                let name = self.expand(&group.name).await?;
                let base = self.base_directory(group.base_directory.as_ref()).await?;
                let files: Vec<String> = group.files.iter().map(|f| f.value.clone()).collect();
                let input = reports::Group {
                    name: &name,
                    files: &files,
                    base_directory: base.as_deref(),
                    discard_paths: group.discard_paths,
                    format: group.file_format,
                };
                let roots = self.executor.source_roots();
                reports::process(
                    &input,
                    &self.request.source_dir,
                    &roots,
                    &out_dir.join("reports"),
                )
            }
            .await;
            match outcome {
                Ok((record, problems)) => {
                    for problem in problems {
                        self.log
                            .agent(&format!("Report {}: skipped {problem}", record.group));
                    }
                    self.log.agent(&format!(
                        "Report {}: {} tests, {} passed, {} failed, {} skipped",
                        record.group, record.total, record.passed, record.failed, record.skipped
                    ));
                    self.reports.push(record);
                }
                Err(message) => self.log.agent(&format!(
                    "Report {}: not processed: {message}",
                    group.name.value
                )),
            }
        }
    }

    async fn finalize(&mut self, completed: bool) {
        self.begin("FINALIZING");
        self.log.agent("Entering phase FINALIZING");
        // A build that tampered with the agent's channel leaves nothing for later builds.
        if completed && self.tampered.is_none() {
            self.save_cache().await;
        }
        self.close_shell().await;
        self.end(BuildStatus::Succeeded, None);
    }

    /// The cache key, expanded in the build shell; the project entry without a key.
    async fn cache_key(&mut self) -> Option<String> {
        if let Some(key) = &self.cache_key {
            return Some(key.clone());
        }
        let spec = self.request.buildspec.cache.as_ref()?;
        let key = match &spec.key {
            None => cache::PROJECT_KEY.to_string(),
            Some(text) => {
                let text = cache::expand_hash_files(text, &self.request.source_dir);
                match self.expand(&text).await {
                    Ok(key) if !key.trim().is_empty() => key,
                    Ok(_) => {
                        self.log
                            .agent("Cache: the key expands to nothing; the cache is not used");
                        return None;
                    }
                    Err(message) => {
                        self.log.agent(&format!("Cache: {message}"));
                        return None;
                    }
                }
            }
        };
        self.cache_key = Some(key.clone());
        Some(key)
    }

    /// The cache section and directory, when the cache is on and `action` allows `doing`.
    fn cache_settings(&self, doing: CacheAction) -> Option<(&'a Cache, std::path::PathBuf)> {
        let spec = self.request.buildspec.cache.as_ref()?;
        let dir = self.request.cache_dir.clone()?;
        let allowed = spec.action.is_none_or(|only| only == doing);
        allowed.then_some((spec, dir))
    }

    async fn restore_cache(&mut self) {
        let Some((spec, dir)) = self.cache_settings(CacheAction::Restore) else {
            return;
        };
        let Some(key) = self.cache_key().await else {
            return;
        };
        let mut fallbacks = Vec::new();
        if spec.key.is_some() {
            for prefix in &spec.fallback_keys {
                let text = cache::expand_hash_files(prefix, &self.request.source_dir);
                if let Ok(p) = self.expand(&text).await {
                    fallbacks.push(p);
                }
            }
        }
        let (found, entry, fetched) = match self.request.cache_s3.clone() {
            None => match cache::find(&dir, &key, &fallbacks) {
                Some((found, entry)) => (found, entry, false),
                None => {
                    self.log.agent(&format!(
                        "Cache: no entry for key {key} or its fallback keys"
                    ));
                    return;
                }
            },
            Some((client, url)) => {
                match cache::s3_fetch(&client, &url, &dir, &key, &fallbacks).await {
                    Ok(Some((found, entry))) => (found, entry, true),
                    Ok(None) => {
                        self.log.agent(&format!(
                            "Cache: no entry for key {key} or its fallback keys in s3://{}/{}",
                            url.bucket, url.prefix
                        ));
                        return;
                    }
                    Err(message) => {
                        self.log.agent(&format!("Cache: not restored: {message}"));
                        return;
                    }
                }
            }
        };
        let manifest = std::fs::read_to_string(entry.join("paths")).unwrap_or_default();
        let mut restored = 0;
        for line in manifest.lines() {
            let Some((file, stored)) = line.split_once('\t') else {
                continue;
            };
            let path = cache::from_manifest(stored, self.executor.src_dir());
            let parent = Path::new(&path)
                .parent()
                .map_or_else(|| "/".to_string(), |p| p.display().to_string());
            match self.executor.restore_path(&entry.join(file), &parent).await {
                Ok(()) => restored += 1,
                Err(e) => self
                    .log
                    .agent(&format!("Cache: cannot restore {path}: {e}")),
            }
        }
        self.log.agent(&format!(
            "Cache: restored {restored} paths from key {found}"
        ));
        if fetched {
            let _ = std::fs::remove_dir_all(&entry);
        }
    }

    async fn save_cache(&mut self) {
        let Some((spec, dir)) = self.cache_settings(CacheAction::Save) else {
            return;
        };
        let keyed = spec.key.is_some();
        let paths: Vec<String> = spec.paths.iter().map(|p| p.value.clone()).collect();
        let Some(key) = self.cache_key().await else {
            return;
        };
        if let Some((client, url)) = self.request.cache_s3.clone() {
            if keyed && crate::aws::s3::exists(&client, &url.bucket, &url.key(&[&key])).await {
                self.log.agent(&format!(
                    "Cache: entry {key} exists and keyed entries are never replaced"
                ));
                return;
            }
            let staged = dir.join(format!("s3-entry-{}", uuid::Uuid::new_v4().simple()));
            let written = self.write_cache_entry(&dir, &staged, &key, &paths).await;
            let stored = match written {
                Ok((count, bytes)) => cache::s3_store(&client, &url, &key, &staged)
                    .await
                    .map(|at| (count, bytes, at)),
                Err(message) => Err(message),
            };
            let _ = std::fs::remove_dir_all(&staged);
            match stored {
                Ok((count, bytes, at)) => self.log.agent(&format!(
                    "Cache: saved {count} paths ({:.1} MB before compression) to {at}",
                    bytes as f64 / 1e6
                )),
                Err(message) => self.log.agent(&format!("Cache: not saved: {message}")),
            }
            return;
        }
        let entry = cache::entry_dir(&dir, &key);
        if keyed && cache::is_complete(&entry) {
            self.log.agent(&format!(
                "Cache: entry {key} exists and keyed entries are never replaced"
            ));
            return;
        }
        match self.write_cache_entry(&dir, &entry, &key, &paths).await {
            Ok((count, bytes)) => self.log.agent(&format!(
                "Cache: saved {count} paths ({:.1} MB) under key {key}",
                bytes as f64 / 1e6
            )),
            Err(message) => self.log.agent(&format!("Cache: not saved: {message}")),
        }
    }

    /// Writes the entry beside its final place and renames it in, so a reader never sees
    /// half an entry.
    async fn write_cache_entry(
        &self,
        dir: &Path,
        entry: &Path,
        key: &str,
        paths: &[String],
    ) -> Result<(usize, u64), String> {
        let staging = dir.join(format!("staging-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        let result = async {
            let mut manifest = String::new();
            let mut bytes = 0;
            let mut count = 0;
            for pattern in paths {
                let Some(root) = cache::cache_root(pattern, self.executor.src_dir()) else {
                    self.log.agent(&format!(
                        "Cache: `{pattern}` names no directory that can be cached"
                    ));
                    continue;
                };
                let file = format!("{count}.tar");
                let tar = staging.join(&file);
                if self
                    .executor
                    .archive_path(&root, &tar)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    bytes += std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
                    let stored = cache::to_manifest(&root, self.executor.src_dir());
                    manifest.push_str(&format!("{file}\t{stored}\n"));
                    count += 1;
                }
            }
            std::fs::write(staging.join("key"), key).map_err(|e| e.to_string())?;
            std::fs::write(staging.join("paths"), manifest).map_err(|e| e.to_string())?;
            if entry.exists() {
                std::fs::remove_dir_all(entry).map_err(|e| e.to_string())?;
            }
            if let Some(parent) = entry.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::rename(&staging, entry).map_err(|e| e.to_string())?;
            Ok((count, bytes))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
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
        self.log.set_context(Some(phase), None);
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
    if let Some(url) = &request.source_url {
        builtin.push(("CODEBUILD_SOURCE_REPO_URL".to_string(), url.clone()));
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
        &request.aws_env,
        &builtin,
        &spec,
        &request.resolved,
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
