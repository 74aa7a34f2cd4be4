//! Deployments: the appspec lifecycle engine the CodeDeploy agent runs, on this host.
//!
//! A deployment fetches its revision, runs ApplicationStop from the last successful one,
//! then BeforeInstall → Install → AfterInstall → ApplicationStart → ValidateService from
//! the new one, keeping each revision and the pointers to the last good one in a
//! deployment root; a failed deployment can be followed by a rollback to the last good
//! revision. `agent deploy-local` and the daemon's deploy jobs both run it.

pub mod allowed;
pub mod bundle;
mod engine;
pub mod hooks;
pub mod install;
pub mod lifecycle;
pub mod permissions;
pub mod root;
pub mod summary;

pub use engine::{DeployError, DeployRequest, Deployer, Failure, JobEnv, Observer};

use time::OffsetDateTime;
use time::macros::format_description;

/// CodeDeploy's default number of revisions kept per deployment group.
pub const DEFAULT_MAX_REVISIONS: usize = 5;

/// A new id in CodeDeploy's shape (`d-` and nine characters), marked as local.
pub fn new_deployment_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut n = uuid::Uuid::new_v4().as_u128();
    let mut id = String::from("d-");
    for _ in 0..9 {
        id.push(char::from(ALPHABET[(n % 36) as usize]));
        n /= 36;
    }
    id
}

/// An id used as a directory name: CodeDeploy's ARN forms are reduced to the id, and
/// nothing that could name another directory is accepted.
pub fn check_id(what: &str, text: &str) -> Result<String, String> {
    let id = text.rsplit('/').next().unwrap_or(text);
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(format!(
            "{what} `{text}` may hold letters, digits, `-`, `_` and `.` (up to 128, not starting with `.`)"
        ))
    }
}

/// A group id from the application and group names, stable across deployments.
pub fn group_id(application: &str, group: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string()
    };
    let id = format!("{}_{}", clean(application), clean(group));
    id.chars().take(128).collect()
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn now_log() -> String {
    OffsetDateTime::now_utc()
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = new_deployment_id();
        assert!(id.starts_with("d-") && id.len() == 11, "{id}");
        assert_eq!(
            check_id("id", "arn:aws:codedeploy:us-east-1:123:deployment/d-ABC").unwrap(),
            "d-ABC"
        );
        for bad in ["", "..", ".hidden", "a b", "x\ny"] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
        assert_eq!(group_id("My App", "prod/eu"), "My-App_prod-eu");
    }
}
