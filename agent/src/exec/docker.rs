//! Commands in one Docker container per build.
//!
//! The container runs a keeper process under Docker's init (PID 1), with the image's
//! ENTRYPOINT cleared; build shells are started in it with `docker exec`. The source is
//! bind-mounted where CodeBuild puts it. Everything is labelled `agent.job-id` and
//! `agent.instance` (see `owner`) so a janitor can find what a dead agent left behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions, KillContainerOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use clap::ValueEnum;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Chunk, Ending, ExecError, Executor, ShellHandle, ShellSpec, Signal};
use crate::logs::Log;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not there.
    IfNotPresent,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub nano_cpus: i64,
    pub pids: i64,
}

#[derive(Debug, Clone)]
pub struct DockerOptions {
    pub build_id: String,
    pub image: String,
    pub source_dir: PathBuf,
    pub secondary: Vec<(String, PathBuf)>,
    pub pull: PullPolicy,
    pub privileged: bool,
    pub limits: Limits,
    /// The job's own labels, set as `agent.label.<key>` beside the agent's.
    pub labels: Vec<(String, String)>,
    /// [`LABEL_RUN`]'s value.
    pub run_id: String,
}

pub struct DockerExecutor {
    docker: Docker,
    roots: Vec<PathBuf>,
    container: String,
    src_dir: String,
    secondary: Vec<(String, String)>,
    base_env: Vec<(String, String)>,
    memory_bytes: u64,
    /// OOM kills already explained, so that each is reported once.
    oom_kills_seen: tokio::sync::Mutex<u64>,
}

/// Keeps the container alive; ignores TERM so that stopping the build's commands leaves the
/// container up for `finally`.
const KEEPER: &str = "trap '' TERM INT HUP; while :; do sleep 3600; done";

/// Kills every process but init, the keeper (known by its trap) and itself: all stopped
/// first, then killed, so that no build shell sees its child die and goes on to the next
/// command before it is killed itself.
const KILL_COMMANDS: &str = "pids=; for d in /proc/[0-9]*; do p=${d#/proc/}; if [ \"$p\" = 1 ] || [ \"$p\" = $$ ]; then continue; fi; grep -q 'TERM INT HUP' \"$d/cmdline\" 2>/dev/null && continue; pids=\"$pids $p\"; done; [ -n \"$pids\" ] || exit 0; kill -STOP $pids 2>/dev/null; kill -KILL $pids 2>/dev/null; exit 0";

/// Capabilities of Docker's default set that builds do not need and an attacker in a
/// build would: raw sockets (spoofing on the bridge), device nodes, audit records, and file
/// capabilities. Package installs, `chown`, `su` and `chroot` keep working.
const DROPPED_CAPABILITIES: [&str; 4] = ["NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP"];

pub const LABEL_JOB: &str = "agent.job-id";
/// The run a container belongs to: the build itself, or the batch whose member it is (the
/// daemon's job id), so that everything one job started can be found by one label.
pub const LABEL_RUN: &str = "agent.run-id";

impl DockerExecutor {
    /// Connects to the engine, makes sure the image is there, and starts the container.
    pub async fn create(options: DockerOptions, log: &Log) -> Result<Self, ExecError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| ExecError::DockerUnavailable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| ExecError::DockerUnavailable(e.to_string()))?;
        let image_env = ensure_image(&docker, &options.image, options.pull, log).await?;
        let source = options.source_dir.canonicalize().map_err(ExecError::Io)?;
        // CodeBuild's layout: /codebuild/output/src<digits>/src.
        let digits = uuid::Uuid::new_v4().as_u128() % 1_000_000_000;
        let root = format!("/codebuild/output/src{digits}");
        let src_dir = format!("{root}/src");
        let mut binds = vec![format!("{}:{src_dir}", source.display())];
        let mut secondary = Vec::new();
        for (id, dir) in &options.secondary {
            let target = format!("{root}/{id}");
            binds.push(format!("{}:{target}", dir.display()));
            secondary.push((id.clone(), target));
        }
        let mut labels: HashMap<String, String> = options
            .labels
            .iter()
            .map(|(k, v)| (format!("agent.label.{k}"), v.clone()))
            .collect();
        labels.insert(LABEL_JOB.to_string(), options.build_id.clone());
        labels.insert(LABEL_RUN.to_string(), options.run_id.clone());
        labels.extend(super::owner::labels());
        let body = ContainerCreateBody {
            image: Some(options.image.clone()),
            entrypoint: Some(vec![String::new()]),
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), KEEPER.into()]),
            working_dir: Some(src_dir.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(binds),
                init: Some(true),
                privileged: Some(options.privileged),
                cap_drop: (!options.privileged)
                    .then(|| DROPPED_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
                memory: i64::try_from(options.limits.memory_bytes).ok(),
                // No swap beyond the limit: a memory hog is stopped, not slowed to a crawl.
                memory_swap: i64::try_from(options.limits.memory_bytes).ok(),
                nano_cpus: Some(options.limits.nano_cpus),
                pids_limit: Some(options.limits.pids),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("agent-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| ExecError::Docker(format!("cannot create the build container: {e}")))?;
        let executor = DockerExecutor {
            docker,
            roots: std::iter::once(source)
                .chain(options.secondary.iter().map(|(_, d)| d.clone()))
                .collect(),
            container: created.id,
            src_dir,
            secondary,
            base_env: image_env,
            memory_bytes: options.limits.memory_bytes,
            oom_kills_seen: tokio::sync::Mutex::new(0),
        };
        if let Err(e) = executor
            .docker
            .start_container(&executor.container, None)
            .await
        {
            executor.cleanup().await;
            return Err(ExecError::Docker(format!(
                "cannot start the build container: {e}"
            )));
        }
        Ok(executor)
    }

    /// SIGKILL to every process of the build's commands, leaving init and the keeper, so
    /// that the container stays up for `finally` (a stop's grace period is over).
    pub async fn kill_commands(&self) {
        let _ = self.exec_detached(&["/bin/sh", "-c", KILL_COMMANDS]).await;
    }

    async fn exec_detached(&self, argv: &[&str]) -> Result<(), ExecError> {
        self.exec_output(argv).await.map(drop)
    }

    /// Runs `argv` as root in the container; returns what it printed.
    async fn exec_output(&self, argv: &[&str]) -> Result<Vec<u8>, ExecError> {
        let exec = self
            .docker
            .create_exec(
                &self.container,
                CreateExecOptions {
                    cmd: Some(argv.iter().map(|s| (*s).to_string()).collect()),
                    user: Some("root".to_string()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ExecError::Docker(e.to_string()))?;
        let mut printed = Vec::new();
        if let Ok(StartExecResults::Attached { mut output, .. }) =
            self.docker.start_exec(&exec.id, None).await
        {
            while let Some(chunk) = output.next().await {
                if let Ok(chunk) = chunk {
                    printed.extend_from_slice(&chunk.into_bytes());
                }
            }
        }
        Ok(printed)
    }

    /// Why the container can run nothing more, when it was stopped or removed by someone
    /// other than this agent; `None` while it runs (or when the engine cannot tell). Looks
    /// `checks` times, 100 ms apart, while it still shows as running.
    async fn lost(&self, checks: u32) -> Option<String> {
        for _ in 1..checks {
            match self.docker.inspect_container(&self.container, None).await {
                Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break,
            }
        }
        let short = &self.container[..self.container.len().min(12)];
        match self.docker.inspect_container(&self.container, None).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Some(format!(
                "the build container {short} was removed from outside the agent"
            )),
            Ok(info) => {
                let state = info.state?;
                if state.running == Some(true) {
                    return None;
                }
                let status = state
                    .status
                    .map_or_else(|| "not running".to_string(), |s| s.to_string());
                if status == "removing" || status == "dead" {
                    return Some(format!(
                        "the build container {short} was removed from outside the agent"
                    ));
                }
                Some(format!(
                    "the build container {short} was stopped from outside the agent (state: {status}, exit code {})",
                    state.exit_code.unwrap_or_default()
                ))
            }
            Err(_) => None,
        }
    }

    /// How many processes the memory limit's OOM killer has killed in the container, read
    /// from the container's own cgroup (v2 `memory.events`, v1 `memory.oom_control`).
    async fn oom_kills(&self) -> Option<u64> {
        let printed = self
            .exec_output(&[
                "/bin/sh",
                "-c",
                "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null",
            ])
            .await
            .ok()?;
        String::from_utf8_lossy(&printed)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }
}

impl Executor for DockerExecutor {
    fn src_dir(&self) -> &str {
        &self.src_dir
    }

    fn secondary_dirs(&self) -> &[(String, String)] {
        &self.secondary
    }

    fn base_env(&self) -> &[(String, String)] {
        &self.base_env
    }

    fn source_roots(&self) -> Vec<PathBuf> {
        self.roots.clone()
    }

    async fn start_shell(&self, spec: ShellSpec) -> Result<ShellHandle, ExecError> {
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let exec = self
            .docker
            .create_exec(
                &self.container,
                CreateExecOptions {
                    cmd: Some(spec.argv.clone()),
                    env: Some(env),
                    working_dir: Some(spec.cwd.clone()),
                    user: spec.user.clone(),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ExecError::Spawn {
                shell: spec.argv.join(" "),
                reason: e.to_string(),
            })?;
        tracing::debug!(exec = %exec.id, user = ?spec.user, cwd = %spec.cwd, "starting a build shell");
        let started = self
            .docker
            .start_exec(&exec.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| ExecError::Spawn {
                shell: spec.argv.join(" "),
                reason: e.to_string(),
            })?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(ExecError::Spawn {
                shell: spec.argv.join(" "),
                reason: "the engine did not attach to the shell".into(),
            });
        };
        let (tx, rx) = mpsc::channel(64);
        let docker = self.docker.clone();
        let exec_id = exec.id.clone();
        let user = spec.user.clone();
        tokio::spawn(async move {
            let forward = async {
                while let Some(item) = output.next().await {
                    let chunk = match item {
                        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                            Chunk::Stdout(message.to_vec())
                        }
                        Ok(LogOutput::StdErr { message }) => Chunk::Stderr(message.to_vec()),
                        Ok(LogOutput::StdIn { .. }) => continue,
                        Err(_) => break,
                    };
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            };
            tokio::pin!(forward);
            tokio::select! {
                () = &mut forward => {}
                () = exited(&docker, &exec_id) => {
                    // A background process may hold the streams open: take what the shell
                    // printed, but do not wait for that process.
                    let _ = tokio::time::timeout(super::OUTPUT_GRACE, &mut forward).await;
                }
            }
            let code = exit_code(&docker, &exec_id).await;
            // An exec that fails to start as another user ends with 126 and a message on
            // stderr; say which user when it does not exist.
            if code == 126
                && let Some(user) = user
            {
                let note = format!("(run-as: is `{user}` a user of the image?)\n");
                let _ = tx.send(Chunk::Stderr(note.into_bytes())).await;
            }
            let _ = tx.send(Chunk::Exited(code)).await;
        });
        Ok(ShellHandle::new(input, rx))
    }

    async fn archive_path(&self, path: &str, dest: &std::path::Path) -> Result<bool, ExecError> {
        use tokio::io::AsyncWriteExt;
        let mut stream = self.docker.download_from_container(
            &self.container,
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        let mut file: Option<tokio::fs::File> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(bytes) => {
                    if file.is_none() {
                        file = Some(tokio::fs::File::create(dest).await?);
                    }
                    if let Some(f) = &mut file {
                        f.write_all(&bytes).await?;
                    }
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    return Ok(false);
                }
                Err(e) => {
                    return Err(ExecError::Docker(format!(
                        "cannot copy {path} out of the container: {e}"
                    )));
                }
            }
        }
        match file {
            Some(mut f) => {
                f.flush().await?;
                f.sync_all().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn restore_path(&self, archive: &std::path::Path, parent: &str) -> Result<(), ExecError> {
        self.exec_detached(&["mkdir", "-p", parent]).await?;
        let file = tokio::fs::File::open(archive).await?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        self.docker
            .upload_to_container(
                &self.container,
                Some(UploadToContainerOptions {
                    path: parent.to_string(),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| ExecError::Docker(format!("cannot copy the cache into {parent}: {e}")))
    }

    async fn explain_exit(&self, exit_code: i64) -> Option<Ending> {
        // A signal's status (128 + n) is what a container killed or removed from outside
        // leaves; the engine may still show it running for a moment after its processes die.
        let checks = if exit_code >= 128 { 10 } else { 1 };
        if let Some(lost) = self.lost(checks).await {
            return Some(Ending::Lost(lost));
        }
        // 137 is SIGKILL; the OOM killer is the usual sender inside a memory-limited container.
        if exit_code != 137 {
            return None;
        }
        let kills = self.oom_kills().await?;
        let mut seen = self.oom_kills_seen.lock().await;
        if kills <= *seen {
            return None;
        }
        *seen = kills;
        Some(Ending::Killed(format!(
            "the build ran out of memory: the container's limit is {} MiB; raise it with `--memory` (run-local) or `jobs.memory` (daemon)",
            self.memory_bytes / (1024 * 1024)
        )))
    }

    async fn signal_all(&self, signal: Signal) {
        match signal {
            // Every process but init and the keeper (which ignores TERM).
            Signal::Term => {
                let _ = self
                    .exec_detached(&["/bin/sh", "-c", "kill -TERM -1"])
                    .await;
            }
            // Killing init ends every process in the container at once.
            Signal::Kill => {
                let _ = self
                    .docker
                    .kill_container(
                        &self.container,
                        Some(KillContainerOptions {
                            signal: "KILL".to_string(),
                        }),
                    )
                    .await;
            }
        }
    }

    async fn cleanup(&self) {
        tracing::debug!(container = %self.container, "removing the build container");
        let _ = self
            .docker
            .remove_container(
                &self.container,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
    }
}

/// Returns once the exec's process has ended, whatever its streams do.
async fn exited(docker: &Docker, exec_id: &str) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match docker.inspect_exec(exec_id).await {
            Ok(info) if info.running == Some(true) => {}
            _ => return,
        }
    }
}

/// The exec's exit status, once the engine has recorded it.
async fn exit_code(docker: &Docker, exec_id: &str) -> i64 {
    for _ in 0..100 {
        match docker.inspect_exec(exec_id).await {
            Ok(info) if info.running != Some(true) => return info.exit_code.unwrap_or(-1),
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return -1,
        }
    }
    -1
}

/// Makes sure `image` is present as `policy` says, showing pull progress; returns the
/// image's own environment.
async fn ensure_image(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
    log: &Log,
) -> Result<Vec<(String, String)>, ExecError> {
    let present = docker.inspect_image(image).await.ok();
    let pull = match (policy, &present) {
        (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, None) => true,
        (PullPolicy::Never, None) => {
            return Err(ExecError::ImageMissing {
                image: image.to_string(),
                reason: "it is not on this machine and the pull policy is `never`".into(),
            });
        }
        _ => false,
    };
    if pull {
        pull_image(docker, image, log).await?;
    }
    let inspected = match present {
        Some(info) if !pull => info,
        _ => docker
            .inspect_image(image)
            .await
            .map_err(|e| ExecError::ImageMissing {
                image: image.to_string(),
                reason: e.to_string(),
            })?,
    };
    let env = inspected
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Ok(env)
}

async fn pull_image(docker: &Docker, image: &str, log: &Log) -> Result<(), ExecError> {
    log.agent(&format!("Pulling image {image}"));
    let started = Instant::now();
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        }),
        None,
        None,
    );
    let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
    let mut last_report = Instant::now();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| ExecError::ImageMissing {
            image: image.to_string(),
            reason: format!("pull failed: {e}"),
        })?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(ExecError::ImageMissing {
                image: image.to_string(),
                reason: format!("pull failed: {error}"),
            });
        }
        if let (Some(id), Some(progress)) = (info.id, info.progress_detail) {
            let entry = layers.entry(id).or_default();
            entry.0 = progress.current.unwrap_or(entry.0);
            entry.1 = progress.total.unwrap_or(entry.1);
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            let (done, total) = layers
                .values()
                .fold((0, 0), |(d, t), (c, n)| (d + c, t + n));
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001) / 1e6;
            log.agent(&format!(
                "Pulling {image}: {:.1} of {:.1} MB ({rate:.1} MB/s)",
                done as f64 / 1e6,
                total as f64 / 1e6
            ));
        }
    }
    log.agent(&format!(
        "Pulled {image} in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
