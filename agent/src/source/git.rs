//! What a local git checkout is at, read from `.git` directly: no git binary or library
//! needed to fill `CODEBUILD_RESOLVED_SOURCE_VERSION`.

use std::fs;
use std::path::{Path, PathBuf};

/// The commit `dir` has checked out, or `None` when it is not a git checkout.
pub fn head_commit(dir: &Path) -> Option<String> {
    let git_dir = git_dir(dir)?;
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    match head.strip_prefix("ref: ") {
        None => is_sha(head).then(|| head.to_string()),
        Some(reference) => resolve(&git_dir, reference.trim()),
    }
}

/// The branch `dir` has checked out, if any.
pub fn head_branch(dir: &Path) -> Option<String> {
    let head = fs::read_to_string(git_dir(dir)?.join("HEAD")).ok()?;
    head.trim()
        .strip_prefix("ref: refs/heads/")
        .map(str::to_string)
}

/// `.git` is a directory, or in worktrees and submodules a file naming the directory.
fn git_dir(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let text = fs::read_to_string(&dot_git).ok()?;
    let target = text.trim().strip_prefix("gitdir: ")?;
    let path = Path::new(target);
    Some(if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    })
}

fn resolve(git_dir: &Path, reference: &str) -> Option<String> {
    // Linked worktrees keep shared refs in the common directory.
    let common = fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.to_path_buf());
    for base in [git_dir, common.as_path()] {
        if let Ok(value) = fs::read_to_string(base.join(reference)) {
            let value = value.trim();
            if is_sha(value) {
                return Some(value.to_string());
            }
        }
        if let Ok(packed) = fs::read_to_string(base.join("packed-refs")) {
            let found = packed.lines().find_map(|line| {
                let (sha, name) = line.split_once(' ')?;
                (name == reference && is_sha(sha)).then(|| sha.to_string())
            });
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

fn is_sha(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn reads_branch_packed_and_detached_heads() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(head_commit(d), None);
        git(d, &["init", "-q", "-b", "main"]);
        assert_eq!(head_commit(d), None);
        std::fs::write(d.join("f"), "x").unwrap();
        git(d, &["add", "f"]);
        git(d, &["commit", "-q", "-m", "one"]);
        let sha = git(d, &["rev-parse", "HEAD"]);
        assert_eq!(head_commit(d).as_deref(), Some(sha.as_str()));
        assert_eq!(head_branch(d).as_deref(), Some("main"));
        git(d, &["pack-refs", "--all"]);
        assert_eq!(head_commit(d).as_deref(), Some(sha.as_str()));
        git(d, &["checkout", "-q", "--detach"]);
        assert_eq!(head_commit(d).as_deref(), Some(sha.as_str()));
        assert_eq!(head_branch(d), None);
    }
}
