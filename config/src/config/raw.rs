//! The config file as written: every value that gets checked keeps its position, and
//! values with a unit are kept as text so the checks can explain what is wrong with them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::values::Scalar;

type S<T> = Spanned<T>;

/// Read first, on its own, so a file of another version is told so before any of its
/// other fields are looked at.
#[derive(Deserialize)]
pub(super) struct VersionProbe {
    pub version: Option<S<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(rename = "version")]
    pub _version: toml::Value,
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub jobs: RawJobs,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub roles: RawRoles,
    #[serde(default)]
    pub deploy: RawDeploy,
    #[serde(default)]
    pub notifications: RawNotifications,
    #[serde(default)]
    pub git_credentials: Vec<S<RawGitCredential>>,
    #[serde(default)]
    pub sources: Vec<S<RawSource>>,
    #[serde(default)]
    pub aws: RawAws,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub name: Option<S<String>>,
    pub work_dir: Option<S<String>>,
    pub state_dir: Option<S<String>>,
    pub concurrency: Option<S<i64>>,
    pub drain_timeout: Option<S<Scalar>>,
    pub retention: Option<S<Scalar>>,
    #[serde(default)]
    pub labels: BTreeMap<S<String>, S<String>>,
    pub metrics_address: Option<S<String>>,
    pub log_format: Option<S<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJobs {
    pub default_timeout: Option<S<Scalar>>,
    pub max_timeout: Option<S<Scalar>>,
    pub default_image: Option<S<String>>,
    #[serde(default)]
    pub allowed_images: Vec<S<String>>,
    #[serde(default)]
    pub allow_privileged: bool,
    #[serde(default)]
    pub allowed_git_paths: Vec<S<String>>,
    pub memory: Option<S<Scalar>>,
    pub cpus: Option<S<f64>>,
    pub pids: Option<S<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub artifacts: Option<S<String>>,
    pub logs: Option<S<String>>,
    pub results: Option<S<String>>,
    pub cache: Option<S<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoles {
    #[serde(default)]
    pub allowed: Vec<S<String>>,
    #[serde(default)]
    pub environments: BTreeMap<S<String>, RawRoleRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoleRef {
    pub role_arn: S<String>,
    pub external_id: Option<S<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeploy {
    pub root: Option<S<String>>,
    #[serde(default)]
    pub allowed_destinations: Vec<S<String>>,
    pub max_revisions: Option<S<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifications {
    pub webhook: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGitCredential {
    pub url_prefix: Option<S<String>>,
    pub username: Option<S<String>>,
    pub token_file: Option<S<String>>,
    pub ssh_key_file: Option<S<String>>,
    pub passphrase_file: Option<S<String>>,
}

/// One `[[sources]]` table with the fields of every type: a tagged enum would lose the
/// positions of the fields inside it, and those are what the checks report.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub path: Option<S<String>>,
    pub queue_url: Option<S<String>>,
    pub visibility_timeout: Option<S<Scalar>>,
    pub wait_time: Option<S<Scalar>>,
    pub max_receive_count: Option<S<i64>>,
    pub dead_letter_queue_url: Option<S<String>>,
    pub category: Option<S<String>>,
    pub provider: Option<S<String>>,
    pub version: Option<S<Scalar>>,
    pub poll_interval: Option<S<Scalar>>,
    pub job_timeout: Option<S<Scalar>>,
    pub query_param: Option<S<BTreeMap<S<String>, S<String>>>>,
}

impl RawSource {
    /// The fields set, by name, with their positions; `type` left out.
    pub fn fields_set(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut set = Vec::new();
        let mut add = |name, span: Option<std::ops::Range<usize>>| {
            if let Some(span) = span {
                set.push((name, span));
            }
        };
        add("path", self.path.as_ref().map(|v| v.span()));
        add("queue_url", self.queue_url.as_ref().map(|v| v.span()));
        add(
            "visibility_timeout",
            self.visibility_timeout.as_ref().map(|v| v.span()),
        );
        add("wait_time", self.wait_time.as_ref().map(|v| v.span()));
        add(
            "max_receive_count",
            self.max_receive_count.as_ref().map(|v| v.span()),
        );
        add(
            "dead_letter_queue_url",
            self.dead_letter_queue_url.as_ref().map(|v| v.span()),
        );
        add("category", self.category.as_ref().map(|v| v.span()));
        add("provider", self.provider.as_ref().map(|v| v.span()));
        add("version", self.version.as_ref().map(|v| v.span()));
        add(
            "poll_interval",
            self.poll_interval.as_ref().map(|v| v.span()),
        );
        add("job_timeout", self.job_timeout.as_ref().map(|v| v.span()));
        add("query_param", self.query_param.as_ref().map(|v| v.span()));
        set
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub region: Option<S<String>>,
    pub profile: Option<S<String>>,
    pub endpoint_url: Option<S<String>>,
}
