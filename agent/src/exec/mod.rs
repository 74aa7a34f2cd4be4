//! Where a build's commands run: one trait, a Docker container or the host.
//!
//! An executor starts shells and reports their output as chunks; the build engine speaks
//! to those shells (see `build::shell`). Everything an executor creates is removed by
//! [`Executor::cleanup`], whatever happened to the build.

pub mod docker;
pub mod host;
pub mod owner;

use std::future::Future;
use std::pin::Pin;

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

/// How long a shell's output is still read after the shell itself ended: enough for what it
/// printed, and no wait for a background process that keeps the stream open.
pub const OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// How to start one shell.
#[derive(Debug, Clone)]
pub struct ShellSpec {
    /// The shell and its arguments, e.g. `["/bin/sh", "-s"]`.
    pub argv: Vec<String>,
    /// The whole environment of the shell.
    pub env: Vec<(String, String)>,
    /// The working directory, as the shell sees paths.
    pub cwd: String,
    /// Run as this user instead of the executor's default.
    pub user: Option<String>,
}

/// A piece of what a shell printed.
#[derive(Debug)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The shell ended with this status; nothing follows.
    Exited(i64),
}

/// A running shell: its standard input, and everything it prints, in order per stream.
pub struct ShellHandle {
    /// Behind a lock only so a build can be shared between tasks; `get_mut` reaches it.
    pub stdin: tokio::sync::Mutex<Pin<Box<dyn AsyncWrite + Send>>>,
    pub output: mpsc::Receiver<Chunk>,
}

impl ShellHandle {
    pub fn new(stdin: Pin<Box<dyn AsyncWrite + Send>>, output: mpsc::Receiver<Chunk>) -> Self {
        ShellHandle {
            stdin: tokio::sync::Mutex::new(stdin),
            output,
        }
    }
}

/// Signals an executor can send to every process of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start the shell `{shell}`: {reason}")]
    Spawn { shell: String, reason: String },
    #[error("user `{0}` does not exist where the build runs")]
    NoSuchUser(String),
    #[error("run-as `{0}` needs the agent to run as root on the host executor")]
    RunAsNeedsRoot(String),
    #[error("the Docker engine is not reachable: {0}")]
    DockerUnavailable(String),
    #[error("image `{image}` is not available: {reason}")]
    ImageMissing { image: String, reason: String },
    #[error("Docker: {0}")]
    Docker(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a command ended, beyond its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Killed by the environment's limits (the memory limit's OOM killer); later commands
    /// can still run.
    Killed(String),
    /// The environment itself is gone (the container was stopped or removed from outside):
    /// nothing more can run in it.
    Lost(String),
}

/// Runs shells for one build.
pub trait Executor: Send + Sync {
    /// The primary source directory as commands see it (`CODEBUILD_SRC_DIR`).
    fn src_dir(&self) -> &str;

    /// Secondary sources as commands see them: identifier → path.
    fn secondary_dirs(&self) -> &[(String, String)];

    /// The host directories the build's sources are in, primary first: the only places
    /// artifacts and reports may be collected from.
    fn source_roots(&self) -> Vec<std::path::PathBuf>;

    /// The host path of a path as the build sees it, when it lies in a source directory.
    fn host_path(&self, path: &str) -> Option<std::path::PathBuf> {
        let dirs = std::iter::once(self.src_dir())
            .chain(self.secondary_dirs().iter().map(|(_, d)| d.as_str()));
        for (dir, root) in dirs.zip(self.source_roots()) {
            let rest = if path == dir {
                Some("")
            } else {
                path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
            };
            if let Some(rest) = rest {
                return Some(if rest.is_empty() {
                    root
                } else {
                    root.join(rest)
                });
            }
        }
        None
    }

    /// Variables the environment itself defines (an image's `ENV`), lowest precedence.
    fn base_env(&self) -> &[(String, String)];

    /// Starts a shell.
    fn start_shell(
        &self,
        spec: ShellSpec,
    ) -> impl Future<Output = Result<ShellHandle, ExecError>> + Send;

    /// Writes a tar of `path` (entries named from its last component on) to `dest`; false
    /// when there is nothing at `path`.
    fn archive_path(
        &self,
        path: &str,
        dest: &std::path::Path,
    ) -> impl Future<Output = Result<bool, ExecError>> + Send;

    /// Unpacks an archive made by [`Executor::archive_path`] into the directory `parent`.
    fn restore_path(
        &self,
        archive: &std::path::Path,
        parent: &str,
    ) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// More about why a command ended with `exit_code` than the status says, when the
    /// environment knows it.
    fn explain_exit(&self, exit_code: i64) -> impl Future<Output = Option<Ending>> + Send {
        let _ = exit_code;
        std::future::ready(None)
    }

    /// Sends `signal` to every process of the build.
    fn signal_all(&self, signal: Signal) -> impl Future<Output = ()> + Send;

    /// Removes everything the executor created.
    fn cleanup(&self) -> impl Future<Output = ()> + Send;
}
