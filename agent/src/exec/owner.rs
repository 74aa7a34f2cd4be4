//! Who a container belongs to, so that what a dead agent left can be removed and what a
//! live one runs never is.
//!
//! A daemon names itself (`agent.name`) and passes that name to the builds it starts; its
//! janitor removes everything carrying it at start, since none of its jobs runs then.
//! `run-local` started by hand carries `run-local@<host>` instead, which no daemon uses as
//! its name, and the process that owns the container: a container whose process is gone
//! (killed with `kill -9`, the machine rebooted) is removed by the next `run-local` or
//! daemon on the host; one whose process runs, or may run as far as the judging process can
//! tell (another pid namespace, a `/proc` that hides other users), is left alone.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

pub const LABEL_INSTANCE: &str = "agent.instance";
/// `<boot id>/<pid namespace>/<pid>/<start time>` of the process that owns a hand-started
/// run's container (`<boot id>/<pid>/<start time>` on labels of earlier versions).
pub const LABEL_OWNER: &str = "agent.owner";

/// The environment variable a daemon names itself in for the builds it starts.
pub const INSTANCE_ENV: &str = "AGENT_INSTANCE";

/// This process's instance name on labels.
pub fn instance_name() -> String {
    std::env::var(INSTANCE_ENV)
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(local_instance)
}

/// The instance name of runs started by hand on this host.
pub fn local_instance() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string());
    format!("run-local@{host}")
}

/// The labels that say who owns a container this process creates.
pub fn labels() -> Vec<(String, String)> {
    let instance = instance_name();
    let mut out = Vec::with_capacity(2);
    if instance == local_instance()
        && let Some(me) = Process::current()
    {
        out.push((LABEL_OWNER.to_string(), me.label()));
    }
    out.push((LABEL_INSTANCE.to_string(), instance));
    out
}

/// One process, told apart from a later one that reuses its pid by its start time, from a
/// process of an earlier boot by the boot id, and from a process of another pid namespace
/// (a run inside a container) by that namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    boot_id: String,
    /// The pid namespace's inode; `None` on labels written before it was recorded.
    pid_ns: Option<u64>,
    pid: u32,
    start_time: u64,
}

/// What this process can tell about an owner's pid right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sighting {
    /// `kill(pid, 0)` said no such process.
    Gone,
    /// A process has the pid; its start time if `/proc` shows it.
    Present(Option<u64>),
}

impl Process {
    fn current() -> Option<Process> {
        let pid = std::process::id();
        Some(Process {
            boot_id: boot_id()?,
            pid_ns: Some(pid_namespace()?),
            pid,
            start_time: start_time(pid)?,
        })
    }

    fn label(&self) -> String {
        match self.pid_ns {
            Some(ns) => format!("{}/{ns}/{}/{}", self.boot_id, self.pid, self.start_time),
            None => format!("{}/{}/{}", self.boot_id, self.pid, self.start_time),
        }
    }

    /// Reads `<boot>/<pid ns>/<pid>/<start>`, or the older `<boot>/<pid>/<start>`.
    fn parse(label: &str) -> Option<Process> {
        let parts: Vec<&str> = label.split('/').collect();
        let (boot, ns, pid, start) = match parts.as_slice() {
            [boot, ns, pid, start] => (*boot, Some(ns.parse().ok()?), *pid, *start),
            [boot, pid, start] => (*boot, None, *pid, *start),
            _ => return None,
        };
        if boot.is_empty() {
            return None;
        }
        Some(Process {
            boot_id: boot.to_string(),
            pid_ns: ns,
            // Pid 0 and negative pids name process groups to kill(2).
            pid: pid
                .parse()
                .ok()
                .filter(|&p: &u32| p > 0 && i32::try_from(p).is_ok())?,
            start_time: start.parse().ok()?,
        })
    }

    /// Whether this process may still run, as seen from here.
    fn alive(&self) -> bool {
        let sighting = || match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX)),
            None,
        ) {
            Err(nix::errno::Errno::ESRCH) => Sighting::Gone,
            _ => Sighting::Present(start_time(self.pid)),
        };
        self.judge(boot_id().as_deref(), pid_namespace(), sighting)
    }

    /// Counts as dead only what is proven dead: another boot, or, in the same pid
    /// namespace, no process with the pid or one that started at another time. A pid
    /// `/proc` hides (`hidepid`, systemd's `ProtectProc=invisible` for a daemon running as
    /// another user) still answers `kill(pid, 0)` with EPERM, so a live run it cannot read
    /// is left alone; so is everything when the boot or the namespace cannot be told.
    fn judge(
        &self,
        boot: Option<&str>,
        pid_ns: Option<u64>,
        sighting: impl FnOnce() -> Sighting,
    ) -> bool {
        let Some(boot) = boot else {
            return true;
        };
        if boot != self.boot_id {
            return false;
        }
        match (self.pid_ns, pid_ns) {
            (Some(theirs), Some(ours)) if theirs == ours => {}
            // A label of an earlier version, judged as that version did (in the judge's
            // namespace): otherwise what its killed runs left would stay until a reboot.
            (None, _) => {}
            _ => return true,
        }
        match sighting() {
            Sighting::Gone => false,
            Sighting::Present(Some(start)) => start == self.start_time,
            Sighting::Present(None) => true,
        }
    }
}

/// The inode of this process's pid namespace, from `/proc/self/ns/pid` (`pid:[4026531836]`).
fn pid_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_str()?;
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

/// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its closing parenthesis.
fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// For a run started by hand: removes, in the background and once per process, what
/// earlier hand-started runs on this host left when they were killed.
pub fn sweep_in_background() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    if instance_name() != local_instance() {
        return;
    }
    STARTED.call_once(|| {
        tokio::spawn(async {
            if let Ok(docker) = Docker::connect_with_local_defaults() {
                remove_orphans(&docker).await;
            }
        });
    });
}

/// Removes the containers of hand-started runs on this host whose process is gone, and
/// returns how many it removed. A container without a readable owner is left alone.
pub async fn remove_orphans(docker: &Docker) -> usize {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_INSTANCE}={}", local_instance())],
    )]);
    let containers = match docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the containers of earlier runs");
            return 0;
        }
    };
    let mut removed = 0;
    for container in containers {
        let owner = container
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER))
            .and_then(|l| Process::parse(l));
        let (Some(id), Some(owner)) = (container.id, owner) else {
            continue;
        };
        if owner.alive() {
            continue;
        }
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if docker.remove_container(&id, Some(options)).await.is_ok() {
            tracing::info!(container = %id, pid = owner.pid, "removed the container of a run whose process is gone");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_its_label_round_trips() {
        let me = Process::current().unwrap();
        assert!(me.pid_ns.is_some());
        assert_eq!(Process::parse(&me.label()), Some(me.clone()));
        assert!(me.alive());
    }

    #[test]
    fn a_reused_pid_an_exited_process_or_another_boot_is_not_the_owner() {
        let me = Process::current().unwrap();
        let reused = Process {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!reused.alive());
        let earlier_boot = Process {
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            ..me.clone()
        };
        assert!(!earlier_boot.alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let exited = Process { pid, ..me };
        assert!(!exited.alive());
    }

    #[test]
    fn an_owner_it_cannot_see_or_tell_apart_is_left_alone() {
        let owner = Process {
            boot_id: "b".into(),
            pid_ns: Some(7),
            pid: 42,
            start_time: 100,
        };
        let hidden = || Sighting::Present(None);
        let gone = || Sighting::Gone;
        // /proc hides the pid but the process answers kill(pid, 0).
        assert!(owner.judge(Some("b"), Some(7), hidden));
        // Another pid namespace: the pid means another process here.
        assert!(owner.judge(Some("b"), Some(8), gone));
        assert!(owner.judge(Some("b"), None, gone));
        // No boot id to compare.
        assert!(owner.judge(None, Some(7), gone));
        // A label from before namespaces were recorded: judged here, as it was then.
        let old = Process::parse("b/42/100").unwrap();
        assert_eq!(old.pid_ns, None);
        assert!(!old.judge(Some("b"), Some(7), gone));
        assert!(old.judge(Some("b"), Some(7), hidden));
        assert!(old.judge(Some("b"), None, || Sighting::Present(Some(100))));
        assert!(!old.judge(Some("c"), Some(7), hidden));
        // What is proven: gone, reused, rebooted.
        assert!(!owner.judge(Some("b"), Some(7), gone));
        assert!(!owner.judge(Some("b"), Some(7), || Sighting::Present(Some(101))));
        assert!(owner.judge(Some("b"), Some(7), || Sighting::Present(Some(100))));
        assert!(!owner.judge(Some("c"), Some(8), hidden));
    }

    #[test]
    fn malformed_owner_labels_are_not_parsed() {
        for label in [
            "",
            "boot",
            "boot/1",
            "boot/x/2",
            "boot/1/2/3/4",
            "boot/1/-2",
            "boot/0/2",
            "boot/7/0/2",
            "boot/7/2147483648/2",
            "boot/ns/1/2",
            "/1/2",
        ] {
            assert_eq!(Process::parse(label), None, "{label}");
        }
        assert!(Process::parse("boot/4026531836/1/2").is_some());
        assert!(Process::parse("boot//1/2").is_none());
    }

    #[test]
    fn start_time_survives_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 90 0 0 0 1 2 0 0 20 0 1 0 987654 1 2 3";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("4242 (cut short) S 1 2"), None);
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
    }
}
