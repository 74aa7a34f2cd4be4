//! Where a git source's credentials come from: the job's Secrets Manager secret, or the
//! config's `[[git_credentials]]` for the repository's URL. Either way the secret stays in
//! the daemon's memory for the fetch; it never reaches the build, argv or a log.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use agent_config::config::GitCredential;

use crate::source::git_fetch::GitCredentials;

/// The longest a secret file may be: a token or a private key, not a mistake.
const SECRET_FILE_MAX: u64 = 64 * 1024;

/// The credentials of a `[[git_credentials]]` table, read from its files now (a rotated
/// token takes effect at the next job).
pub fn from_config(entry: &GitCredential) -> Result<GitCredentials, String> {
    let username = entry.username.clone();
    if let Some(path) = &entry.token_file {
        let token = read_secret_file(path, entry)?.trim().to_string();
        if token.is_empty() {
            return Err(format!(
                "the git token file {} (for {}) is empty",
                path.display(),
                entry.url_prefix
            ));
        }
        return Ok(GitCredentials::Token { username, token });
    }
    let Some(key) = &entry.ssh_key_file else {
        return Err(format!(
            "the git credentials for {} name no token or ssh key file",
            entry.url_prefix
        ));
    };
    let private_key = read_secret_file(key, entry)?;
    let passphrase = match &entry.passphrase_file {
        Some(path) => Some(
            read_secret_file(path, entry)?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    Ok(GitCredentials::SshKey {
        username,
        private_key,
        passphrase,
    })
}

/// A secret file's text; refused when everyone may read it, since then it is no secret.
fn read_secret_file(path: &Path, entry: &GitCredential) -> Result<String, String> {
    let what = |e: &dyn std::fmt::Display| {
        format!(
            "cannot read {} (git credentials for {}): {e}",
            path.display(),
            entry.url_prefix
        )
    };
    let file = std::fs::File::open(path).map_err(|e| what(&e))?;
    let meta = file.metadata().map_err(|e| what(&e))?;
    if !meta.is_file() {
        return Err(what(&"not a regular file"));
    }
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(what(&format!(
            "everyone may read it; `chmod o-r {}` (or 0400, owned by the agent's user)",
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(SECRET_FILE_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| what(&e))?;
    if text.len() as u64 > SECRET_FILE_MAX {
        return Err(what(&format!("longer than {SECRET_FILE_MAX} bytes")));
    }
    Ok(text)
}

/// Git credentials from Secrets Manager: a JSON object with `username` (default `git`) and
/// `token`, or `ssh_private_key` and optionally `passphrase`; a plain string is a private
/// key when it is one (`-----BEGIN … PRIVATE KEY-----`), else a token.
/// The value stays in memory.
pub async fn from_secret(
    secret: &str,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<crate::source::git_fetch::GitCredentials, SecretError> {
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
    let aws = aws.ok_or_else(|| SecretError {
        message: "git credentials come from Secrets Manager, and this agent has no AWS setup"
            .to_string(),
        permanent: false,
    })?;
    let value = aws_sdk_secretsmanager::Client::new(aws)
        .get_secret_value()
        .secret_id(secret)
        .send()
        .await
        .map_err(|e| SecretError {
            permanent: !crate::aws::transient::is_transient(&e, e.code().unwrap_or_default()),
            message: format!(
                "cannot read the git credentials secret {secret}: {}",
                crate::aws::error_text(&e)
            ),
        })?;
    let text = value.secret_string().ok_or_else(|| SecretError {
        message: format!("the git credentials secret {secret} has no string value"),
        permanent: true,
    })?;
    parse_secret(secret, text).map_err(|message| SecretError {
        message,
        permanent: true,
    })
}

/// Why a git credentials secret could not be had.
#[derive(Debug)]
pub struct SecretError {
    pub message: String,
    /// Asking again will not help: the secret is missing, refused or not credentials.
    pub permanent: bool,
}

/// The credentials a secret's string holds: a JSON object as [`from_secret`] says, a bare
/// private key (PEM or OpenSSH), or else a token.
fn parse_secret(
    secret: &str,
    text: &str,
) -> Result<crate::source::git_fetch::GitCredentials, String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        let trimmed = text.trim();
        if trimmed.starts_with("-----BEGIN") && trimmed.contains("PRIVATE KEY-----") {
            return Ok(GitCredentials::SshKey {
                username: "git".into(),
                private_key: format!("{trimmed}\n"),
                passphrase: None,
            });
        }
        return Ok(GitCredentials::Token {
            username: "git".into(),
            token: trimmed.to_string(),
        });
    };
    let field = |name: &str| {
        fields
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let username = field("username").unwrap_or_else(|| "git".into());
    match (field("token"), field("ssh_private_key")) {
        (Some(token), _) => Ok(GitCredentials::Token { username, token }),
        (None, Some(private_key)) => Ok(GitCredentials::SshKey {
            username,
            private_key,
            passphrase: field("passphrase"),
        }),
        (None, None) => Err(format!(
            "the git credentials secret {secret} has neither `token` nor `ssh_private_key`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, token: Option<&str>, key: Option<&str>) -> GitCredential {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        GitCredential {
            url_prefix: "https://git.example.com/platform/".into(),
            username: "ci-bot".into(),
            token_file: token.map(|t| write("token", t)),
            ssh_key_file: key.map(|k| write("key", k)),
            passphrase_file: key.map(|_| write("passphrase", "open sesame\n")),
        }
    }

    #[test]
    fn secrets_hold_tokens_keys_or_json() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n";
        match parse_secret("s", key).unwrap() {
            GitCredentials::SshKey {
                username,
                private_key,
                passphrase,
            } => {
                assert_eq!(username, "git");
                assert_eq!(private_key, key);
                assert!(passphrase.is_none());
            }
            other => panic!("{other:?}"),
        }
        match parse_secret("s", "ghp_token\n").unwrap() {
            GitCredentials::Token { username, token } => {
                assert_eq!((username.as_str(), token.as_str()), ("git", "ghp_token"));
            }
            other => panic!("{other:?}"),
        }
        match parse_secret("s", r#"{"username": "ci", "token": "t0k"}"#).unwrap() {
            GitCredentials::Token { username, token } => {
                assert_eq!((username.as_str(), token.as_str()), ("ci", "t0k"));
            }
            other => panic!("{other:?}"),
        }
        let err = parse_secret("s", r#"{"username": "ci"}"#).unwrap_err();
        assert!(
            err.contains("neither `token` nor `ssh_private_key`"),
            "{err}"
        );
    }

    #[test]
    fn a_token_file_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let got = from_config(&entry(dir.path(), Some("  tok-123\n"), None)).unwrap();
        match got {
            GitCredentials::Token { username, token } => {
                assert_eq!((username.as_str(), token.as_str()), ("ci-bot", "tok-123"));
            }
            other => panic!("{:?}", other.kind()),
        }
    }

    #[test]
    fn an_ssh_key_comes_with_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n";
        match from_config(&entry(dir.path(), None, Some(key))).unwrap() {
            GitCredentials::SshKey {
                private_key,
                passphrase,
                ..
            } => {
                assert_eq!(private_key, key);
                assert_eq!(passphrase.as_deref(), Some("open sesame"));
            }
            other => panic!("{:?}", other.kind()),
        }
    }

    #[test]
    fn unreadable_empty_or_world_readable_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = entry(dir.path(), Some("tok"), None);
        let path = e.token_file.clone().unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = from_config(&e).unwrap_err();
        assert!(
            err.contains("everyone may read it") && err.contains("chmod o-r"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "\n").unwrap();
        assert!(from_config(&e).unwrap_err().contains("is empty"));
        e.token_file = Some(dir.path().join("missing"));
        let err = from_config(&e).unwrap_err();
        assert!(
            err.contains("missing") && err.contains("https://git.example.com/platform/"),
            "{err}"
        );
    }
}
