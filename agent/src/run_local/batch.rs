//! Batch builds run locally: every member in its own copy of the source and its own
//! container, up to `--parallel` at once, with one summary for all.

use std::path::Path;
use std::sync::Arc;

use buildspec::buildspec::Batch;
use tokio::sync::watch;

use super::{RunLocalArgs, build_once, close_log, load_buildspec, open_log};
use crate::build::batch::{self, Member, Outcome};
use crate::build::{BatchMember, BuildRequest, BuildStatus, Stop, Summary};
use crate::logs::Maskers;

pub async fn run(
    args: Arc<RunLocalArgs>,
    request: BuildRequest,
    spec: &Batch,
    stop: watch::Receiver<Stop>,
    log_dir: &Path,
    maskers: &Maskers,
) -> Summary {
    let members = batch::plan(spec);
    let parallel = args
        .parallel
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!(
        "Batch {}: {} builds ({}), {parallel} at a time{}",
        request.build_id,
        members.len(),
        members
            .iter()
            .map(|m| m.identifier.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if spec.fast_fail { ", fast-fail" } else { "" }
    );
    let request = Arc::new(request);
    let log_dir = log_dir.to_path_buf();
    let outcomes = {
        let request = Arc::clone(&request);
        batch::run(
            members,
            parallel,
            spec.fast_fail,
            stop.clone(),
            move |member, stop| {
                let args = Arc::clone(&args);
                let request = Arc::clone(&request);
                let log_dir = log_dir.clone();
                let maskers = maskers.clone();
                async move { member_build(&args, &request, member, stop, &log_dir, &maskers).await }
            },
        )
        .await
    };
    let stopped = *stop.borrow() > Stop::Running;
    Summary {
        build_id: request.build_id.clone(),
        status: batch::status(&outcomes, stopped),
        phases: Vec::new(),
        exported_variables: Default::default(),
        artifacts: Vec::new(),
        reports: Vec::new(),
        builds: outcomes.into_iter().map(member_record).collect(),
    }
}

fn member_record(outcome: Outcome) -> BatchMember {
    let status = match (&outcome.summary, &outcome.skipped) {
        (Some(s), _) => s.status,
        (None, Some(reason)) if reason.contains("stopped") || reason.contains("fast-fail") => {
            BuildStatus::Stopped
        }
        (None, _) => BuildStatus::Failed,
    };
    BatchMember {
        identifier: outcome.member.identifier,
        status,
        message: outcome.skipped,
        build: outcome.summary,
    }
}

/// One member: a fresh copy of the source, its buildspec, its variables, its image.
async fn member_build(
    args: &RunLocalArgs,
    parent: &BuildRequest,
    member: Member,
    stop: watch::Receiver<Stop>,
    log_dir: &Path,
    maskers: &Maskers,
) -> Summary {
    let build_id = format!("local:{}", uuid::Uuid::new_v4());
    let failed = |message: String| {
        eprintln!("[{}] {message}", member.identifier);
        Summary {
            build_id: build_id.clone(),
            status: BuildStatus::Fault,
            phases: Vec::new(),
            exported_variables: Default::default(),
            artifacts: Vec::new(),
            reports: Vec::new(),
            builds: Vec::new(),
        }
    };
    let copy = match tempfile::Builder::new().prefix("agent-batch-").tempdir() {
        Ok(dir) => dir,
        Err(e) => return failed(format!("cannot make a copy of the source: {e}")),
    };
    let source = parent.source_dir.clone();
    let target = copy.path().to_path_buf();
    let copied = tokio::task::spawn_blocking(move || copy_tree(&source, &target)).await;
    if let Err(e) = copied
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return failed(format!("cannot copy the source: {e}"));
    }
    let (buildspec, buildspec_path) = match &member.buildspec {
        None => {
            let mut spec = parent.buildspec.clone();
            spec.batch = None;
            (spec, parent.buildspec_path.clone())
        }
        Some(relative) => {
            let path = copy.path().join(relative);
            match load_buildspec(&path, relative, super::output::color_stderr(args.color)) {
                Ok(spec) => (spec, relative.clone()),
                Err(message) => return failed(message),
            }
        }
    };
    let mut env = member.variables.clone();
    env.push((
        "CODEBUILD_BATCH_BUILD_IDENTIFIER".to_string(),
        member.identifier.clone(),
    ));
    env.extend(parent.env.iter().cloned());
    let request = BuildRequest {
        build_id: build_id.clone(),
        buildspec,
        buildspec_path,
        source_dir: copy.path().to_path_buf(),
        image: member.image.clone().or_else(|| parent.image.clone()),
        env,
        secrets: parent.secrets.clone(),
        resolved: parent.resolved.clone(),
        aws_env: parent.aws_env.clone(),
        timeout: parent.timeout,
        artifacts_dir: parent
            .artifacts_dir
            .as_ref()
            .map(|d| d.join(&member.identifier)),
        artifacts_s3: parent.artifacts_s3.clone(),
        logs_s3: parent.logs_s3.clone(),
        cache_dir: parent.cache_dir.clone(),
        cache_s3: parent.cache_s3.clone(),
        source_url: parent.source_url.clone(),
        initiator: parent.initiator.clone(),
    };
    let mut member_args = args.clone();
    if let Some(privileged) = member.privileged {
        member_args.privileged = privileged;
    }
    let log_path = log_dir.join(format!("{}.log", member.identifier));
    let (log, upload, tracker) = open_log(args, &request, Some(&member.identifier), &log_path);
    maskers.register(&log);
    let summary = match build_once(&member_args, &request, log.clone(), stop, &tracker, None).await
    {
        Ok(summary) => summary,
        Err(error) => {
            log.agent(&format!("Cannot run this build: {error}"));
            failed(error.to_string())
        }
    };
    close_log(&log, upload).await;
    summary
}

/// Copies the source tree, leaving out the agent's own `.agent` directory; symlinks are
/// copied as links.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || e.file_name() != ".agent")
    {
        let entry = entry.map_err(std::io::Error::other)?;
        let relative = entry
            .path()
            .strip_prefix(from)
            .map_err(std::io::Error::other)?;
        let target = to.join(relative);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
