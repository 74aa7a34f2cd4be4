//! The result of a deployment: per event its status, duration, scripts, error code,
//! message and the last 2 KB of output; written as JSON and shown on the terminal.

use serde::Serialize;

use super::install::Installed;

/// CodeDeploy's deployment statuses a finished deployment shows, and `TimedOut`: CodeDeploy
/// has no deployment time limit, and a deployment past `--timeout` must be told apart from
/// one whose hook failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeployStatus {
    Succeeded,
    Failed,
    /// Past the deployment's time limit: the running hook was stopped, no later one ran.
    TimedOut,
    /// Asked to stop (SIGTERM, SIGINT, the end of `--control-stdin`'s input), as CodeDeploy's
    /// StopDeployment leaves a deployment.
    Stopped,
}

impl DeployStatus {
    /// Ended early by a limit or a stop, rather than by its own events.
    pub fn halted(self) -> bool {
        matches!(self, DeployStatus::TimedOut | DeployStatus::Stopped)
    }
}

/// CodeDeploy's `LifecycleEventStatus`, less the states a finished deployment never shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventStatus {
    Succeeded,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScriptResult {
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runas: Option<String>,
    /// CodeDeploy's `LifecycleErrorCode`: `Success`, `ScriptMissing`, `ScriptNotExecutable`,
    /// `ScriptTimedOut`, `ScriptFailed`, `UnknownError`, `OutputsLeftOpen`.
    pub error_code: &'static str,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Processes still holding the script's output (OutputsLeftOpen).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lingering: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventResult {
    pub event: String,
    pub status: EventStatus,
    pub duration_ms: u64,
    /// The deployment whose revision's scripts ran (the last successful one for
    /// ApplicationStop and the block-traffic events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scripts: Vec<ScriptResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last 2 KB of the event's output, `[stdout]`/`[stderr]` lines as CodeDeploy keeps them.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub log: String,
    /// A failure `--ignore-application-stop-failures` let the deployment go past.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
}

impl EventResult {
    pub fn new(event: &str, status: EventStatus) -> Self {
        EventResult {
            event: event.to_string(),
            status,
            duration_ms: 0,
            revision: None,
            scripts: Vec::new(),
            error_code: None,
            script_name: None,
            message: None,
            log: String::new(),
            ignored: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploySummary {
    pub deployment_id: String,
    pub application_name: String,
    pub deployment_group_name: String,
    pub deployment_group_id: String,
    pub status: DeployStatus,
    /// `user`, or `rollback` for the redeployment that follows a failure.
    pub creator: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    pub bundle: String,
    /// The deployment's directory under the deployment root.
    pub directory: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub events: Vec<EventResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<Installed>,
    /// Why the deployment failed, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The rollback that followed this deployment's failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Box<DeploySummary>>,
}

/// Keeps whole lines whose total stays within 2048 bytes, dropping the oldest, as the
/// CodeDeploy agent's script log does; a single longer line keeps its end.
pub fn tail_2k(text: &str) -> String {
    const LIMIT: usize = 2048;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut total = 0;
    let mut start = lines.len();
    while start > 0 && total + lines[start - 1].len() <= LIMIT {
        start -= 1;
        total += lines[start].len();
    }
    if start == lines.len() {
        let last = lines[lines.len() - 1];
        let mut cut = last.len() - LIMIT;
        while !last.is_char_boundary(cut) {
            cut += 1;
        }
        return last[cut..].to_string();
    }
    lines[start..].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_whole_recent_lines() {
        let line = format!("[stdout]{}\n", "x".repeat(91));
        let text = line.repeat(100);
        let tail = tail_2k(&text);
        assert!(tail.len() <= 2048 && tail.len() > 2048 - 100);
        assert!(tail.starts_with("[stdout]"));
        let long = "é".repeat(3000);
        let tail = tail_2k(&long);
        assert!(tail.len() <= 2048 && tail.chars().all(|c| c == 'é'));
    }
}
