//! `agent run-local`: one build of a local source directory, as CodeBuild would run it.

mod args;
mod output;

pub use args::RunLocalArgs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use buildspec::Source;
use tokio::sync::watch;

use crate::build::{Build, BuildRequest, BuildStatus, Stop, Summary};
use crate::exec::host::HostExecutor;
use crate::exec::{ExecError, Executor, Signal};
use crate::exit;
use crate::logs::{FileSink, JsonSink, Log, Sink, TerminalSink};

/// Runs the build the flags describe; returns the exit status.
pub fn run(args: RunLocalArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::CANNOT_RUN;
        }
    };
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunLocalArgs) -> u8 {
    let request = match prepare(&args) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("{message}");
            return exit::BAD_INPUT;
        }
    };
    let secrets: Vec<String> = request.secrets.iter().map(|(_, v)| v.clone()).collect();
    let log_path = request
        .source_dir
        .join(".agent/logs")
        .join(format!("{}.log", request.build_id));
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if args.json_logs {
        sinks.push(Box::new(JsonSink::new()));
    } else {
        sinks.push(Box::new(TerminalSink::new(args.quiet)));
    }
    match FileSink::create(&log_path) {
        Ok(sink) => sinks.push(Box::new(sink)),
        Err(e) => eprintln!(
            "warning: cannot write the log file {}: {e}",
            log_path.display()
        ),
    }
    let log = Log::new(&secrets, sinks);
    match args.executor {
        args::ExecutorKind::Host => {
            let executor = match HostExecutor::new(&request.source_dir, &args.secondary_sources()) {
                Ok(e) => Arc::new(e),
                Err(e) => return cannot_run(&e),
            };
            drive(executor, request, log, &args, &log_path).await
        }
        args::ExecutorKind::Docker => {
            let image = request.image.clone().unwrap_or_default();
            let options = args.docker_options(&request.build_id, &image);
            let executor = match crate::exec::docker::DockerExecutor::create(options, &log).await {
                Ok(e) => Arc::new(e),
                Err(e) => return cannot_run(&e),
            };
            drive(executor, request, log, &args, &log_path).await
        }
    }
}

fn cannot_run(error: &ExecError) -> u8 {
    eprintln!("error: {error}");
    if let ExecError::ImageMissing { .. } = error {
        eprintln!(
            "hint: build the standard image with `sudo images/build-all.sh`, or pass --image"
        );
    }
    if let ExecError::DockerUnavailable(_) = error {
        eprintln!(
            "hint: start the Docker engine, check that you can use it (`docker info`), or use --executor host"
        );
    }
    exit::CANNOT_RUN
}

/// Runs the build on `executor`, handling Ctrl-C, and reports it.
async fn drive<E: Executor + 'static>(
    executor: Arc<E>,
    request: BuildRequest,
    log: Log,
    args: &RunLocalArgs,
    log_path: &Path,
) -> u8 {
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let signals = tokio::spawn(watch_ctrl_c(Arc::clone(&executor), stop_tx, log.clone()));
    let summary = Build::new(executor.as_ref(), &request, log.clone(), stop_rx)
        .run()
        .await;
    signals.abort();
    executor.cleanup().await;
    for error in log.errors() {
        eprintln!("warning: the log could not be written to the {error}");
    }
    if !args.json_logs {
        output::print_summary(&summary, log_path, args.quiet);
    }
    if let Some(path) = &args.summary
        && let Err(e) = write_summary(&summary, path)
    {
        eprintln!("error: cannot write the summary to {}: {e}", path.display());
    }
    match summary.status {
        BuildStatus::Succeeded => exit::SUCCESS,
        _ => exit::FAILED,
    }
}

/// First Ctrl-C: the running command is sent SIGTERM and `finally` blocks run; second:
/// everything is killed now.
async fn watch_ctrl_c<E: Executor>(executor: Arc<E>, stop: watch::Sender<Stop>, log: Log) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    log.agent("Stopping the build: the running command gets SIGTERM; press Ctrl-C again to kill everything now");
    stop.send_replace(Stop::Graceful);
    executor.signal_all(Signal::Term).await;
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    log.agent("Killing the build now");
    stop.send_replace(Stop::Now);
    executor.signal_all(Signal::Kill).await;
}

fn write_summary(summary: &Summary, path: &Path) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(summary).map_err(std::io::Error::other)?;
    // Written whole and renamed, so a reader never sees half a summary.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Turns the flags into a build request, or a message saying what is wrong.
fn prepare(args: &RunLocalArgs) -> Result<BuildRequest, String> {
    let source_dir = args
        .source
        .canonicalize()
        .map_err(|e| format!("error: source directory {}: {e}", args.source.display()))?;
    let buildspec_path = locate_buildspec(args.buildspec.as_deref(), &source_dir)?;
    let text = std::fs::read_to_string(&buildspec_path)
        .map_err(|e| format!("error: cannot read {}: {e}", buildspec_path.display()))?;
    let display = buildspec_path.display().to_string();
    let source = Source::new(display.clone(), text);
    let parsed = buildspec::parse_buildspec(&source);
    let rendered = buildspec::render_all(&source, &parsed.diagnostics, output::color_stderr());
    eprint!("{rendered}");
    let Some(spec) = parsed.value else {
        return Err(format!(
            "error: {display} is not a valid buildspec; nothing ran"
        ));
    };
    if matches!(
        spec.env.shell,
        Some(buildspec::buildspec::Shell::PowerShell | buildspec::buildspec::Shell::Cmd)
    ) {
        return Err(format!(
            "error: {display} asks for a Windows shell; this agent runs Linux builds (use `bash` or `/bin/sh`)"
        ));
    }
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("error: --env-file {}: {e}", file.display()))?;
        let vars = crate::build::env::parse_env_file(&text)
            .map_err(|e| format!("error: --env-file {}: {e}", file.display()))?;
        env.extend(vars);
    }
    for assignment in &args.env {
        env.push(
            crate::build::env::parse_assignment(assignment)
                .map_err(|e| format!("error: -e: {e}"))?,
        );
    }
    let mut secrets = Vec::new();
    for assignment in &args.secret {
        secrets.push(
            crate::build::env::parse_assignment(assignment)
                .map_err(|e| format!("error: --secret: {e}"))?,
        );
    }
    for file in &args.secret_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("error: --secret-file {}: {e}", file.display()))?;
        let vars = crate::build::env::parse_env_file(&text)
            .map_err(|e| format!("error: --secret-file {}: {e}", file.display()))?;
        secrets.extend(vars);
    }
    let build_id = format!("local:{}", uuid::Uuid::new_v4());
    let image = match args.executor {
        args::ExecutorKind::Docker => Some(args.image.clone()),
        args::ExecutorKind::Host => None,
    };
    let artifacts_dir = args
        .artifacts
        .clone()
        .unwrap_or_else(|| source_dir.join(".agent/artifacts"));
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| source_dir.join(".agent/cache"));
    Ok(BuildRequest {
        build_id,
        buildspec: spec,
        buildspec_path: display,
        source_dir,
        image,
        env,
        secrets,
        timeout: args.timeout,
        artifacts_dir: Some(artifacts_dir),
        cache_dir: Some(cache_dir),
        initiator: std::env::var("USER").unwrap_or_else(|_| "local".to_string()),
    })
}

/// A relative path is looked up from the current directory first, then from the source.
fn locate_buildspec(given: Option<&Path>, source_dir: &Path) -> Result<PathBuf, String> {
    let given = given.unwrap_or(Path::new("buildspec.yml"));
    let candidates = if given.is_absolute() {
        vec![given.to_path_buf()]
    } else {
        vec![given.to_path_buf(), source_dir.join(given)]
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
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
