//! The lock of one mirror, and the removal of mirrors no job has used for a while.
//!
//! Each mirror `<hash>.git` has a lock file `<hash>.git.lock`: a job holds it (flock) while
//! it fetches into the mirror and copies its objects, and sets its modification time, which
//! is then the mirror's last use. Eviction takes the lock without waiting, so a mirror in
//! use is never removed; under the lock it renames the mirror aside (one step, so no job
//! ever finds half a mirror, even after a crash) and unlinks the lock file, and deletes
//! what it renamed after. A process that opened the old lock file before that unlink and
//! got the lock after it holds a lock nobody else can see; so a lock is held only once the
//! path still names the file that was locked.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use super::{GitError, io_error};

/// Takes the lock at `path` (waiting for a holder), and marks the mirror as used now.
pub(super) fn lock_mirror(path: &Path) -> Result<Flock<File>, GitError> {
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error("open", path))?;
        tracing::debug!(lock = %path.display(), "waiting for the mirror lock");
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_error("lock", path)(io::Error::from(errno)))?;
        if !still_named(&lock, path) {
            // Evicted while this process waited: lock the new file.
            continue;
        }
        // Only eviction reads the mark; a mirror it misjudges as unused is fetched again.
        if let Err(e) = lock.set_modified(SystemTime::now()) {
            tracing::warn!(lock = %path.display(), error = %e, "cannot mark the mirror's use; it may be evicted early");
        }
        return Ok(lock);
    }
}

/// Whether `path` still names the locked file.
fn still_named(lock: &File, path: &Path) -> bool {
    match (lock.metadata(), fs::symlink_metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// The suffix of a mirror renamed aside to be deleted.
const EVICTING: &str = ".evicting-";

/// Removes the mirrors under `mirrors` last used before `cutoff` that no job holds, and
/// returns how many it removed. A mirror that cannot be removed is logged and kept.
pub fn evict_unused(mirrors: &Path, cutoff: SystemTime) -> usize {
    let Ok(entries) = fs::read_dir(mirrors) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // What an eviction cut short (a crash, an error) renamed aside and left.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(&format!(".git{EVICTING}")))
        {
            delete_evicted(&path);
            continue;
        }
        let lock_path = path;
        let Some(mirror) = lock_path
            .to_str()
            .and_then(|p| p.strip_suffix(".lock"))
            .filter(|p| p.ends_with(".git"))
            .map(PathBuf::from)
        else {
            continue;
        };
        if last_use(&lock_path, &mirror).is_none_or(|at| at >= cutoff) {
            continue;
        }
        let Ok(file) = OpenOptions::new().write(true).open(&lock_path) else {
            continue;
        };
        // In use (a job fetches or copies from it): not now.
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        // Used between the look at its time and the lock, or already evicted.
        if last_use(&lock_path, &mirror).is_none_or(|at| at >= cutoff)
            || !still_named(&lock, &lock_path)
        {
            continue;
        }
        // Unique across restarts too: in a container the agent is always pid 1.
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let aside = PathBuf::from(format!(
            "{}{EVICTING}{}-{stamp}",
            mirror.display(),
            std::process::id()
        ));
        let gone = match fs::rename(&mirror, &aside) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => fs::remove_file(&lock_path),
        };
        drop(lock);
        match gone {
            Ok(()) => {
                delete_evicted(&aside);
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(mirror = %mirror.display(), error = %e, "cannot remove an unused git mirror");
            }
        }
    }
    removed
}

/// The mirror's last use: its lock's mark, or the last fetch into it where that is later
/// (a lock file that another agent's version did not mark).
fn last_use(lock_path: &Path, mirror: &Path) -> Option<SystemTime> {
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let marked = modified(lock_path)?;
    Some(
        [mirror.join("FETCH_HEAD"), mirror.join("objects/pack")]
            .iter()
            .filter_map(|p| modified(p))
            .fold(marked, SystemTime::max),
    )
}

fn delete_evicted(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete an evicted git mirror; the next eviction tries again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mirror(dir: &Path, name: &str, used_ago: Duration) {
        fs::create_dir_all(dir.join(format!("{name}.git/objects"))).unwrap();
        let pack = dir.join(format!("{name}.git/objects/pack"));
        fs::write(&pack, "x").unwrap();
        let at = SystemTime::now() - used_ago;
        File::open(&pack).unwrap().set_modified(at).unwrap();
        let lock = dir.join(format!("{name}.git.lock"));
        let file = File::create(&lock).unwrap();
        file.set_modified(at).unwrap();
    }

    #[test]
    fn a_recent_fetch_keeps_a_mirror_and_what_an_eviction_left_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86400);
        // Its lock was never marked (another version), but it was fetched into yesterday.
        mirror(dir.path(), "fetched", day * 20);
        fs::write(dir.path().join("fetched.git/FETCH_HEAD"), "x").unwrap();
        File::open(dir.path().join("fetched.git/FETCH_HEAD"))
            .unwrap()
            .set_modified(SystemTime::now() - day)
            .unwrap();
        let left = dir.path().join("gone.git.evicting-42");
        fs::create_dir_all(left.join("objects")).unwrap();
        assert_eq!(evict_unused(dir.path(), SystemTime::now() - day * 15), 0);
        assert!(dir.path().join("fetched.git").is_dir());
        assert!(!left.exists(), "swept");
    }

    #[test]
    fn only_mirrors_unused_since_the_cutoff_and_not_locked_go() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86400);
        mirror(dir.path(), "old", day * 20);
        mirror(dir.path(), "recent", day);
        mirror(dir.path(), "busy", day * 20);
        let busy = Flock::lock(
            OpenOptions::new()
                .write(true)
                .open(dir.path().join("busy.git.lock"))
                .unwrap(),
            FlockArg::LockExclusive,
        )
        .unwrap();
        assert_eq!(evict_unused(dir.path(), SystemTime::now() - day * 15), 1);
        assert!(!dir.path().join("old.git").exists());
        assert!(!dir.path().join("old.git.lock").exists());
        assert!(dir.path().join("recent.git").is_dir());
        assert!(
            dir.path().join("busy.git").is_dir(),
            "a mirror in use stays"
        );
        drop(busy);
        assert_eq!(evict_unused(dir.path(), SystemTime::now() - day * 15), 1);
        assert!(!dir.path().join("busy.git").exists());
    }

    #[test]
    fn a_lock_taken_marks_the_use_and_survives_an_eviction_it_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86400);
        mirror(dir.path(), "repo", day * 20);
        let lock_path = dir.path().join("repo.git.lock");
        // A job opened the lock file before the eviction unlinked it.
        let held = lock_mirror(&lock_path).unwrap();
        let age = fs::metadata(&lock_path).unwrap().modified().unwrap();
        assert!(
            age > SystemTime::now() - Duration::from_secs(60),
            "use marked"
        );
        assert_eq!(evict_unused(dir.path(), SystemTime::now() - day), 0, "held");
        drop(held);
        // The file is replaced under a waiter: the waiter locks the new one.
        let old = OpenOptions::new().write(true).open(&lock_path).unwrap();
        let old = Flock::lock(old, FlockArg::LockExclusive).unwrap();
        let waiter = std::thread::spawn({
            let lock_path = lock_path.clone();
            move || {
                let lock = lock_mirror(&lock_path).unwrap();
                still_named(&lock, &lock_path)
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        fs::remove_file(&lock_path).unwrap();
        drop(old);
        assert!(waiter.join().unwrap());
    }
}
