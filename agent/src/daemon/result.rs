//! A job's result: what the daemon stores under the job id before the delivery is settled,
//! and what sources, webhooks and `agent status` report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Succeeded,
    Failed,
    TimedOut,
    Stopped,
    /// The agent could not run the job (Docker gone, S3 unreachable).
    Fault,
    /// The job was not run: not a valid JobSpec, or refused by the config.
    Rejected,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::TimedOut => "TIMED_OUT",
            JobStatus::Stopped => "STOPPED",
            JobStatus::Fault => "FAULT",
            JobStatus::Rejected => "REJECTED",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub job_id: String,
    /// `build` or `deploy`; absent when the message could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub status: JobStatus,
    /// Why, in one line, when not SUCCEEDED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The agent instance that ran it.
    pub agent: String,
    /// That agent's `agent.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agent_labels: BTreeMap<String, String>,
    /// The job's own `labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The source it came from.
    pub source: String,
    pub received_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    /// How many times the job was delivered before this result.
    pub attempts: u32,
    /// Where the log is (`s3://…` or a path in the state directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported_variables: BTreeMap<String, String>,
    /// The build's summary (DESIGN.md's shape) or the deployment's.
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub summary: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_result_reads_back_whatever_it_left_out() {
        let result = JobResult {
            job_id: "j".into(),
            kind: None,
            status: JobStatus::Rejected,
            message: None,
            agent: "a".into(),
            agent_labels: Default::default(),
            labels: Default::default(),
            source: "s".into(),
            received_at: "t".into(),
            finished_at: "t".into(),
            duration_ms: 1,
            attempts: 1,
            log: None,
            artifacts: Vec::new(),
            exported_variables: BTreeMap::new(),
            summary: serde_json::Value::Null,
        };
        let json = serde_json::to_string(&result).unwrap();
        let back: JobResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.status, JobStatus::Rejected);
    }
}
