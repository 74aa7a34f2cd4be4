//! Commands in local shells on the host. All shells of a build share one process group, so
//! a timeout or Ctrl-C reaches every process the build started.
//!
//! A process may leave that group (`setsid`, a double fork) and ignore SIGTERM; it must
//! still not outlive the build. The agent makes itself a child subreaper, so such orphans
//! are reparented to it rather than to init, and marks every build shell's environment with
//! a per-build random value; at cleanup every descendant of the build's shells and every
//! process carrying the mark is killed and the orphans it adopted are reaped (see [`sweep`]). Where
//! the agent can create a cgroup v2 below its own, each shell first moves itself into a
//! per-build cgroup, which cleanup kills as a whole before the sweep.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

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
    /// The value of [`MARK_VAR`] in every shell of this build.
    mark: String,
    /// The pids the executor spawned itself (the leader, the shells): tokio reaps those.
    spawned: Arc<StdMutex<HashSet<i32>>>,
    /// The per-build cgroup v2, when the agent may create one.
    cgroup: Option<BuildCgroup>,
    /// Reaps orphans reparented to the agent while the build runs.
    reaper: StdMutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The variable that marks every process of a build, whatever it did to its session.
pub const MARK_VAR: &str = "AGENT_BUILD_MARK";

/// The host builds this process runs now (a batch runs several): each one's mark and the
/// shells it spawned, so that one build's sweep leaves the others' processes alone.
type Live = StdMutex<HashMap<String, Arc<StdMutex<HashSet<i32>>>>>;
static LIVE: std::sync::LazyLock<Live> = std::sync::LazyLock::new(Live::default);

/// The marks and spawned shells of the other host builds running in this process.
fn others(mark: &str) -> (Vec<String>, HashSet<i32>) {
    let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    let mut marks = Vec::new();
    let mut shells = HashSet::new();
    for (other, spawned) in live {
        if other != mark {
            marks.push(other);
            shells.extend(spawned.lock().map(|s| s.clone()).unwrap_or_default());
        }
    }
    (marks, shells)
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
        // Orphans of the build (a daemonized process) come back to the agent, not init.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                "cannot become a child subreaper ({e}); the sweep at the end of the build looks for the build's mark only"
            );
        }
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let spawned = Arc::new(StdMutex::new(HashSet::from([group.as_raw()])));
        if let Ok(mut live) = LIVE.lock() {
            live.insert(mark.clone(), Arc::clone(&spawned));
        }
        let reaper = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(reap_orphans(Arc::clone(&spawned))));
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
            cgroup: BuildCgroup::create(&mark),
            mark,
            spawned,
            reaper: StdMutex::new(reaper),
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
        let mut command = match &self.cgroup {
            // The shell moves itself into the build's cgroup before it runs anything, so
            // nothing it starts is ever outside; if the move fails the sweep still applies.
            Some(cgroup) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("{ echo 0 >\"$0\"; } 2>/dev/null; exec \"$@\"")
                    .arg(cgroup.dir.join("cgroup.procs"))
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(MARK_VAR, &self.mark)
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
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
            && let Ok(mut spawned) = self.spawned.lock()
        {
            spawned.insert(pid);
        }
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
        if let Some(reaper) = self.reaper.lock().ok().and_then(|mut r| r.take()) {
            reaper.abort();
        }
        let mark = self.mark.clone();
        let spawned = self.spawned.lock().map(|s| s.clone()).unwrap_or_default();
        let cgroup = self.cgroup.clone();
        let swept = tokio::task::spawn_blocking(move || {
            if let Some(cgroup) = &cgroup {
                cgroup.kill_all();
            }
            let left = sweep(&mark, &spawned);
            if let Some(cgroup) = &cgroup {
                cgroup.remove();
            }
            left
        })
        .await;
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&self.mark);
        }
        match swept {
            Ok(left) if !left.is_empty() => {
                tracing::warn!(pids = ?left, "processes of the build still alive after the sweep");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("the sweep of the build's processes failed: {e}"),
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

/// One process as `/proc` shows it.
struct ProcEntry {
    ppid: i32,
    zombie: bool,
}

/// Every process in `/proc` with its parent and whether it is a zombie.
fn processes() -> HashMap<i32, ProcEntry> {
    let mut all = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let Some(ppid) = fields.next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        all.insert(
            pid,
            ProcEntry {
                ppid,
                zombie: state == "Z" || state == "X",
            },
        );
    }
    all
}

/// Whether `pid` descends from `ancestor` through the parent chain.
fn descends_from(all: &HashMap<i32, ProcEntry>, mut pid: i32, ancestor: i32) -> bool {
    for _ in 0..4096 {
        let Some(entry) = all.get(&pid) else {
            return false;
        };
        if entry.ppid == ancestor {
            return true;
        }
        if entry.ppid <= 1 {
            return false;
        }
        pid = entry.ppid;
    }
    false
}

/// Whether the environment of `pid` holds `MARK_VAR=mark` (unreadable: no).
fn carries_mark(pid: i32, mark: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{MARK_VAR}={mark}");
    environ.split(|b| *b == 0).any(|e| e == wanted.as_bytes())
}

/// Reaps the zombies among the agent's children that it did not spawn itself (orphans the
/// subreaper adopted); the ones it spawned are tokio's to reap.
fn reap_adopted(
    all: &HashMap<i32, ProcEntry>,
    me: i32,
    spawned: &HashSet<i32>,
    only: Option<&HashSet<i32>>,
) {
    for (pid, entry) in all {
        if entry.ppid == me
            && entry.zombie
            && !spawned.contains(pid)
            && only.is_none_or(|o| o.contains(pid))
        {
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(*pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// Kills every process of the build, again until none is left, and reaps the adopted ones
/// it killed: each descendant of its shells, each process carrying its mark, and each
/// other descendant of the agent (an orphan it adopted as a subreaper, even one that
/// emptied its environment) that belongs to no other host build running in this process
/// (a batch's members keep theirs). Returns the pids still alive after about two seconds.
pub fn sweep(mark: &str, spawned: &HashSet<i32>) -> Vec<i32> {
    let me = std::process::id().cast_signed();
    let (other_marks, other_shells) = others(mark);
    let mut left = Vec::new();
    let mut killed = HashSet::new();
    for round in 0..100 {
        let all = processes();
        reap_adopted(&all, me, spawned, Some(&killed));
        let ours = |pid: i32| {
            let under = |shells: &HashSet<i32>| {
                shells.contains(&pid) || shells.iter().any(|s| descends_from(&all, pid, *s))
            };
            if under(spawned) || carries_mark(pid, mark) {
                return true;
            }
            descends_from(&all, pid, me)
                && !under(&other_shells)
                && !other_marks.iter().any(|m| carries_mark(pid, m))
        };
        left = all
            .iter()
            .filter(|(pid, entry)| **pid != me && !entry.zombie && ours(**pid))
            .map(|(pid, _)| *pid)
            .collect();
        killed.extend(left.iter().copied());
        if left.is_empty() {
            break;
        }
        if round > 0 {
            tracing::debug!(pids = ?left, "killing the build's processes that left its group");
        }
        for pid in &left {
            let _ = signal::kill(Pid::from_raw(*pid), NixSignal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    left
}

/// Reaps, while the build runs, the orphans the agent adopted as a subreaper once they
/// end. A zombie child is reaped only when seen twice, a second apart, so that a child the
/// agent spawned elsewhere is left to the code waiting for it.
async fn reap_orphans(spawned: Arc<StdMutex<HashSet<i32>>>) {
    let me = std::process::id().cast_signed();
    let mut seen: HashSet<i32> = HashSet::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mine = spawned.lock().map(|s| s.clone()).unwrap_or_default();
        let previous = std::mem::take(&mut seen);
        let task = tokio::task::spawn_blocking(move || {
            let all = processes();
            reap_adopted(&all, me, &mine, Some(&previous));
            all.into_iter()
                .filter(|(_, e)| e.ppid == me && e.zombie)
                .map(|(pid, _)| pid)
                .collect::<HashSet<i32>>()
        });
        if let Ok(zombies) = task.await {
            seen = zombies;
        }
    }
}

/// A cgroup v2 made for one build below the agent's own cgroup. Killing it ends every
/// process in it, whatever their session or parent.
#[derive(Clone)]
struct BuildCgroup {
    dir: PathBuf,
}

impl BuildCgroup {
    /// Creates the build's cgroup when the unified hierarchy is mounted at /sys/fs/cgroup
    /// and the agent may create a child of its own cgroup (a delegated subtree, e.g.
    /// `Delegate=yes`); None otherwise, and the sweep alone applies.
    fn create(mark: &str) -> Option<BuildCgroup> {
        let root = Path::new("/sys/fs/cgroup");
        if !root.join("cgroup.controllers").exists() {
            return None;
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let relative = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = root
            .join(relative.trim_start_matches('/'))
            .join(format!("agent-build-{mark}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => Some(BuildCgroup { dir }),
            Err(e) => {
                tracing::debug!(
                    "no cgroup for the build ({}: {e}); the sweep applies",
                    dir.display()
                );
                None
            }
        }
    }

    /// Kills every process in the cgroup: `cgroup.kill` (Linux 5.14+), else each pid
    /// listed in `cgroup.procs` until it is empty.
    fn kill_all(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = signal::kill(Pid::from_raw(pid), NixSignal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes the (empty) cgroup.
    fn remove(&self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!("cannot remove the build's cgroup {}", self.dir.display());
    }
}
