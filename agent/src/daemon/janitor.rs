//! At start, before any new job: settle what the previous run of this agent left. Every
//! journaled delivery is completed (it has a stored result) or given back to its source;
//! its `agent` process, workspace and containers are removed; every container, network
//! and volume labelled with this agent's name goes, since none of its jobs runs; and so do
//! the containers of hand-started `run-local` runs on this host whose process is gone.

use std::collections::HashMap;
use std::sync::Arc;

use agent_config::Config;
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};

use super::source::{Delivery, JobSource};
use super::state::State;
use crate::exec::docker::LABEL_RUN;
use crate::exec::owner::LABEL_INSTANCE;

/// What reconciliation did, for the log and the tests.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub completed: Vec<String>,
    pub released: Vec<String>,
    pub killed: Vec<u32>,
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
    pub workspaces: usize,
}

pub async fn reconcile(
    config: &Config,
    state: &State,
    sources: &[Arc<dyn JobSource>],
) -> Reconciled {
    let mut done = Reconciled::default();
    for entry in state.journal_entries() {
        if let Some(pid) = entry.pid
            && kill_stale_job(pid, entry.workspace.as_deref())
        {
            done.killed.push(pid);
        }
        let delivery = Delivery {
            handle: entry.handle.clone(),
            body: Vec::new(),
            receive_count: entry.receive_count,
            attachments: None,
            refused: None,
        };
        // A pending result is completed here too; `Runner::finish_pending` stores and announces
        // it once the sources run.
        let stored = entry
            .job_id
            .as_deref()
            .and_then(|id| state.result(id))
            .map(|s| s.result);
        match sources.iter().find(|s| s.name() == entry.source) {
            None => {
                tracing::warn!(source = %entry.source, handle = %entry.handle, "a job of a source no longer configured was interrupted; its source will deliver it again")
            }
            Some(source) => {
                let label = entry.job_id.clone().unwrap_or_else(|| entry.handle.clone());
                // A stored result means the job finished; only its settlement was lost.
                let settled = match &stored {
                    Some(result) => source.complete(&delivery, result).await,
                    None => source.release(&delivery).await,
                };
                match (settled, stored.is_some()) {
                    (Ok(()), true) => done.completed.push(label),
                    (Ok(()), false) => done.released.push(label),
                    (Err(e), _) => {
                        tracing::warn!(job = %label, error = %e, "cannot settle a job interrupted by the restart; its source will deliver it again")
                    }
                }
            }
        }
        state.forget(&entry);
    }
    // Containers first: their commands may still be writing into the workspaces.
    remove_labelled(
        vec![format!("{LABEL_INSTANCE}={}", config.agent.name)],
        &mut done,
    )
    .await;
    if let Ok(docker) = Docker::connect_with_local_defaults() {
        done.containers += crate::exec::owner::remove_orphans(&docker).await;
    }
    if let Ok(entries) = std::fs::read_dir(&config.agent.work_dir) {
        for entry in entries.flatten() {
            let removed = super::workspace::remove(
                &entry.path(),
                &config.jobs.default_image,
                &config.agent.name,
            )
            .await;
            match removed {
                Ok(()) => done.workspaces += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove a workspace the previous run left")
                }
            }
        }
    }
    if !done.completed.is_empty()
        || !done.released.is_empty()
        || done.containers > 0
        || !done.killed.is_empty()
    {
        tracing::info!(
            completed = ?done.completed,
            released = ?done.released,
            killed = ?done.killed,
            containers = done.containers,
            networks = done.networks,
            volumes = done.volumes,
            workspaces = done.workspaces,
            "cleaned up after the previous run"
        );
    }
    done
}

/// Kills the process group of a job process the previous run started, if it is still
/// there and still that job's: pids are reused (quickly where `pid_max` is small), and a
/// group kill of a reused pid could hit any process. The process must lead its own group
/// (job processes are started so), be `run-local` or `deploy-local`, and name the job's
/// workspace in its arguments.
fn kill_stale_job(pid: u32, workspace: Option<&std::path::Path>) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    let kind = cmdline.contains("run-local") || cmdline.contains("deploy-local");
    let theirs = workspace.is_some_and(|w| cmdline.contains(&*w.to_string_lossy()));
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    let leads_its_group = nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g == pid);
    kind && theirs
        && leads_its_group
        && nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL).is_ok()
}

/// Removes what one job's process left when it had to be killed (its timeout overrun, a
/// drain that could not wait): its container keeps running after the process is gone.
pub async fn remove_job_leftovers(instance: &str, job_id: &str) -> Reconciled {
    let mut done = Reconciled::default();
    remove_labelled(
        vec![
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_RUN}={job_id}"),
        ],
        &mut done,
    )
    .await;
    done
}

/// Removes the containers, networks and volumes carrying every one of `labels`.
async fn remove_labelled(labels: Vec<String>, done: &mut Reconciled) {
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach Docker to remove what the previous run left");
            return;
        }
    };
    let filters = HashMap::from([("label".to_string(), labels)]);
    match docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
    {
        Ok(containers) => {
            for container in containers {
                let Some(id) = container.id else { continue };
                let removed = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                if removed.is_ok() {
                    done.containers += 1;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list this agent's containers"),
    }
    if let Ok(networks) = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
    {
        for network in networks {
            if let Some(id) = network.id
                && docker.remove_network(&id).await.is_ok()
            {
                done.networks += 1;
            }
        }
    }
    if let Ok(volumes) = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
    {
        for volume in volumes.volumes.unwrap_or_default() {
            if docker
                .remove_volume(&volume.name, Some(RemoveVolumeOptions { force: true }))
                .await
                .is_ok()
            {
                done.volumes += 1;
            }
        }
    }
}
