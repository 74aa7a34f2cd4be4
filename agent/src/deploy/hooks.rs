//! Runs one CodeDeploy lifecycle hook script on the host.
//!
//! The result codes, messages and the 2048-byte log tail follow the CodeDeploy
//! agent's hook executor so that existing tooling keeps understanding them.
//! Where the agent is known to misbehave, this module deliberately differs:
//! the whole process tree is stopped on timeout (not just the direct child),
//! output is streamed line by line while the script runs, `runas` does not go
//! through `su` (which needs a login shell and PAM), and background processes
//! that keep the output pipes open are named in the error.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, Uid, User};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

/// Size of [`ScriptOutcome::log_tail`], as CodeDeploy's `ScriptLog` keeps it.
pub const LOG_TAIL_LIMIT: usize = 2048;
/// Longest line handed to a [`LineSink`]; longer lines arrive in pieces.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long a timed-out process tree gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// SIGKILL cannot be ignored, so this only covers the kernel tearing processes down.
const KILL_SETTLE: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lets EOFs that raced with the exit notification be seen before calling the pipes open.
const FINAL_DRAIN: Duration = Duration::from_millis(20);
const READ_CHUNK: usize = 16 * 1024;
/// Stands in for "forever" where adding a caller-supplied duration would overflow.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const REDIRECT_HINT: &str =
    "start background processes with output redirected, e.g. `cmd > /dev/null 2>&1 < /dev/null &`";

/// Which output pipe of the script a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Receives each output line as it arrives (without the trailing newline; a
/// final partial line is delivered too; invalid UTF-8 replaced lossily).
pub trait LineSink: Send {
    fn line(&mut self, stream: Stream, line: &str);
}

impl LineSink for Vec<(Stream, String)> {
    fn line(&mut self, stream: Stream, line: &str) {
        self.push((stream, line.to_owned()));
    }
}

/// One hook script to run, already resolved against the unpacked revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptSpec {
    /// Absolute path of the script; a relative path is taken relative to `cwd`.
    pub script: PathBuf,
    /// The `location` as written in the appspec, used in messages.
    pub location: String,
    pub runas: Option<String>,
    pub sudo: bool,
    /// The deployment job's own variables: over the inherited environment, under the
    /// `runas` identity variables and `env`, so they never pass for CodeDeploy's.
    pub job_env: Vec<(String, String)>,
    /// Variables added on top of the inherited environment (LIFECYCLE_EVENT etc.).
    pub env: Vec<(String, String)>,
    /// Inherited variables to drop (the agent's own AWS credentials).
    pub remove_env: Vec<String>,
    /// Working directory; empty means the agent's own.
    pub cwd: PathBuf,
    /// The script's own timeout, already capped by the event's remaining budget.
    pub timeout: Duration,
    /// How long to wait, after the script exits, for its stdout/stderr to close.
    pub output_wait: Duration,
}

/// CodeDeploy's lifecycle event error codes, plus `OutputsLeftOpen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    Succeeded = 0,
    ScriptMissing = 1,
    ScriptNotExecutable = 2,
    ScriptTimedOut = 3,
    ScriptFailed = 4,
    UnknownError = 5,
    OutputsLeftOpen = 6,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Succeeded => "Success",
            ErrorCode::ScriptMissing => "ScriptMissing",
            ErrorCode::ScriptNotExecutable => "ScriptNotExecutable",
            ErrorCode::ScriptTimedOut => "ScriptTimedOut",
            ErrorCode::ScriptFailed => "ScriptFailed",
            ErrorCode::UnknownError => "UnknownError",
            ErrorCode::OutputsLeftOpen => "OutputsLeftOpen",
        }
    }

    pub fn code(&self) -> u8 {
        *self as u8
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptOutcome {
    pub code: ErrorCode,
    /// `None` if the script was killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// Empty on success; CodeDeploy's wording otherwise.
    pub message: String,
    /// The last output lines, `[stdout]…\n` / `[stderr]…\n`, at most [`LOG_TAIL_LIMIT`] bytes.
    pub log_tail: String,
    pub duration: Duration,
    /// Pid and command name of each process still holding an output pipe when
    /// the script exited without closing them (filled for `OutputsLeftOpen`,
    /// and for `ScriptFailed` when the failing script also left them open).
    pub lingering: Vec<(i32, String)>,
}

/// Why a running script is stopped from outside its own timeout (the deployment's time
/// limit, a stop): the error code the script reports, and the reason its message gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupt {
    pub code: ErrorCode,
    pub reason: String,
}

/// Runs the hook script described by `spec`, streaming its output to `sink`.
pub async fn run_script(spec: &ScriptSpec, sink: &mut dyn LineSink) -> ScriptOutcome {
    run_script_until(spec, sink, std::future::pending()).await
}

/// [`run_script`], stopped early when `interrupt` resolves: a running script's process
/// tree is stopped as on a timeout (TERM, then KILL); a script that already exited but
/// whose output is still held open is left to its holders, as for `OutputsLeftOpen`.
pub async fn run_script_until(
    spec: &ScriptSpec,
    sink: &mut dyn LineSink,
    interrupt: impl std::future::Future<Output = Interrupt> + Send,
) -> ScriptOutcome {
    let started = Instant::now();
    let early = |code, message| ScriptOutcome {
        code,
        exit_code: None,
        message,
        log_tail: String::new(),
        duration: started.elapsed(),
        lingering: Vec::new(),
    };

    let script = if spec.script.is_absolute() {
        spec.script.clone()
    } else {
        spec.cwd.join(&spec.script)
    };
    if !script.is_absolute() {
        // A bare name would be looked up on PATH by exec, running something else entirely.
        return early(
            ErrorCode::UnknownError,
            format!(
                "The script path {} for {} is not absolute",
                script.display(),
                spec.location
            ),
        );
    }
    if let Err((code, message)) = prepare_script(&script, &spec.location) {
        return early(code, message);
    }
    let launch = match plan_launch(spec, &script, nix::unistd::geteuid()) {
        Ok(launch) => launch,
        Err(message) => return early(ErrorCode::UnknownError, message),
    };
    if !spec.cwd.as_os_str().is_empty() && !spec.cwd.is_dir() {
        // Checked up front because exec would report it as a missing script.
        return early(
            ErrorCode::UnknownError,
            format!(
                "The working directory {} for {} does not exist",
                spec.cwd.display(),
                spec.location
            ),
        );
    }

    let mut child = match spawn_when_not_busy(|| launch.command(spec).spawn()).await {
        Ok(child) => child,
        Err(err) => {
            return early(ErrorCode::ScriptFailed, spawn_error_message(spec, &err));
        }
    };
    let spawned = Instant::now();
    let deadline = later(spawned, spec.timeout);
    let pid = child.id().and_then(|id| i32::try_from(id).ok());
    tracing::info!(
        location = %spec.location,
        pid,
        runas = spec.runas.as_deref(),
        "hook script started"
    );

    let mut pipes = Pipes::new(child.stdout.take(), child.stderr.take());
    let mut out = Collector::new(sink, launch.wrapper);
    let mut status: Option<ExitStatus> = None;
    let mut output_deadline: Option<Instant> = None;
    tokio::pin!(interrupt);

    let end = loop {
        if status.is_some() && !pipes.is_open() {
            break End::Exited;
        }
        tokio::select! {
            () = pipes.read_some(&mut out), if pipes.is_open() => {}
            waited = child.wait(), if status.is_none() => match waited {
                Ok(exit) => {
                    status = Some(exit);
                    output_deadline = Some(later(Instant::now(), spec.output_wait).min(deadline));
                }
                Err(err) => break End::WaitFailed(err),
            },
            () = sleep_until(deadline), if status.is_none() => break End::TimedOut,
            () = sleep_until(output_deadline.unwrap_or(deadline)), if status.is_some() => {
                break End::OutputsOpen;
            }
            why = &mut interrupt => break End::Interrupted(why),
        }
    };
    // Whether the tree is stopped: a script that exited has nothing of its own left, and
    // what still holds its output is often the service it just started.
    let exited = status.is_some();

    match &end {
        End::Exited => {}
        End::OutputsOpen => {
            pipes
                .pump_until(&mut out, Instant::now() + FINAL_DRAIN)
                .await
        }
        End::Interrupted(_) if exited => {
            pipes
                .pump_until(&mut out, Instant::now() + FINAL_DRAIN)
                .await
        }
        End::TimedOut | End::WaitFailed(_) | End::Interrupted(_) => {
            tracing::warn!(location = %spec.location, pid, "stopping hook script process tree");
            let reaped = terminate_tree(pid, &mut child, &mut pipes, &mut out).await;
            status = status.or(reaped);
        }
    }

    let open = pipes.open_streams();
    let lingering = match end {
        End::Exited | End::OutputsOpen if !open.is_empty() => pipe_holders(&pipes.open_links()),
        End::Interrupted(_) if exited && !open.is_empty() => pipe_holders(&pipes.open_links()),
        _ => Vec::new(),
    };
    // Lingering holders are left alone (often the service the hook just
    // started); only our read ends are closed.
    pipes.close(&mut out);

    let (code, exit_code, message) = match end {
        End::TimedOut => (
            ErrorCode::ScriptTimedOut,
            status.and_then(|s| s.code()),
            format!(
                "Script at specified location: {} failed to complete in {} seconds",
                spec.location,
                seconds(spec.timeout)
            ),
        ),
        End::Interrupted(why) => (
            why.code,
            status.and_then(|s| s.code()),
            format!("{} was stopped: {}", subject(spec), why.reason),
        ),
        End::WaitFailed(err) => (
            ErrorCode::UnknownError,
            status.and_then(|s| s.code()),
            format!("{} could not be waited for: {err}", subject(spec)),
        ),
        End::Exited | End::OutputsOpen => match status {
            Some(exit) if exit.code() == Some(0) && !open.is_empty() => (
                ErrorCode::OutputsLeftOpen,
                Some(0),
                left_open_message(&spec.location, &open, &lingering),
            ),
            Some(exit) if exit.code() == Some(0) => (ErrorCode::Succeeded, Some(0), String::new()),
            Some(exit) => failure(spec, exit, out.wrapper_error.as_deref()),
            None => (
                ErrorCode::UnknownError,
                None,
                format!("{} ended without an exit status", subject(spec)),
            ),
        },
    };

    let outcome = ScriptOutcome {
        code,
        exit_code,
        message,
        log_tail: out.tail.render(),
        duration: started.elapsed(),
        lingering,
    };
    tracing::info!(
        location = %spec.location,
        code = outcome.code.as_str(),
        exit_code = outcome.exit_code,
        duration_ms = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        "hook script finished"
    );
    outcome
}

enum End {
    Exited,
    OutputsOpen,
    TimedOut,
    Interrupted(Interrupt),
    WaitFailed(io::Error),
}

fn later(base: Instant, by: Duration) -> Instant {
    base.checked_add(by).unwrap_or_else(|| base + FAR_FUTURE)
}

/// "Script at specified location: X[ run as user U]", the start of CodeDeploy's failure messages.
fn subject(spec: &ScriptSpec) -> String {
    match &spec.runas {
        Some(user) => format!(
            "Script at specified location: {} run as user {user}",
            spec.location
        ),
        None => format!("Script at specified location: {}", spec.location),
    }
}

fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        duration.as_secs_f64().to_string()
    }
}

fn failure(
    spec: &ScriptSpec,
    exit: ExitStatus,
    wrapper_error: Option<&str>,
) -> (ErrorCode, Option<i32>, String) {
    let mut message = match (exit.code(), exit.signal()) {
        (Some(code), _) => format!("{} failed with exit code {code}", subject(spec)),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or("unknown signal", Signal::as_str);
            format!("{} was killed by signal {sig} ({name})", subject(spec))
        }
        (None, None) => format!("{} failed: {exit}", subject(spec)),
    };
    if let Some(diag) = wrapper_error {
        // The wrapper's own complaint (e.g. setpriv unable to exec, sudo wanting a
        // password) explains the exit code better than the code itself.
        message.push_str(&format!(" ({diag})"));
    }
    (ErrorCode::ScriptFailed, exit.code(), message)
}

fn left_open_message(location: &str, open: &[Stream], holders: &[(i32, String)]) -> String {
    let (which, pronoun) = match (
        open.contains(&Stream::Stdout),
        open.contains(&Stream::Stderr),
    ) {
        (true, true) => ("STDOUT and STDERR", "them"),
        (true, false) => ("STDOUT", "it"),
        _ => ("STDERR", "it"),
    };
    let list = if holders.is_empty() {
        "none found".to_owned()
    } else {
        holders
            .iter()
            .map(|(pid, comm)| format!("{pid} {comm}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "Script at specified location: {location} failed to close {which} \
         (processes still holding {pronoun}: {list}; {REDIRECT_HINT})"
    )
}

/// A script written a moment ago can be briefly "busy" (ETXTBSY): a process another thread
/// forked in that moment holds the writer's descriptor until its own exec. Tried again a
/// few times, about 150 ms in all, before the error counts.
async fn spawn_when_not_busy(mut spawn: impl FnMut() -> io::Result<Child>) -> io::Result<Child> {
    let mut pause = Duration::from_millis(5);
    for _ in 0..5 {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    spawn()
}

fn spawn_error_message(spec: &ScriptSpec, err: &io::Error) -> String {
    let hint = match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOEXEC) => " (missing #! line?)",
        Some(Errno::ENOENT) => " (is the interpreter named on its #! line installed?)",
        Some(Errno::EACCES) => {
            " (permission denied: check the execute bits of the script and its directories, \
             and that its filesystem is not mounted noexec)"
        }
        _ => "",
    };
    format!("{} could not be started: {err}{hint}", subject(spec))
}

/// Checks the script exists and makes it executable, as the agent does before running it.
fn prepare_script(script: &Path, location: &str) -> Result<(), (ErrorCode, String)> {
    let missing = format!("Script does not exist at specified location: {location}");
    let inspect_failed = |err: io::Error| {
        (
            ErrorCode::UnknownError,
            format!("Could not inspect the script at specified location: {location}: {err}"),
        )
    };
    let meta = match fs::symlink_metadata(script) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err((ErrorCode::ScriptMissing, missing));
        }
        Err(err) => return Err(inspect_failed(err)),
    };
    let meta = if meta.file_type().is_symlink() {
        match fs::metadata(script) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err((
                    ErrorCode::ScriptMissing,
                    format!("{missing} (it is a symbolic link to nothing)"),
                ));
            }
            Err(err) => return Err(inspect_failed(err)),
        }
    } else {
        meta
    };
    if meta.is_dir() {
        return Err((
            ErrorCode::ScriptMissing,
            format!("{missing} (a directory is there, not a script)"),
        ));
    }
    if !meta.is_file() {
        return Err((
            ErrorCode::ScriptMissing,
            format!("{missing} (it is not a regular file)"),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        fs::set_permissions(script, fs::Permissions::from_mode(mode | 0o111)).map_err(|err| {
            (
                ErrorCode::ScriptNotExecutable,
                format!(
                    "Unable to set script at specified location: {location} as executable ({err})"
                ),
            )
        })?;
        tracing::info!(location, "made hook script executable");
    }
    Ok(())
}

/// How to exec the script: directly, or through a wrapper that changes identity.
#[derive(Debug, PartialEq, Eq)]
struct Launch {
    program: PathBuf,
    args: Vec<PathBuf>,
    identity_env: Vec<(String, String)>,
    /// Fallback when setpriv is missing: std sets these ids itself.
    ids: Option<(u32, u32)>,
    /// Name the wrapper prefixes its own error messages with.
    wrapper: Option<&'static str>,
}

impl Launch {
    fn direct(script: &Path) -> Self {
        Launch {
            program: script.to_path_buf(),
            args: Vec::new(),
            identity_env: Vec::new(),
            ids: None,
            wrapper: None,
        }
    }

    fn command(&self, spec: &ScriptSpec) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so a timeout can signal everything the script started.
            .process_group(0)
            .kill_on_drop(true);
        if !spec.cwd.as_os_str().is_empty() {
            cmd.current_dir(&spec.cwd);
        }
        for name in &spec.remove_env {
            cmd.env_remove(name);
        }
        for (name, value) in spec
            .job_env
            .iter()
            .chain(&self.identity_env)
            .chain(&spec.env)
        {
            cmd.env(name, value);
        }
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

fn plan_launch(spec: &ScriptSpec, script: &Path, euid: Uid) -> Result<Launch, String> {
    let location = &spec.location;
    if let Some(name) = spec.runas.as_deref() {
        let user = match User::from_name(name) {
            Ok(Some(user)) => user,
            Ok(None) => {
                return Err(format!(
                    "The user {name} named in runas for {location} does not exist on this host"
                ));
            }
            Err(err) => {
                return Err(format!(
                    "Could not look up the user {name} named in runas for {location}: {err}"
                ));
            }
        };
        if user.uid != euid {
            if !euid.is_root() {
                return Err(format!(
                    "runas {name} for {location} needs the agent to run as root \
                     (it runs as uid {euid})"
                ));
            }
            return Ok(runas_launch(script, &user, find_in_path("setpriv")));
        }
    }
    if spec.sudo && !euid.is_root() {
        let sudo = find_in_path("sudo").ok_or_else(|| {
            format!("sudo is requested for {location} but sudo is not installed on PATH")
        })?;
        return Ok(Launch {
            program: sudo,
            // -n: a password prompt would hang until the timeout with stdin at /dev/null.
            args: vec!["-n".into(), "--".into(), script.to_path_buf()],
            identity_env: Vec::new(),
            ids: None,
            wrapper: Some("sudo"),
        });
    }
    Ok(Launch::direct(script))
}

fn runas_launch(script: &Path, user: &User, setpriv: Option<PathBuf>) -> Launch {
    let shell = if user.shell.as_os_str().is_empty() {
        "/bin/sh".to_owned()
    } else {
        user.shell.to_string_lossy().into_owned()
    };
    let identity_env = vec![
        ("HOME".to_owned(), user.dir.to_string_lossy().into_owned()),
        ("USER".to_owned(), user.name.clone()),
        ("LOGNAME".to_owned(), user.name.clone()),
        ("SHELL".to_owned(), shell),
    ];
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    match setpriv {
        // setpriv gives the full supplementary group list (initgroups) like su,
        // without PAM or a password, and works for users whose shell is nologin.
        Some(setpriv) => Launch {
            program: setpriv,
            args: vec![
                format!("--reuid={uid}").into(),
                format!("--regid={gid}").into(),
                "--init-groups".into(),
                "--".into(),
                script.to_path_buf(),
            ],
            identity_env,
            ids: None,
            wrapper: Some("setpriv"),
        },
        None => {
            tracing::warn!(
                user = %user.name,
                "setpriv not found on PATH; running hook without the user's supplementary groups"
            );
            Launch {
                ids: Some((uid, gid)),
                identity_env,
                ..Launch::direct(script)
            }
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        // Relative entries would make the choice depend on the working directory.
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Routes lines to the caller's sink and keeps the log tail.
struct Collector<'a> {
    sink: &'a mut dyn LineSink,
    tail: LogTail,
    wrapper_prefix: Option<String>,
    stderr_seen: bool,
    wrapper_error: Option<String>,
}

impl<'a> Collector<'a> {
    fn new(sink: &'a mut dyn LineSink, wrapper: Option<&str>) -> Self {
        Collector {
            sink,
            tail: LogTail::default(),
            wrapper_prefix: wrapper.map(|name| format!("{name}: ")),
            stderr_seen: false,
            wrapper_error: None,
        }
    }

    fn emit(&mut self, stream: Stream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        if stream == Stream::Stderr && !self.stderr_seen {
            self.stderr_seen = true;
            // A wrapper that fails does so before the script can print anything.
            if let Some(prefix) = &self.wrapper_prefix
                && text.starts_with(prefix.as_str())
            {
                self.wrapper_error = Some(text.clone().into_owned());
            }
        }
        self.sink.line(stream, &text);
        self.tail.push(stream, &text);
    }
}

/// CodeDeploy's `ScriptLog`: whole tagged lines, oldest dropped first.
#[derive(Default)]
struct LogTail {
    entries: VecDeque<String>,
    bytes: usize,
}

impl LogTail {
    fn push(&mut self, stream: Stream, line: &str) {
        let entry = format!("[{}]{line}\n", stream.tag());
        if entry.len() > LOG_TAIL_LIMIT {
            let mut cut = entry.len() - LOG_TAIL_LIMIT;
            while !entry.is_char_boundary(cut) {
                cut += 1;
            }
            self.entries.clear();
            let kept = entry[cut..].to_owned();
            self.bytes = kept.len();
            self.entries.push_back(kept);
            return;
        }
        self.bytes += entry.len();
        self.entries.push_back(entry);
        while self.bytes > LOG_TAIL_LIMIT {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn render(&self) -> String {
        self.entries.iter().map(String::as_str).collect()
    }
}

/// Splits one stream into lines, never buffering more than [`MAX_LINE_BYTES`].
struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
    /// The current line already had pieces delivered.
    continued: bool,
}

impl LineSplitter {
    fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
            continued: false,
        }
    }

    fn feed(&mut self, mut data: &[u8], out: &mut Collector<'_>) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    self.append(&data[..pos], out);
                    self.end_line(out);
                    data = &data[pos + 1..];
                }
                None => {
                    self.append(data, out);
                    data = &[];
                }
            }
        }
    }

    fn append(&mut self, mut segment: &[u8], out: &mut Collector<'_>) {
        while !segment.is_empty() {
            let room = MAX_LINE_BYTES.saturating_sub(self.pending.len());
            let take = room.min(segment.len());
            self.pending.extend_from_slice(&segment[..take]);
            segment = &segment[take..];
            if self.pending.len() >= MAX_LINE_BYTES {
                let cut = utf8_cut(&self.pending);
                let rest = self.pending.split_off(cut);
                out.emit(self.stream, &self.pending);
                self.pending = rest;
                self.continued = true;
            }
        }
    }

    fn end_line(&mut self, out: &mut Collector<'_>) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        // A line that filled its last piece exactly must not produce an extra empty line.
        if !(self.pending.is_empty() && self.continued) {
            out.emit(self.stream, &self.pending);
        }
        self.pending.clear();
        self.continued = false;
    }

    fn finish(&mut self, out: &mut Collector<'_>) {
        if !self.pending.is_empty() {
            out.emit(self.stream, &self.pending);
        }
        self.pending.clear();
        self.continued = false;
    }
}

/// Where to cut `buf` so that a UTF-8 sequence at its end is not split.
fn utf8_cut(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=len.min(4) {
        let byte = buf[len - back];
        if byte & 0xC0 != 0x80 {
            let needed = match byte {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if needed > back { len - back } else { len };
        }
    }
    len
}

/// The script's two output pipes and their line splitters.
struct Pipes {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out_lines: LineSplitter,
    err_lines: LineSplitter,
    out_buf: Vec<u8>,
    err_buf: Vec<u8>,
    /// `pipe:[inode]` as the pipes appear under /proc/<pid>/fd.
    out_link: Option<String>,
    err_link: Option<String>,
}

impl Pipes {
    fn new(stdout: Option<ChildStdout>, stderr: Option<ChildStderr>) -> Self {
        Pipes {
            out_link: stdout.as_ref().and_then(pipe_link),
            err_link: stderr.as_ref().and_then(pipe_link),
            stdout,
            stderr,
            out_lines: LineSplitter::new(Stream::Stdout),
            err_lines: LineSplitter::new(Stream::Stderr),
            out_buf: vec![0; READ_CHUNK],
            err_buf: vec![0; READ_CHUNK],
        }
    }

    fn is_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    fn open_streams(&self) -> Vec<Stream> {
        let mut open = Vec::new();
        if self.stdout.is_some() {
            open.push(Stream::Stdout);
        }
        if self.stderr.is_some() {
            open.push(Stream::Stderr);
        }
        open
    }

    fn open_links(&self) -> Vec<String> {
        let out = self.stdout.as_ref().and(self.out_link.clone());
        let err = self.stderr.as_ref().and(self.err_link.clone());
        out.into_iter().chain(err).collect()
    }

    /// Reads one chunk from whichever pipe is ready. Cancel-safe: data is only
    /// consumed in the same poll that completes.
    async fn read_some(&mut self, out: &mut Collector<'_>) {
        let Pipes {
            stdout,
            stderr,
            out_lines,
            err_lines,
            out_buf,
            err_buf,
            ..
        } = self;
        tokio::select! {
            read = read_opt(stdout, out_buf) => absorb(read, stdout, out_lines, out_buf, out),
            read = read_opt(stderr, err_buf) => absorb(read, stderr, err_lines, err_buf, out),
        }
    }

    /// Stops reading, still delivering any unterminated last line.
    fn close(mut self, out: &mut Collector<'_>) {
        self.out_lines.finish(out);
        self.err_lines.finish(out);
    }

    async fn pump_until(&mut self, out: &mut Collector<'_>, until: Instant) {
        while self.is_open() {
            if timeout_at(until, self.read_some(out)).await.is_err() {
                break;
            }
        }
    }
}

async fn read_opt<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match pipe {
        Some(reader) => reader.read(buf).await,
        None => std::future::pending().await,
    }
}

fn absorb<R>(
    read: io::Result<usize>,
    pipe: &mut Option<R>,
    lines: &mut LineSplitter,
    buf: &[u8],
    out: &mut Collector<'_>,
) {
    match read {
        Ok(n) if n > 0 => lines.feed(&buf[..n.min(buf.len())], out),
        Ok(_) => {
            lines.finish(out);
            *pipe = None;
        }
        Err(err) => {
            tracing::warn!(stream = lines.stream.tag(), %err, "reading hook output failed");
            lines.finish(out);
            *pipe = None;
        }
    }
}

fn pipe_link<F: AsFd>(pipe: &F) -> Option<String> {
    nix::sys::stat::fstat(pipe)
        .ok()
        .map(|stat| format!("pipe:[{}]", stat.st_ino))
}

/// Processes (other than us) holding any of the given pipes, with their command names.
fn pipe_holders(links: &[String]) -> Vec<(i32, String)> {
    let me = std::process::id();
    let mut holders = Vec::new();
    for pid in proc_pids() {
        if u32::try_from(pid).is_ok_and(|pid| pid == me) {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|target| links.iter().any(|link| target.as_os_str() == link.as_str()))
        });
        if holds {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim_end().to_owned())
                .unwrap_or_default();
            holders.push((pid, comm));
        }
    }
    holders.sort_unstable();
    holders
}

fn proc_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Clone, Copy, Debug)]
struct ProcEntry {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    /// Start time in clock ticks since boot; tells a pid apart from a later reuse.
    start: u64,
    zombie: bool,
}

fn proc_entry(pid: i32) -> Option<ProcEntry> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields follow the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    Some(ProcEntry {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
        zombie: state == "Z" || state == "X",
    })
}

fn proc_table() -> Vec<ProcEntry> {
    proc_pids().into_iter().filter_map(proc_entry).collect()
}

/// The roots and everything below them, keyed by pid with their start times.
fn descendants(table: &[ProcEntry], roots: &[i32]) -> HashMap<i32, u64> {
    let mut children: HashMap<i32, Vec<&ProcEntry>> = HashMap::new();
    for entry in table {
        children.entry(entry.ppid).or_default().push(entry);
    }
    let by_pid: HashMap<i32, &ProcEntry> = table.iter().map(|entry| (entry.pid, entry)).collect();
    let mut found = HashMap::new();
    let mut seen = HashSet::new();
    let mut queue: VecDeque<i32> = roots.iter().copied().collect();
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some(entry) = by_pid.get(&pid) {
            found.insert(pid, entry.start);
        }
        for child in children.get(&pid).into_iter().flatten() {
            queue.push_back(child.pid);
        }
    }
    found
}

fn is_target(entry: &ProcEntry, pgid: i32, tracked: &HashMap<i32, u64>) -> bool {
    !entry.zombie && (entry.pgrp == pgid || tracked.get(&entry.pid) == Some(&entry.start))
}

fn signal_tree(pgid: i32, tracked: &HashMap<i32, u64>, sig: Signal) {
    let table = proc_table();
    if table
        .iter()
        .any(|entry| !entry.zombie && entry.pgrp == pgid)
    {
        let _ = signal::killpg(Pid::from_raw(pgid), sig);
    }
    for entry in &table {
        if tracked.get(&entry.pid) == Some(&entry.start) && !entry.zombie {
            let _ = signal::kill(Pid::from_raw(entry.pid), sig);
        }
    }
}

/// SIGTERM, then after [`TERM_GRACE`] SIGKILL, for the script's process group and
/// every descendant (including those that left the group with setsid).
async fn terminate_tree(
    pid: Option<i32>,
    child: &mut Child,
    pipes: &mut Pipes,
    out: &mut Collector<'_>,
) -> Option<ExitStatus> {
    let Some(pgid) = pid else {
        let _ = child.start_kill();
        return timeout(KILL_SETTLE, child.wait())
            .await
            .ok()
            .and_then(Result::ok);
    };
    // Taken before any signal: once the script dies its orphans are reparented
    // and can no longer be found by walking down from it.
    let mut tracked = descendants(&proc_table(), &[pgid]);
    signal_tree(pgid, &tracked, Signal::SIGTERM);

    let mut status = None;
    let grace_end = Instant::now() + TERM_GRACE;
    let mut killed = false;
    let mut settle_end = grace_end;
    loop {
        if status.is_none() {
            status = child.try_wait().ok().flatten();
        }
        let table = proc_table();
        if !table.iter().any(|entry| is_target(entry, pgid, &tracked)) {
            break;
        }
        let now = Instant::now();
        if killed && now >= settle_end {
            tracing::warn!(pgid, "hook processes survived SIGKILL");
            break;
        }
        if !killed && now >= grace_end {
            // Anything forked during the grace period hangs below a tracked process.
            let alive: Vec<i32> = table
                .iter()
                .filter(|entry| is_target(entry, pgid, &tracked))
                .map(|entry| entry.pid)
                .collect();
            tracked.extend(descendants(&table, &alive));
            signal_tree(pgid, &tracked, Signal::SIGKILL);
            killed = true;
            settle_end = now + KILL_SETTLE;
        }
        let tick =
            (Instant::now() + POLL_INTERVAL).min(if killed { settle_end } else { grace_end });
        if pipes.is_open() {
            // Keep reading: a dying script often says why on its way out.
            pipes.pump_until(out, tick).await;
        } else {
            sleep_until(tick).await;
        }
    }
    if status.is_none() {
        status = timeout(KILL_SETTLE, child.wait())
            .await
            .ok()
            .and_then(Result::ok);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant as StdInstant;

    #[derive(Default)]
    struct Recorder {
        lines: Vec<(Stream, String, StdInstant)>,
    }

    impl LineSink for Recorder {
        fn line(&mut self, stream: Stream, line: &str) {
            self.lines
                .push((stream, line.to_owned(), StdInstant::now()));
        }
    }

    impl Recorder {
        fn of(&self, stream: Stream) -> Vec<String> {
            self.lines
                .iter()
                .filter(|(s, _, _)| *s == stream)
                .map(|(_, line, _)| line.clone())
                .collect()
        }
    }

    fn write_script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn sh_script(dir: &Path, name: &str, body: &str) -> PathBuf {
        write_script(dir, name, &format!("#!/bin/sh\n{body}"), 0o755)
    }

    fn spec_for(script: &Path, dir: &Path) -> ScriptSpec {
        let name = script.file_name().unwrap().to_string_lossy();
        ScriptSpec {
            script: script.to_path_buf(),
            location: format!("scripts/{name}"),
            runas: None,
            sudo: false,
            job_env: Vec::new(),
            env: Vec::new(),
            remove_env: Vec::new(),
            cwd: dir.to_path_buf(),
            timeout: Duration::from_secs(20),
            output_wait: Duration::from_secs(1),
        }
    }

    fn alive(pid: i32) -> bool {
        proc_entry(pid).is_some_and(|entry| !entry.zombie)
    }

    fn read_pids(path: &Path) -> Vec<i32> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .map(|pid| pid.parse().unwrap())
            .collect()
    }

    /// Kills the given pids when dropped, so a failing assertion leaves nothing behind.
    struct KillOnDrop(Vec<i32>);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            for pid in &self.0 {
                let _ = signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }

    #[tokio::test]
    async fn success_delivers_lines_per_stream_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(
            dir.path(),
            "ok.sh",
            "echo out1\necho err1 >&2\necho out2\necho err2 >&2\n\
             printf 'bin\\377\\000x\\n'\nprintf 'crlf\\r\\n'\nprintf 'partial'\n",
        );
        let mut sink = Recorder::default();
        let outcome = run_script(&spec_for(&script, dir.path()), &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        assert_eq!(outcome.exit_code, Some(0));
        assert_eq!(outcome.message, "");
        assert!(outcome.lingering.is_empty());
        assert_eq!(
            sink.of(Stream::Stdout),
            ["out1", "out2", "bin\u{FFFD}\u{0}x", "crlf", "partial"]
        );
        assert_eq!(sink.of(Stream::Stderr), ["err1", "err2"]);
        assert!(outcome.log_tail.contains("[stdout]out1\n"));
        assert!(outcome.log_tail.contains("[stderr]err2\n"));
        assert!(outcome.log_tail.ends_with("\n"));
    }

    #[tokio::test]
    async fn lines_arrive_while_the_script_runs() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(dir.path(), "slow.sh", "echo early\nsleep 1\necho late\n");
        let mut sink = Recorder::default();
        let outcome = run_script(&spec_for(&script, dir.path()), &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        let at = |wanted: &str| {
            sink.lines
                .iter()
                .find(|(_, line, _)| line == wanted)
                .map(|(_, _, at)| *at)
                .unwrap()
        };
        assert!(at("late").duration_since(at("early")) >= Duration::from_millis(800));
    }

    #[tokio::test]
    async fn non_zero_exit_is_script_failed() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(dir.path(), "fail.sh", "echo boom >&2\nexit 3\n");
        let outcome = run_script(&spec_for(&script, dir.path()), &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptFailed);
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(
            outcome.message,
            "Script at specified location: scripts/fail.sh failed with exit code 3"
        );
        assert_eq!(outcome.log_tail, "[stderr]boom\n");
    }

    #[tokio::test]
    async fn killed_by_signal_names_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(dir.path(), "sig.sh", "kill -9 $$\n");
        let outcome = run_script(&spec_for(&script, dir.path()), &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptFailed);
        assert_eq!(outcome.exit_code, None);
        assert_eq!(
            outcome.message,
            "Script at specified location: scripts/sig.sh was killed by signal 9 (SIGKILL)"
        );
    }

    #[tokio::test]
    async fn missing_script_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_for(&dir.path().join("nope.sh"), dir.path());
        let outcome = run_script(&spec, &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptMissing);
        assert_eq!(outcome.exit_code, None);
        assert_eq!(
            outcome.message,
            "Script does not exist at specified location: scripts/nope.sh"
        );

        fs::create_dir(dir.path().join("adir")).unwrap();
        let spec = spec_for(&dir.path().join("adir"), dir.path());
        let outcome = run_script(&spec, &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptMissing);
        assert_eq!(
            outcome.message,
            "Script does not exist at specified location: scripts/adir \
             (a directory is there, not a script)"
        );
    }

    #[tokio::test]
    async fn non_executable_script_is_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "plain.sh", "#!/bin/sh\necho ran\n", 0o644);
        let mut sink = Vec::new();
        let outcome = run_script(&spec_for(&script, dir.path()), &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        assert_eq!(sink, [(Stream::Stdout, "ran".to_owned())]);
        let mode = fs::metadata(&script).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    struct Unimmutable(PathBuf);

    impl Drop for Unimmutable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
    }

    #[tokio::test]
    async fn script_that_cannot_be_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        let script = write_script(dir.path(), "locked.sh", "#!/bin/sh\n", 0o644);
        let locked = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&script)
            .status()
            .unwrap();
        assert!(locked.success(), "chattr +i is needed for this test");
        let _guard = Unimmutable(script.clone());
        let outcome = run_script(&spec_for(&script, dir.path()), &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptNotExecutable);
        assert!(
            outcome.message.starts_with(
                "Unable to set script at specified location: scripts/locked.sh as executable ("
            ),
            "{}",
            outcome.message
        );
    }

    #[tokio::test]
    async fn environment_is_inherited_extended_and_pruned() {
        // Some variable this test process really inherited, so dropping it is observable.
        let (name, value) = std::env::vars()
            .find(|(name, value)| {
                name != "PATH"
                    && !value.is_empty()
                    && !value.contains('\n')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(
            dir.path(),
            "env.sh",
            "echo \"event=$LIFECYCLE_EVENT\"\nprintenv \"$CHECK_NAME\" || echo unset\n",
        );
        let mut spec = spec_for(&script, dir.path());
        spec.env = vec![
            ("LIFECYCLE_EVENT".into(), "AfterInstall".into()),
            ("CHECK_NAME".into(), name.clone()),
        ];
        let mut sink = Vec::new();
        let outcome = run_script(&spec, &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        let lines: Vec<&str> = sink.iter().map(|(_, line)| line.as_str()).collect();
        assert_eq!(lines, ["event=AfterInstall", value.as_str()]);

        spec.remove_env = vec![name];
        // As root, sudo changes nothing.
        spec.sudo = true;
        let mut sink = Vec::new();
        let outcome = run_script(&spec, &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        let lines: Vec<&str> = sink.iter().map(|(_, line)| line.as_str()).collect();
        assert_eq!(lines, ["event=AfterInstall", "unset"]);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_tree_including_setsid_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let sid = dir.path().join("sid");
        let script = sh_script(
            dir.path(),
            "tree.sh",
            r#"echo $$ >> "$PIDS"
sh -c 'sleep 60 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; wait' &
echo $! >> "$PIDS"
setsid sh -c 'sleep 60 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; echo "$$ $(cut -d" " -f6 /proc/$$/stat)" > "$SID"; wait' &
echo $! >> "$PIDS"
sleep 60 &
echo $! >> "$PIDS"
echo ready
wait
"#,
        );
        let mut spec = spec_for(&script, dir.path());
        spec.timeout = Duration::from_millis(1500);
        spec.env = vec![
            ("PIDS".into(), pids.display().to_string()),
            ("SID".into(), sid.display().to_string()),
        ];
        let mut sink = Vec::new();
        let start = StdInstant::now();
        let outcome = run_script(&spec, &mut sink).await;
        let elapsed = start.elapsed();
        let recorded = read_pids(&pids);
        let _cleanup = KillOnDrop(recorded.clone());

        assert_eq!(outcome.code, ErrorCode::ScriptTimedOut, "{outcome:?}");
        assert_eq!(
            outcome.message,
            "Script at specified location: scripts/tree.sh failed to complete in 1.5 seconds"
        );
        assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500 + 6000), "{elapsed:?}");
        assert!(sink.contains(&(Stream::Stdout, "ready".to_owned())));

        let unique: HashSet<i32> = recorded.iter().copied().collect();
        assert!(unique.len() >= 6, "{recorded:?}");
        // The setsid shell really left the script's session and process group.
        let sid_line = fs::read_to_string(&sid).unwrap();
        let fields: Vec<&str> = sid_line.split_whitespace().collect();
        assert_eq!(fields.len(), 2, "{sid_line}");
        assert_eq!(fields[0], fields[1], "{sid_line}");
        for pid in unique {
            assert!(!alive(pid), "pid {pid} survived the timeout");
        }
    }

    #[tokio::test]
    async fn an_interrupt_stops_the_tree_with_its_own_code_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = sh_script(
            dir.path(),
            "long.sh",
            "sleep 60 &\necho $! >> \"$PIDS\"\necho $$ >> \"$PIDS\"\necho ready\nwait\n",
        );
        let mut spec = spec_for(&script, dir.path());
        spec.env = vec![("PIDS".into(), pids.display().to_string())];
        let mut sink = Vec::new();
        let start = StdInstant::now();
        let interrupt = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Interrupt {
                code: ErrorCode::ScriptTimedOut,
                reason: "out of time".into(),
            }
        };
        let outcome = run_script_until(&spec, &mut sink, interrupt).await;
        let recorded = read_pids(&pids);
        let _cleanup = KillOnDrop(recorded.clone());
        assert_eq!(outcome.code, ErrorCode::ScriptTimedOut, "{outcome:?}");
        assert_eq!(
            outcome.message,
            "Script at specified location: scripts/long.sh was stopped: out of time"
        );
        // Well before the script's own 20 s timeout, and within the TERM grace.
        assert!(start.elapsed() < Duration::from_secs(5), "{outcome:?}");
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        for pid in recorded {
            assert!(!alive(pid), "pid {pid} survived the interrupt");
        }
    }

    #[tokio::test]
    async fn job_variables_lie_under_the_hook_variables() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(
            dir.path(),
            "env.sh",
            "echo \"$JOB_ONLY $LIFECYCLE_EVENT\"\n",
        );
        let mut spec = spec_for(&script, dir.path());
        spec.job_env = vec![
            ("JOB_ONLY".into(), "from-job".into()),
            ("LIFECYCLE_EVENT".into(), "forged".into()),
        ];
        spec.env = vec![("LIFECYCLE_EVENT".into(), "AfterInstall".into())];
        let mut sink = Vec::new();
        let outcome = run_script(&spec, &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        assert_eq!(sink, [(Stream::Stdout, "from-job AfterInstall".to_owned())]);
    }

    #[tokio::test]
    async fn timeout_escalates_to_sigkill_for_processes_ignoring_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = sh_script(
            dir.path(),
            "stubborn.sh",
            r#"trap 'echo got-term' TERM
(trap '' TERM; exec sleep 30) &
echo $! >> "$PIDS"
echo $$ >> "$PIDS"
while :; do sleep 1; done
"#,
        );
        let mut spec = spec_for(&script, dir.path());
        spec.timeout = Duration::from_millis(500);
        spec.env = vec![("PIDS".into(), pids.display().to_string())];
        let mut sink = Vec::new();
        let start = StdInstant::now();
        let outcome = run_script(&spec, &mut sink).await;
        let elapsed = start.elapsed();
        let recorded = read_pids(&pids);
        let _cleanup = KillOnDrop(recorded.clone());

        assert_eq!(outcome.code, ErrorCode::ScriptTimedOut, "{outcome:?}");
        assert_eq!(
            outcome.message,
            "Script at specified location: scripts/stubborn.sh failed to complete in 0.5 seconds"
        );
        assert!(
            elapsed >= Duration::from_millis(500) + TERM_GRACE,
            "{elapsed:?}"
        );
        assert!(elapsed < Duration::from_millis(500 + 6000), "{elapsed:?}");
        // Output written while handling SIGTERM is still collected.
        assert!(
            sink.contains(&(Stream::Stdout, "got-term".to_owned())),
            "{sink:?}"
        );
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        for pid in recorded {
            assert!(!alive(pid), "pid {pid} survived SIGKILL");
        }
    }

    #[tokio::test]
    async fn background_process_holding_outputs_is_reported_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let both = sh_script(
            dir.path(),
            "bg.sh",
            "sleep 30 &\necho $! > \"$PIDFILE\"\necho started\n",
        );
        let out_only = sh_script(
            dir.path(),
            "bg-out.sh",
            "sleep 30 2>/dev/null &\necho $! > \"$PIDFILE\"\n",
        );
        let failing = sh_script(
            dir.path(),
            "bg-fail.sh",
            "sleep 30 &\necho $! > \"$PIDFILE\"\nexit 2\n",
        );
        let run = |script: &Path, pidfile: &str| {
            let mut spec = spec_for(script, dir.path());
            spec.env = vec![(
                "PIDFILE".into(),
                dir.path().join(pidfile).display().to_string(),
            )];
            spec
        };
        let (spec_both, spec_out, spec_fail) =
            (run(&both, "p1"), run(&out_only, "p2"), run(&failing, "p3"));
        let (mut sink_both, mut sink_out, mut sink_fail) = (Vec::new(), Vec::new(), Vec::new());
        let start = StdInstant::now();
        let (o_both, o_out, o_fail) = tokio::join!(
            run_script(&spec_both, &mut sink_both),
            run_script(&spec_out, &mut sink_out),
            run_script(&spec_fail, &mut sink_fail),
        );
        let elapsed = start.elapsed();
        let pid = |name: &str| read_pids(&dir.path().join(name))[0];
        let (p1, p2, p3) = (pid("p1"), pid("p2"), pid("p3"));
        let _cleanup = KillOnDrop(vec![p1, p2, p3]);

        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        assert_eq!(o_both.code, ErrorCode::OutputsLeftOpen, "{o_both:?}");
        assert_eq!(o_both.exit_code, Some(0));
        assert_eq!(o_both.lingering, [(p1, "sleep".to_owned())]);
        assert_eq!(
            o_both.message,
            format!(
                "Script at specified location: scripts/bg.sh failed to close STDOUT and STDERR \
                 (processes still holding them: {p1} sleep; start background processes with \
                 output redirected, e.g. `cmd > /dev/null 2>&1 < /dev/null &`)"
            )
        );
        assert_eq!(sink_both, [(Stream::Stdout, "started".to_owned())]);

        assert_eq!(o_out.code, ErrorCode::OutputsLeftOpen, "{o_out:?}");
        assert!(
            o_out.message.starts_with(&format!(
                "Script at specified location: scripts/bg-out.sh failed to close STDOUT \
                 (processes still holding it: {p2} sleep;"
            )),
            "{}",
            o_out.message
        );

        assert_eq!(o_fail.code, ErrorCode::ScriptFailed, "{o_fail:?}");
        assert_eq!(
            o_fail.message,
            "Script at specified location: scripts/bg-fail.sh failed with exit code 2"
        );
        assert_eq!(o_fail.lingering, [(p3, "sleep".to_owned())]);

        for pid in [p1, p2, p3] {
            assert!(alive(pid), "lingering pid {pid} must be left running");
        }
    }

    #[tokio::test]
    async fn background_process_with_redirected_output_succeeds_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = sh_script(
            dir.path(),
            "daemon.sh",
            "sleep 30 > /dev/null 2>&1 < /dev/null &\necho $! > \"$PIDFILE\"\necho launched\n",
        );
        let mut spec = spec_for(&script, dir.path());
        spec.output_wait = Duration::from_secs(5);
        spec.env = vec![("PIDFILE".into(), pidfile.display().to_string())];
        let outcome = run_script(&spec, &mut Vec::new()).await;
        let pid = read_pids(&pidfile)[0];
        let _cleanup = KillOnDrop(vec![pid]);
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        assert!(outcome.duration < Duration::from_secs(2), "{outcome:?}");
        assert!(alive(pid));
    }

    #[tokio::test]
    async fn log_tail_keeps_the_last_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(
            dir.path(),
            "chatty.sh",
            "i=100\nwhile [ $i -lt 200 ]; do echo \"line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done\n",
        );
        let outcome = run_script(&spec_for(&script, dir.path()), &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        let mut expected = String::new();
        for i in (100..200).rev() {
            let entry = format!("[stdout]line-{i}-{}\n", "x".repeat(40));
            if expected.len() + entry.len() > LOG_TAIL_LIMIT {
                break;
            }
            expected.insert_str(0, &entry);
        }
        assert_eq!(outcome.log_tail, expected);
        assert!(outcome.log_tail.len() <= LOG_TAIL_LIMIT);
        assert!(outcome.log_tail.len() > LOG_TAIL_LIMIT - 60);
    }

    #[test]
    fn log_tail_cuts_a_single_long_line_at_a_char_boundary() {
        let mut tail = LogTail::default();
        tail.push(Stream::Stdout, "old");
        tail.push(Stream::Stderr, &"é".repeat(1500));
        let text = tail.render();
        assert!(text.len() <= LOG_TAIL_LIMIT);
        assert!(text.len() >= LOG_TAIL_LIMIT - 1);
        assert!(text.ends_with("éé\n"));
        assert!(!text.contains("old"));
        // The cut line no longer fits beside a new one, and lines are only kept whole.
        tail.push(Stream::Stdout, "next");
        assert_eq!(tail.render(), "[stdout]next\n");
    }

    #[tokio::test]
    async fn huge_line_without_newline_arrives_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(
            dir.path(),
            "huge.sh",
            "head -c 1048576 /dev/zero | tr '\\0' a\n",
        );
        let mut sink = Vec::new();
        let outcome = run_script(&spec_for(&script, dir.path()), &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        assert_eq!(sink.len(), 1024 * 1024 / MAX_LINE_BYTES);
        assert!(
            sink.iter()
                .all(|(s, line)| *s == Stream::Stdout && line.len() == MAX_LINE_BYTES)
        );
        assert!(sink.iter().all(|(_, line)| line.bytes().all(|b| b == b'a')));
        assert!(outcome.log_tail.len() <= LOG_TAIL_LIMIT);
    }

    #[test]
    fn pieces_do_not_split_multibyte_characters() {
        let mut lines = Vec::new();
        let mut out = Collector::new(&mut lines, None);
        let mut splitter = LineSplitter::new(Stream::Stdout);
        let mut data = vec![b'a'; MAX_LINE_BYTES - 1];
        data.extend_from_slice("éb\n".as_bytes());
        data.extend_from_slice(&vec![b'c'; MAX_LINE_BYTES]);
        data.extend_from_slice(b"\nlast");
        // Fed in awkward chunks to cross every boundary.
        for chunk in data.chunks(7) {
            splitter.feed(chunk, &mut out);
        }
        splitter.finish(&mut out);
        drop(out);
        let got: Vec<String> = lines.into_iter().map(|(_, line)| line).collect();
        assert_eq!(
            got.len(),
            4,
            "{:?}",
            got.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(got[0], "a".repeat(MAX_LINE_BYTES - 1));
        assert_eq!(got[1], "éb");
        // Exactly one full piece, and no empty line after it.
        assert_eq!(got[2], "c".repeat(MAX_LINE_BYTES));
        assert_eq!(got[3], "last");
    }

    #[test]
    fn utf8_cut_positions() {
        assert_eq!(utf8_cut(b"abc"), 3);
        assert_eq!(utf8_cut("aé".as_bytes()), 3);
        assert_eq!(utf8_cut(&"aé".as_bytes()[..2]), 1);
        assert_eq!(utf8_cut(&"a€".as_bytes()[..3]), 1);
        assert_eq!(utf8_cut(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(utf8_cut("a😀".as_bytes()), 5);
        assert_eq!(utf8_cut(&[b'a', 0x80, 0x80, 0x80, 0x80]), 5);
    }

    #[test]
    fn timeout_seconds_formatting() {
        assert_eq!(seconds(Duration::from_secs(3600)), "3600");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25");
    }

    #[test]
    fn error_codes() {
        let all = [
            (ErrorCode::Succeeded, "Success", 0),
            (ErrorCode::ScriptMissing, "ScriptMissing", 1),
            (ErrorCode::ScriptNotExecutable, "ScriptNotExecutable", 2),
            (ErrorCode::ScriptTimedOut, "ScriptTimedOut", 3),
            (ErrorCode::ScriptFailed, "ScriptFailed", 4),
            (ErrorCode::UnknownError, "UnknownError", 5),
            (ErrorCode::OutputsLeftOpen, "OutputsLeftOpen", 6),
        ];
        for (code, name, number) in all {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.to_string(), name);
            assert_eq!(code.code(), number);
        }
    }

    #[tokio::test]
    async fn script_without_shebang_or_interpreter_fails_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let bare = write_script(dir.path(), "bare.sh", "echo hi\n", 0o755);
        let outcome = run_script(&spec_for(&bare, dir.path()), &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptFailed, "{outcome:?}");
        assert_eq!(outcome.exit_code, None);
        assert!(
            outcome.message.starts_with(
                "Script at specified location: scripts/bare.sh could not be started: "
            ),
            "{}",
            outcome.message
        );
        assert!(
            outcome.message.ends_with("(missing #! line?)"),
            "{}",
            outcome.message
        );

        let lost = write_script(dir.path(), "lost.sh", "#!/nonexistent/interp\n", 0o755);
        let outcome = run_script(&spec_for(&lost, dir.path()), &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptFailed, "{outcome:?}");
        assert!(
            outcome.message.contains("could not be started") && outcome.message.contains("#! line"),
            "{}",
            outcome.message
        );
    }

    #[tokio::test]
    async fn missing_working_directory_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(dir.path(), "cwd.sh", "pwd\n");
        let mut spec = spec_for(&script, dir.path());
        spec.cwd = dir.path().join("gone");
        let outcome = run_script(&spec, &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::UnknownError);
        assert!(
            outcome.message.contains("working directory"),
            "{}",
            outcome.message
        );
    }

    const TEST_USER: &str = "agenthooktest";
    const TEST_GROUP: &str = "agenthookgrp";

    fn ensure_test_user() -> (u32, u32, u32) {
        static SETUP: Mutex<()> = Mutex::new(());
        let _lock = SETUP.lock().unwrap();
        let run = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .status()
                .unwrap()
        };
        assert!(run("groupadd", &["-f", TEST_GROUP]).success());
        if User::from_name(TEST_USER).unwrap().is_none() {
            let status = run(
                "useradd",
                &["-r", "-M", "-s", "/usr/sbin/nologin", TEST_USER],
            );
            // 9: created concurrently by someone else.
            assert!(status.success() || status.code() == Some(9));
        }
        assert!(run("usermod", &["-a", "-G", TEST_GROUP, TEST_USER]).success());
        let user = User::from_name(TEST_USER).unwrap().unwrap();
        let group = nix::unistd::Group::from_name(TEST_GROUP).unwrap().unwrap();
        (user.uid.as_raw(), user.gid.as_raw(), group.gid.as_raw())
    }

    #[tokio::test]
    async fn runas_switches_user_with_supplementary_groups() {
        let (uid, gid, extra_gid) = ensure_test_user();
        let dir = tempfile::tempdir().unwrap();
        // The user must be able to reach the script inside the private temp dir.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let script = sh_script(
            dir.path(),
            "whoami.sh",
            "id -u\nid -G\necho \"$USER $LOGNAME $HOME $SHELL\"\n",
        );
        let mut spec = spec_for(&script, dir.path());
        spec.runas = Some(TEST_USER.into());
        let mut sink = Recorder::default();
        let outcome = run_script(&spec, &mut sink).await;
        assert_eq!(outcome.code, ErrorCode::Succeeded, "{outcome:?}");
        let lines = sink.of(Stream::Stdout);
        assert_eq!(lines[0], uid.to_string());
        let groups: Vec<u32> = lines[1]
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        assert!(groups.contains(&gid), "{groups:?}");
        assert!(groups.contains(&extra_gid), "{groups:?}");
        let user = User::from_name(TEST_USER).unwrap().unwrap();
        assert_eq!(
            lines[2],
            format!(
                "{TEST_USER} {TEST_USER} {} {}",
                user.dir.display(),
                user.shell.display()
            )
        );

        let failing = sh_script(dir.path(), "fail-as.sh", "exit 3\n");
        let mut spec = spec_for(&failing, dir.path());
        spec.runas = Some(TEST_USER.into());
        let outcome = run_script(&spec, &mut Vec::new()).await;
        assert_eq!(
            outcome.message,
            "Script at specified location: scripts/fail-as.sh run as user agenthooktest \
             failed with exit code 3"
        );
    }

    #[tokio::test]
    async fn runas_without_setpriv_still_switches_user() {
        let (uid, gid, _) = ensure_test_user();
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let script = sh_script(dir.path(), "ids.sh", "id -u\nid -g\n");
        let user = User::from_name(TEST_USER).unwrap().unwrap();
        let launch = runas_launch(&script, &user, None);
        assert_eq!(launch.ids, Some((uid, gid)));
        let output = launch
            .command(&spec_for(&script, dir.path()))
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{uid}\n{gid}\n")
        );
    }

    #[tokio::test]
    async fn partial_line_is_kept_when_outputs_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = sh_script(
            dir.path(),
            "partial.sh",
            "sleep 30 &\necho $! > \"$PIDFILE\"\nprintf 'no newline'\n",
        );
        let mut spec = spec_for(&script, dir.path());
        spec.output_wait = Duration::from_millis(200);
        spec.env = vec![("PIDFILE".into(), pidfile.display().to_string())];
        let mut sink = Vec::new();
        let outcome = run_script(&spec, &mut sink).await;
        let _cleanup = KillOnDrop(read_pids(&pidfile));
        assert_eq!(outcome.code, ErrorCode::OutputsLeftOpen, "{outcome:?}");
        assert_eq!(sink, [(Stream::Stdout, "no newline".to_owned())]);
        assert_eq!(outcome.log_tail, "[stdout]no newline\n");
    }

    #[test]
    fn run_script_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let spec = spec_for(Path::new("/nonexistent"), Path::new("/"));
        let mut sink = Vec::new();
        let future = run_script(&spec, &mut sink);
        assert_send(&future);
    }

    #[tokio::test]
    async fn runas_wrapper_failure_is_explained() {
        ensure_test_user();
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let script = write_script(dir.path(), "lost-as.sh", "#!/nonexistent/interp\n", 0o755);
        let mut spec = spec_for(&script, dir.path());
        spec.runas = Some(TEST_USER.into());
        let outcome = run_script(&spec, &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::ScriptFailed, "{outcome:?}");
        if find_in_path("setpriv").is_some() {
            assert!(
                outcome.message.contains("(setpriv: "),
                "{}",
                outcome.message
            );
        }
    }

    #[tokio::test]
    async fn runas_unknown_user_is_unknown_error() {
        let dir = tempfile::tempdir().unwrap();
        let script = sh_script(dir.path(), "x.sh", "exit 0\n");
        let mut spec = spec_for(&script, dir.path());
        spec.runas = Some("no-such-user-agenthook".into());
        let outcome = run_script(&spec, &mut Vec::new()).await;
        assert_eq!(outcome.code, ErrorCode::UnknownError);
        assert_eq!(
            outcome.message,
            "The user no-such-user-agenthook named in runas for scripts/x.sh \
             does not exist on this host"
        );
    }

    #[test]
    fn launch_plans() {
        let script = Path::new("/srv/rev/scripts/a.sh");
        let mut spec = spec_for(script, Path::new("/srv/rev"));
        let root = Uid::from_raw(0);
        let other = Uid::from_raw(4242);

        assert_eq!(plan_launch(&spec, script, root), Ok(Launch::direct(script)));
        assert_eq!(
            plan_launch(&spec, script, other),
            Ok(Launch::direct(script))
        );

        spec.runas = Some("root".into());
        assert_eq!(plan_launch(&spec, script, root), Ok(Launch::direct(script)));
        let refused = plan_launch(&spec, script, other).unwrap_err();
        assert!(
            refused.contains("needs the agent to run as root"),
            "{refused}"
        );

        spec.runas = None;
        spec.sudo = true;
        assert_eq!(plan_launch(&spec, script, root), Ok(Launch::direct(script)));
        match (plan_launch(&spec, script, other), find_in_path("sudo")) {
            (Ok(launch), Some(sudo)) => {
                assert_eq!(launch.program, sudo);
                assert_eq!(
                    launch.args,
                    [PathBuf::from("-n"), "--".into(), script.to_path_buf()]
                );
            }
            (Err(message), None) => assert!(message.contains("sudo"), "{message}"),
            (plan, sudo) => panic!("{plan:?} with sudo at {sudo:?}"),
        }
    }

    #[test]
    fn left_open_without_holders_still_explains() {
        let message = left_open_message("x.sh", &[Stream::Stderr], &[]);
        assert_eq!(
            message,
            "Script at specified location: x.sh failed to close STDERR (processes still \
             holding it: none found; start background processes with output redirected, \
             e.g. `cmd > /dev/null 2>&1 < /dev/null &`)"
        );
    }
}
