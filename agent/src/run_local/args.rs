//! The flags of `agent run-local`, as DESIGN.md lists them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::exec::docker::{DockerOptions, Limits, PullPolicy};

/// The standard image built from `images/`.
pub const DEFAULT_IMAGE: &str = "agent-standard:latest";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Packaging {
    None,
    Zip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Namespace {
    None,
    BuildId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    Docker,
    Host,
}

#[derive(Debug, Clone, Args)]
pub struct RunLocalArgs {
    /// The buildspec; relative paths are looked up from the current directory, then the
    /// source directory. Default: buildspec.yml in the source directory.
    #[arg(value_name = "BUILDSPEC")]
    pub buildspec: Option<PathBuf>,
    /// The source directory (CODEBUILD_SRC_DIR). Default: the current directory; when
    /// BUILDSPEC lies outside the current directory, the buildspec's own directory. The build
    /// runs in a copy of it (see --bind). Also `s3://bucket/key.zip` (unpacked) or
    /// `s3://bucket/prefix` (every object under it).
    #[arg(short = 's', long, value_name = "DIR|S3_URL")]
    pub source: Option<PathBuf>,
    /// Build in the source directory itself (mounted) instead of a copy of it; the build
    /// runs as the directory's owner, and whatever it writes there is given to that owner.
    #[arg(long, visible_alias = "mount-source")]
    pub bind: bool,
    /// Where build logs are written (default: logs/ in the project's state directory,
    /// $XDG_STATE_HOME/agent/<project>-<hash>, printed at the end).
    #[arg(long = "log-dir", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// A secondary source, mounted and exported as CODEBUILD_SRC_DIR_<ID>. Repeatable.
    #[arg(long = "secondary-source", value_name = "ID=DIR", value_parser = parse_secondary)]
    pub secondary_source: Vec<(String, PathBuf)>,
    /// The build image.
    #[arg(short = 'i', long, default_value = DEFAULT_IMAGE, value_name = "IMAGE")]
    pub image: String,
    /// Where commands run.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Docker)]
    pub executor: ExecutorKind,
    /// Where artifacts land: a directory (default: artifacts/ in the project's state
    /// directory, printed at the end), or `s3://bucket/prefix`.
    #[arg(short = 'a', long, value_name = "DIR|S3_URL")]
    pub artifacts: Option<PathBuf>,
    /// S3 artifacts: a folder of objects (`none`) or one zip per artifact (`zip`).
    #[arg(long = "artifacts-packaging", value_enum, default_value_t = Packaging::None)]
    pub artifacts_packaging: Packaging,
    /// S3 artifacts: put them under the build id (`build-id`) or not (`none`).
    #[arg(long = "artifacts-namespace", value_enum, default_value_t = Namespace::None)]
    pub artifacts_namespace: Namespace,
    /// S3 artifacts: encrypt with this KMS key (SSE-KMS).
    #[arg(long = "artifacts-kms-key-id", value_name = "KEY")]
    pub artifacts_kms_key_id: Option<String>,
    /// A variable for the build, highest precedence; `-e NAME` passes NAME on from this
    /// environment. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE|KEY")]
    pub env: Vec<String>,
    /// A dotenv file: KEY=VALUE lines, `export` allowed, quotes stripped ('…' literal,
    /// "…" with \n and \" escapes), # comments. Repeatable.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// A secret variable, masked in every output: `--secret NAME` takes NAME from this
    /// environment (preferred: the value never appears in the process list);
    /// `--secret NAME=VALUE` also works. Repeatable.
    #[arg(long, value_name = "NAME|NAME=VALUE")]
    pub secret: Vec<String>,
    /// Parameter Store references from the daemon's control channel, by variable name.
    #[arg(skip)]
    pub job_parameter_store: Vec<(String, String)>,
    /// Secrets Manager references from the daemon's control channel, by variable name.
    #[arg(skip)]
    pub job_secrets_manager: Vec<(String, String)>,
    /// A file of NAME=VALUE secret lines.
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_file: Vec<PathBuf>,
    /// The whole build's time limit: `90m`, `30s`, `2h`; a bare number is minutes.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Also write the build log to `s3://bucket/prefix/logs/<build-id>.log` (gzip), as the
    /// build runs.
    #[arg(long, value_name = "S3_URL")]
    pub logs: Option<String>,
    /// Keep the cache in S3 instead: one tar+zstd object per key under `s3://bucket/prefix`.
    #[arg(long, value_name = "S3_URL")]
    pub cache: Option<String>,
    /// Where `cache.paths` are kept between builds (default: .agent/cache under the source).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Write the JSON summary here.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Run the container privileged (for Docker-in-Docker builds).
    #[arg(long)]
    pub privileged: bool,
    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::IfNotPresent)]
    pub pull: PullPolicy,
    /// Memory limit of the build container, e.g. `4g`, `512m`.
    #[arg(long, value_name = "SIZE", default_value = "4g", value_parser = parse_size)]
    pub memory: u64,
    /// CPUs the build container may use, e.g. `2`, `0.5`.
    #[arg(long, value_name = "CPUS", default_value_t = 2.0, value_parser = parse_cpus)]
    pub cpus: f64,
    /// Most processes the build container may have.
    #[arg(long = "pids-limit", value_name = "N", default_value_t = 4096, value_parser = parse_pids_limit)]
    pub pids_limit: i64,
    /// A label for the build container, as `agent.label.KEY=VALUE`. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// The AWS profile for credentials (default: the standard chain).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// The AWS region (default: from the profile or environment).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// A role to assume for the build; repeat for a chain (base → first → second).
    #[arg(long = "role-arn", value_name = "ARN")]
    pub role_arn: Vec<String>,
    /// The external id the roles' trust policies require.
    #[arg(long = "external-id", value_name = "ID")]
    pub external_id: Option<String>,
    /// The role session name (default: agent-<build id>).
    #[arg(long = "role-session-name", value_name = "NAME")]
    pub role_session_name: Option<String>,
    /// The role session's length, e.g. `1h`, `90m` (clamped to 1 h when chaining roles).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub duration: Option<Duration>,
    /// A session tag for the assumed roles. Repeatable.
    #[arg(long = "session-tag", value_name = "KEY=VALUE")]
    pub session_tag: Vec<String>,
    /// The source identity set on the role sessions.
    #[arg(long = "source-identity", value_name = "NAME")]
    pub source_identity: Option<String>,
    /// Batch builds: how many members run at once (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// After Ctrl-C, how long the running command has between SIGTERM and SIGKILL, e.g.
    /// `10s`, `1m`; a bare number is seconds.
    #[arg(long = "stop-timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_stop_timeout)]
    pub stop_timeout: Duration,
    /// Colors on the terminal: `auto` when it is one and NO_COLOR is not set.
    #[arg(long, value_enum, default_value_t = crate::cli::Color::Auto)]
    pub color: crate::cli::Color,
    /// Only the agent's lines and the summary, not the commands' output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Log lines as JSON objects on standard output.
    #[arg(long = "json-logs")]
    pub json_logs: bool,
    /// The build id (default `local:<uuid>`); the daemon names a job's build after the job.
    #[arg(long = "build-id", value_name = "ID", hide = true)]
    pub build_id: Option<String>,
    /// The daemon's channel: a first line of JSON `{"env": {…}, "secrets": {…}}` on standard
    /// input (values that must not be in argv), and the end of standard input as a stop.
    #[arg(long = "control-stdin", hide = true)]
    pub control_stdin: bool,
    /// The descriptor the agent handed its own `--secret NAME=VALUE` values over in, when it
    /// took them out of its command line at start (see `run_local::hide`).
    #[arg(long = "secret-values-fd", hide = true, value_name = "FD")]
    pub secret_values_fd: Option<i32>,
}

/// What the daemon hands a build on standard input.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// The job's `secrets`: references, resolved by the build with its own credentials
    /// (the job's role), as if the buildspec's `env.parameter-store` listed them.
    #[serde(default)]
    pub parameter_store: std::collections::BTreeMap<String, String>,
    /// Likewise for `env.secrets-manager`.
    #[serde(default)]
    pub secrets_manager: std::collections::BTreeMap<String, String>,
}

impl Control {
    /// Reads the first line of standard input.
    pub fn read() -> Result<Control, String> {
        crate::control::read(
            "`{\"env\": {…}, \"secrets\": {…}, \"parameter_store\": {…}, \"secrets_manager\": {…}}`",
        )
    }
}

impl RunLocalArgs {
    /// The S3 source, when `--source` is an `s3://` URL.
    pub fn source_s3(&self) -> Option<Result<crate::aws::s3::S3Url, String>> {
        let text = self.source.as_ref()?.to_str()?;
        text.starts_with("s3://")
            .then(|| crate::aws::s3::S3Url::parse(text))
    }

    /// The S3 location of the cache, from `--cache`.
    pub fn cache_s3(&self) -> Option<Result<crate::aws::s3::S3Url, String>> {
        self.cache.as_deref().map(crate::aws::s3::S3Url::parse)
    }

    /// The S3 destination of the log, from `--logs`.
    pub fn logs_s3(&self) -> Option<Result<crate::aws::s3::S3Url, String>> {
        self.logs.as_deref().map(crate::aws::s3::S3Url::parse)
    }

    /// The S3 destination of the artifacts, when `--artifacts` is an `s3://` URL.
    pub fn artifacts_s3(&self) -> Option<Result<crate::aws::s3::S3Url, String>> {
        let text = self.artifacts.as_ref()?.to_str()?;
        text.starts_with("s3://")
            .then(|| crate::aws::s3::S3Url::parse(text))
    }

    pub fn secondary_sources(&self) -> Vec<(String, PathBuf)> {
        self.secondary_source.clone()
    }

    pub fn docker_options(
        &self,
        request: &crate::build::BuildRequest,
        image: &str,
    ) -> DockerOptions {
        DockerOptions {
            build_id: request.build_id.clone(),
            image: image.to_string(),
            source_dir: request.source_dir.clone(),
            secondary: self.secondary_sources(),
            pull: self.pull,
            privileged: self.privileged,
            limits: Limits {
                memory_bytes: self.memory,
                nano_cpus: (self.cpus * 1e9) as i64,
                pids: self.pids_limit,
            },
            labels: self.label.clone(),
            // A batch member's container carries its batch's id (the daemon's job id).
            run_id: self
                .build_id
                .clone()
                .unwrap_or_else(|| request.build_id.clone()),
        }
    }
}

/// `--stop-timeout`: a bare number is seconds, else as `--timeout` (`30s`, `1m`).
fn parse_stop_timeout(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_timeout(text),
    }
}

/// `KEY=VALUE` with a key, for flags such as `--label` and deploy-local's `--session-tag`.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

fn parse_secondary(text: &str) -> Result<(String, PathBuf), String> {
    let (id, dir) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not ID=DIR"))?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "source identifier `{id}` may only hold letters, digits and underscores"
        ));
    }
    let dir = PathBuf::from(dir)
        .canonicalize()
        .map_err(|e| format!("{dir}: {e}"))?;
    Ok((id.to_string(), dir))
}

/// `90m`, `30s`, `2h`, `1h30m`; a bare number is minutes, as CodeBuild counts timeouts;
/// 1 s to 36 h (the config's parser: `agent_config::units`).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    agent_config::units::parse_timeout_minutes(text)
}

/// `4g`, `512m`: at least 6 MiB (Docker's minimum), never an overflow.
fn parse_size(text: &str) -> Result<u64, String> {
    agent_config::units::parse_memory(text)
}

/// A finite number of CPUs from 0.01 to 1024.
fn parse_cpus(text: &str) -> Result<f64, String> {
    agent_config::units::parse_cpus(text)
}

/// A process limit from 16 to 4194304; 0 or a negative number would remove it.
fn parse_pids_limit(text: &str) -> Result<i64, String> {
    agent_config::units::parse_pids(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("10x").is_err());
        assert!(parse_timeout("0s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert!(parse_size("lots").is_err());
    }
}
