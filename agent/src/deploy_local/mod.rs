//! `agent deploy-local`: one deployment of a revision to this host, as codedeploy-local
//! runs it, with the lifecycle engine the daemon's deploy jobs use.

mod args;
mod output;

pub use args::DeployLocalArgs;

use std::path::PathBuf;

use buildspec::appspec::FileExistsBehavior;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::deploy::allowed::AllowedRoots;
use crate::deploy::bundle::Bundle;
use crate::deploy::root::DeploymentRoot;
use crate::deploy::{self, DeployError, DeployRequest, Deployer, Failure, JobEnv};
use crate::exit;

/// Runs the deployment the flags describe; returns the exit status: 0 succeeded, 1 failed
/// (even when the rollback succeeded), timed out or was stopped, 2 bad input (nothing on
/// the host changed), 3 the agent could not run it.
pub fn run(args: DeployLocalArgs) -> u8 {
    crate::runtime::run_abandoning_blocked_reads(run_async(args))
}

async fn run_async(args: DeployLocalArgs) -> u8 {
    let (stop_tx, stop_rx) = watch::channel(None);
    // Watched from the start, so that a stop during the read of the control line or the
    // bundle's fetch is not lost (or, as the default action, kills the agent and leaves a
    // running hook behind in its own process group).
    let signals = match watch_signals(stop_tx.clone()) {
        Ok(task) => task,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::CANNOT_RUN;
        }
    };
    let status = deploy_with_stop(&args, stop_tx, stop_rx).await;
    signals.abort();
    status
}

async fn deploy_with_stop(
    args: &DeployLocalArgs,
    stop_tx: watch::Sender<Option<String>>,
    stop_rx: watch::Receiver<Option<String>>,
) -> u8 {
    let job_env = if args.control_stdin {
        match args::Control::read() {
            Ok(control) => JobEnv(control.env.into_iter().collect()),
            Err(message) => {
                eprintln!("error: {message}");
                return exit::BAD_INPUT;
            }
        }
    } else {
        JobEnv::default()
    };
    let mut request = match request(args) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::BAD_INPUT;
        }
    };
    request.job_env = job_env;
    let stdin_eof = args
        .control_stdin
        .then(|| tokio::spawn(watch_stdin_eof(stop_tx)));
    let status = deploy_request(args, &request, stop_rx).await;
    if let Some(task) = stdin_eof {
        task.abort();
    }
    status
}

async fn deploy_request(
    args: &DeployLocalArgs,
    request: &DeployRequest,
    stop: watch::Receiver<Option<String>>,
) -> u8 {
    let root_dir = args.root.clone().unwrap_or_else(default_root);
    let root = match DeploymentRoot::open(&root_dir) {
        Ok(root) => root,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CANNOT_RUN;
        }
    };
    let s3 = match &request.bundle {
        Bundle::S3 { .. } => match connect(args, &request.deployment_id).await {
            Ok(client) => Some(client),
            Err(message) => {
                eprintln!("error: {message}");
                return exit::CANNOT_RUN;
            }
        },
        Bundle::Local(_) => {
            if !args.role_arn.is_empty() {
                eprintln!("note: --role-arn is for fetching s3:// bundles; this one is local");
            }
            None
        }
    };
    let allowed = if args.no_destinations {
        AllowedRoots::none(root.path())
    } else {
        AllowedRoots::new(&args.allow_destination, root.path())
    };
    let mut terminal = output::Terminal { quiet: args.quiet };
    let mut deployer = Deployer {
        root,
        allowed,
        s3,
        observer: &mut terminal,
        stop,
    };
    let (summary, failure) = match deployer.deploy(request).await {
        Ok(done) => done,
        Err(DeployError::BadInput(message)) => {
            eprintln!("error: {message}");
            return exit::BAD_INPUT;
        }
        Err(DeployError::CannotRun(message)) => {
            eprintln!("error: {message}");
            return exit::CANNOT_RUN;
        }
    };
    print!("{}", output::report(&summary));
    if let Some(path) = &args.summary {
        let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("error: cannot write the summary to {}: {e}", path.display());
            return exit::CANNOT_RUN;
        }
    }
    match failure {
        None => exit::SUCCESS,
        Some(Failure::BadInput) => exit::BAD_INPUT,
        Some(Failure::CannotRun) => exit::CANNOT_RUN,
        Some(Failure::Lifecycle) => exit::FAILED,
    }
}

fn request(args: &DeployLocalArgs) -> Result<DeployRequest, String> {
    let bundle = Bundle::parse(&args.bundle).map_err(|e| format!("--bundle: {e}"))?;
    for (flag, value) in [
        ("--application-name", &args.application_name),
        ("--deployment-group", &args.deployment_group),
    ] {
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(format!(
                "{flag} `{value}` must be a non-empty name on one line"
            ));
        }
    }
    let deployment_group_id = match &args.deployment_group_id {
        Some(id) => deploy::check_id("--deployment-group-id", id)?,
        None => deploy::group_id(&args.application_name, &args.deployment_group),
    };
    let deployment_id = match &args.deployment_id {
        Some(id) => deploy::check_id("--deployment-id", id)?,
        None => deploy::new_deployment_id(),
    };
    let appspec_names = match &args.appspec {
        Some(name) => {
            crate::source::unpack::enclosed(name)
                .ok_or_else(|| format!("--appspec `{name}` must be a path inside the revision"))?;
            vec![name.clone()]
        }
        None => vec!["appspec.yml".to_string(), "appspec.yaml".to_string()],
    };
    if args.max_revisions == 0 {
        return Err("--max-revisions must be at least 1".into());
    }
    Ok(DeployRequest {
        bundle,
        application_name: args.application_name.clone(),
        deployment_group_name: args.deployment_group.clone(),
        deployment_group_id,
        deployment_id,
        events: args.events.clone(),
        file_exists_behavior: match args.file_exists_behavior {
            args::Behavior::Disallow => FileExistsBehavior::Disallow,
            args::Behavior::Overwrite => FileExistsBehavior::Overwrite,
            args::Behavior::Retain => FileExistsBehavior::Retain,
        },
        traffic: args.traffic,
        ignore_application_stop_failures: args.ignore_application_stop_failures,
        rollback_on_failure: args.rollback_on_failure,
        appspec_names,
        max_revisions: args.max_revisions,
        output_wait: args.output_wait,
        rollback_of: None,
        timeout: args.timeout,
        job_env: JobEnv::default(),
    })
}

/// The S3 client for the bundle, as the profile, region and role chain say. Only the fetch
/// uses it: hooks run as the deployment's user with the host's own environment, never
/// with these credentials.
async fn connect(
    args: &DeployLocalArgs,
    deployment_id: &str,
) -> Result<aws_sdk_s3::Client, String> {
    let options = crate::aws::AwsOptions {
        profile: args.profile.clone(),
        region: args.region.clone(),
        role: crate::aws::RoleOptions {
            roles: args.role_arn.clone(),
            external_id: args.external_id.clone(),
            session_name: crate::aws::roles::session_name(&format!("agent-{deployment_id}")),
            tags: args.session_tag.clone(),
            ..Default::default()
        },
    };
    let aws = crate::aws::connect(&options)
        .await
        .map_err(|e| format!("cannot connect to AWS for the bundle: {e}"))?;
    for note in &aws.notes {
        eprintln!("note: {note}");
    }
    Ok(crate::aws::s3::client(&aws.config))
}

/// SIGTERM (the daemon stopping a deploy job) and SIGINT (Ctrl-C) stop the deployment:
/// the running hook's process tree gets TERM, then KILL, and no later hook runs. The hooks
/// are in process groups of their own, so neither signal reaches them otherwise.
fn watch_signals(
    stop: watch::Sender<Option<String>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch for SIGINT: {e}"))?;
    Ok(tokio::spawn(async move {
        let how = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        ask_to_stop(&stop, how);
        // Later signals are taken too: the stop is under way, and bounded by the hook's
        // TERM grace.
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }))
}

/// Under the daemon, the end of standard input means the daemon is gone or stops the job.
async fn watch_stdin_eof(stop: watch::Sender<Option<String>>) {
    crate::control::end_of_input().await;
    ask_to_stop(&stop, "the end of standard input");
}

fn ask_to_stop(stop: &watch::Sender<Option<String>>, how: &str) {
    // The first reason is the one reported.
    let first = stop.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(how.to_string());
        true
    });
    if first {
        eprintln!(
            "Stopping ({how}): the running hook gets SIGTERM, then SIGKILL after {}s; no later hook runs",
            crate::deploy::hooks::TERM_GRACE.as_secs()
        );
    }
}

fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/agent/deployment-root");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("agent/deployment-root")
}
