//! JobSpec v1: the JSON job message that job sources deliver to the daemon.
//!
//! A message is read in steps: JSON syntax, the `version`, keys written twice, the shape
//! (unknown fields, wrong types), then every value is checked with all problems collected.
//! [`check_policy`] then holds the job against the agent's config before anything runs.

mod check;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::allow::{ImageRef, RoleArn, image_allowed, role_allowed};
use crate::config::Config;
use crate::diag::{Problem, render_all, suggest};
use crate::values::{DurationText, S3Url, format_duration, serialize_option_duration};

/// The JobSpec versions this agent reads.
pub const JOBSPEC_VERSIONS: &[u32] = &[1];

/// The largest message read, in bytes. SQS carries at most 1 MiB; a spool file is held
/// to the same so that a job behaves the same whichever way it came.
pub const MAX_JOBSPEC_BYTES: usize = 1 << 20;

/// The buildspec a build job runs when it names none.
pub const DEFAULT_BUILDSPEC: &str = "buildspec.yml";

/// The appspec a deploy job reads when it names none.
pub const DEFAULT_APPSPEC: &str = "appspec.yml";

/// One job. `kind` decides which fields apply: `buildspec`, `image`, `privileged`,
/// `artifacts`, `cache` and `secrets` are for builds only, `deploy` for deployments only (and
/// required there).
///
/// Durations are written `30s`, `15m`, `2h` or `1h30m`; a bare number is seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "agent JobSpec v1")]
pub struct JobSpec {
    /// The version of this message's format. Required; this agent reads `1`.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// The job's id, unique per job: `[A-Za-z0-9._-]`, 1 to 128 characters. Results, logs
    /// and artifacts are stored under it, and a job whose id already has a result is not
    /// run again.
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"),
        length(min = 1, max = 128)
    )]
    pub id: String,
    /// What the job does.
    pub kind: JobKind,
    /// Where the files the job works on come from.
    pub source: JobSource,
    /// Build only: the buildspec to run. Default: `{"path": "buildspec.yml"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildspec: Option<Buildspec>,
    /// Build only: the build image. Default: the config's `jobs.default_image`. Must be the
    /// default image or match `jobs.allowed_images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Build only: run the container privileged (Docker-in-Docker). Refused unless the
    /// config's `jobs.allow_privileged` is true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// Variables for the build or the deployment hooks, above the buildspec's own.
    /// Names: letters, digits and `_`, not starting with a digit or `CODEBUILD_`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "not": {"pattern": "^CODEBUILD_"}}))]
    pub env: BTreeMap<String, String>,
    /// Build only: variables whose values are fetched from AWS before the build starts,
    /// with the job's role (else the agent's own credentials), and masked in every output.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
    /// The IAM role the job's AWS calls run as. Default: none; the job gets no AWS
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<JobRole>,
    /// Build only: where the artifacts go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// Build only: where the cache is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// The whole job's time limit. Default: the config's `jobs.default_timeout`; more than
    /// `jobs.max_timeout` is refused.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_option_duration"
    )]
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Duration>,
    /// Free-form `key: value` pairs copied into the result and onto the build container
    /// (as `agent.label.<key>`).
    /// Keys: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most 63;
    /// values at most 256 characters, no control characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "propertyNames" = {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$", "maxLength": 63},
        "additionalProperties" = {"type": "string", "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"}
    ))]
    pub labels: BTreeMap<String, String>,
    /// Where the result is announced. Default: the config's `notifications.webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// Deploy only, and required there: the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySpec>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Run a buildspec in a container.
    Build,
    /// Run an appspec's lifecycle hooks on this host.
    Deploy,
}

impl JobKind {
    pub const NAMES: &[&str] = &["build", "deploy"];
}

/// Where the job's files come from, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum JobSource {
    /// A git repository, cloned.
    Git(GitSource),
    /// An S3 object (a `.zip`, `.tar.gz` or `.tgz`, unpacked) or every object under a
    /// prefix ending in `/`.
    S3(S3Source),
    /// Files carried in the message itself.
    Inline(InlineSource),
    /// An archive (`.zip`, `.tar.gz`, `.tgz`) downloaded over https and unpacked.
    Https(HttpsSource),
}

impl JobSource {
    pub const TYPES: &[&str] = &["git", "s3", "inline", "https"];
}

/// `"type": "git"`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// The repository: `https://host/org/repo.git`, `ssh://git@host/org/repo.git` or
    /// `git@host:org/repo.git`. No credentials in the URL; see `credentials_secret`.
    pub url: String,
    /// The branch, tag or commit to check out. Default: the remote's default branch.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Clone only this many commits of history, at least 1. Default: the full history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub depth: Option<u32>,
    /// Also clone the submodules.
    #[serde(default, skip_serializing_if = "is_false")]
    pub submodules: bool,
    /// A Secrets Manager secret (name or ARN) holding the credentials: a token for https,
    /// a private key for ssh. Without one, the agent's `[[git_credentials]]` for the URL
    /// apply, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// `"type": "s3"`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Source {
    /// `s3://bucket/key.zip` (one archive) or `s3://bucket/prefix/` (every object under it).
    pub url: S3Url,
}

/// `"type": "inline"`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineSource {
    /// File contents by relative path (`src/app.py`); at least one file. The whole message
    /// is at most 1 MiB.
    #[schemars(length(min = 1))]
    pub files: BTreeMap<String, String>,
}

/// `"type": "https"`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpsSource {
    /// The archive's URL: `https://`, or `http://` to this machine only.
    pub url: String,
    /// The archive's SHA-256 in lowercase hex; when given, a download that differs is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// Which buildspec to run: a file of the source, the text itself, or an S3 object (the
/// three forms of CodeBuild's `buildspecOverride`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Buildspec {
    /// A path relative to the source's root, e.g. `ci/buildspec.yml`.
    Path(String),
    /// The buildspec's YAML text.
    Inline(String),
    /// An S3 object holding the buildspec, `s3://bucket/key` (or CodeBuild's
    /// `arn:aws:s3:::bucket/key`), read with the job's role: one buildspec kept centrally
    /// for many repositories. At most 1 MiB.
    S3(S3Url),
}

/// Variables fetched from AWS, by variable name; the two maps take the reference forms of
/// the buildspec's `env.secrets-manager` and `env.parameter-store`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// `secret-id[:json-key[:version-stage[:version-id]]]`, where the secret id is a name
    /// or an ARN.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets_manager: BTreeMap<String, String>,
    /// A Parameter Store name (`/team/db/password`) or ARN.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameter_store: BTreeMap<String, String>,
}

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.secrets_manager.is_empty() && self.parameter_store.is_empty()
    }
}

/// The role a job runs as: one the config names (`environment`), or an ARN that the
/// config's `roles.allowed` must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum JobRole {
    /// A role by ARN.
    Arn {
        /// The role's ARN; must match the config's `roles.allowed`.
        arn: RoleArn,
        /// The external id the role's trust policy requires.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_id: Option<String>,
        /// Session tags (at most 50; keys 1 to 128 characters, not starting `aws:`;
        /// values at most 256). The role's trust policy must allow `sts:TagSession`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        session_tags: BTreeMap<String, String>,
    },
    /// A role by the name of one of the config's `[roles.environments]`, which also gives
    /// the external id.
    Environment {
        /// The environment's name.
        environment: String,
        /// Session tags, as for a role by ARN.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        session_tags: BTreeMap<String, String>,
    },
}

/// Where a build's artifacts go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    /// `s3://bucket/prefix`. Default: the config's `storage.artifacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Url>,
    /// A folder of objects (`NONE`) or one zip per artifact (`ZIP`), as CodeBuild.
    #[serde(default)]
    pub packaging: Packaging,
    /// Put the artifacts under the build id (`BUILD_ID`) or not (`NONE`), as CodeBuild.
    #[serde(default)]
    pub namespace: Namespace,
    /// Encrypt the objects with this KMS key (id, ARN or alias). Default: the bucket's
    /// encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Packaging {
    #[default]
    None,
    Zip,
}

impl Packaging {
    pub const NAMES: &[&str] = &["NONE", "ZIP"];
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Namespace {
    #[default]
    None,
    BuildId,
}

impl Namespace {
    pub const NAMES: &[&str] = &["NONE", "BUILD_ID"];
}

/// Where a build's cache is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// `s3://bucket/prefix`: one object per cache key under it.
    pub s3: S3Url,
}

/// Where a job's result is announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The result is POSTed here as JSON: `https://`, or `http://` to this machine only.
    pub webhook: String,
}

/// A deployment of the source (the revision bundle) on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// The application's name (`APPLICATION_NAME` in hooks): `[A-Za-z0-9._+=,@-]`, 1 to 100.
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9._+=,@-]*[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@-]*$"),
        length(min = 1, max = 100)
    )]
    pub application_name: String,
    /// The deployment group (`DEPLOYMENT_GROUP_NAME`); revisions and the last successful
    /// one are kept per group. Same characters as `application_name`.
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9._+=,@-]*[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@-]*$"),
        length(min = 1, max = 100)
    )]
    pub deployment_group: String,
    /// The appspec's path in the bundle. Default: `appspec.yml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appspec: Option<String>,
    /// What Install does with a file that exists and was not installed by this group's
    /// last deployment: fail (`DISALLOW`), replace it (`OVERWRITE`) or keep it (`RETAIN`).
    #[serde(default)]
    pub file_exists_behavior: FileExistsBehavior,
    /// Run only these hooks, in lifecycle order (DownloadBundle and Install always run).
    /// Default: every hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<LifecycleEvent>>,
    /// When the deployment fails, redeploy the last successful revision of the group.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rollback_on_failure: bool,
    /// Run the traffic hooks (BeforeBlockTraffic … AfterAllowTraffic): the host sits
    /// behind a load balancer that the hooks take it out of and put it back into.
    #[serde(default, skip_serializing_if = "is_false")]
    pub traffic: bool,
    /// Go on when ApplicationStop (and the block-traffic hooks) of the last revision fail,
    /// as CodeDeploy's option of the same name.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_application_stop_failures: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileExistsBehavior {
    #[default]
    Disallow,
    Overwrite,
    Retain,
}

impl FileExistsBehavior {
    pub const NAMES: &[&str] = &["DISALLOW", "OVERWRITE", "RETAIN"];
}

/// A scriptable CodeDeploy lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub enum LifecycleEvent {
    BeforeBlockTraffic,
    AfterBlockTraffic,
    ApplicationStop,
    BeforeInstall,
    AfterInstall,
    ApplicationStart,
    ValidateService,
    BeforeAllowTraffic,
    AfterAllowTraffic,
}

impl LifecycleEvent {
    /// In lifecycle order.
    pub const ALL: &[LifecycleEvent] = &[
        LifecycleEvent::BeforeBlockTraffic,
        LifecycleEvent::AfterBlockTraffic,
        LifecycleEvent::ApplicationStop,
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::ApplicationStart,
        LifecycleEvent::ValidateService,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
    ];
    pub const NAMES: &[&str] = &[
        "BeforeBlockTraffic",
        "AfterBlockTraffic",
        "ApplicationStop",
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
        "BeforeAllowTraffic",
        "AfterAllowTraffic",
    ];
    /// Events the agent or the load balancer runs, which no script can be attached to.
    pub const RESERVED: &[&str] = &["DownloadBundle", "Install", "BlockTraffic", "AllowTraffic"];

    pub fn is_traffic(self) -> bool {
        matches!(
            self,
            LifecycleEvent::BeforeBlockTraffic
                | LifecycleEvent::AfterBlockTraffic
                | LifecycleEvent::BeforeAllowTraffic
                | LifecycleEvent::AfterAllowTraffic
        )
    }
}

impl JobSpec {
    /// The buildspec a build job runs, the default when it names none; `None` for a
    /// deployment.
    pub fn buildspec(&self) -> Option<Buildspec> {
        match self.kind {
            JobKind::Build => Some(
                self.buildspec
                    .clone()
                    .unwrap_or_else(|| Buildspec::Path(DEFAULT_BUILDSPEC.to_string())),
            ),
            JobKind::Deploy => None,
        }
    }

    /// The message as JSON that [`parse`] reads back to an equal job.
    pub fn to_json(&self) -> String {
        // Every field serialises to a JSON string, number, bool, array or object with
        // string keys, which serde_json cannot fail on.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Why a job message was refused, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Rendered(problems))]
pub struct JobSpecError {
    pub problems: Vec<Problem>,
}

impl JobSpecError {
    /// Every problem as `origin:line:col: error: …` with its hint, one after the other.
    pub fn render(&self, origin: &str) -> String {
        self.problems
            .iter()
            .map(|p| p.render(origin))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

struct Rendered<'a>(&'a Vec<Problem>);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render_all(f, "job", self.0)
    }
}

/// Parses and checks a JobSpec message.
pub fn parse(bytes: &[u8]) -> Result<JobSpec, JobSpecError> {
    check::parse(bytes).map_err(|problems| JobSpecError { problems })
}

/// What a job runs with once the config has been applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The role to assume; `None` when the job names none.
    pub role: Option<ResolvedRole>,
    /// Build jobs: the image, normalised. `None` for deployments.
    pub image: Option<ImageRef>,
    /// The time limit, the config's default applied.
    pub timeout: Duration,
    /// Build jobs: whether the container is privileged.
    pub privileged: bool,
    /// Build jobs with artifacts: where they go, the config's default applied.
    pub artifacts: Option<S3Url>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRole {
    pub arn: RoleArn,
    pub external_id: Option<String>,
    pub session_tags: BTreeMap<String, String>,
    /// The environment the role came from, when the job named one.
    pub environment: Option<String>,
}

/// Something a job asked for that the config does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyViolation {
    /// The job's field, e.g. `role.arn`.
    pub field: String,
    /// What was refused.
    pub message: String,
    /// Which config field would allow it.
    pub hint: String,
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused `{}`: {}\n  hint: {}",
            self.field, self.message, self.hint
        )
    }
}

/// Holds a job against the config before anything runs: the role, the image, privileged
/// mode and the time limit must all be allowed. Returns what the job runs with, or every
/// refusal.
pub fn check_policy(job: &JobSpec, config: &Config) -> Result<Resolved, Vec<PolicyViolation>> {
    let mut refused = Vec::new();
    let mut refuse = |field: &str, message: String, hint: String| {
        refused.push(PolicyViolation {
            field: field.to_string(),
            message,
            hint,
        });
    };

    let role = match &job.role {
        None => None,
        Some(JobRole::Arn {
            arn,
            external_id,
            session_tags,
        }) => {
            if role_allowed(&config.roles.allowed, arn) {
                Some(ResolvedRole {
                    arn: arn.clone(),
                    external_id: external_id.clone(),
                    session_tags: session_tags.clone(),
                    environment: None,
                })
            } else {
                let by_env = config
                    .roles
                    .environments
                    .iter()
                    .find(|(_, r)| r.role_arn == *arn)
                    .map(|(name, _)| name);
                let hint = match by_env {
                    Some(name) => format!(
                        "this is the role of environment `{name}`: name it with `\"role\": {{\"environment\": \"{name}\"}}`, or add a pattern to `roles.allowed`"
                    ),
                    None if config.roles.allowed.is_empty() => {
                        "`roles.allowed` is empty, so no job may name a role ARN; add a pattern there or use `role.environment`".to_string()
                    }
                    None => format!(
                        "add a pattern to `roles.allowed` (now: {})",
                        config
                            .roles
                            .allowed
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                refuse(
                    "role.arn",
                    format!("role `{arn}` is not in `roles.allowed`"),
                    hint,
                );
                None
            }
        }
        Some(JobRole::Environment {
            environment,
            session_tags,
        }) => match crate::allow::environment_role(config, environment) {
            Some(role) => Some(ResolvedRole {
                arn: role.role_arn.clone(),
                external_id: role.external_id.clone(),
                session_tags: session_tags.clone(),
                environment: Some(environment.clone()),
            }),
            None => {
                let names: Vec<&str> = config
                    .roles
                    .environments
                    .keys()
                    .map(String::as_str)
                    .collect();
                let hint = if names.is_empty() {
                    "the config has no `[roles.environments]`; add `[roles.environments.NAME]` with a `role_arn`".to_string()
                } else {
                    format!(
                        "{}; environments are defined in `[roles.environments]`",
                        suggest(environment, &names)
                    )
                };
                refuse(
                    "role.environment",
                    format!("environment `{environment}` is not defined in this agent's config"),
                    hint,
                );
                None
            }
        },
    };

    if let JobSource::Git(git) = &job.source
        && git.url.starts_with("file:")
    {
        let allowed = &config.jobs.allowed_git_paths;
        let inside = crate::values::git_file_path(&git.url)
            .is_ok_and(|path| allowed.iter().any(|dir| path.starts_with(dir)));
        if !inside {
            let hint = if allowed.is_empty() {
                "`jobs.allowed_git_paths` is empty, so no job may clone from this host's disk; add the repositories' directory there, or use an https:// or ssh:// URL".to_string()
            } else {
                format!(
                    "allowed: {}; add the repository's directory to `jobs.allowed_git_paths`",
                    allowed
                        .iter()
                        .map(|d| format!("`{}`", d.display()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            refuse(
                "source.url",
                format!("`{}` is not under `jobs.allowed_git_paths`", git.url),
                hint,
            );
        }
    }

    let mut image = None;
    let mut artifacts = None;
    if job.kind == JobKind::Build {
        let asked = job
            .image
            .clone()
            .unwrap_or_else(|| config.jobs.default_image.clone());
        match config.jobs.default_image_ref() {
            Err(e) => refuse(
                "image",
                format!("the config's default image is invalid: {e}"),
                "fix `jobs.default_image`".to_string(),
            ),
            Ok(default) => match image_allowed(&asked, &default, &config.jobs.allowed_images) {
                Ok(resolved) => image = Some(resolved),
                Err(e) => refuse(
                    "image",
                    e,
                    format!(
                        "allow it with a pattern in `jobs.allowed_images`, or use the default image `{}`",
                        config.jobs.default_image
                    ),
                ),
            },
        }
        if job.privileged && !config.jobs.allow_privileged {
            refuse(
                "privileged",
                "this agent does not run privileged containers".to_string(),
                "set `jobs.allow_privileged = true` in the config to allow it (a privileged container can take over the host)".to_string(),
            );
        }
        if let Some(a) = &job.artifacts {
            artifacts = a.s3.clone().or_else(|| config.storage.artifacts.clone());
            if artifacts.is_none() {
                refuse(
                    "artifacts.s3",
                    "the job names no artifact location and the config has none".to_string(),
                    "give `artifacts.s3` in the job, or set `storage.artifacts` in the config"
                        .to_string(),
                );
            }
        }
    }

    let timeout = job.timeout.unwrap_or(config.jobs.default_timeout);
    if timeout > config.jobs.max_timeout {
        refuse(
            "timeout",
            format!(
                "a time limit of {} is more than this agent allows ({})",
                format_duration(timeout),
                format_duration(config.jobs.max_timeout)
            ),
            "ask for less, or raise `jobs.max_timeout` in the config".to_string(),
        );
    }

    if refused.is_empty() {
        Ok(Resolved {
            role,
            image,
            timeout,
            privileged: job.privileged,
            artifacts,
        })
    } else {
        Err(refused)
    }
}
