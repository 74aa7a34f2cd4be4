//! Service-manager notifications for `agent daemon` (the sd_notify protocol).
//!
//! The daemon runs under `Type=notify` with `NotifyAccess=main` and `WatchdogSec=`, so it
//! must say when it is ready, when it reloads, when it stops, and ping the watchdog. Outside
//! systemd (`NOTIFY_SOCKET` unset: a terminal, a container, a test) every call is a no-op
//! that returns `Ok(())`, so callers never need to check whether they run under systemd.
//!
//! The message vocabulary ([`NotifyState`]) and the watchdog variables come from the
//! `sd-notify` crate. Sending is done here: `sd_notify::notify` reads `NOTIFY_SOCKET`
//! again on every call, cannot address a given socket (which tests need, since the
//! environment cannot be changed without `unsafe` in edition 2024), and does not handle
//! abstract (`@…`) addresses. Reading the address once at start-up also means that
//! later changes to the environment cannot redirect notifications.
//!
//! Child processes (hooks, host-executor shells) inherit `NOTIFY_SOCKET` and `WATCHDOG_*`
//! from the daemon. `NotifyAccess=main` already makes systemd drop their messages, but a
//! hook that is itself sd_notify-aware would fill the journal with rejected-message
//! warnings. Remove [`CHILD_ENV_REMOVE`] from every child's environment
//! (`Command::env_remove`). The daemon's own environment cannot be cleaned, because
//! `std::env::remove_var` is `unsafe` in a multi-threaded process.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use sd_notify::NotifyState;

/// Variables a child of the daemon must not inherit (see the module docs).
pub const CHILD_ENV_REMOVE: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// How long one notification may block. systemd reads its notify socket from its main
/// loop. A wedged PID 1 must not wedge the daemon's runtime thread along with it: the
/// daemon carries on and the send fails.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends sd_notify messages to the service manager, or nothing when there is none.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` as systemd gave it: a path, or `@name` for the abstract namespace.
    socket: Option<OsString>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once. Call it at start-up.
    ///
    /// Returns a disabled notifier when `NOTIFY_SOCKET` is unset or empty.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        // A watchdog nobody can be told about is no watchdog: without the socket, pings
        // would go nowhere.
        let watchdog = socket.as_ref().and_then(|_| watchdog_from_env());
        Notifier { socket, watchdog }
    }

    /// A notifier that sends to `socket` (a path, or `@name` for an abstract socket) and
    /// has no watchdog. Used by tests, and by anything that receives the address some
    /// other way than the environment.
    pub fn with_socket(socket: impl Into<OsString>) -> Self {
        Notifier {
            socket: Some(socket.into()),
            watchdog: None,
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// `READY=1`: start-up is complete (config loaded, job sources connected). Also sent
    /// after a reload to end the "reloading" state.
    pub fn ready(&self) -> io::Result<()> {
        self.send(&[NotifyState::Ready])
    }

    /// `RELOADING=1` at the start of a SIGHUP reload. Send [`Notifier::ready`] when the
    /// new config is in force, or when the reload failed and the old config stays.
    ///
    /// The message also carries `MONOTONIC_USEC`. The unit uses `Type=notify` with
    /// `ExecReload=kill -HUP`, where systemd ignores that field. systemd ≥ 253 needs it for
    /// `Type=notify-reload`, so the unit can switch to that type without a code change.
    /// If the clock cannot be read (it never fails on Linux), `RELOADING=1` goes alone.
    pub fn reloading(&self) -> io::Result<()> {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`: the drain has begun. systemd shows the unit as "deactivating".
    pub fn stopping(&self) -> io::Result<()> {
        self.send(&[NotifyState::Stopping])
    }

    /// `STATUS=…`: one line for `systemctl status` (such as "draining: 3 jobs left").
    /// Newlines become spaces, because each line of a notification is a separate
    /// assignment and a job name must not be able to smuggle in `READY=1`.
    pub fn status(&self, status: &str) -> io::Result<()> {
        let line: String = status
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send(&[NotifyState::Status(&line)])
    }

    /// `WATCHDOG=1`. Send it at about half of [`Notifier::watchdog_interval`] from the
    /// task that proves the daemon is alive (its main loop, not a dedicated thread that
    /// would keep pinging while the rest is stuck).
    pub fn watchdog(&self) -> io::Result<()> {
        self.send(&[NotifyState::Watchdog])
    }

    /// The watchdog timeout systemd enforces (`WatchdogSec=`), if it applies to this
    /// process. That means `WATCHDOG_USEC` is set and non-zero, and `WATCHDOG_PID` is this
    /// process's pid, which is how a child that inherited the variables tells they are
    /// not for it. The caller pings at half this interval, so that one late tick does not
    /// get the daemon killed.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `EXTEND_TIMEOUT_USEC=…`: "still working, give me `extra` more" during start-up or
    /// stop. systemd only fails the unit when the configured timeout (`TimeoutStopSec=`
    /// for a drain) has passed *and* no extension has arrived within its `extra`. A drain
    /// that may outlast `TimeoutStopSec=` therefore sends this periodically, each time
    /// with more than the interval to the next one. `extra` is capped at `u32::MAX` µs
    /// (about 71 minutes) by the field's type in `sd-notify`. Sending it again is the way
    /// to go beyond that.
    pub fn extend_timeout(&self, extra: Duration) -> io::Result<()> {
        let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)])
    }

    fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let mut message = String::new();
        for state in states {
            // The same framing as sd-notify: one assignment per line.
            let _ = writeln!(message, "{state}");
        }
        let addr = socket_addr(socket)?;
        // A fresh socket per message: systemd re-creates its notify socket on
        // `daemon-reexec`, and a socket connected before that would fail from then on.
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        let sent = sock.send_to_addr(message.as_bytes(), &addr)?;
        if sent == message.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification truncated",
            ))
        }
    }
}

/// Parses `NOTIFY_SOCKET`. systemd uses a path, or `@` + name for the abstract namespace.
/// `vsock:` addresses (systemd ≥ 254, for VMs) are not supported and give an error at
/// send time, so the daemon logs the problem instead of silently losing its readiness.
fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "NOTIFY_SOCKET={} is neither a path nor an abstract socket",
                socket.to_string_lossy()
            ),
        )),
    }
}

fn watchdog_from_env() -> Option<Duration> {
    let mut usec = 0;
    // `false`: never unset the variables. Unsetting is `env::remove_var`, which is
    // unsound while other threads run. Children get them removed through
    // CHILD_ENV_REMOVE instead. sd-notify 0.4 also requires WATCHDOG_PID, which systemd
    // always sets together with WATCHDOG_USEC.
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A bound datagram socket in a temp dir, standing in for systemd's notify socket.
    struct FakeManager {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        sock: UnixDatagram,
    }

    impl FakeManager {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let sock = UnixDatagram::bind(&path).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            FakeManager {
                _dir: dir,
                path,
                sock,
            }
        }

        fn notifier(&self) -> Notifier {
            Notifier::with_socket(&self.path)
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn assert_empty(&self) {
            self.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 16];
            let err = self.sock.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "unexpected datagram");
        }
    }

    #[test]
    fn each_call_sends_exactly_one_datagram() {
        let manager = FakeManager::new();
        let notifier = manager.notifier();
        assert!(notifier.is_enabled());

        notifier.ready().unwrap();
        assert_eq!(manager.recv(), "READY=1\n");
        notifier.stopping().unwrap();
        assert_eq!(manager.recv(), "STOPPING=1\n");
        notifier.watchdog().unwrap();
        assert_eq!(manager.recv(), "WATCHDOG=1\n");
        notifier.status("draining: 2 jobs left").unwrap();
        assert_eq!(manager.recv(), "STATUS=draining: 2 jobs left\n");
        notifier.extend_timeout(Duration::from_secs(90)).unwrap();
        assert_eq!(manager.recv(), "EXTEND_TIMEOUT_USEC=90000000\n");
        manager.assert_empty();
    }

    #[test]
    fn reload_is_reloading_with_monotonic_time_then_ready() {
        let manager = FakeManager::new();
        let notifier = manager.notifier();

        notifier.reloading().unwrap();
        let message = manager.recv();
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 2, "{message:?}");
        assert_eq!(lines[0], "RELOADING=1");
        let usec = lines[1].strip_prefix("MONOTONIC_USEC=").unwrap();
        assert!(usec.parse::<u64>().unwrap() > 0, "{message:?}");
        assert!(message.ends_with('\n'));

        notifier.ready().unwrap();
        assert_eq!(manager.recv(), "READY=1\n");
    }

    #[test]
    fn status_cannot_inject_other_assignments() {
        let manager = FakeManager::new();
        manager
            .notifier()
            .status("job x\nREADY=1\r\nWATCHDOG=trigger")
            .unwrap();
        assert_eq!(manager.recv(), "STATUS=job x READY=1  WATCHDOG=trigger\n");
    }

    #[test]
    fn extend_timeout_is_capped_at_the_field_size() {
        let manager = FakeManager::new();
        manager
            .notifier()
            .extend_timeout(Duration::from_secs(3 * 3600))
            .unwrap();
        assert_eq!(
            manager.recv(),
            format!("EXTEND_TIMEOUT_USEC={}\n", u32::MAX)
        );
    }

    #[test]
    fn abstract_socket_addresses_work() {
        let name = format!("agent-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();

        Notifier::with_socket(format!("@{name}")).ready().unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_succeeds() {
        let notifier = Notifier::disabled();
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready().unwrap();
        notifier.reloading().unwrap();
        notifier.stopping().unwrap();
        notifier.status("x").unwrap();
        notifier.watchdog().unwrap();
        notifier.extend_timeout(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = Notifier::with_socket(dir.path().join("gone"))
            .ready()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn relative_or_vsock_addresses_are_refused() {
        for socket in ["notify", "vsock:2:1234"] {
            let err = Notifier::with_socket(socket).ready().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{socket}");
        }
    }

    // `from_env` is tested in a child process: this test binary re-runs itself with only
    // `child_reports_what_from_env_sees` selected and the variables set on the child's
    // Command. The test process's own environment is never changed, so tests running in
    // parallel cannot see each other's variables (and no `unsafe` set_var is needed).

    const CHILD_MARKER: &str = "AGENT_NOTIFY_TEST_CHILD";

    /// Runs the child test with `env` and returns its report line. `sh` sets
    /// WATCHDOG_PID to the pid the child will have (`exec` keeps it), since a pid cannot
    /// be known before spawning.
    fn run_child(env: &[(&str, &str)], pid_from_shell: bool) -> String {
        let exe = std::env::current_exe().unwrap();
        // libtest names tests by module path without the crate name, so this keeps
        // working wherever the module lives (`notify`, `daemon::notify`, …).
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, path)| path);
        let child_test = format!("{module}::child_reports_what_from_env_sees");
        let test_args = [
            "--exact",
            child_test.as_str(),
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ];
        let mut cmd = if pid_from_shell {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(r#"WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@""#)
                .arg("sh")
                .arg(&exe)
                .args(test_args);
            cmd
        } else {
            let mut cmd = Command::new(&exe);
            cmd.args(test_args);
            cmd
        };
        // Start from none of the variables, whatever the test runner itself inherited
        // (cargo test run from a systemd unit has NOTIFY_SOCKET).
        for name in CHILD_ENV_REMOVE {
            cmd.env_remove(name);
        }
        cmd.env(CHILD_MARKER, "1").envs(env.iter().copied());
        let output = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("1 passed"), "child ran no test: {stdout}");
        stdout
            .lines()
            // libtest prints "test … ... " before the test's own output on the same line.
            .find_map(|line| line.split_once("CHILD-REPORT ").map(|(_, report)| report))
            .unwrap_or_else(|| panic!("no report from the child: {stdout}"))
            .to_owned()
    }

    /// The child half: reports what `from_env` saw on stdout, and sends through it.
    #[test]
    #[ignore = "run by the from_env_* tests in a child process with its own environment"]
    fn child_reports_what_from_env_sees() {
        if std::env::var_os(CHILD_MARKER).is_none() {
            return;
        }
        let notifier = Notifier::from_env();
        println!(
            "CHILD-REPORT enabled={} watchdog={:?}",
            notifier.is_enabled(),
            notifier.watchdog_interval()
        );
        notifier.ready().unwrap();
    }

    #[test]
    fn from_env_sends_to_notify_socket() {
        let manager = FakeManager::new();
        let path = manager.path.to_str().unwrap();
        let report = run_child(&[("NOTIFY_SOCKET", path)], false);
        assert_eq!(report, "enabled=true watchdog=None");
        assert_eq!(manager.recv(), "READY=1\n");
        manager.assert_empty();
    }

    #[test]
    fn from_env_reads_the_watchdog_meant_for_this_process() {
        let manager = FakeManager::new();
        let path = manager.path.to_str().unwrap();
        let report = run_child(
            &[("NOTIFY_SOCKET", path), ("WATCHDOG_USEC", "60000000")],
            true,
        );
        assert_eq!(report, "enabled=true watchdog=Some(60s)");
        assert_eq!(manager.recv(), "READY=1\n");
    }

    #[test]
    fn from_env_ignores_a_watchdog_meant_for_another_process() {
        let manager = FakeManager::new();
        let path = manager.path.to_str().unwrap();
        // What a hook sees when it inherits the daemon's variables: WATCHDOG_PID is the
        // daemon's pid, not its own.
        let report = run_child(
            &[
                ("NOTIFY_SOCKET", path),
                ("WATCHDOG_USEC", "60000000"),
                ("WATCHDOG_PID", "1"),
            ],
            false,
        );
        assert_eq!(report, "enabled=true watchdog=None");
        assert_eq!(manager.recv(), "READY=1\n");
    }

    #[test]
    fn from_env_without_notify_socket_is_disabled() {
        // A watchdog without a socket to ping is reported as none.
        assert_eq!(
            run_child(&[("WATCHDOG_USEC", "60000000")], true),
            "enabled=false watchdog=None"
        );
        assert_eq!(
            run_child(&[("NOTIFY_SOCKET", "")], false),
            "enabled=false watchdog=None"
        );
    }
}
