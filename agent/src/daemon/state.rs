//! What the daemon keeps in its state directory so a restart loses nothing: each job's
//! journal entry (written before anything runs), its result (written before the delivery
//! is settled), and its log.
//!
//! ```text
//! <state>/journal/<key>.json   a delivery being worked on
//! <state>/results/<job>.json   final results, by job id
//! <state>/logs/<job>.log       the job's log, kept after its workspace is removed
//! <state>/artifacts/<job>/     a build's artifacts when the job names no S3 destination
//! <state>/running/<job>/       the running job process's summary and stderr
//! ```
//!
//! Results, logs and artifacts older than `agent.retention` are removed (see
//! [`super::retention`]); the journal and running jobs' directories never are.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::result::JobResult;
use crate::deploy::root::write_atomically;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub source: String,
    pub handle: String,
    pub receive_count: u32,
    pub received_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The `agent run-local`/`deploy-local` process running the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
}

impl JournalEntry {
    fn key(&self) -> String {
        journal_key(&self.source, &self.handle)
    }
}

fn journal_key(source: &str, handle: &str) -> String {
    let digest = Sha256::digest(format!("{source}\n{handle}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

impl State {
    pub fn open(dir: &Path) -> std::io::Result<State> {
        for sub in ["journal", "results", "logs", "running"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(State {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self, job_id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{job_id}.log"))
    }

    /// Where a job's process writes its summary and diagnostics while it runs.
    pub fn scratch(&self, job_id: &str) -> PathBuf {
        self.dir.join("running").join(job_id)
    }

    fn result_path(&self, job_id: &str) -> PathBuf {
        self.dir.join("results").join(format!("{job_id}.json"))
    }

    pub fn result(&self, job_id: &str) -> Option<JobResult> {
        let text = std::fs::read(self.result_path(job_id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn store_result(&self, result: &JobResult) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(result).map_err(|e| e.to_string())?;
        write_atomically(&self.result_path(&result.job_id), &json).map_err(|e| e.to_string())
    }

    pub fn journal(&self, entry: &JournalEntry) -> Result<(), String> {
        let json = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        let path = self
            .dir
            .join("journal")
            .join(format!("{}.json", entry.key()));
        write_atomically(&path, &json).map_err(|e| e.to_string())
    }

    pub fn forget(&self, entry: &JournalEntry) {
        let _ = std::fs::remove_file(
            self.dir
                .join("journal")
                .join(format!("{}.json", entry.key())),
        );
    }

    pub fn journal_entries(&self) -> Vec<JournalEntry> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("journal")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let text = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice(&text) {
                    Ok(entry) => Some(entry),
                    Err(_) => {
                        // Half an entry cannot be acted on; it describes nothing that ran.
                        let _ = std::fs::remove_file(e.path());
                        None
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let entry = JournalEntry {
            source: "spool:/x".into(),
            handle: "a.json".into(),
            receive_count: 1,
            received_at: "now".into(),
            job_id: Some("job-1".into()),
            pid: Some(42),
            workspace: None,
        };
        state.journal(&entry).unwrap();
        let back = state.journal_entries();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].pid, Some(42));
        state.forget(&entry);
        assert!(state.journal_entries().is_empty());
    }
}
