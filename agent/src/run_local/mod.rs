//! `agent run-local`: one build of a local source directory, as CodeBuild would run it, or
//! the members of its batch.

mod args;
mod aws_setup;
mod batch;
mod env_input;
pub mod hide;
mod output;
mod state;
mod workspace;

pub use args::{RunLocalArgs, parse_key_value, parse_timeout};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use buildspec::{Buildspec, Source};
use tokio::sync::watch;

use crate::aws::s3::PutOptions;
use crate::build::{Build, BuildRequest, BuildStatus, Stop, Summary};
use crate::exec::docker::DockerExecutor;
use crate::exec::host::HostExecutor;
use crate::exec::{ExecError, Executor, Signal};
use crate::exit;
use crate::logs::s3::S3LogUpload;
use crate::logs::{FileSink, JsonSink, Log, Maskers, Sink, TerminalSink};

/// Runs the build the flags describe; returns the exit status.
pub fn run(args: RunLocalArgs) -> u8 {
    crate::runtime::run_abandoning_blocked_reads(run_async(Arc::new(args)))
}

async fn run_async(args: Arc<RunLocalArgs>) -> u8 {
    let args = if args.control_stdin {
        match args::Control::read() {
            Ok(control) => {
                let mut with = (*args).clone();
                with.env
                    .extend(control.env.iter().map(|(k, v)| format!("{k}={v}")));
                with.secret
                    .extend(control.secrets.iter().map(|(k, v)| format!("{k}={v}")));
                with.job_parameter_store.extend(control.parameter_store);
                with.job_secrets_manager.extend(control.secrets_manager);
                Arc::new(with)
            }
            Err(message) => {
                eprintln!("error: {message}");
                return exit::BAD_INPUT;
            }
        }
    } else {
        args
    };
    let build_id = args
        .build_id
        .clone()
        .unwrap_or_else(|| format!("local:{}", uuid::Uuid::new_v4()));
    // An S3 source is fetched first: the buildspec is in it.
    let (args, connected, _source_dir, source_url) = match args.source_s3() {
        None => (args, None, None, None),
        Some(Err(message)) => {
            eprintln!("error: --source: {message}");
            return exit::BAD_INPUT;
        }
        Some(Ok(url)) => {
            let fetched = async {
                let connected = aws_setup::connect(&args, &build_id).await?;
                let dir = aws_setup::fetch_source(&connected, &url).await?;
                Ok::<_, String>((connected, dir))
            }
            .await;
            let (connected, dir) = match fetched {
                Ok(fetched) => fetched,
                Err(message) => {
                    eprintln!("error: {message}");
                    return exit::FAILED;
                }
            };
            // The project of an S3 source is its URL: `/s3/<bucket>/<key>` names its state.
            let here = state::project_dir(
                &Path::new("/s3")
                    .join(&url.bucket)
                    .join(url.prefix.trim_matches('/')),
            );
            let mut local = (*args).clone();
            local.source = Some(dir.path().to_path_buf());
            // The buildspec of an S3 source is in the source, not in the current directory.
            let named = local
                .buildspec
                .clone()
                .unwrap_or_else(|| PathBuf::from("buildspec.yml"));
            if named.is_relative() {
                local.buildspec = Some(dir.path().join(named));
            }
            local.artifacts = local.artifacts.or_else(|| Some(here.join("artifacts")));
            local.cache_dir = local.cache_dir.or_else(|| Some(here.join("cache")));
            local.log_dir = local.log_dir.or_else(|| Some(here.join("logs")));
            let source_url = format!("s3://{}/{}", url.bucket, url.prefix);
            (
                Arc::new(local),
                Some(connected),
                Some(dir),
                Some(source_url),
            )
        }
    };
    let in_s3 = source_url.is_some();
    let given_secrets = match args.secret_values_fd {
        Some(fd) => match hide::take_values(fd) {
            Ok(values) => values,
            Err(message) => {
                eprintln!("error: {message}");
                return exit::BAD_INPUT;
            }
        },
        None => Default::default(),
    };
    let source_dir = match source_dir(&args) {
        Ok(dir) => dir,
        Err(message) => {
            eprintln!("{message}");
            return exit::BAD_INPUT;
        }
    };
    let state_dir = state::project_dir(&source_dir);
    let (mut request, notes) =
        match prepare(&args, build_id, &source_dir, &state_dir, &given_secrets) {
            Ok(prepared) => prepared,
            Err(message) => {
                eprintln!("{message}");
                return exit::BAD_INPUT;
            }
        };
    let mode = if in_s3 || args.control_stdin {
        workspace::Mode::InPlace
    } else if args.bind {
        workspace::Mode::Bind
    } else {
        workspace::Mode::Copy
    };
    let workspace = match workspace::Workspace::prepare(&args, &mut request, mode, notes).await {
        Ok(workspace) => workspace,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::CANNOT_RUN;
        }
    };
    let maskers = Maskers::default();
    request.source_url = source_url;
    let credentials = match aws_setup::provision(&args, &mut request, &maskers, connected).await {
        Ok(endpoint) => endpoint,
        Err(message) => {
            let secrets = secret_values(&request);
            // A service's message may echo a value the build was to keep secret.
            let shown = maskers.mask(&crate::logs::Masker::new(&secrets).mask_str(&message));
            eprintln!("error: {shown}");
            let summary = aws_setup::provisioning_failed(&request, &message);
            save_summary(&summary, args.summary.as_deref(), &secrets, &maskers);
            return exit::FAILED;
        }
    };
    let status = run_provisioned(&args, request, &maskers, &workspace).await;
    if let Some(endpoint) = credentials {
        endpoint.stop().await;
    }
    workspace.remove();
    status
}

/// Runs a request whose AWS side is ready: one build, or a batch.
async fn run_provisioned(
    args: &Arc<RunLocalArgs>,
    request: BuildRequest,
    maskers: &Maskers,
    workspace: &workspace::Workspace,
) -> u8 {
    let started = std::time::Instant::now();
    let args = Arc::clone(args);
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let stdin_eof = args
        .control_stdin
        .then(|| tokio::spawn(watch_stdin_eof(stop_tx.clone())));
    let announcer = Announcer::default();
    let ctrl_c = tokio::spawn(watch_ctrl_c(stop_tx, announcer.clone()));
    let logs = args
        .log_dir
        .clone()
        .unwrap_or_else(|| workspace.state.join("logs"));
    let secrets = secret_values(&request);
    let artifacts_dir = request
        .artifacts_dir
        .clone()
        .filter(|_| args.artifacts_s3().is_none());
    let (summary, log_path, failure) = match request.buildspec.batch.clone() {
        Some(spec) => {
            let dir = logs.join(&request.build_id);
            for note in &workspace.notes {
                eprintln!("{note}");
            }
            (
                batch::run(Arc::clone(&args), request, &spec, stop_rx, &dir, maskers).await,
                dir,
                None,
            )
        }
        None => {
            let log_path = logs.join(format!("{}.log", request.build_id));
            let (log, upload, tracker) = open_log(&args, &request, None, &log_path);
            maskers.register(&log);
            announcer.add(&log);
            for note in &workspace.notes {
                log.agent(note);
            }
            let built = build_once(
                &args,
                &request,
                log.clone(),
                stop_rx,
                &tracker,
                workspace.chown,
            )
            .await;
            close_log(&log, upload).await;
            match built {
                Ok(summary) => {
                    report_log_errors(&log);
                    let failure = tracker.failure().map(|f| {
                        let place = command_line(&request, &f.phase, &f.command);
                        (f, place)
                    });
                    (summary, log_path, failure)
                }
                Err(error) => {
                    ctrl_c.abort();
                    return cannot_run(&error);
                }
            }
        }
    };
    ctrl_c.abort();
    if let Some(task) = stdin_eof {
        task.abort();
    }
    if !args.json_logs {
        output::print_summary(
            &summary,
            &output::Ending {
                log_path: &log_path,
                artifacts_dir: artifacts_dir.as_deref(),
                failure,
                elapsed: started.elapsed(),
                color: output::color_stderr(args.color),
            },
        );
    }
    save_summary(&summary, args.summary.as_deref(), &secrets, maskers);
    match summary.status {
        BuildStatus::Succeeded => exit::SUCCESS,
        // The environment failed the build, not its commands.
        BuildStatus::Fault => exit::CANNOT_RUN,
        _ => exit::FAILED,
    }
}

/// `file:line` of the command as written in the buildspec's phase.
fn command_line(request: &BuildRequest, phase: &str, command: &str) -> Option<String> {
    let (_, found) = request
        .buildspec
        .phases
        .iter()
        .find(|(name, _)| name.codebuild_name() == phase)?;
    let line = found
        .commands
        .iter()
        .chain(&found.finally)
        .find(|c| c.text == command)?
        .line;
    Some(format!("{}:{line}", request.buildspec_path))
}

/// The log sinks of one build: the terminal (or JSON lines) and the build's log file.
fn sinks(args: &RunLocalArgs, member: Option<&str>, log_path: &Path) -> Vec<Box<dyn Sink>> {
    use std::io::IsTerminal;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let color = args.color.enabled_on(std::io::stdout().is_terminal());
    let terminal = match member {
        Some(id) => TerminalSink::prefixed(args.quiet, id),
        None => TerminalSink::new(args.quiet),
    };
    if args.json_logs {
        sinks.push(Box::new(JsonSink::new(member)));
    } else if color {
        sinks.push(Box::new(output::Colored::new(terminal)));
    } else {
        sinks.push(Box::new(terminal));
    }
    match FileSink::create(log_path) {
        Ok(sink) => sinks.push(Box::new(sink)),
        Err(e) => eprintln!(
            "warning: cannot write the log file {}: {e}",
            log_path.display()
        ),
    }
    sinks
}

/// A build's log: its sinks, and the S3 upload when `--logs` asks for one.
fn open_log(
    args: &RunLocalArgs,
    request: &BuildRequest,
    member: Option<&str>,
    log_path: &Path,
) -> (Log, Option<S3LogUpload>, output::Tracker) {
    let mut sinks = sinks(args, member, log_path);
    let tracker = output::Tracker::default();
    sinks.push(tracker.sink());
    let upload = request.logs_s3.as_ref().map(|(client, url)| {
        let key = url.key(&["logs", &format!("{}.log", request.build_id)]);
        let options = PutOptions {
            kms_key_id: args.artifacts_kms_key_id.clone(),
            metadata: vec![("agent-build-id".to_string(), request.build_id.clone())],
        };
        let (sink, upload) =
            crate::logs::s3::start(client.clone(), url.bucket.clone(), key, options);
        sinks.push(Box::new(sink));
        upload
    });
    (Log::new(&secret_values(request), sinks), upload, tracker)
}

/// Closes a build's log and waits for its S3 copy, if any, to be complete.
async fn close_log(log: &Log, upload: Option<S3LogUpload>) {
    log.close();
    if let Some(upload) = upload {
        match upload.finish().await {
            Ok(url) => eprintln!("Log in S3: {url}"),
            Err(e) => eprintln!("warning: the log could not be uploaded to S3: {e}"),
        }
    }
}

/// Every value to mask: secrets, resolved parameters and secrets, AWS credentials.
fn secret_values(request: &BuildRequest) -> Vec<String> {
    let credentials = request.aws_env.iter().filter(|(k, _)| {
        matches!(
            k.as_str(),
            "AWS_ACCESS_KEY_ID"
                | "AWS_SECRET_ACCESS_KEY"
                | "AWS_SESSION_TOKEN"
                | "AWS_CONTAINER_AUTHORIZATION_TOKEN"
        )
    });
    request
        .secrets
        .iter()
        .chain(&request.resolved)
        .chain(credentials)
        .map(|(_, v)| v.clone())
        .collect()
}

fn report_log_errors(log: &Log) {
    for error in log.errors() {
        eprintln!("warning: the log could not be written to the {error}");
    }
}

fn cannot_run(error: &ExecError) -> u8 {
    eprintln!("error: {error}");
    if let ExecError::ImageMissing { .. } = error {
        eprintln!("hint: build the standard image with `images/build-all.sh`, or pass --image");
    }
    if let ExecError::DockerUnavailable(_) = error {
        eprintln!(
            "hint: start the Docker engine, check that you can use it (`docker info`), or use --executor host"
        );
    }
    exit::CANNOT_RUN
}

/// Runs one build on a new executor and removes everything the executor created. With
/// `chown`, every file of the build's source is given to that uid:gid before the end.
async fn build_once(
    args: &RunLocalArgs,
    request: &BuildRequest,
    log: Log,
    stop: watch::Receiver<Stop>,
    tracker: &output::Tracker,
    chown: Option<(u32, u32)>,
) -> Result<Summary, ExecError> {
    let stopping = Stopping {
        grace: args.stop_timeout,
        tracker: tracker.clone(),
    };
    match args.executor {
        args::ExecutorKind::Host => {
            let roots = args.secondary_sources();
            let executor = Arc::new(HostExecutor::new(&request.source_dir, &roots)?);
            Ok(run_on(executor, request, log, stop, stopping, chown, None).await)
        }
        args::ExecutorKind::Docker => {
            let image = request.image.clone().unwrap_or_else(|| args.image.clone());
            let options = args.docker_options(request, &image);
            let executor = Arc::new(DockerExecutor::create(options, &log).await?);
            crate::exec::owner::sweep_in_background();
            let root = Some("root".to_string());
            Ok(run_on(executor, request, log, stop, stopping, chown, root).await)
        }
    }
}

/// Ends the build's running commands once a stop's grace period is over, leaving the
/// environment up for `finally`.
trait KillCommands {
    fn kill_commands(&self) -> impl std::future::Future<Output = ()> + Send;
}

impl KillCommands for HostExecutor {
    async fn kill_commands(&self) {
        // The build's process group: `finally` starts a new shell in it.
        self.signal_all(Signal::Kill).await;
    }
}

impl KillCommands for DockerExecutor {
    async fn kill_commands(&self) {
        DockerExecutor::kill_commands(self).await;
    }
}

/// How a build is stopped after Ctrl-C.
#[derive(Clone)]
struct Stopping {
    /// Between SIGTERM and SIGKILL.
    grace: std::time::Duration,
    tracker: output::Tracker,
}

async fn run_on<E: Executor + KillCommands + 'static>(
    executor: Arc<E>,
    request: &BuildRequest,
    log: Log,
    stop: watch::Receiver<Stop>,
    stopping: Stopping,
    chown: Option<(u32, u32)>,
    root: Option<String>,
) -> Summary {
    let forward = tokio::spawn(forward_stop(
        Arc::clone(&executor),
        stop.clone(),
        stopping,
        log.clone(),
    ));
    let summary = Build::new(executor.as_ref(), request, log.clone(), stop)
        .run()
        .await;
    forward.abort();
    if let Some((uid, gid)) = chown {
        give_back(executor.as_ref(), uid, gid, root, &log).await;
    }
    executor.cleanup().await;
    log.flush();
    summary
}

/// Gives every file of the build's source to `uid:gid`, with `chown` run where the build
/// ran (in the container as root: what the build and the agent wrote there may be root's).
async fn give_back<E: Executor>(executor: &E, uid: u32, gid: u32, root: Option<String>, log: &Log) {
    let spec = crate::exec::ShellSpec {
        argv: vec![
            "chown".into(),
            "-R".into(),
            "-h".into(),
            format!("{uid}:{gid}"),
            executor.src_dir().to_string(),
        ],
        env: vec![(
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        )],
        cwd: "/".to_string(),
        user: root,
    };
    let status = match executor.start_shell(spec).await {
        Ok(mut handle) => {
            let mut status = None;
            while let Some(chunk) = handle.output.recv().await {
                if let crate::exec::Chunk::Exited(code) = chunk {
                    status = Some(code);
                }
            }
            status
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot start chown");
            None
        }
    };
    if status != Some(0) {
        log.agent(&format!(
            "Warning: could not give the source's files back to {uid}:{gid}; some may belong to another user"
        ));
    }
}

/// Carries a stop to the build's processes: SIGTERM for a graceful stop, SIGKILL when the
/// command still runs after the grace period (then `finally` runs), SIGKILL to everything
/// on a second Ctrl-C. Each step is said in the log.
async fn forward_stop<E: Executor + KillCommands>(
    executor: Arc<E>,
    mut stop: watch::Receiver<Stop>,
    stopping: Stopping,
    log: Log,
) {
    if stop.wait_for(|s| *s >= Stop::Graceful).await.is_err() {
        return;
    }
    let grace = humantime_short(stopping.grace);
    let running = stopping.tracker.running();
    if *stop.borrow() == Stop::Graceful {
        log.agent(&format!(
            "Stopping: SIGTERM sent to the running command; SIGKILL in {grace} if it is still running, then `finally` runs (Ctrl-C again skips `finally` and stops now)"
        ));
    }
    executor.signal_all(Signal::Term).await;
    let now = tokio::select! {
        () = tokio::time::sleep(stopping.grace) => false,
        result = stop.wait_for(|s| *s >= Stop::Now) => result.is_ok(),
    };
    if !now {
        if running.is_some() && stopping.tracker.running() == running {
            log.agent(&format!(
                "The command is still running {grace} after SIGTERM: SIGKILL sent"
            ));
            executor.kill_commands().await;
        }
        if stop.wait_for(|s| *s >= Stop::Now).await.is_err() {
            return;
        }
    }
    executor.signal_all(Signal::Kill).await;
}

/// `10 s`, `1m30s`.
fn humantime_short(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs < 60 {
        format!("{secs} s")
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// Says something in the log of every build running now, or on standard error when no
/// build has a log of its own here (a batch's members).
#[derive(Clone, Default)]
struct Announcer(Arc<std::sync::Mutex<Vec<Log>>>);

impl Announcer {
    fn add(&self, log: &Log) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(log.clone());
    }

    fn say(&self, text: &str) {
        let logs = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if logs.is_empty() {
            eprintln!("{text}");
        }
        for log in logs.iter() {
            log.agent(text);
        }
    }
}

/// First Ctrl-C: the running commands get SIGTERM (SIGKILL after `--stop-timeout`) and
/// `finally` blocks run (each build's log says so, see `forward_stop`); second: `finally`
/// is skipped and everything is killed now.
async fn watch_ctrl_c(stop: watch::Sender<Stop>, announcer: Announcer) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    stop.send_replace(Stop::Graceful);
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    announcer.say("Ctrl-C again: `finally` is skipped; every process of the build is killed now");
    stop.send_replace(Stop::Now);
}

/// Under the daemon, the end of standard input means the daemon is gone (or cancels the
/// job): stop as on Ctrl-C, and kill everything if the stop takes too long.
async fn watch_stdin_eof(stop: watch::Sender<Stop>) {
    crate::control::end_of_input().await;
    stop.send_replace(Stop::Graceful);
    tokio::time::sleep(STOP_GRACE).await;
    stop.send_replace(Stop::Now);
}

/// How long `finally` may run once a stop was asked for, before everything is killed.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes the summary when one was asked for, every string in it masked: values a build
/// puts in names (an artifact named after a secret variable) would otherwise reach it.
/// Failing to write is reported, never a panic (standard error may be on the same full disk).
fn save_summary(summary: &Summary, path: Option<&Path>, secrets: &[String], maskers: &Maskers) {
    let Some(path) = path else {
        return;
    };
    let masker = crate::logs::Masker::new(secrets);
    let mask = |text: &str| maskers.mask(&masker.mask_str(text));
    let written = serde_json::to_value(summary)
        .map_err(std::io::Error::other)
        .and_then(|mut value| {
            mask_strings(&mut value, &mask);
            if let Some(fields) = value.as_object_mut() {
                // For the daemon's `agent_uploaded_bytes_total`: artifacts, logs, cache.
                fields.insert(
                    "uploaded_bytes".into(),
                    crate::aws::uploaded::total().into(),
                );
            }
            write_summary(&value, path)
        });
    if let Err(e) = written {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "error: cannot write the summary to {}: {e}",
            path.display()
        );
    }
}

/// Masks every string (and object key) of a JSON value in place.
fn mask_strings(value: &mut serde_json::Value, mask: &impl Fn(&str) -> String) {
    match value {
        serde_json::Value::String(text) => *text = mask(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| mask_strings(v, mask)),
        serde_json::Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                mask_strings(&mut v, mask);
                map.insert(mask(&key), v);
            }
        }
        _ => {}
    }
}

fn write_summary(summary: &serde_json::Value, path: &Path) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(summary).map_err(std::io::Error::other)?;
    // Written whole and renamed, so a reader never sees half a summary.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Parses a buildspec, printing its diagnostics; `None` when it is not valid.
fn load_buildspec(path: &Path, display: &str, color: bool) -> Result<Buildspec, String> {
    let bytes =
        agent_config::files::read_bounded(path, agent_config::files::MAX_FILE_BYTES, "a buildspec")
            .map_err(|e| format!("error: cannot read {display}: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("error: cannot read {display}: it is not UTF-8 text"))?;
    let source = Source::new(display.to_string(), text);
    let parsed = buildspec::parse_buildspec(&source);
    let rendered = buildspec::render_all(&source, &parsed.diagnostics, color);
    eprint!("{rendered}");
    let spec = parsed
        .value
        .ok_or_else(|| format!("error: {display} is not a valid buildspec; nothing ran"))?;
    if matches!(
        spec.env.shell,
        Some(buildspec::buildspec::Shell::PowerShell | buildspec::buildspec::Shell::Cmd)
    ) {
        return Err(format!(
            "error: {display} asks for a Windows shell; this agent runs Linux builds (use `bash` or `/bin/sh`)"
        ));
    }
    Ok(spec)
}

/// The source directory, made absolute: `--source`; else, when the buildspec lies outside
/// the current directory, the buildspec's directory; else the current directory.
fn source_dir(args: &RunLocalArgs) -> Result<PathBuf, String> {
    let canonical = |dir: &Path| {
        dir.canonicalize()
            .map_err(|e| format!("error: source directory {}: {e}", dir.display()))
    };
    if let Some(dir) = &args.source {
        return canonical(dir);
    }
    let here = canonical(Path::new("."))?;
    if let Some(buildspec) = &args.buildspec
        && let Ok(real) = buildspec.canonicalize()
        && real.is_file()
        && !real.starts_with(&here)
        && let Some(parent) = real.parent()
    {
        return Ok(parent.to_path_buf());
    }
    Ok(here)
}

/// Turns the flags into a build request, or a message saying what is wrong; with notes
/// for the engineer (variables skipped, a `.env` not read).
fn prepare(
    args: &RunLocalArgs,
    build_id: String,
    source_dir: &Path,
    state_dir: &Path,
    given_secrets: &std::collections::BTreeMap<String, String>,
) -> Result<(BuildRequest, Vec<String>), String> {
    let source_dir = source_dir.to_path_buf();
    let buildspec_path = locate_buildspec(args.buildspec.as_deref(), &source_dir)?;
    let display = buildspec_path.display().to_string();
    let mut spec = load_buildspec(&buildspec_path, &display, output::color_stderr(args.color))?;
    add_job_secrets(&mut spec, args)?;
    let mut notes = Vec::new();
    let mut env = Vec::new();
    for file in &args.env_file {
        env.extend(env_input::read_dotenv(file, "--env-file")?);
    }
    let cli_env = env_input::resolve_env(&args.env, env_input::from_environment)?;
    env.extend(cli_env.vars);
    notes.extend(cli_env.notes);
    let cli_secrets =
        env_input::resolve_secrets(&args.secret, given_secrets, env_input::from_environment)?;
    let mut secrets = cli_secrets.vars;
    notes.extend(cli_secrets.notes);
    for file in &args.secret_file {
        secrets.extend(env_input::read_dotenv(file, "--secret-file")?);
    }
    if args.env_file.is_empty() && !args.control_stdin && source_dir.join(".env").is_file() {
        notes.push(format!(
            "Note: {} was not read; to give its variables to the build, add --env-file {}",
            source_dir.join(".env").display(),
            source_dir.join(".env").display()
        ));
    }
    let image = match args.executor {
        args::ExecutorKind::Docker => Some(args.image.clone()),
        args::ExecutorKind::Host => None,
    };
    if let Some(Err(message)) = args.artifacts_s3() {
        return Err(format!("error: --artifacts: {message}"));
    }
    if let Some(Err(message)) = args.logs_s3() {
        return Err(format!("error: --logs: {message}"));
    }
    if let Some(Err(message)) = args.cache_s3() {
        return Err(format!("error: --cache: {message}"));
    }
    let artifacts_dir = match (&args.artifacts, args.artifacts_s3()) {
        (Some(dir), None) => dir.clone(),
        // Reports stay local when artifacts go to S3.
        _ => state_dir.join("artifacts"),
    };
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("cache"));
    let request = BuildRequest {
        build_id,
        buildspec: spec,
        buildspec_path: display,
        source_dir,
        image,
        env,
        secrets,
        resolved: Vec::new(),
        aws_env: Vec::new(),
        timeout: args.timeout,
        artifacts_dir: Some(artifacts_dir),
        artifacts_s3: None,
        logs_s3: None,
        cache_dir: Some(cache_dir),
        cache_s3: None,
        source_url: None,
        initiator: std::env::var("USER").unwrap_or_else(|_| "local".to_string()),
    };
    Ok((request, notes))
}

/// Adds the job's secret references to the buildspec's, so that they are resolved and
/// masked exactly as the buildspec's own, with the build's credentials. A job's variable
/// replaces a buildspec variable of the same name.
fn add_job_secrets(spec: &mut Buildspec, args: &RunLocalArgs) -> Result<(), String> {
    use buildspec::buildspec::{SecretRef, SecretVariable, Variable};
    use buildspec::{Span, Spanned};
    let env = &mut spec.env;
    let names: Vec<&str> = args
        .job_parameter_store
        .iter()
        .chain(&args.job_secrets_manager)
        .map(|(name, _)| name.as_str())
        .collect();
    env.variables
        .retain(|v| !names.contains(&v.name.value.as_str()));
    env.parameter_store
        .retain(|v| !names.contains(&v.name.value.as_str()));
    env.secrets_manager
        .retain(|v| !names.contains(&v.name.value.as_str()));
    let spanned = |text: &str| Spanned::new(text.to_string(), Span::default());
    for (name, reference) in &args.job_parameter_store {
        env.parameter_store.push(Variable {
            name: spanned(name),
            value: spanned(reference),
        });
    }
    for (name, reference) in &args.job_secrets_manager {
        let parsed = SecretRef::parse(reference).map_err(|why| {
            format!(
                "error: the job's secret `{name}` has an invalid Secrets Manager reference: {why}"
            )
        })?;
        env.secrets_manager.push(SecretVariable {
            name: spanned(name),
            reference: Spanned::new(parsed, Span::default()),
        });
    }
    Ok(())
}

/// A relative path is looked up from the current directory first, then from the source.
fn locate_buildspec(given: Option<&Path>, source_dir: &Path) -> Result<PathBuf, String> {
    let given = given.unwrap_or(Path::new("buildspec.yml"));
    let candidates = if given.is_absolute() {
        vec![given.to_path_buf()]
    } else {
        vec![given.to_path_buf(), source_dir.join(given)]
    };
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "error: no buildspec at {}; give its path, e.g. `agent run-local path/to/buildspec.yml`",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    })
}
