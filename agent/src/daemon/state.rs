//! What the daemon keeps in its state directory so a restart loses nothing: each job's
//! journal entry (written before anything runs), its result (written before the delivery
//! is settled), and its log.
//!
//! ```text
//! <state>/journal/<key>.json   a delivery being worked on
//! <state>/results/<job>.json   final results, by job id, stored everywhere and announced
//! <state>/pending/<job>.json   a final result on its way: written here first, then to the
//!                              fleet's store, announced, and only then moved to results/
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

/// A result this agent keeps for a job.
#[derive(Debug, Clone)]
pub struct Stored {
    pub result: JobResult,
    /// Written here, but perhaps not to the fleet's store and not announced: the agent
    /// stopped or crashed before it could finish both.
    pub pending: bool,
}

#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

impl State {
    pub fn open(dir: &Path) -> std::io::Result<State> {
        for sub in ["journal", "results", "pending", "logs", "running"] {
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

    fn pending_path(&self, job_id: &str) -> PathBuf {
        // A directory of its own: ids may hold dots, so no suffix could tell the two apart.
        self.dir.join("pending").join(format!("{job_id}.json"))
    }

    /// The job's final result if this agent has one.
    pub fn result(&self, job_id: &str) -> Option<Stored> {
        let read = |path: PathBuf| {
            let text = std::fs::read(path).ok()?;
            serde_json::from_slice::<JobResult>(&text).ok()
        };
        // A pending result is newer than a settled one beside it.
        if let Some(result) = read(self.pending_path(job_id)) {
            return Some(Stored {
                result,
                pending: true,
            });
        }
        read(self.result_path(job_id)).map(|result| Stored {
            result,
            pending: false,
        })
    }

    /// Keeps a final result here before it goes anywhere else, as pending until
    /// [`State::settle_result`].
    pub fn store_result(&self, result: &JobResult) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(result).map_err(|e| e.to_string())?;
        write_atomically(&self.pending_path(&result.job_id), &json).map_err(|e| e.to_string())
    }

    /// The results kept here that are still pending, oldest first.
    pub fn pending_results(&self) -> Vec<JobResult> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("pending")) else {
            return Vec::new();
        };
        let mut found: Vec<(std::time::SystemTime, JobResult)> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".json") && !name.starts_with('.')
            })
            .filter_map(|e| {
                let modified = e.metadata().and_then(|m| m.modified()).ok()?;
                let text = std::fs::read(e.path()).ok()?;
                Some((modified, serde_json::from_slice(&text).ok()?))
            })
            .collect();
        found.sort_by_key(|(modified, _)| *modified);
        found.into_iter().map(|(_, result)| result).collect()
    }

    /// Marks a pending result stored everywhere and announced.
    pub fn settle_result(&self, job_id: &str) -> Result<(), String> {
        match std::fs::rename(self.pending_path(job_id), self.result_path(job_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot settle the result of {job_id}: {e}")),
        }
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

    #[test]
    fn a_result_is_pending_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        assert!(state.result("job-1").is_none());
        let result: JobResult = serde_json::from_value(serde_json::json!({
            "job_id": "job-1", "kind": "build", "status": "SUCCEEDED", "message": null,
            "agent": "a", "agent_labels": {}, "labels": {}, "source": "spool:/x",
            "received_at": "t0", "finished_at": "t1", "duration_ms": 1, "attempts": 1,
            "log": null, "artifacts": [], "exported_variables": {}, "summary": null
        }))
        .unwrap();
        state.store_result(&result).unwrap();
        let stored = state.result("job-1").unwrap();
        assert!(stored.pending);
        let pending = state.pending_results();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].job_id, "job-1");
        assert_eq!(stored.result.job_id, "job-1");
        state.settle_result("job-1").unwrap();
        let stored = state.result("job-1").unwrap();
        assert!(!stored.pending);
        assert!(dir.path().join("results/job-1.json").is_file());
        assert!(!dir.path().join("pending/job-1.json").exists());
        assert!(state.pending_results().is_empty());
        // Storing again (a redelivery finishing what a crash cut short) and settling twice
        // leave one settled result.
        state.store_result(&result).unwrap();
        assert!(state.result("job-1").unwrap().pending);
        state.settle_result("job-1").unwrap();
        state.settle_result("job-1").unwrap();
        assert!(!state.result("job-1").unwrap().pending);
    }
}
