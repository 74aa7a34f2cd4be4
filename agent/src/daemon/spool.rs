//! The spool directory: zero-infrastructure dispatch. A dispatcher drops `<name>.json` into
//! `inbox/` (written elsewhere and renamed in, so it is never read half-written); an agent
//! claims it by renaming it into its own `claimed/<agent>/`, which only one agent can win,
//! even with several agents sharing the directory. The result lands in `done/<name>.json`;
//! a file that is not a job moves to `rejected/` beside its result. Any file named
//! `cancel/<name>.json` calls the job of that name off: a running job is stopped as a drain
//! stops it (`finally` runs) and its result says STOPPED, with the file's first line as the
//! reason when it has one. `deliveries/<name>` counts the claims of a job not yet settled,
//! so that a job that keeps taking its agent down is failed after `max_receive_count`
//! deliveries instead of being claimed at every restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use notify::Watcher;
use tokio::sync::Notify;

use super::result::JobResult;
use super::source::{Delivery, JobSource, Lease, SourceError};

pub struct SpoolSource {
    name: String,
    dirs: Dirs,
    wake: std::sync::Arc<Notify>,
    /// Kept alive for the notifications; dropping it stops them.
    _watcher: Mutex<Option<notify::RecommendedWatcher>>,
    poll: Duration,
}

impl SpoolSource {
    /// Opens (creating) the spool at `root` for agent `agent`.
    pub fn open(root: &Path, agent: &str) -> Result<Self, SourceError> {
        let claimed = root.join("claimed").join(agent);
        for dir in [
            root.join("inbox"),
            claimed.clone(),
            root.join("done"),
            root.join("rejected"),
            root.join("cancel"),
            root.join("deliveries"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| {
                SourceError::Fatal(format!(
                    "cannot create the spool directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let wake = std::sync::Arc::new(Notify::new());
        let notify_wake = std::sync::Arc::clone(&wake);
        // Without inotify (some network filesystems) the periodic scan still finds jobs.
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Only arrivals: the agent's own scans open the directory, and waking on those
            // would scan again at once, for ever.
            if event.is_ok_and(|e| e.kind.is_create() || e.kind.is_modify()) {
                notify_wake.notify_one();
            }
        })
        .and_then(|mut w| {
            w.watch(&root.join("inbox"), notify::RecursiveMode::NonRecursive)
                .map(|()| w)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "no file notifications for the spool; scanning every second");
                None
            }
        };
        Ok(SpoolSource {
            name: format!("spool:{}", root.display()),
            dirs: Dirs {
                root: root.to_path_buf(),
                claimed,
            },
            wake,
            _watcher: Mutex::new(watcher),
            poll: Duration::from_secs(1),
        })
    }

    /// Files claimed by this agent that were never settled (the agent stopped): put back
    /// in the inbox for a new delivery.
    pub fn release_all_claimed(&self) -> Vec<String> {
        let mut released = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dirs.claimed) else {
            return released;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if give_back(&entry.path(), &self.dirs.root.join("inbox").join(&name)).is_ok() {
                released.push(name.to_string_lossy().into_owned());
            }
        }
        released
    }

    /// Runs `work` on the spool's files off the runtime's thread: a result is fsynced, which
    /// on a slow disk would hold up every other job's beat. Settlements only: they are
    /// awaited to the end, and one that outlives its caller still settles.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Dirs) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let dirs = self.dirs.clone();
        tokio::task::spawn_blocking(move || work(&dirs))
            .await
            .map_err(|e| SourceError::Transient(format!("the spool's file work failed: {e}")))?
    }
}

/// The spool's directories, and what is done to their files.
#[derive(Debug, Clone)]
struct Dirs {
    root: PathBuf,
    claimed: PathBuf,
}

impl Dirs {
    fn try_claim(&self) -> Result<Option<Delivery>, SourceError> {
        let inbox = self.root.join("inbox");
        let entries = std::fs::read_dir(&inbox)
            .map_err(|e| SourceError::Transient(format!("cannot read {}: {e}", inbox.display())))?;
        let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".json") && !name.starts_with('.')
            })
            .map(|e| {
                let at = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (at, e.path())
            })
            .collect();
        candidates.sort();
        for (_, path) in candidates {
            let Some(name) = path.file_name() else {
                continue;
            };
            let claimed = self.claimed.join(name);
            // A job of that name still runs here: a rename would replace its claim, and
            // settling one would settle both. It waits in the inbox for the first to end.
            if claimed.symlink_metadata().is_ok() {
                continue;
            }
            // Another agent may have won this one; try the next.
            if std::fs::rename(&path, &claimed).is_err() {
                continue;
            }
            let (body, refused) = match read_message(&claimed) {
                Ok(body) => (body, None),
                Err(Refused::Io(e)) => {
                    return Err(SourceError::Transient(format!(
                        "cannot read {}: {e}",
                        claimed.display()
                    )));
                }
                Err(Refused::Not(reason)) => (Vec::new(), Some(reason)),
            };
            let handle = name.to_string_lossy().into_owned();
            let receive_count = self.count_delivery(&handle);
            return Ok(Some(Delivery {
                handle,
                body,
                receive_count,
                attachments: None,
                refused,
            }));
        }
        Ok(None)
    }

    /// Counts one more delivery of `handle` and returns the count. The count is kept only
    /// as well as the disk allows: a count that cannot be written is warned about, and the
    /// job still runs.
    fn count_delivery(&self, handle: &str) -> u32 {
        let path = self.deliveries_path(handle);
        let earlier: u32 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let count = earlier.saturating_add(1);
        if let Err(e) =
            crate::deploy::root::write_atomically(&path, format!("{count}\n").as_bytes())
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot count the deliveries of a spool job");
        }
        count
    }

    fn deliveries_path(&self, handle: &str) -> PathBuf {
        self.root.join("deliveries").join(handle)
    }

    /// Settled: the job's count and any call to stop it go, so a job dropped again under
    /// this name starts afresh.
    fn forget(&self, delivery: &Delivery) {
        let _ = std::fs::remove_file(self.cancel_path(delivery));
        let _ = std::fs::remove_file(self.deliveries_path(&delivery.handle));
    }

    /// The reason a dispatcher gave for calling the job off, when it did.
    fn cancellation(&self, delivery: &Delivery) -> Option<String> {
        let path = self.cancel_path(delivery);
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            // Present but unreadable (a directory, no permission) still calls the job off.
            Err(_) => String::new(),
        };
        let reason: String = text
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(200)
            .collect();
        Some(if reason.is_empty() {
            format!("cancelled through {}", path.display())
        } else {
            format!("cancelled through {}: {reason}", path.display())
        })
    }

    fn cancel_path(&self, delivery: &Delivery) -> PathBuf {
        self.root.join("cancel").join(&delivery.handle)
    }

    fn write_result(&self, delivery: &Delivery, result: &JobResult) -> Result<(), SourceError> {
        let json =
            serde_json::to_vec_pretty(result).map_err(|e| SourceError::Fatal(e.to_string()))?;
        let done = self.root.join("done").join(&delivery.handle);
        crate::deploy::root::write_atomically(&done, &json)
            .map_err(|e| SourceError::Transient(e.to_string()))
    }

    fn complete(&self, delivery: &Delivery, result: &JobResult) -> Result<(), SourceError> {
        self.write_result(delivery, result)?;
        self.forget(delivery);
        match std::fs::remove_file(self.claimed.join(&delivery.handle)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SourceError::Transient(e.to_string())),
        }
    }

    fn release(&self, delivery: &Delivery) -> Result<(), SourceError> {
        give_back(
            &self.claimed.join(&delivery.handle),
            &self.root.join("inbox").join(&delivery.handle),
        )
        .map_err(|e| SourceError::Transient(format!("cannot put {} back: {e}", delivery.handle)))
    }

    fn reject(&self, delivery: &Delivery, result: &JobResult) -> Result<(), SourceError> {
        self.write_result(delivery, result)?;
        self.forget(delivery);
        let _ = std::fs::rename(
            self.claimed.join(&delivery.handle),
            self.root.join("rejected").join(&delivery.handle),
        );
        Ok(())
    }
}

impl JobSource for SpoolSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next(&self) -> BoxFuture<'_, Result<Option<Delivery>, SourceError>> {
        Box::pin(async move {
            // A short window, so the poller looks again soon whether a slot is still free
            // (it polls only then).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            loop {
                // Register for the wake-up before scanning, so a file dropped during the
                // scan is not missed.
                let notified = self.wake.notified();
                // On the runtime's thread: a claim off it could not be called off, and a
                // poll dropped mid-claim (a reload, a drain) would strand the file.
                if let Some(delivery) = self.dirs.try_claim()? {
                    return Ok(Some(delivery));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                let _ = tokio::time::timeout(self.poll, notified).await;
            }
        })
    }

    fn heartbeat(&self) -> Option<Duration> {
        // No lease to keep; the beat only looks for a cancellation, one stat a second.
        Some(self.poll)
    }

    fn extend<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<Lease, SourceError>> {
        Box::pin(async move {
            Ok(match self.dirs.cancellation(delivery) {
                Some(reason) => Lease::Cancelled(reason),
                None => Lease::Held,
            })
        })
    }

    fn complete<'a>(
        &'a self,
        delivery: &'a Delivery,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        let (delivery, result) = (delivery.clone(), result.clone());
        Box::pin(self.blocking(move |dirs| dirs.complete(&delivery, &result)))
    }

    fn release<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), SourceError>> {
        let delivery = delivery.clone();
        Box::pin(self.blocking(move |dirs| dirs.release(&delivery)))
    }

    fn reject<'a>(
        &'a self,
        delivery: &'a Delivery,
        result: &'a JobResult,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        let (delivery, result) = (delivery.clone(), result.clone());
        Box::pin(self.blocking(move |dirs| dirs.reject(&delivery, &result)))
    }
}

/// Why a spool file was not read as a message.
enum Refused {
    /// Not a message: the reason, which never quotes the file's content.
    Not(String),
    /// The file could not be read.
    Io(std::io::Error),
}

/// Reads a claimed spool file as a message without ever blocking on it or reading past the
/// JobSpec limit: opened with `O_NOFOLLOW | O_NONBLOCK` (a symlink is refused, a FIFO does
/// not wait for a writer), refused unless `fstat` says it is a regular file no larger than
/// the limit, and read through a reader that stops one byte past it.
fn read_message(path: &Path) -> Result<Vec<u8>, Refused> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let limit = agent_config::jobspec::MAX_JOBSPEC_BYTES as u64;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Refused::Not(
                "the spool file is a symlink; a job must be a regular file in the inbox".into(),
            ));
        }
        // A socket cannot be opened at all.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {
            return Err(Refused::Not(
                "the spool file is a socket; a job must be a regular file".into(),
            ));
        }
        Err(e) => return Err(Refused::Io(e)),
    };
    let meta = file.metadata().map_err(Refused::Io)?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device file")
    } else if kind.is_dir() {
        Some("a directory")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(Refused::Not(format!(
            "the spool file is {what}; a job must be a regular file"
        )));
    }
    if meta.len() > limit {
        return Err(Refused::Not(format!(
            "the spool file is {} bytes; a JobSpec is at most {limit} bytes",
            meta.len()
        )));
    }
    let mut body = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut body)
        .map_err(Refused::Io)?;
    if body.len() as u64 > limit {
        return Err(Refused::Not(format!(
            "the spool file grew past {limit} bytes while it was read; a JobSpec is at most {limit} bytes"
        )));
    }
    Ok(body)
}

/// Puts a claimed file back into the inbox. A file of that name dropped there since (the
/// dispatcher's newer word on the same job) is kept, and the claimed copy is dropped. A
/// rename that refuses to replace is the one step that does both; where the file system
/// lacks it, a hard link (which fails when the name is taken) and a removal do.
fn give_back(claimed: &Path, inbox: &Path) -> std::io::Result<()> {
    let newer = || {
        tracing::info!(file = %inbox.display(), "a newer file of that name waits in the inbox; it replaces the one given back");
    };
    match rename_noreplace(claimed, inbox) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => newer(),
        Err(e) if unsupported(&e) => match std::fs::hard_link(claimed, inbox) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => newer(),
            // No hard links either (EPERM on FAT): a check and a plain rename, which a file
            // dropped between the two would lose to.
            Err(e) if unsupported(&e) || e.kind() == std::io::ErrorKind::PermissionDenied => {
                if inbox.symlink_metadata().is_ok() {
                    newer();
                } else {
                    return std::fs::rename(claimed, inbox);
                }
            }
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    }
    match std::fs::remove_file(claimed) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether the file system (or the C library) lacks the call, rather than refusing it.
fn unsupported(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|n| {
        [Errno::EINVAL, Errno::ENOSYS, Errno::EOPNOTSUPP].contains(&Errno::from_raw(n))
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
        .map_err(std::io::Error::from)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename_noreplace(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(nix::errno::Errno::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_claim_per_file_and_release_puts_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = SpoolSource::open(dir.path(), "a").unwrap();
        let b = SpoolSource::open(dir.path(), "b").unwrap();
        std::fs::write(dir.path().join("inbox/job-1.json"), "{}").unwrap();
        std::fs::write(dir.path().join("inbox/.partial.json"), "{").unwrap();
        std::fs::write(dir.path().join("inbox/notes.txt"), "").unwrap();
        let got = a.dirs.try_claim().unwrap().unwrap();
        assert_eq!(got.handle, "job-1.json");
        assert!(b.dirs.try_claim().unwrap().is_none());
        a.release(&got).await.unwrap();
        let again = b.dirs.try_claim().unwrap().unwrap();
        assert_eq!(again.handle, "job-1.json");
        assert!(dir.path().join("claimed/b/job-1.json").exists());
        assert_eq!(b.release_all_claimed(), vec!["job-1.json".to_string()]);
        assert!(dir.path().join("inbox/job-1.json").exists());
    }

    #[tokio::test]
    async fn a_file_dropped_again_is_neither_claimed_over_nor_replaced_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolSource::open(dir.path(), "a").unwrap();
        let inbox = dir.path().join("inbox/job-1.json");
        std::fs::write(&inbox, "first").unwrap();
        let first = spool.dirs.try_claim().unwrap().unwrap();
        // Dropped again while the first runs: it waits in the inbox.
        std::fs::write(&inbox, "newer").unwrap();
        assert!(spool.dirs.try_claim().unwrap().is_none());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("claimed/a/job-1.json")).unwrap(),
            "first"
        );
        // The first given back (a drain): the newer file stays, the older is dropped.
        spool.release(&first).await.unwrap();
        assert_eq!(std::fs::read_to_string(&inbox).unwrap(), "newer");
        assert!(!dir.path().join("claimed/a/job-1.json").exists());
        let again = spool.dirs.try_claim().unwrap().unwrap();
        assert_eq!(again.body, b"newer");
    }

    #[tokio::test]
    async fn a_dropped_file_wakes_the_poll_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = SpoolSource::open(dir.path(), "a").unwrap();
        // No rescan in the test's time: only the watch's wake-up can find the file.
        spool.poll = Duration::from_secs(3600);
        let inbox = dir.path().join("inbox");
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let tmp = inbox.join(".job.json.tmp");
            std::fs::write(&tmp, "{}").unwrap();
            std::fs::rename(&tmp, inbox.join("job.json")).unwrap();
        });
        let got = tokio::time::timeout(Duration::from_secs(30), spool.next())
            .await
            .expect("the drop never woke the poll")
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        assert_eq!(got.handle, "job.json");
    }

    #[tokio::test]
    async fn deliveries_are_counted_across_agents_until_the_job_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let a = SpoolSource::open(dir.path(), "a").unwrap();
        let b = SpoolSource::open(dir.path(), "b").unwrap();
        let inbox = dir.path().join("inbox/job-1.json");
        std::fs::write(&inbox, "{}").unwrap();
        let first = a.dirs.try_claim().unwrap().unwrap();
        assert_eq!(first.receive_count, 1);
        // a restarts: what it had claimed goes back and counts again wherever it lands.
        assert_eq!(a.release_all_claimed(), ["job-1.json"]);
        let second = b.dirs.try_claim().unwrap().unwrap();
        assert_eq!(second.receive_count, 2);
        b.release(&second).await.unwrap();
        let third = a.dirs.try_claim().unwrap().unwrap();
        assert_eq!(third.receive_count, 3);
        let result: JobResult = serde_json::from_value(serde_json::json!({
            "job_id": "job-1", "status": "SUCCEEDED", "agent": "a", "source": "spool",
            "received_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
            "duration_ms": 1000, "attempts": 3
        }))
        .unwrap();
        a.complete(&third, &result).await.unwrap();
        assert!(!dir.path().join("deliveries/job-1.json").exists());
        // Dropped again after its result: a new job under an old name starts at one.
        std::fs::write(&inbox, "{}").unwrap();
        assert_eq!(b.dirs.try_claim().unwrap().unwrap().receive_count, 1);
    }

    #[test]
    fn a_give_back_cut_short_after_its_link_leaves_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = SpoolSource::open(dir.path(), "a").unwrap();
        let inbox = dir.path().join("inbox/job-1.json");
        std::fs::write(&inbox, "job").unwrap();
        let claimed = a.dirs.try_claim().unwrap().unwrap();
        // The agent died between linking the file back and unlinking its claim.
        std::fs::hard_link(dir.path().join("claimed/a/job-1.json"), &inbox).unwrap();
        assert_eq!(a.release_all_claimed(), ["job-1.json"]);
        assert_eq!(std::fs::read_to_string(&inbox).unwrap(), "job");
        assert!(!dir.path().join("claimed/a").join(&claimed.handle).exists());
    }
}
