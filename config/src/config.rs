//! The daemon's configuration: `agent daemon --config /etc/agent/agent.toml`.
//!
//! The file is read in two steps. First it is parsed as TOML into a shape that keeps where
//! every value was written; unknown keys and wrong types stop there, with the position.
//! Then every value is checked and the defaults are filled in, collecting all problems
//! before anything is reported, so an operator fixes the file in one pass.
//! What comes out, [`Config`], holds only checked, typed values.

mod check;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::allow::{ImagePattern, ImageRef, RoleArn, RolePattern};
use crate::diag::{Problem, render_all};
use crate::values::{
    DurationText, S3Url, SizeText, serialize_duration, serialize_option_duration, serialize_size,
};

/// The config versions this agent reads.
pub const CONFIG_VERSIONS: &[u32] = &[1];

/// The daemon's configuration. Every section is optional except `version` and at least one
/// `[[sources]]`; whatever is left out takes the default shown.
///
/// Durations are written `30s`, `15m`, `2h` or `1h30m`; a bare number is seconds (unlike
/// `run-local --timeout`, where it is minutes). Sizes are written `4g`, `512m`, `1024k`
/// (binary units) or a bare number of bytes.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "agent daemon configuration")]
pub struct Config {
    /// The version of this file's format. Required; this agent reads `1`.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// This agent: its name, directories, how many jobs it runs at once.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub agent: AgentConfig,
    /// Limits and defaults for every job.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub jobs: JobsConfig,
    /// Where artifacts, logs, results and caches go when a job does not say.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub storage: StorageConfig,
    /// The IAM roles jobs may assume.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub roles: RolesConfig,
    /// Deployments on this host.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub deploy: DeployConfig,
    /// Where job results are announced.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub notifications: NotificationsConfig,
    /// Credentials for git sources, by repository URL prefix: used when a job's git source
    /// names no `credentials_secret`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git_credentials: Vec<GitCredential>,
    /// Where jobs come from: one `[[sources]]` table each, at least one. Two sources for the
    /// same spool directory, queue or action type are refused.
    #[schemars(length(min = 1))]
    pub sources: Vec<Source>,
    /// How the agent reaches AWS for its own calls (queues, pipelines, S3, STS).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub aws: AwsConfig,
}

fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// `[agent]`
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This agent's name, in results, metrics, container labels (`agent.instance`) and logs.
    /// Letters, digits, `.`, `_` and `-`, at most 63. Default: the host name.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub name: String,
    /// Where each job's workspace is made, and removed after the job. Absolute. Nothing else
    /// may live inside it: the janitor removes what it does not know.
    #[serde(default = "defaults::work_dir")]
    pub work_dir: PathBuf,
    /// What the daemon keeps across restarts (leases, finished job ids, pipeline
    /// continuation tokens). Absolute.
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    /// How many jobs run at once, at least 1.
    #[serde(default = "defaults::concurrency")]
    #[schemars(range(min = 1))]
    pub concurrency: u32,
    /// On shutdown or drain, how long running jobs may go on before they are stopped. `0s`
    /// stops them at once.
    #[serde(
        default = "defaults::drain_timeout",
        serialize_with = "serialize_duration"
    )]
    #[schemars(with = "DurationText")]
    pub drain_timeout: Duration,
    /// How long finished jobs' results, logs and kept artifacts stay in the state
    /// directory; older ones are removed every hour. A result must outlive every
    /// redelivery of its job (SQS keeps a message at most 14 days), or a job delivered
    /// again is run again. Git mirrors no job has fetched through for as long are removed
    /// too. `1h` to `8760h`.
    #[serde(default = "defaults::retention", serialize_with = "serialize_duration")]
    #[schemars(with = "DurationText")]
    pub retention: Duration,
    /// Free-form `key = "value"` pairs describing this agent, shown in `/status.json` and
    /// metrics and copied into results. Keys: letters, digits, `.`, `_`, `-`, at most 63.
    #[serde(default)]
    #[schemars(extend(
        "propertyNames" = {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$", "maxLength": 63},
        "additionalProperties" = {"type": "string", "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"}
    ))]
    pub labels: BTreeMap<String, String>,
    /// Where `/metrics`, `/healthz`, `/readyz` and `/status.json` are served, as
    /// `IP:port` (`127.0.0.1:9095`). Default: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<SocketAddr>,
    /// The daemon's own log lines: `plain` text or one `json` object per line.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// How the daemon writes its own log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text for people.
    #[default]
    Plain,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    pub const NAMES: &[&str] = &["plain", "json"];
}

/// `[jobs]`
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// A job's time limit when it sets none.
    #[serde(
        default = "defaults::default_timeout",
        serialize_with = "serialize_duration"
    )]
    #[schemars(with = "DurationText")]
    pub default_timeout: Duration,
    /// The longest time limit a job may ask for; a job asking for more is refused. At least
    /// `default_timeout`.
    #[serde(
        default = "defaults::max_timeout",
        serialize_with = "serialize_duration"
    )]
    #[schemars(with = "DurationText")]
    pub max_timeout: Duration,
    /// The build image when a job names none. Always allowed, whatever `allowed_images` says.
    #[serde(default = "defaults::default_image")]
    pub default_image: String,
    /// The other images jobs may run, as patterns on the normalised reference
    /// (`agent-*` is `docker.io/library/agent-*`): `*` within one path component, `**` for
    /// any depth, the registry host literal. A pattern without a tag allows every tag and
    /// digest; with a tag, only that tag and no digest; with a digest, only that digest.
    /// Empty: only `default_image`. No pattern allows every registry.
    #[serde(default)]
    pub allowed_images: Vec<ImagePattern>,
    /// Whether a job may ask for a privileged container (Docker-in-Docker). A privileged
    /// container can take over the host.
    #[serde(default)]
    pub allow_privileged: bool,
    /// Directories whose repositories jobs may clone by `file://` URL (a mirror on this
    /// host or a network mount), each with what is below it. Absolute. Empty: no `file://`
    /// git source runs, since it would read this host's disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_git_paths: Vec<PathBuf>,
    /// Each build container's memory limit, at least `6m` (Docker's minimum).
    #[serde(default = "defaults::memory", serialize_with = "serialize_size")]
    #[schemars(with = "SizeText")]
    pub memory: u64,
    /// CPUs each build container may use, e.g. `2` or `0.5`.
    #[serde(default = "defaults::cpus")]
    #[schemars(range(min = 0.01, max = 1024.0))]
    pub cpus: f64,
    /// The most processes each build container may have.
    #[serde(default = "defaults::pids")]
    #[schemars(range(min = 16))]
    pub pids: u32,
}

/// `[storage]`: S3 locations, each `s3://bucket[/prefix]`. A job's own settings win.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where artifacts go when a job asks for artifacts without naming `artifacts.s3`.
    /// Default: none; such a job is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<S3Url>,
    /// Where build and deployment logs go (`<prefix>/logs/<job id>.log`, gzip). Default:
    /// logs stay in `state_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<S3Url>,
    /// Where each job's result is written under its id before its lease is released, so a
    /// job delivered twice runs once. Default: `state_dir`, which only guards this machine;
    /// set it when several agents share a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<S3Url>,
    /// Where build caches go when a job names no `cache.s3`. Default: a local directory in
    /// `state_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<S3Url>,
}

/// `[roles]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Role ARNs a job may name in `role.arn`, as patterns: a full role ARN where `*`
    /// matches any characters but `:` (it crosses `/` into role paths, as in IAM policies)
    /// and `?` one. Matching is case-sensitive and whole; the partition is literal; the
    /// account is 12 digits or exactly `*` (every account: allowed, rarely wise). Empty: no
    /// job may name a role ARN.
    #[serde(default)]
    pub allowed: Vec<RolePattern>,
    /// Named roles a job picks with `role.environment`, e.g. `[roles.environments.prod]`.
    /// They need not appear in `allowed`. Names: letters, digits, `_`, `-`, at most 64.
    #[serde(default)]
    pub environments: BTreeMap<String, RoleRef>,
}

/// A role the agent assumes for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRef {
    /// The role's ARN.
    pub role_arn: RoleArn,
    /// The external id the role's trust policy requires (2 to 1224 characters of
    /// `[\w+=,.@:/-]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// `[deploy]`
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Where revisions, deployment logs and the last-successful pointer of each
    /// deployment group are kept. Absolute.
    #[serde(default = "defaults::deploy_root")]
    pub root: PathBuf,
    /// The only directories (and what is below them) an appspec's `files` may install into.
    /// Absolute. Empty: deployments may run hooks but install no files.
    #[serde(default)]
    pub allowed_destinations: Vec<PathBuf>,
    /// Revisions kept per deployment group, at least 1; the last successful one is never
    /// removed.
    #[serde(default = "defaults::max_revisions")]
    #[schemars(range(min = 1))]
    pub max_revisions: u32,
}

/// `[notifications]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// A URL each job's result is POSTed to as JSON when the job ends, unless the job names
    /// its own. `https://`, or `http://` to this machine only. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// `[[git_credentials]]`: what the agent offers a git server for the repositories under
/// one URL prefix. The secret stays in a file only root and the agent can read (a
/// systemd credential, say); the agent reads it for each job, so a rotated token needs no
/// reload, and never passes it to the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitCredential {
    /// The repositories these credentials are for: the start of their git URLs, ending in
    /// `/` or `:` (`https://git.example.com/platform/`, `git@git.example.com:platform/`).
    /// Where several match, the longest wins.
    pub url_prefix: String,
    /// The user name: for https the basic-auth user a forge expects with a token
    /// (`x-access-token`, `oauth2`, a bot's name); for ssh the login.
    #[serde(default = "defaults::git_username")]
    pub username: String,
    /// A file holding a token or password for https. Absolute; not readable by everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A file holding an ssh private key (OpenSSH or PEM) for ssh URLs, instead of
    /// `token_file`. Absolute; not readable by everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_file: Option<PathBuf>,
    /// A file holding the passphrase of `ssh_key_file`, when the key has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
}

impl GitCredential {
    /// Whether these credentials are for `url`.
    pub fn covers(&self, url: &str) -> bool {
        url.starts_with(&self.url_prefix)
    }
}

/// The credentials configured for `url`: the longest prefix that covers it.
pub fn git_credential_for<'a>(all: &'a [GitCredential], url: &str) -> Option<&'a GitCredential> {
    all.iter()
        .filter(|c| c.covers(url))
        .max_by_key(|c| c.url_prefix.len())
}

/// `[[sources]]`: one place jobs come from, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    /// JobSpec files dropped into a directory (`*.json`, written atomically: write
    /// elsewhere, then rename in).
    Spool(SpoolSource),
    /// JobSpec messages on an SQS queue.
    Sqs(SqsSource),
    /// Jobs of a CodePipeline custom action.
    Codepipeline(CodePipelineSource),
}

impl Source {
    pub const TYPES: &[&str] = &["spool", "sqs", "codepipeline"];

    pub fn type_name(&self) -> &'static str {
        match self {
            Source::Spool(_) => "spool",
            Source::Sqs(_) => "sqs",
            Source::Codepipeline(_) => "codepipeline",
        }
    }
}

/// `type = "spool"`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpoolSource {
    /// The directory watched for job files. Absolute; not inside `agent.work_dir`.
    pub path: PathBuf,
    /// After this many deliveries without a result (claims given back by a drain, or by a
    /// restart after the agent died during the job) a job is failed as poison instead of
    /// run again, at least 1.
    #[serde(default = "defaults::max_receive_count")]
    #[schemars(range(min = 1))]
    pub max_receive_count: u32,
}

/// `type = "sqs"`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqsSource {
    /// The queue's URL: `https://sqs.<region>.amazonaws.com/<account>/<name>` (or the
    /// `aws.endpoint_url` host in tests).
    pub queue_url: String,
    /// How long a received message stays hidden from other agents while its job runs;
    /// the agent extends it while the job goes on. `1s` to `12h`.
    #[serde(
        default = "defaults::visibility_timeout",
        serialize_with = "serialize_duration"
    )]
    #[schemars(with = "DurationText")]
    pub visibility_timeout: Duration,
    /// How long one receive call waits for a message (long polling). `0s` to `20s`.
    #[serde(default = "defaults::wait_time", serialize_with = "serialize_duration")]
    #[schemars(with = "DurationText")]
    pub wait_time: Duration,
    /// After this many receives a message is failed as poison instead of run again, at
    /// least 1.
    #[serde(default = "defaults::max_receive_count")]
    #[schemars(range(min = 1))]
    pub max_receive_count: u32,
    /// Where messages that are not jobs (or were received too often) go, with the reason
    /// in the `agent-reject-reason` attribute; without one they are deleted (their
    /// rejection is still stored as the job's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_url: Option<String>,
}

/// `type = "codepipeline"`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodePipelineSource {
    /// The custom action's category.
    pub category: ActionCategory,
    /// The custom action's provider name: `[0-9A-Za-z_-]`, 1 to 35 characters.
    pub provider: String,
    /// The custom action's version: `[0-9A-Za-z_-]`, 1 to 9 characters.
    pub version: String,
    /// How long to wait between polls when no job came, `1s` to `5m`. A running build's
    /// job is checked as often (at most a minute apart), so a stopped pipeline execution
    /// stops it.
    #[serde(
        default = "defaults::poll_interval",
        serialize_with = "serialize_duration"
    )]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// The action type's job timeout (`jobTimeout` of an action type made with
    /// `CreateActionType`; CodePipeline allows 60s to 12h). A build still running at half
    /// of it reports its job done with a continuation token and carries on under the job
    /// CodePipeline queues next, as often as it takes. Unset (custom actions made with
    /// `CreateCustomActionType`): one job lasts the whole build, up to the 24-hour action
    /// timeout.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_option_duration"
    )]
    #[schemars(with = "Option<DurationText>")]
    pub job_timeout: Option<Duration>,
    /// PollForJobs's `queryParam`, for an action type with a queryable property: that
    /// property and the value this agent takes jobs for (`{ Fleet = "linux-large" }`), so
    /// fleets share one action type and each pipeline action picks its fleet. At most one
    /// entry; the name 1 to 50 characters, the value 1 to 50 of `[A-Za-z0-9_-]`. Empty: the
    /// action type has no queryable property.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 1,
        "propertyNames" = {"minLength": 1, "maxLength": 50},
        "additionalProperties" = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,50}$"}
    ))]
    pub query_param: BTreeMap<String, String>,
}

/// A CodePipeline action category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ActionCategory {
    Source,
    Build,
    Test,
    Deploy,
    Invoke,
    Approval,
}

impl ActionCategory {
    pub const NAMES: &[&str] = &["Source", "Build", "Test", "Deploy", "Invoke", "Approval"];
}

/// `[aws]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region, e.g. `eu-west-1`. Default: from the environment or the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A profile of the shared AWS config files. Default: the standard credentials chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Send every AWS call here instead (a local stand-in such as moto in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

mod defaults {
    use std::path::PathBuf;
    use std::time::Duration;

    pub fn work_dir() -> PathBuf {
        "/var/lib/agent/work".into()
    }
    pub fn state_dir() -> PathBuf {
        "/var/lib/agent/state".into()
    }
    pub fn concurrency() -> u32 {
        1
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(15 * 60)
    }
    /// 15 days: past SQS's longest message retention.
    pub fn retention() -> Duration {
        Duration::from_secs(360 * 3600)
    }
    pub fn default_timeout() -> Duration {
        Duration::from_secs(60 * 60)
    }
    pub fn max_timeout() -> Duration {
        Duration::from_secs(8 * 60 * 60)
    }
    pub fn default_image() -> String {
        "agent-standard:latest".into()
    }
    pub fn memory() -> u64 {
        4 << 30
    }
    pub fn cpus() -> f64 {
        2.0
    }
    pub fn pids() -> u32 {
        4096
    }
    pub fn deploy_root() -> PathBuf {
        "/var/lib/agent/deployments".into()
    }
    pub fn git_username() -> String {
        "git".into()
    }
    pub fn max_revisions() -> u32 {
        5
    }
    pub fn visibility_timeout() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn wait_time() -> Duration {
        Duration::from_secs(20)
    }
    pub fn max_receive_count() -> u32 {
        5
    }
    pub fn poll_interval() -> Duration {
        Duration::from_secs(30)
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: host_name(),
            work_dir: defaults::work_dir(),
            state_dir: defaults::state_dir(),
            concurrency: defaults::concurrency(),
            drain_timeout: defaults::drain_timeout(),
            retention: defaults::retention(),
            labels: BTreeMap::new(),
            metrics_address: None,
            log_format: LogFormat::Plain,
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            default_timeout: defaults::default_timeout(),
            max_timeout: defaults::max_timeout(),
            default_image: defaults::default_image(),
            allowed_images: Vec::new(),
            allow_privileged: false,
            allowed_git_paths: Vec::new(),
            memory: defaults::memory(),
            cpus: defaults::cpus(),
            pids: defaults::pids(),
        }
    }
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            root: defaults::deploy_root(),
            allowed_destinations: Vec::new(),
            max_revisions: defaults::max_revisions(),
        }
    }
}

impl JobsConfig {
    /// The default image, normalised. It was checked when the config was read, so this
    /// only fails for a config built by hand.
    pub fn default_image_ref(&self) -> Result<ImageRef, String> {
        ImageRef::parse(&self.default_image)
    }
}

/// The machine's host name, made safe as an agent name.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "agent".to_string()
    } else {
        name
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, in file order.
    #[error("{}", Rendered(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems in the file; empty when it could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

struct Rendered<'a>(&'a String, &'a Vec<Problem>);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render_all(f, self.0, self.1)
    }
}

/// Reads and checks the config file at `path`; problems are reported against the path.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = crate::files::read_bounded(path, crate::files::MAX_FILE_BYTES, "a config file")
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let origin = path.display().to_string();
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, &origin),
        Err(e) => Err(ConfigError::Invalid {
            origin,
            problems: crate::diag::not_utf8(e.as_bytes(), e.utf8_error(), "TOML files"),
        }),
    }
}

/// Parses and checks config text; `origin` names it in problems (usually the file path).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    check::parse(text).map_err(|problems| ConfigError::Invalid {
        origin: origin.to_string(),
        problems,
    })
}

impl Config {
    /// The config as TOML that [`parse`] reads back to an equal config, defaults written out.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

/// How a field takes a change when the daemon reloads its config (SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloads {
    /// Applied to jobs that start after the reload; running jobs keep what they started
    /// with.
    Live,
    /// The job sources (and the metrics listener) are started again with the new value;
    /// running jobs finish with the source that delivered them.
    Restart,
    /// Read once at start (the agent's name and directories, which its journal and claims
    /// live under): the change waits for the agent's next start, and a reload says so.
    Process,
}

/// Every field (or table of fields that changes as one) with how it reloads, in file order.
pub const FIELDS: &[(&str, Reloads)] = &[
    ("version", Reloads::Process),
    ("agent.name", Reloads::Process),
    ("agent.work_dir", Reloads::Process),
    ("agent.state_dir", Reloads::Process),
    ("agent.concurrency", Reloads::Live),
    ("agent.drain_timeout", Reloads::Live),
    ("agent.retention", Reloads::Live),
    ("agent.labels", Reloads::Live),
    ("agent.metrics_address", Reloads::Restart),
    ("agent.log_format", Reloads::Process),
    ("jobs.default_timeout", Reloads::Live),
    ("jobs.max_timeout", Reloads::Live),
    ("jobs.default_image", Reloads::Live),
    ("jobs.allowed_images", Reloads::Live),
    ("jobs.allow_privileged", Reloads::Live),
    ("jobs.allowed_git_paths", Reloads::Live),
    ("jobs.memory", Reloads::Live),
    ("jobs.cpus", Reloads::Live),
    ("jobs.pids", Reloads::Live),
    ("storage.artifacts", Reloads::Live),
    ("storage.logs", Reloads::Live),
    ("storage.results", Reloads::Live),
    ("storage.cache", Reloads::Live),
    ("roles.allowed", Reloads::Live),
    ("roles.environments", Reloads::Live),
    ("deploy.root", Reloads::Process),
    ("deploy.allowed_destinations", Reloads::Live),
    ("deploy.max_revisions", Reloads::Live),
    ("notifications.webhook", Reloads::Live),
    ("git_credentials", Reloads::Live),
    ("sources", Reloads::Restart),
    ("aws.region", Reloads::Restart),
    ("aws.profile", Reloads::Restart),
    ("aws.endpoint_url", Reloads::Restart),
];

/// How a field reloads, by its dotted path as in [`FIELDS`].
pub fn reloads(field: &str) -> Option<Reloads> {
    FIELDS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, how)| *how)
}

/// What changed between two configs, and whether the sources must restart for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reload {
    /// Changed fields that need the job sources restarted.
    pub restart: Vec<&'static str>,
    /// Changed fields that take effect for the next job.
    pub live: Vec<&'static str>,
    /// Changed fields that wait for the agent's next start.
    pub process: Vec<&'static str>,
}

impl Reload {
    pub fn needs_restart(&self) -> bool {
        !self.restart.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.restart.is_empty() && self.live.is_empty() && self.process.is_empty()
    }
}

/// Compares the running config with a newly read one.
pub fn live_changes(old: &Config, new: &Config) -> Reload {
    let mut reload = Reload::default();
    for &(field, how) in FIELDS {
        if field_differs(old, new, field) {
            match how {
                Reloads::Live => reload.live.push(field),
                Reloads::Restart => reload.restart.push(field),
                Reloads::Process => reload.process.push(field),
            }
        }
    }
    reload
}

fn field_differs(a: &Config, b: &Config, field: &str) -> bool {
    macro_rules! differ {
        ($($name:literal => $($path:ident).+),* $(,)?) => {
            match field {
                $($name => a.$($path).+ != b.$($path).+,)*
                // A field without a comparison is treated as changed so that a field added
                // to FIELDS and forgotten here restarts rather than being ignored.
                _ => true,
            }
        };
    }
    differ! {
        "version" => version,
        "agent.name" => agent.name,
        "agent.work_dir" => agent.work_dir,
        "agent.state_dir" => agent.state_dir,
        "agent.concurrency" => agent.concurrency,
        "agent.drain_timeout" => agent.drain_timeout,
        "agent.retention" => agent.retention,
        "agent.labels" => agent.labels,
        "agent.metrics_address" => agent.metrics_address,
        "agent.log_format" => agent.log_format,
        "jobs.default_timeout" => jobs.default_timeout,
        "jobs.max_timeout" => jobs.max_timeout,
        "jobs.default_image" => jobs.default_image,
        "jobs.allowed_images" => jobs.allowed_images,
        "jobs.allow_privileged" => jobs.allow_privileged,
        "jobs.allowed_git_paths" => jobs.allowed_git_paths,
        "jobs.memory" => jobs.memory,
        "jobs.cpus" => jobs.cpus,
        "jobs.pids" => jobs.pids,
        "storage.artifacts" => storage.artifacts,
        "storage.logs" => storage.logs,
        "storage.results" => storage.results,
        "storage.cache" => storage.cache,
        "roles.allowed" => roles.allowed,
        "roles.environments" => roles.environments,
        "deploy.root" => deploy.root,
        "deploy.allowed_destinations" => deploy.allowed_destinations,
        "deploy.max_revisions" => deploy.max_revisions,
        "notifications.webhook" => notifications.webhook,
        "git_credentials" => git_credentials,
        "sources" => sources,
        "aws.region" => aws.region,
        "aws.profile" => aws.profile,
        "aws.endpoint_url" => aws.endpoint_url,
    }
}
