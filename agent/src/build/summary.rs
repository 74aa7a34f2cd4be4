//! The result of a build: the JSON that `run-local --summary` writes and the daemon
//! reports as its JobResult.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BuildStatus {
    Succeeded,
    Failed,
    TimedOut,
    Stopped,
    Fault,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "SUCCEEDED",
            BuildStatus::Failed => "FAILED",
            BuildStatus::TimedOut => "TIMED_OUT",
            BuildStatus::Stopped => "STOPPED",
            BuildStatus::Fault => "FAULT",
        }
    }
}

pub type PhaseStatus = BuildStatus;

#[derive(Debug, Clone, Serialize)]
pub struct PhaseRecord {
    /// CodeBuild's name: `DOWNLOAD_SOURCE`, `INSTALL`, … `FINALIZING`.
    pub phase: &'static str,
    pub status: PhaseStatus,
    pub duration_ms: u64,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactRecord {
    pub identifier: String,
    /// The buildspec's `name`, expanded, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub location: String,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportRecord {
    pub group: String,
    pub format: String,
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub build_id: String,
    pub status: BuildStatus,
    pub phases: Vec<PhaseRecord>,
    pub exported_variables: BTreeMap<String, String>,
    pub artifacts: Vec<ArtifactRecord>,
    pub reports: Vec<ReportRecord>,
    /// The members of a batch build, in the order the batch lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<BatchMember>,
}

/// One member of a batch in the batch's summary.
#[derive(Debug, Clone, Serialize)]
pub struct BatchMember {
    pub identifier: String,
    pub status: BuildStatus,
    /// Why the member did not run, when it did not.
    pub message: Option<String>,
    pub build: Option<Summary>,
}
