//! Commands in local shells on the host. All shells of a build share one process group, so
//! a timeout or Ctrl-C reaches every process the build started.

use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{self, Signal as NixSignal};
use nix::unistd::{Pid, User};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc};

use super::{Chunk, ExecError, Executor, ShellHandle, ShellSpec, Signal};

pub struct HostExecutor {
    roots: Vec<std::path::PathBuf>,
    src_dir: String,
    secondary: Vec<(String, String)>,
    base_env: Vec<(String, String)>,
    /// Holds the process group open for the whole build; it exits when its stdin closes,
    /// which happens when the agent goes away, whatever the reason.
    leader: Mutex<Option<Child>>,
    group: Pid,
}

impl HostExecutor {
    pub fn new(
        src_dir: &Path,
        secondary: &[(String, std::path::PathBuf)],
    ) -> Result<Self, ExecError> {
        // The leader ignores TERM so that stopping the running command leaves the group in
        // place for the `finally` shells; KILL at cleanup ends it.
        let leader = Command::new("/bin/sh")
            .args(["-c", "trap '' TERM INT HUP; exec cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Spawn {
                shell: "cat".into(),
                reason: e.to_string(),
            })?;
        let pid = leader.id().ok_or_else(|| ExecError::Spawn {
            shell: "cat".into(),
            reason: "it exited at once".into(),
        })?;
        let group = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        Ok(HostExecutor {
            roots: std::iter::once(src_dir.to_path_buf())
                .chain(secondary.iter().map(|(_, p)| p.clone()))
                .collect(),
            src_dir: src_dir.display().to_string(),
            secondary: secondary
                .iter()
                .map(|(id, p)| (id.clone(), p.display().to_string()))
                .collect(),
            base_env: std::env::vars()
                .filter(|(k, _)| !is_agent_credential(k))
                .collect(),
            leader: Mutex::new(Some(leader)),
            group,
        })
    }
}

impl Executor for HostExecutor {
    fn src_dir(&self) -> &str {
        &self.src_dir
    }

    fn secondary_dirs(&self) -> &[(String, String)] {
        &self.secondary
    }

    fn base_env(&self) -> &[(String, String)] {
        &self.base_env
    }

    fn source_roots(&self) -> Vec<std::path::PathBuf> {
        self.roots.clone()
    }

    async fn start_shell(&self, spec: ShellSpec) -> Result<ShellHandle, ExecError> {
        let (program, args) = spec.argv.split_first().ok_or_else(|| ExecError::Spawn {
            shell: String::new(),
            reason: "no shell given".into(),
        })?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(self.group.as_raw())
            .kill_on_drop(true);
        if let Some(name) = &spec.user {
            if !nix::unistd::geteuid().is_root() {
                return Err(ExecError::RunAsNeedsRoot(name.clone()));
            }
            let user = User::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| ExecError::NoSuchUser(name.clone()))?;
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            command.env("HOME", user.dir.display().to_string());
            command.env("USER", name);
        }
        tracing::debug!(shell = %program, user = ?spec.user, cwd = %spec.cwd, "starting a build shell");
        let mut child = command.spawn().map_err(|e| ExecError::Spawn {
            shell: program.clone(),
            reason: e.to_string(),
        })?;
        let stdin = child.stdin.take().ok_or_else(|| ExecError::Spawn {
            shell: program.clone(),
            reason: "no stdin".into(),
        })?;
        let (tx, rx) = mpsc::channel(64);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        tokio::spawn(async move {
            let out = pump(stdout, tx.clone(), Chunk::Stdout);
            let err = pump(stderr, tx.clone(), Chunk::Stderr);
            let pumps = async { tokio::join!(out, err) };
            tokio::pin!(pumps);
            let status = tokio::select! {
                _ = &mut pumps => child.wait().await,
                status = child.wait() => {
                    // A background process may hold the pipes open: take what the shell
                    // printed, but do not wait for that process.
                    let _ = tokio::time::timeout(super::OUTPUT_GRACE, &mut pumps).await;
                    status
                }
            };
            let code = status.ok().map_or(-1, exit_code);
            let _ = tx.send(Chunk::Exited(code)).await;
        });
        Ok(ShellHandle::new(Box::pin(stdin), rx))
    }

    async fn archive_path(&self, path: &str, dest: &Path) -> Result<bool, ExecError> {
        let source = std::path::PathBuf::from(path);
        let dest = dest.to_path_buf();
        let task = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let Ok(meta) = std::fs::symlink_metadata(&source) else {
                return Ok(false);
            };
            let name = source
                .file_name()
                .map_or_else(|| std::ffi::OsString::from("root"), |n| n.to_os_string());
            let mut builder =
                tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(&dest)?));
            builder.follow_symlinks(false);
            if meta.is_dir() {
                builder.append_dir_all(&name, &source)?;
            } else {
                builder.append_path_with_name(&source, &name)?;
            }
            builder
                .into_inner()?
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            Ok(true)
        });
        task.await
            .map_err(|e| ExecError::Io(std::io::Error::other(e)))?
            .map_err(ExecError::Io)
    }

    async fn restore_path(&self, archive: &Path, parent: &str) -> Result<(), ExecError> {
        let archive = archive.to_path_buf();
        let parent = std::path::PathBuf::from(parent);
        let task = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&parent)?;
            // The tar crate refuses entries that would land outside `parent`.
            let mut reader =
                tar::Archive::new(std::io::BufReader::new(std::fs::File::open(&archive)?));
            reader.set_preserve_permissions(true);
            reader.set_overwrite(true);
            reader.unpack(&parent)
        });
        task.await
            .map_err(|e| ExecError::Io(std::io::Error::other(e)))?
            .map_err(ExecError::Io)
    }

    async fn signal_all(&self, signal: Signal) {
        let sig = match signal {
            Signal::Term => NixSignal::SIGTERM,
            Signal::Kill => NixSignal::SIGKILL,
        };
        let _ = signal::killpg(self.group, sig);
    }

    async fn cleanup(&self) {
        let _ = signal::killpg(self.group, NixSignal::SIGKILL);
        if let Some(mut leader) = self.leader.lock().await.take() {
            let _ = leader.kill().await;
        }
    }
}

/// The agent's own AWS credentials never reach a build through the environment: a build
/// gets credentials only when asked for (a role or a profile), from the agent's endpoint.
fn is_agent_credential(name: &str) -> bool {
    AGENT_CREDENTIALS.contains(&name)
}

/// The variables through which the agent's own AWS credentials would reach a process.
pub const AGENT_CREDENTIALS: [&str; 9] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
];

/// A shell killed by a signal reports 128 + the signal, as shells do.
fn exit_code(status: std::process::ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

async fn pump<R: AsyncReadExt + Unpin>(
    reader: Option<R>,
    tx: mpsc::Sender<Chunk>,
    wrap: fn(Vec<u8>) -> Chunk,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(wrap(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}
