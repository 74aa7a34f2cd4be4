//! The directory a local build runs in: a copy of the engineer's source (the default), or
//! the source itself with `--bind`, the build then running as the directory's owner. Either
//! way the source is left as its owner had it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use buildspec::{Span, Spanned};

use super::args::{ExecutorKind, RunLocalArgs};
use crate::build::BuildRequest;
use crate::source::local;

/// A copy slower than this is reported with its size and time.
const SLOW_COPY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Build in a copy of the source (run-local's default).
    Copy,
    /// Build in the source itself, as its owner (`--bind`).
    Bind,
    /// Build in the directory given, which is the agent's own (the daemon's workspace, an
    /// S3 source unpacked into a temporary directory).
    InPlace,
}

pub struct Workspace {
    /// The project's state directory (logs, artifacts, cache).
    pub state: PathBuf,
    /// What the build's log says first: which directory is the source, and how it is used.
    pub notes: Vec<String>,
    /// Give every file of the build's directory to this uid:gid before the end.
    pub chown: Option<(u32, u32)>,
    copy: Option<tempfile::TempDir>,
}

impl Workspace {
    /// Sets the request up to run in the mode asked for: copies the source, or arranges
    /// for the build to run as the source's owner.
    pub async fn prepare(
        args: &RunLocalArgs,
        request: &mut BuildRequest,
        mode: Mode,
        mut notes: Vec<String>,
    ) -> Result<Workspace, String> {
        let original = request.source_dir.clone();
        let state = super::state::project_dir(&original);
        let mut first = Vec::new();
        let mut chown = None;
        let mut copy = None;
        // A batch builds every member in a copy of its own: nothing to copy first, mount or
        // give back.
        let batch = request.buildspec.batch.is_some();
        if batch && mode == Mode::Bind {
            notes.push("Note: --bind does not apply to a batch".to_string());
        }
        let mode = if batch { Mode::InPlace } else { mode };
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        match mode {
            Mode::InPlace if batch => {
                first.push(format!(
                    "Source directory: {} (each member of the batch builds in its own copy; the directory itself is not changed)",
                    original.display()
                ));
            }
            Mode::InPlace => {
                first.push(format!("Source directory: {}", original.display()));
            }
            Mode::Copy => {
                let dir = tempfile::Builder::new()
                    .prefix("agent-source-")
                    .tempdir()
                    .map_err(|e| format!("cannot make a directory for the source's copy: {e}"))?;
                let started = Instant::now();
                let (from, to) = (original.clone(), dir.path().to_path_buf());
                let copied = tokio::task::spawn_blocking(move || local::copy_tree(&from, &to))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| {
                        format!(
                            "cannot copy the source {} to {}: {e}",
                            original.display(),
                            dir.path().display()
                        )
                    })?;
                first.push(format!(
                    "Source directory: {} (the build runs in a copy, {}; the directory itself is not changed; --bind builds in it)",
                    original.display(),
                    dir.path().display()
                ));
                let took = started.elapsed();
                if took > SLOW_COPY {
                    first.push(format!(
                        "Copied the source: {} files, {} in {:.1} s",
                        copied.files,
                        local::size_text(copied.bytes),
                        took.as_secs_f64()
                    ));
                }
                // What a container writes there as root must be removable by this user.
                if args.executor == ExecutorKind::Docker && euid != 0 {
                    chown = Some((euid, egid));
                }
                request.source_dir = dir.path().to_path_buf();
                copy = Some(dir);
            }
            Mode::Bind => {
                let (uid, gid) = local::owner(&original)
                    .map_err(|e| format!("source directory {}: {e}", original.display()))?;
                let run_as = match args.executor {
                    // The image need not know the user: Docker takes numbers.
                    ExecutorKind::Docker => Some(format!("{uid}:{gid}")),
                    ExecutorKind::Host if uid == euid => None,
                    ExecutorKind::Host if euid == 0 => nix::unistd::User::from_uid(uid.into())
                        .ok()
                        .flatten()
                        .map(|u| u.name),
                    ExecutorKind::Host => {
                        notes.push(format!(
                            "Note: the build runs as you (uid {euid}), not as the source directory's owner (uid {uid}): switching users needs root"
                        ));
                        None
                    }
                };
                let who = match (&request.buildspec.run_as, &run_as) {
                    (Some(user), _) => format!("as the buildspec's run-as user `{}`", user.value),
                    (None, Some(_)) => format!("as the directory's owner, {uid}:{gid}"),
                    (None, None) => format!("as {uid}:{gid}, the directory's owner"),
                };
                if request.buildspec.run_as.is_none()
                    && uid != 0
                    && let Some(user) = run_as
                {
                    request.buildspec.run_as = Some(Spanned::new(user, Span::default()));
                    // A uid the image does not know has `/` for a home, which it cannot
                    // write: tools that keep things in $HOME (pip, npm) get /tmp instead.
                    let has_home = request
                        .buildspec
                        .env
                        .variables
                        .iter()
                        .any(|v| v.name.value == "HOME")
                        || request.env.iter().any(|(k, _)| k == "HOME");
                    if args.executor == ExecutorKind::Docker && !has_home {
                        request
                            .env
                            .insert(0, ("HOME".to_string(), "/tmp".to_string()));
                    }
                }
                first.push(format!(
                    "Source directory: {} (mounted, --bind: the build runs in it {who}; its files are given back to {uid}:{gid} at the end)",
                    original.display()
                ));
                if args.executor == ExecutorKind::Docker || euid == 0 {
                    chown = Some((uid, gid));
                }
            }
        }
        first.append(&mut notes);
        Ok(Workspace {
            state,
            notes: first,
            chown,
            copy,
        })
    }

    /// Removes the copy, if any; says so when that fails.
    pub fn remove(self) {
        if let Some(copy) = self.copy {
            let path = copy.path().to_path_buf();
            if let Err(e) = copy.close() {
                eprintln!(
                    "warning: cannot remove the source's copy {}: {e}",
                    path.display()
                );
            }
        }
    }
}
