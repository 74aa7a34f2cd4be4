//! Where run-local keeps a project's state (logs, artifacts, cache, the source's copy):
//! never in the source, but in `$XDG_STATE_HOME/agent/<project>-<hash>/` (default
//! `~/.local/state/agent/…`), one directory per source directory.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The state directory of the project whose source is `source` (an absolute path).
pub fn project_dir(source: &Path) -> PathBuf {
    base_dir().join("agent").join(project_name(source))
}

/// `$XDG_STATE_HOME`, else `$HOME/.local/state`, else the user's home from the password
/// database, else the temporary directory.
fn base_dir() -> PathBuf {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = absolute("XDG_STATE_HOME") {
        return dir;
    }
    let home = absolute("HOME").or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    });
    match home {
        Some(home) => home.join(".local/state"),
        None => std::env::temp_dir(),
    }
}

/// `<last component>-<8 hex digits of the path's SHA-256>`: readable, and distinct for two
/// checkouts of the same name.
fn project_name(source: &Path) -> String {
    let name: String = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_string())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(source.as_os_str().as_encoded_bytes());
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{name}-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_distinct() {
        let a = project_name(Path::new("/home/me/src/app"));
        let b = project_name(Path::new("/home/me/other/app"));
        assert!(a.starts_with("app-") && a.len() == "app-".len() + 8, "{a}");
        assert_ne!(a, b);
        assert!(project_name(Path::new("/")).starts_with("root-"));
        assert!(project_name(Path::new("/x/my app")).starts_with("my_app-"));
    }
}
