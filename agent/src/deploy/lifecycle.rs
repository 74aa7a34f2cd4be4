//! Which lifecycle events a deployment runs, in which order, and from which revision.

use buildspec::appspec::LifecycleEvent;

/// One step of a deployment: a hook event, or one of the two the agent performs itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    DownloadBundle,
    Install,
    Hook(LifecycleEvent),
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::DownloadBundle => "DownloadBundle",
            Step::Install => "Install",
            Step::Hook(event) => event.name(),
        }
    }
}

/// In-place order, `reference/aws-spec.md` §3.2; the traffic events only when the
/// deployment controls traffic (BlockTraffic and AllowTraffic themselves belong to the
/// load balancer, not to the host).
pub fn steps(traffic: bool, only: Option<&[String]>) -> Result<Vec<Step>, String> {
    use LifecycleEvent as E;
    let mut canonical = Vec::new();
    let named = |e: &E| only.is_some_and(|o| o.iter().any(|n| n == e.name()));
    let block = [E::BeforeBlockTraffic, E::AfterBlockTraffic];
    let allow = [E::BeforeAllowTraffic, E::AfterAllowTraffic];
    for event in block {
        if traffic || named(&event) {
            canonical.push(Step::Hook(event));
        }
    }
    canonical.push(Step::Hook(E::ApplicationStop));
    canonical.push(Step::DownloadBundle);
    canonical.push(Step::Hook(E::BeforeInstall));
    canonical.push(Step::Install);
    for event in [E::AfterInstall, E::ApplicationStart, E::ValidateService] {
        canonical.push(Step::Hook(event));
    }
    for event in allow {
        if traffic || named(&event) {
            canonical.push(Step::Hook(event));
        }
    }
    let Some(only) = only else {
        return Ok(canonical);
    };
    for name in only {
        if matches!(name.as_str(), "BlockTraffic" | "AllowTraffic") {
            return Err(format!(
                "--events: {name} is done by the load balancer, not on the host; name the hooks around it (Before{name}, After{name})"
            ));
        }
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("--events: `{name}` is not an event name"));
        }
    }
    // DownloadBundle and Install always run, as in codedeploy-local; custom events follow
    // the standard ones in the order given.
    let mut chosen: Vec<Step> = canonical
        .into_iter()
        .filter(|s| {
            matches!(s, Step::DownloadBundle | Step::Install) || only.iter().any(|n| n == s.name())
        })
        .collect();
    for name in only {
        let event = LifecycleEvent::from_name(name);
        if matches!(event, LifecycleEvent::Custom(_))
            && !matches!(name.as_str(), "DownloadBundle" | "Install")
            && !chosen.iter().any(|s| s.name() == name)
        {
            chosen.push(Step::Hook(event));
        }
    }
    Ok(chosen)
}

/// Events that run the scripts of the last successful revision, before the new one is
/// installed.
pub fn from_previous(event: &LifecycleEvent) -> bool {
    matches!(
        event,
        LifecycleEvent::ApplicationStop
            | LifecycleEvent::BeforeBlockTraffic
            | LifecycleEvent::AfterBlockTraffic
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(steps: &[Step]) -> Vec<&str> {
        steps.iter().map(Step::name).collect()
    }

    #[test]
    fn in_place_order() {
        assert_eq!(
            names(&steps(false, None).unwrap()),
            [
                "ApplicationStop",
                "DownloadBundle",
                "BeforeInstall",
                "Install",
                "AfterInstall",
                "ApplicationStart",
                "ValidateService"
            ]
        );
        let with_traffic = steps(true, None).unwrap();
        assert_eq!(
            names(&with_traffic)[..3],
            ["BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop"]
        );
        assert_eq!(
            names(&with_traffic)[9..],
            ["BeforeAllowTraffic", "AfterAllowTraffic"]
        );
    }

    #[test]
    fn a_subset_keeps_download_and_install_and_order() {
        let only: Vec<String> = ["ValidateService", "Warmup", "BeforeInstall"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names(&steps(false, Some(&only)).unwrap()),
            [
                "DownloadBundle",
                "BeforeInstall",
                "Install",
                "ValidateService",
                "Warmup"
            ]
        );
        let bad = vec!["AllowTraffic".to_string()];
        assert!(steps(false, Some(&bad)).is_err());
    }
}
