//! Who a container belongs to, so that what a dead agent left can be removed and what a
//! live one runs never is.
//!
//! A daemon names itself (`agent.name`) and passes that name to the builds it starts; its
//! janitor removes everything carrying it at start, since none of its jobs runs then.
//! `run-local` started by hand carries `run-local@<host>` instead, which no daemon uses as
//! its name, and the process that owns the container: a container whose process is gone
//! (killed with `kill -9`, the machine rebooted) is removed by the next `run-local` or
//! daemon on the host; one whose process runs is left alone.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

pub const LABEL_INSTANCE: &str = "agent.instance";
/// `<boot id>/<pid>/<start time>` of the process that owns a hand-started run's container.
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

/// One process, told apart from a later one that reuses its pid by its start time, and
/// from a process of an earlier boot by the boot id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    boot_id: String,
    pid: u32,
    start_time: u64,
}

impl Process {
    fn current() -> Option<Process> {
        Process::read(std::process::id())
    }

    fn read(pid: u32) -> Option<Process> {
        Some(Process {
            boot_id: boot_id()?,
            pid,
            start_time: start_time(pid)?,
        })
    }

    fn label(&self) -> String {
        format!("{}/{}/{}", self.boot_id, self.pid, self.start_time)
    }

    fn parse(label: &str) -> Option<Process> {
        let mut parts = label.split('/');
        let process = Process {
            boot_id: parts.next()?.to_string(),
            pid: parts.next()?.parse().ok()?,
            start_time: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(process)
    }

    /// Whether this process still runs. Unsure (no boot id to compare) counts as running.
    fn alive(&self) -> bool {
        let Some(boot) = boot_id() else {
            return true;
        };
        boot == self.boot_id && start_time(self.pid) == Some(self.start_time)
    }
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
        assert_eq!(Process::parse(&me.label()), Some(me.clone()));
        assert!(me.alive());
    }

    #[test]
    fn a_reused_pid_or_another_boot_is_not_the_owner() {
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
        let gone = Process {
            pid: u32::MAX,
            ..me
        };
        assert!(!gone.alive());
    }

    #[test]
    fn malformed_owner_labels_are_not_parsed() {
        for label in ["", "boot", "boot/1", "boot/x/2", "boot/1/2/3", "boot/1/-2"] {
            assert_eq!(Process::parse(label), None, "{label}");
        }
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
