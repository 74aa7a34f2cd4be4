//! Removing a job's workspace. Build containers run as root and write into the bind-mounted
//! source, so a workspace can hold directories the agent's own user (`agent`, under the
//! systemd unit) may not empty. What the agent cannot remove itself is removed by a
//! short-lived container that mounts the workspace and deletes its contents as root.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use crate::exec::owner::LABEL_INSTANCE;

/// Where the cleanup container mounts the workspace.
const MOUNT: &str = "/agent-workspace";

/// Removes `path` and everything in it; `image` (the config's default build image, which is
/// on this host) removes what the agent may not. A workspace that is already gone is fine.
pub async fn remove(path: &Path, image: &str, instance: &str) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
            return Err(format!("cannot remove {}: {e}", path.display()));
        }
        Err(_) => {}
    }
    tracing::debug!(workspace = %path.display(), "the build left files this user cannot remove; removing them in a container");
    empty_in_container(path, image, instance).await?;
    std::fs::remove_dir_all(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
}

/// Deletes everything inside `dir` (not `dir` itself) from a container running as root.
pub async fn empty_in_container(dir: &Path, image: &str, instance: &str) -> Result<(), String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot reach Docker to remove {}: {e}", dir.display()))?;
    let real = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![String::new()]),
        // Dot files too; a pattern that matches nothing stays literal and rm -f ignores it.
        cmd: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("rm -rf -- {MOUNT}/* {MOUNT}/.[!.]* {MOUNT}/..?*"),
        ]),
        user: Some("0:0".into()),
        network_disabled: Some(true),
        // The janitor removes it should the agent die before it does.
        labels: Some(HashMap::from([(
            LABEL_INSTANCE.to_string(),
            instance.to_string(),
        )])),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{MOUNT}", real.display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(|e| format!("cannot create a container to remove {}: {e}", dir.display()))?;
    let ran = async {
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| format!("cannot start the container removing {}: {e}", dir.display()))?;
        let mut waited = docker.wait_container(&created.id, None::<WaitContainerOptions>);
        match waited.next().await {
            Some(Ok(exit)) if exit.status_code == 0 => Ok(()),
            Some(Ok(exit)) => Err(format!(
                "removing {} in a container ended with status {}",
                dir.display(),
                exit.status_code
            )),
            Some(Err(e)) => Err(format!("removing {} in a container: {e}", dir.display())),
            None => Err(format!(
                "removing {} in a container: no exit status",
                dir.display()
            )),
        }
    }
    .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await;
    ran
}
