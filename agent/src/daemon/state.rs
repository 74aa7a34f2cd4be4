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

use std::os::unix::fs::PermissionsExt;
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
    /// Written here, but perhaps not to the fleet's store and not announced (the agent
    /// stopped or crashed before it could finish both): what announcing it takes.
    pub pending: Option<Announce>,
}

/// What announcing a job's end needs from its run, kept with a pending result so that a
/// later start announces it as the run would have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The job's own `notify.webhook`; the config's applies when it names none. It may
    /// carry the receiver's token, so the pending directory is the agent's alone.
    pub webhook: Option<String>,
    pub started_at: Option<String>,
}

/// The file of a pending result.
#[derive(Serialize, Deserialize)]
struct Pending {
    result: JobResult,
    #[serde(default)]
    announce: Announce,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
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
        std::fs::set_permissions(dir.join("pending"), std::fs::Permissions::from_mode(0o700))?;
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
        // A pending result is newer than a settled one beside it.
        if let Some(kept) = read_json::<Pending>(&self.pending_path(job_id)) {
            return Some(Stored {
                result: kept.result,
                pending: Some(kept.announce),
            });
        }
        read_json(&self.result_path(job_id)).map(|result| Stored {
            result,
            pending: None,
        })
    }

    /// Runs `write` on the state's files off the runtime's workers. The writes are fsynced,
    /// which on a disk a build keeps busy can take seconds, and the daemon's runtime has
    /// two workers, which also beat every running job's lease and answer the health
    /// probes: two jobs ending at once on such a disk would stall them all. A write once
    /// started finishes, whether or not its caller still waits.
    pub async fn off_thread<T: Send + 'static>(
        &self,
        write: impl FnOnce(&State) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || write(&state))
            .await
            .map_err(|e| format!("the state directory's file work failed: {e}"))?
    }

    /// Keeps a final result here before it goes anywhere else, as pending until
    /// [`State::settle_result`], with what announcing it takes.
    pub fn store_result(&self, result: &JobResult, announce: &Announce) -> Result<(), String> {
        let kept = Pending {
            result: result.clone(),
            announce: announce.clone(),
        };
        let json = serde_json::to_vec_pretty(&kept).map_err(|e| e.to_string())?;
        write_atomically(&self.pending_path(&result.job_id), &json).map_err(|e| e.to_string())
    }

    /// The jobs whose results are kept here still pending, oldest first. Read them with
    /// [`State::result`], which a delivery may have settled since.
    pub fn pending_jobs(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("pending")) else {
            return Vec::new();
        };
        let mut found: Vec<(std::time::SystemTime, String)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                // Not a file being written (`write_atomically`'s dot-named temporary).
                let job = name
                    .strip_suffix(".json")
                    .filter(|_| !name.starts_with('.'))?;
                let modified = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((modified, job.to_string()))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, job)| job).collect()
    }

    /// Marks a pending result stored everywhere and announced: it becomes the job's settled
    /// result, dated now for retention.
    pub fn settle_result(&self, job_id: &str) -> Result<(), String> {
        let pending = self.pending_path(job_id);
        let Some(kept) = read_json::<Pending>(&pending) else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(&kept.result).map_err(|e| e.to_string())?;
        write_atomically(&self.result_path(job_id), &json)
            .map_err(|e| format!("cannot settle the result of {job_id}: {e}"))?;
        self.discard_pending(job_id)
    }

    /// Drops a pending result without settling it: the job's result is another.
    pub fn discard_pending(&self, job_id: &str) -> Result<(), String> {
        match std::fs::remove_file(self.pending_path(job_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove the pending result of {job_id}: {e}")),
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

    /// A write stuck on a busy disk does not hold the runtime's worker (here the only one).
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_write_leaves_the_runtime_running() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let ticks = std::sync::Arc::new(AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let written = state
            .off_thread(|s| {
                std::thread::sleep(std::time::Duration::from_millis(400));
                s.journal(&JournalEntry {
                    source: "spool:/x".into(),
                    handle: "a.json".into(),
                    receive_count: 1,
                    received_at: "now".into(),
                    job_id: None,
                    pid: None,
                    workspace: None,
                })
            })
            .await;
        ticker.abort();
        assert_eq!(written, Ok(()));
        assert_eq!(state.journal_entries().len(), 1);
        assert!(
            ticks.load(Ordering::Relaxed) >= 5,
            "the runtime stood still"
        );
    }

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
        let announce = Announce {
            webhook: Some("https://hooks.example/t0ken".into()),
            started_at: Some("t0".into()),
        };
        state.store_result(&result, &announce).unwrap();
        let stored = state.result("job-1").unwrap();
        assert_eq!(stored.pending.as_ref(), Some(&announce));
        let mode = std::fs::metadata(dir.path().join("pending"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the agent's alone: {mode:o}");
        assert_eq!(state.pending_jobs(), ["job-1"]);
        assert_eq!(stored.result.job_id, "job-1");
        state.settle_result("job-1").unwrap();
        let stored = state.result("job-1").unwrap();
        assert!(stored.pending.is_none());
        // Settled, the file is the result alone, as every reader of results/ expects.
        let settled: JobResult =
            serde_json::from_slice(&std::fs::read(dir.path().join("results/job-1.json")).unwrap())
                .unwrap();
        assert_eq!(settled.job_id, "job-1");
        assert!(!dir.path().join("pending/job-1.json").exists());
        assert!(state.pending_jobs().is_empty());
        // Storing again (a redelivery finishing what a crash cut short) and settling twice
        // leave one settled result.
        state.store_result(&result, &announce).unwrap();
        assert!(state.result("job-1").unwrap().pending.is_some());
        state.settle_result("job-1").unwrap();
        state.settle_result("job-1").unwrap();
        assert!(state.result("job-1").unwrap().pending.is_none());
        // A result another agent stored since replaces a kept one: dropped, not settled.
        state.store_result(&result, &announce).unwrap();
        state.discard_pending("job-1").unwrap();
        assert!(state.pending_jobs().is_empty());
    }
}
