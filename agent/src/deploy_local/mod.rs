//! `agent deploy-local`: one deployment of a revision to this host, as codedeploy-local
//! runs it, with the lifecycle engine the daemon's deploy jobs use.

mod args;
mod output;

pub use args::DeployLocalArgs;

use std::path::PathBuf;

use buildspec::appspec::FileExistsBehavior;

use crate::deploy::allowed::AllowedRoots;
use crate::deploy::bundle::Bundle;
use crate::deploy::root::DeploymentRoot;
use crate::deploy::{self, DeployError, DeployRequest, Deployer, Failure};
use crate::exit;

/// Runs the deployment the flags describe; returns the exit status: 0 succeeded, 1 failed
/// (even when the rollback succeeded), 2 bad input (nothing on the host changed), 3 the
/// agent could not run it.
pub fn run(args: DeployLocalArgs) -> u8 {
    let runtime = match crate::runtime::start() {
        Ok(rt) => rt,
        Err(status) => return status,
    };
    runtime.block_on(run_async(args))
}

async fn run_async(args: DeployLocalArgs) -> u8 {
    let request = match request(&args) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::BAD_INPUT;
        }
    };
    let root_dir = args.root.clone().unwrap_or_else(default_root);
    let root = match DeploymentRoot::open(&root_dir) {
        Ok(root) => root,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CANNOT_RUN;
        }
    };
    let s3 = match &request.bundle {
        Bundle::S3 { .. } => {
            let options = crate::aws::AwsOptions {
                profile: args.profile.clone(),
                region: args.region.clone(),
                ..Default::default()
            };
            match crate::aws::connect(&options).await {
                Ok(aws) => Some(crate::aws::s3::client(&aws.config)),
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::CANNOT_RUN;
                }
            }
        }
        Bundle::Local(_) => None,
    };
    let allowed = AllowedRoots::new(&args.allow_destination, root.path());
    let mut terminal = output::Terminal { quiet: args.quiet };
    let mut deployer = Deployer {
        root,
        allowed,
        s3,
        observer: &mut terminal,
    };
    let (summary, failure) = match deployer.deploy(&request).await {
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
    })
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
