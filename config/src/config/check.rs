//! From the file as written to a checked [`Config`], collecting every problem on the way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, RawSource, VersionProbe};
use super::*;
use crate::allow::{ImagePattern, ImageRef, RoleArn, RolePattern};
use crate::diag::{Format, Problem, Problems, article, explain_serde, suggest};
use crate::units;
use crate::values::{
    PlainHttp, S3Url, Scalar, check_absolute_dir, check_external_id, check_git_url, check_label,
    format_duration, parse_duration, parse_web_url,
};

type S<T> = Spanned<T>;

pub(super) fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems::new(text);
    let probe: VersionProbe = match toml::from_str(text) {
        Ok(probe) => probe,
        Err(e) => return Err(toml_problem(problems, &e)),
    };
    match probe.version {
        None => {
            problems.error(
                0..0,
                "version",
                "the config has no `version`",
                "add `version = 1` at the top; this agent reads config version 1",
            );
            return Err(problems.finish());
        }
        Some(v) if matches!(v.get_ref(), toml::Value::Integer(1)) => {}
        Some(v) => {
            problems.error(
                v.span(),
                "version",
                format!("config version {} is not one this agent reads", v.get_ref()),
                format!(
                    "this agent reads config version {}; write `version = 1` and the fields it documents",
                    versions()
                ),
            );
            return Err(problems.finish());
        }
    }
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(toml_problem(problems, &e)),
    };
    let mut check = Check { p: problems };
    let config = check.config(raw);
    if check.p.is_empty() {
        Ok(config)
    } else {
        Err(check.p.finish())
    }
}

fn versions() -> String {
    CONFIG_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn toml_problem(mut problems: Problems<'_>, e: &toml::de::Error) -> Vec<Problem> {
    let (message, hint) = explain_serde(e.message().trim(), Format::Toml);
    // What is neither a type nor a field problem is TOML syntax.
    let hint = hint.or_else(|| {
        Some(
            "this is not valid TOML here: write `key = value` with strings in double quotes, and tables as `[name]`"
                .to_string(),
        )
    });
    // TOML's syntax messages run over several lines; one line reads better after a position.
    let message = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let offset = e.span().map_or(0, |s| s.start);
    problems.push(offset, "", message, hint);
    problems.finish()
}

struct Check<'t> {
    p: Problems<'t>,
}

/// The last segment of a dotted field path: the key as written in its table.
fn key(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

impl Check<'_> {
    fn err(
        &mut self,
        span: Range<usize>,
        field: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.p.error(span, field, message, hint);
    }

    fn duration(
        &mut self,
        field: &str,
        value: Option<&S<Scalar>>,
        default: Duration,
        range: (Duration, Duration),
        why: &str,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        let k = key(field);
        match parse_duration(&value.get_ref().0) {
            Err(e) => {
                self.err(
                    value.span(),
                    field,
                    format!("`{k}`: {e}"),
                    format!(
                        "write e.g. `{k} = \"{}\"`; a bare number is seconds",
                        format_duration(default)
                    ),
                );
                default
            }
            Ok(d) if d < range.0 || d > range.1 => {
                let message = if range.0 > Duration::ZERO && d < range.0 {
                    format!("`{k}` must be at least {}", format_duration(range.0))
                } else {
                    format!("`{k}` must be at most {}", format_duration(range.1))
                };
                self.err(value.span(), field, message, why);
                default
            }
            Ok(d) => d,
        }
    }

    fn integer(
        &mut self,
        field: &str,
        value: Option<&S<i64>>,
        default: u32,
        min: i64,
        why: &str,
    ) -> u32 {
        let Some(value) = value else {
            return default;
        };
        let n = *value.get_ref();
        if n < min {
            self.err(
                value.span(),
                field,
                format!("`{}` must be at least {min}", key(field)),
                why,
            );
            return default;
        }
        match u32::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                self.err(
                    value.span(),
                    field,
                    format!("`{}` is too large", key(field)),
                    why,
                );
                default
            }
        }
    }

    fn dir(&mut self, field: &str, value: Option<&S<String>>, default: PathBuf) -> PathBuf {
        let Some(value) = value else {
            return default;
        };
        match check_absolute_dir(value.get_ref()) {
            Ok(path) => path,
            Err(e) => {
                self.err(
                    value.span(),
                    field,
                    format!("`{}`: {e}", key(field)),
                    format!(
                        "write an absolute directory, e.g. `{} = \"{}\"`",
                        key(field),
                        default.display()
                    ),
                );
                default
            }
        }
    }

    fn s3(&mut self, field: &str, value: Option<&S<String>>) -> Option<S3Url> {
        let value = value?;
        match S3Url::parse(value.get_ref()) {
            Ok(url) => Some(url),
            Err(e) => {
                self.err(
                    value.span(),
                    field,
                    format!("`{}`: {e}", key(field)),
                    "write `s3://bucket` or `s3://bucket/prefix`",
                );
                None
            }
        }
    }

    fn web_url(
        &mut self,
        field: &str,
        value: Option<&S<String>>,
        http: PlainHttp,
    ) -> Option<String> {
        let value = value?;
        match parse_web_url(value.get_ref(), http) {
            Ok(_) => Some(value.get_ref().clone()),
            Err(e) => {
                self.err(
                    value.span(),
                    field,
                    format!("`{}`: {e}", key(field)),
                    "write a URL like `https://hooks.example.com/agent`",
                );
                None
            }
        }
    }

    fn one_of(&mut self, field: &str, value: &S<String>, names: &[&str]) -> Option<usize> {
        let text = value.get_ref();
        let found = names.iter().position(|n| n == text);
        if found.is_none() {
            self.err(
                value.span(),
                field,
                format!("`{}`: `{text}` is not a valid value", key(field)),
                suggest(text, names),
            );
        }
        found
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let agent = self.agent(raw.agent);
        let jobs = self.jobs(raw.jobs);
        let storage = StorageConfig {
            artifacts: self.s3("storage.artifacts", raw.storage.artifacts.as_ref()),
            logs: self.s3("storage.logs", raw.storage.logs.as_ref()),
            results: self.s3("storage.results", raw.storage.results.as_ref()),
            cache: self.s3("storage.cache", raw.storage.cache.as_ref()),
        };
        let roles = self.roles(raw.roles);
        let deploy_root_span = raw.deploy.root.as_ref().map(|r| r.span());
        let deploy = self.deploy(raw.deploy);
        let notifications = NotificationsConfig {
            webhook: self.web_url(
                "notifications.webhook",
                raw.notifications.webhook.as_ref(),
                PlainHttp::LoopbackOnly,
            ),
        };
        let git_credentials = self.git_credentials(raw.git_credentials);
        let aws = self.aws(raw.aws);
        let sources = self.sources(raw.sources);
        let config = Config {
            version: 1,
            agent: agent.0,
            jobs,
            storage,
            roles,
            deploy,
            notifications,
            git_credentials,
            sources: sources.iter().map(|f| f.source.clone()).collect(),
            aws,
        };
        let mut dirs = agent.1;
        dirs.push((
            "deploy.root".to_string(),
            config.deploy.root.clone(),
            deploy_root_span,
        ));
        for found in &sources {
            if let Source::Spool(spool) = &found.source {
                dirs.push((
                    format!("sources[{}].path", found.index),
                    spool.path.clone(),
                    Some(found.name.clone()),
                ));
            }
        }
        self.overlaps(&dirs);
        config
    }

    fn agent(&mut self, raw: super::raw::RawAgent) -> (AgentConfig, Vec<Dir>) {
        let name = match raw.name {
            None => host_name(),
            Some(name) => match crate::values::check_name(name.get_ref(), 63) {
                Ok(()) => name.into_inner(),
                Err(e) => {
                    self.err(
                        name.span(),
                        "agent.name",
                        format!("`name`: {e}"),
                        "use letters, digits, `.`, `_` and `-`, e.g. `name = \"build-01\"`",
                    );
                    host_name()
                }
            },
        };
        let work_dir = self.dir(
            "agent.work_dir",
            raw.work_dir.as_ref(),
            defaults::work_dir(),
        );
        let state_dir = self.dir(
            "agent.state_dir",
            raw.state_dir.as_ref(),
            defaults::state_dir(),
        );
        let concurrency = self.integer(
            "agent.concurrency",
            raw.concurrency.as_ref(),
            defaults::concurrency(),
            1,
            "it is how many jobs run at once; write `concurrency = 1` or more",
        );
        let drain_timeout = self.duration(
            "agent.drain_timeout",
            raw.drain_timeout.as_ref(),
            defaults::drain_timeout(),
            (Duration::ZERO, Duration::from_secs(24 * 3600)),
            "running jobs are stopped after this; at most 24h",
        );
        let retention = self.duration(
            "agent.retention",
            raw.retention.as_ref(),
            defaults::retention(),
            (Duration::from_secs(3600), Duration::from_secs(8760 * 3600)),
            "finished jobs' results are kept this long, 1h to 8760h; keep it above the longest time a job may be delivered again",
        );
        let labels = self.labels("agent.labels", raw.labels);
        let metrics_address =
            raw.metrics_address
                .and_then(|value| match value.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        let text = value.get_ref();
                        let hint = match text.rsplit_once(':') {
                            Some(("localhost", port)) => {
                                format!(
                                    "write an IP address: `metrics_address = \"127.0.0.1:{port}\"`"
                                )
                            }
                            Some(_) => {
                                "write `IP:port`, e.g. `127.0.0.1:9095` or `[::1]:9095`".to_string()
                            }
                            None => format!("add the port: `\"{text}:9095\"`"),
                        };
                        self.err(
                            value.span(),
                            "agent.metrics_address",
                            format!("`metrics_address`: `{text}` is not an IP address and port"),
                            hint,
                        );
                        None
                    }
                });
        let log_format = match raw.log_format {
            None => LogFormat::Plain,
            Some(value) => match self.one_of("agent.log_format", &value, LogFormat::NAMES) {
                Some(1) => LogFormat::Json,
                _ => LogFormat::Plain,
            },
        };
        let dirs = vec![
            (
                "agent.work_dir".to_string(),
                work_dir.clone(),
                raw.work_dir.map(|v| v.span()),
            ),
            (
                "agent.state_dir".to_string(),
                state_dir.clone(),
                raw.state_dir.map(|v| v.span()),
            ),
        ];
        (
            AgentConfig {
                name,
                work_dir,
                state_dir,
                concurrency,
                drain_timeout,
                retention,
                labels,
                metrics_address,
                log_format,
            },
            dirs,
        )
    }

    fn labels(
        &mut self,
        field: &str,
        raw: BTreeMap<S<String>, S<String>>,
    ) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for (k, v) in raw {
            match check_label(k.get_ref(), v.get_ref()) {
                Ok(()) => {
                    labels.insert(k.into_inner(), v.into_inner());
                }
                Err((on_key, e)) => {
                    let span = if on_key { k.span() } else { v.span() };
                    self.err(
                        span,
                        &format!("{field}.{}", k.get_ref()),
                        e,
                        "label keys: letters, digits, `.`, `_`, `-` (at most 63, starting with a letter or digit); values: at most 256 characters",
                    );
                }
            }
        }
        labels
    }

    fn jobs(&mut self, raw: super::raw::RawJobs) -> JobsConfig {
        let default_timeout = self.duration(
            "jobs.default_timeout",
            raw.default_timeout.as_ref(),
            defaults::default_timeout(),
            (units::MIN_TIMEOUT, units::MAX_TIMEOUT),
            "a build's time limit is 1s to 36h (CodeBuild's maximum); write e.g. `default_timeout = \"60m\"`",
        );
        let max_timeout = self.duration(
            "jobs.max_timeout",
            raw.max_timeout.as_ref(),
            defaults::max_timeout(),
            (units::MIN_TIMEOUT, units::MAX_TIMEOUT),
            "a build's time limit is 1s to 36h (CodeBuild's maximum); write e.g. `max_timeout = \"8h\"`",
        );
        if default_timeout > max_timeout {
            let span = raw
                .default_timeout
                .as_ref()
                .or(raw.max_timeout.as_ref())
                .map(|v| v.span())
                .unwrap_or(0..0);
            let field = if raw.default_timeout.is_some() {
                "jobs.default_timeout"
            } else {
                "jobs.max_timeout"
            };
            self.err(
                span,
                field,
                format!(
                    "`default_timeout` ({}) is longer than `max_timeout` ({})",
                    format_duration(default_timeout),
                    format_duration(max_timeout)
                ),
                "every job would be refused; lower `default_timeout` or raise `max_timeout`",
            );
        }
        let default_image = match raw.default_image {
            None => defaults::default_image(),
            Some(image) => match ImageRef::parse(image.get_ref()) {
                Ok(_) => image.into_inner(),
                Err(e) => {
                    self.err(
                        image.span(),
                        "jobs.default_image",
                        format!("`default_image`: {e}"),
                        "write a reference like `agent-standard:latest` or `registry.example.com/team/image:1.2`",
                    );
                    defaults::default_image()
                }
            },
        };
        let mut allowed_images = Vec::new();
        for (i, pattern) in raw.allowed_images.iter().enumerate() {
            match ImagePattern::parse(pattern.get_ref()) {
                Ok(p) => allowed_images.push(p),
                Err(e) => self.err(
                    pattern.span(),
                    &format!("jobs.allowed_images[{i}]"),
                    e,
                    "patterns look like `agent-*`, `registry.example.com/team/*` or `registry.example.com/**`",
                ),
            }
        }
        let mut allowed_git_paths = Vec::new();
        for (i, dir) in raw.allowed_git_paths.iter().enumerate() {
            let field = format!("jobs.allowed_git_paths[{i}]");
            match check_absolute_dir(dir.get_ref()) {
                Ok(path) if path == Path::new("/") => self.err(
                    dir.span(),
                    &field,
                    "`/` would let a job clone any repository on this host, and read its files through git",
                    "name the directories the repositories live in, e.g. `/srv/git`",
                ),
                Ok(path) => allowed_git_paths.push(path),
                Err(e) => self.err(dir.span(), &field, e, "write an absolute directory, e.g. `/srv/git`"),
            }
        }
        let memory = match raw.memory {
            None => defaults::memory(),
            Some(value) => match units::parse_memory(&value.get_ref().0) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.err(
                        value.span(),
                        "jobs.memory",
                        format!("`memory`: {e}"),
                        "6m (Docker's minimum) to 1024t; write e.g. `memory = \"4g\"`; a bare number is bytes",
                    );
                    defaults::memory()
                }
            },
        };
        let cpus = match raw.cpus {
            None => defaults::cpus(),
            Some(value) => {
                let n = *value.get_ref();
                if let Ok(n) = units::check_cpus(n) {
                    n
                } else {
                    self.err(
                        value.span(),
                        "jobs.cpus",
                        format!(
                            "`cpus` must be between {} and {}, not {n}",
                            units::MIN_CPUS,
                            units::MAX_CPUS
                        ),
                        "write e.g. `cpus = 2.0` or `cpus = 0.5`",
                    );
                    defaults::cpus()
                }
            }
        };
        let pids = self.integer(
            "jobs.pids",
            raw.pids.as_ref(),
            defaults::pids(),
            16,
            "fewer processes than 16 cannot run a shell and a build tool; write e.g. `pids = 4096`",
        );
        JobsConfig {
            default_timeout,
            max_timeout,
            default_image,
            allowed_images,
            allow_privileged: raw.allow_privileged,
            allowed_git_paths,
            memory,
            cpus,
            pids,
        }
    }

    fn roles(&mut self, raw: super::raw::RawRoles) -> RolesConfig {
        let mut allowed = Vec::new();
        for (i, pattern) in raw.allowed.iter().enumerate() {
            match RolePattern::parse(pattern.get_ref()) {
                Ok(p) => allowed.push(p),
                Err(e) => self.err(
                    pattern.span(),
                    &format!("roles.allowed[{i}]"),
                    e,
                    "write a full role ARN, e.g. `arn:aws:iam::123456789012:role/deploy-*`",
                ),
            }
        }
        let mut environments = BTreeMap::new();
        for (name, role) in raw.environments {
            let field = format!("roles.environments.{}", name.get_ref());
            if !is_environment_name(name.get_ref()) {
                self.err(
                    name.span(),
                    &field,
                    format!("`{}` is not an environment name", name.get_ref()),
                    "use letters, digits, `_` and `-`, at most 64 characters",
                );
            }
            let arn = match RoleArn::parse(role.role_arn.get_ref()) {
                Ok(arn) => Some(arn),
                Err(e) => {
                    self.err(
                        role.role_arn.span(),
                        &format!("{field}.role_arn"),
                        e,
                        "write a role ARN, e.g. `arn:aws:iam::111111111111:role/agent-dev`",
                    );
                    None
                }
            };
            let external_id =
                role.external_id
                    .and_then(|id| match check_external_id(id.get_ref()) {
                        Ok(()) => Some(id.into_inner()),
                        Err(e) => {
                            self.err(
                                id.span(),
                                &format!("{field}.external_id"),
                                e,
                                "STS takes 2 to 1224 characters of letters, digits and `+=,.@:/-_`",
                            );
                            None
                        }
                    });
            if let Some(role_arn) = arn {
                environments.insert(
                    name.into_inner(),
                    RoleRef {
                        role_arn,
                        external_id,
                    },
                );
            }
        }
        RolesConfig {
            allowed,
            environments,
        }
    }

    fn deploy(&mut self, raw: super::raw::RawDeploy) -> DeployConfig {
        let root = self.dir("deploy.root", raw.root.as_ref(), defaults::deploy_root());
        let mut allowed_destinations = Vec::new();
        for (i, dest) in raw.allowed_destinations.iter().enumerate() {
            let field = format!("deploy.allowed_destinations[{i}]");
            match check_absolute_dir(dest.get_ref()) {
                Ok(path) if path == Path::new("/") => self.err(
                    dest.span(),
                    &field,
                    "`/` would let a deployment overwrite any file on the host",
                    "name the directories applications live in, e.g. `/opt`, `/srv`",
                ),
                Ok(path) => allowed_destinations.push(path),
                Err(e) => self.err(
                    dest.span(),
                    &field,
                    e,
                    "write an absolute directory, e.g. `/srv`",
                ),
            }
        }
        let max_revisions = self.integer(
            "deploy.max_revisions",
            raw.max_revisions.as_ref(),
            defaults::max_revisions(),
            1,
            "the last successful revision is always kept; write `max_revisions = 1` or more",
        );
        DeployConfig {
            root,
            allowed_destinations,
            max_revisions,
        }
    }

    fn git_credentials(&mut self, raw: Vec<S<super::raw::RawGitCredential>>) -> Vec<GitCredential> {
        let mut out: Vec<GitCredential> = Vec::new();
        for (i, table) in raw.into_iter().enumerate() {
            let span = table.span();
            let raw = table.into_inner();
            let field = |name: &str| format!("git_credentials[{i}].{name}");
            let Some(prefix) = raw.url_prefix else {
                self.err(
                    span,
                    &field("url_prefix"),
                    "these git credentials have no `url_prefix`",
                    "add `url_prefix = \"https://git.example.com/org/\"`: the repositories they are for",
                );
                continue;
            };
            let text = prefix.get_ref();
            let shape = if !(text.ends_with('/') || text.ends_with(':')) {
                Err(format!(
                    "`{text}` does not end in `/` or `:`, so it would also match other hosts and paths that start the same way"
                ))
            } else {
                check_git_url(&format!("{text}x"))
            };
            if let Err(e) = shape {
                self.err(
                    prefix.span(),
                    &field("url_prefix"),
                    format!("`url_prefix`: {e}"),
                    "write the start of the repositories' URLs up to a `/`, e.g. `https://git.example.com/platform/`",
                );
                continue;
            }
            if out.iter().any(|c| c.url_prefix == *text) {
                self.err(
                    prefix.span(),
                    &field("url_prefix"),
                    format!("`{text}` has credentials already"),
                    "keep one `[[git_credentials]]` table per prefix",
                );
                continue;
            }
            let mut file = |name: &str, value: Option<S<String>>| -> Option<PathBuf> {
                let value = value?;
                match check_absolute_dir(value.get_ref()) {
                    Ok(path) => Some(path),
                    Err(e) => {
                        self.err(
                            value.span(),
                            &field(name),
                            format!("`{name}`: {e}"),
                            format!(
                                "write an absolute path, e.g. `{name} = \"/etc/agent/git-token\"`"
                            ),
                        );
                        None
                    }
                }
            };
            // Which fields are set, whether or not their paths are valid: a bad path is
            // its own problem, not also a missing field.
            let (has_token, has_key, has_passphrase) = (
                raw.token_file.is_some(),
                raw.ssh_key_file.is_some(),
                raw.passphrase_file.is_some(),
            );
            let token_file = file("token_file", raw.token_file);
            let ssh_key_file = file("ssh_key_file", raw.ssh_key_file);
            let passphrase_file = file("passphrase_file", raw.passphrase_file);
            if has_token == has_key {
                self.err(
                    span,
                    &field("token_file"),
                    "git credentials take exactly one of `token_file` and `ssh_key_file`",
                    "a token for https URLs, an ssh key for ssh and `git@host:` URLs",
                );
                continue;
            }
            if has_passphrase && !has_key {
                self.err(
                    span,
                    &field("passphrase_file"),
                    "`passphrase_file` is for an ssh key, and these credentials have none",
                    "remove `passphrase_file`, or use `ssh_key_file`",
                );
                continue;
            }
            let username = raw
                .username
                .map_or_else(defaults::git_username, S::into_inner);
            if (has_token && token_file.is_none())
                || (has_key && ssh_key_file.is_none())
                || (has_passphrase && passphrase_file.is_none())
            {
                continue;
            }
            out.push(GitCredential {
                url_prefix: text.clone(),
                username,
                token_file,
                ssh_key_file,
                passphrase_file,
            });
        }
        out
    }

    fn aws(&mut self, raw: super::raw::RawAws) -> AwsConfig {
        let region = raw.region.and_then(|r| {
            if is_region(r.get_ref()) {
                Some(r.into_inner())
            } else {
                self.err(
                    r.span(),
                    "aws.region",
                    format!("`region`: `{}` is not an AWS region", r.get_ref()),
                    "write a region code such as `eu-west-1` or `us-east-1`",
                );
                None
            }
        });
        let profile = raw.profile.and_then(|p| {
            let text = p.get_ref();
            if !text.is_empty()
                && !text
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '[' || c == ']')
            {
                Some(p.into_inner())
            } else {
                self.err(
                    p.span(),
                    "aws.profile",
                    format!("`profile`: `{}` is not a profile name", text.escape_debug()),
                    "write the name as in `~/.aws/config`, without `[profile …]`",
                );
                None
            }
        });
        let endpoint_url = self.web_url(
            "aws.endpoint_url",
            raw.endpoint_url.as_ref(),
            PlainHttp::Anywhere,
        );
        AwsConfig {
            region,
            profile,
            endpoint_url,
        }
    }

    /// Each source with the position of its table and of the field that names it.
    fn sources(&mut self, raw: Vec<S<RawSource>>) -> Vec<Found> {
        if raw.is_empty() {
            self.err(
                0..0,
                "sources",
                "the config has no job sources",
                "add a `[[sources]]` table, e.g. `type = \"spool\"` with `path = \"/var/lib/agent/spool\"`",
            );
        }
        let mut sources: Vec<Found> = Vec::new();
        for (i, table) in raw.into_iter().enumerate() {
            let table_span = table.span();
            let raw = table.into_inner();
            // Where a clash is shown: the field that names the source, else its header.
            let span = raw
                .path
                .as_ref()
                .or(raw.queue_url.as_ref())
                .map_or(table_span.clone(), |v| v.span());
            let Some(source) = self.source(i, &table_span, raw) else {
                continue;
            };
            let key = identity(&source);
            if let Some(Found { table: first, .. }) =
                sources.iter().find(|f| identity(&f.source) == key)
            {
                let (line, _) = self.p.lines().position(first.start);
                self.err(
                    table_span,
                    &format!("sources[{i}]"),
                    format!(
                        "this source repeats the {} source on line {line}",
                        source.type_name()
                    ),
                    "two pollers of one source would race for the same jobs; remove one",
                );
                continue;
            }
            sources.push(Found {
                index: i,
                source,
                table: table_span,
                name: span,
            });
        }
        sources
    }

    fn max_receive_count(&mut self, field: &str, raw: &RawSource) -> u32 {
        self.integer(
            field,
            raw.max_receive_count.as_ref(),
            defaults::max_receive_count(),
            1,
            "a job must be delivered at least once to run; write `max_receive_count = 5`",
        )
    }

    fn source(&mut self, i: usize, span: &Range<usize>, raw: RawSource) -> Option<Source> {
        let field = |name: &str| format!("sources[{i}].{name}");
        let kind = raw.kind.get_ref().clone();
        let index = self.one_of(&field("type"), &raw.kind, Source::TYPES)?;
        let takes: &[&str] = match index {
            0 => &["path", "max_receive_count"],
            1 => &[
                "queue_url",
                "visibility_timeout",
                "wait_time",
                "max_receive_count",
                "dead_letter_queue_url",
            ],
            _ => &[
                "category",
                "provider",
                "version",
                "poll_interval",
                "job_timeout",
                "query_param",
            ],
        };
        for (name, field_span) in raw.fields_set() {
            if !takes.contains(&name) {
                self.err(
                    field_span,
                    &field(name),
                    format!(
                        "`{name}` does not apply to {} `{kind}` source",
                        article(&kind)
                    ),
                    format!("{} `{kind}` source takes {}", article(&kind), list(takes)),
                );
            }
        }
        let required =
            |this: &mut Self, name: &str, value: Option<&S<String>>| -> Option<S<String>> {
                if value.is_none() {
                    this.err(
                        span.clone(),
                        &field(name),
                        format!("this `{kind}` source has no `{name}`"),
                        format!("add `{name} = …` to this `[[sources]]` table"),
                    );
                }
                value.cloned()
            };
        match index {
            0 => {
                let path = required(self, "path", raw.path.as_ref())?;
                let path = self.dir(&field("path"), Some(&path), PathBuf::new());
                let max_receive_count = self.max_receive_count(&field("max_receive_count"), &raw);
                Some(Source::Spool(SpoolSource {
                    path,
                    max_receive_count,
                }))
            }
            1 => {
                let url = required(self, "queue_url", raw.queue_url.as_ref());
                let url_ok = url
                    .as_ref()
                    .is_some_and(|u| self.queue_url(&field("queue_url"), "queue_url", u));
                let dead_letter_queue_url = raw.dead_letter_queue_url.as_ref().and_then(|u| {
                    let name = "dead_letter_queue_url";
                    self.queue_url(&field(name), name, u)
                        .then(|| u.get_ref().clone())
                });
                let visibility_timeout = self.duration(
                    &field("visibility_timeout"),
                    raw.visibility_timeout.as_ref(),
                    defaults::visibility_timeout(),
                    (Duration::from_secs(1), Duration::from_secs(12 * 3600)),
                    "the visibility timeout is the job's lease, 1s to 12h (at 0s other agents would take the job at once); the agent extends it while a job runs",
                );
                let wait_time = self.duration(
                    &field("wait_time"),
                    raw.wait_time.as_ref(),
                    defaults::wait_time(),
                    (Duration::ZERO, Duration::from_secs(20)),
                    "SQS long polling waits 0s to 20s",
                );
                let max_receive_count = self.max_receive_count(&field("max_receive_count"), &raw);
                let queue_url = url.filter(|_| url_ok)?.into_inner();
                Some(Source::Sqs(SqsSource {
                    queue_url,
                    visibility_timeout,
                    wait_time,
                    max_receive_count,
                    dead_letter_queue_url,
                }))
            }
            _ => {
                let category = required(self, "category", raw.category.as_ref());
                let category = category
                    .and_then(|c| self.one_of(&field("category"), &c, ActionCategory::NAMES));
                let provider = required(self, "provider", raw.provider.as_ref());
                let provider = provider.and_then(|p| {
                    self.action_name(&field("provider"), &p, 35)
                        .then(|| p.into_inner())
                });
                let version = match &raw.version {
                    None => {
                        required(self, "version", None);
                        None
                    }
                    Some(v) => {
                        let text = S::new(v.span(), v.get_ref().0.clone());
                        self.action_name(&field("version"), &text, 9)
                            .then(|| text.into_inner())
                    }
                };
                let poll_interval = self.duration(
                    &field("poll_interval"),
                    raw.poll_interval.as_ref(),
                    defaults::poll_interval(),
                    (Duration::from_secs(1), Duration::from_secs(300)),
                    "poll at least every 5m and at most every second",
                );
                let job_timeout = raw.job_timeout.as_ref().map(|value| {
                    self.duration(
                        &field("job_timeout"),
                        Some(value),
                        Duration::from_secs(3600),
                        (Duration::from_secs(2), Duration::from_secs(12 * 3600)),
                        "CodePipeline's job timeout of an action type is 60s to 12h",
                    )
                });
                let query_param = raw
                    .query_param
                    .map(|q| self.query_param(&field("query_param"), q))
                    .unwrap_or_default();
                let category = [
                    ActionCategory::Source,
                    ActionCategory::Build,
                    ActionCategory::Test,
                    ActionCategory::Deploy,
                    ActionCategory::Invoke,
                    ActionCategory::Approval,
                ][category?];
                Some(Source::Codepipeline(CodePipelineSource {
                    category,
                    provider: provider?,
                    version: version?,
                    poll_interval,
                    job_timeout,
                    query_param,
                }))
            }
        }
    }

    /// PollForJobs's `queryParam`: one queryable property and its value.
    fn query_param(
        &mut self,
        field: &str,
        raw: S<BTreeMap<S<String>, S<String>>>,
    ) -> BTreeMap<String, String> {
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.len() > 1 {
            self.err(
                span,
                field,
                format!(
                    "`query_param` has {} entries; CodePipeline queries one property",
                    raw.len()
                ),
                "keep the action type's one queryable property, e.g. `query_param = { Fleet = \"linux\" }`",
            );
            return BTreeMap::new();
        }
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let entry = format!("{field}.{}", name.get_ref());
            if !(1..=50).contains(&name.get_ref().chars().count()) {
                self.err(
                    name.span(),
                    &entry,
                    format!("`{}` is not a CodePipeline property name", name.get_ref()),
                    "a property name is 1 to 50 characters, as the action type declares it",
                );
                continue;
            }
            let text = value.get_ref();
            if !is_codepipeline_name(text, 50) {
                self.err(
                    value.span(),
                    &entry,
                    format!("`{text}` is not a value CodePipeline can query"),
                    "a queryable property's value is 1 to 50 letters, digits, `_` and `-`",
                );
                continue;
            }
            out.insert(name.into_inner(), value.into_inner());
        }
        out
    }

    fn action_name(&mut self, field: &str, value: &S<String>, max: usize) -> bool {
        let text = value.get_ref();
        let ok = is_codepipeline_name(text, max);
        if !ok {
            self.err(
                value.span(),
                field,
                format!(
                    "`{}`: `{text}` is not a CodePipeline action {}",
                    key(field),
                    key(field)
                ),
                format!("CodePipeline takes 1 to {max} letters, digits, `_` and `-`"),
            );
        }
        ok
    }

    fn queue_url(&mut self, field: &str, name: &str, value: &S<String>) -> bool {
        let text = value.get_ref();
        let hint =
            "write the URL SQS gives, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/jobs`";
        let url = match parse_web_url(text, PlainHttp::LoopbackOnly) {
            Ok(url) => url,
            Err(e) => {
                self.err(value.span(), field, format!("`{name}`: {e}"), hint);
                return false;
            }
        };
        let parts: Vec<&str> = url.path.trim_start_matches('/').split('/').collect();
        let ok = match parts[..] {
            [account, name] => {
                account.len() == 12
                    && account.bytes().all(|b| b.is_ascii_digit())
                    && (1..=80).contains(&name.len())
                    && name
                        .strip_suffix(".fifo")
                        .unwrap_or(name)
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }
            _ => false,
        };
        if !ok {
            self.err(
                value.span(),
                field,
                format!("`{name}`: `{text}` does not end in `/<12-digit account>/<queue name>`"),
                hint,
            );
        }
        ok
    }

    fn overlaps(&mut self, dirs: &[Dir]) {
        for (i, (a_field, a, a_span)) in dirs.iter().enumerate() {
            for (b_field, b, b_span) in &dirs[i + 1..] {
                let work = a_field == "agent.work_dir" || b_field == "agent.work_dir";
                let clash = a == b || (work && (a.starts_with(b) || b.starts_with(a)));
                if !clash {
                    continue;
                }
                // Report where the operator wrote something; a default has no position.
                let (field, span) = match (b_span, a_span) {
                    (Some(span), _) => (b_field, span.clone()),
                    (None, Some(span)) => (a_field, span.clone()),
                    (None, None) => continue,
                };
                let hint = if work {
                    "the work directory is emptied between jobs; keep every other directory outside it"
                } else {
                    "give each its own directory"
                };
                self.err(
                    span,
                    field,
                    format!(
                        "`{}` ({}) overlaps `{}` ({})",
                        b_field,
                        b.display(),
                        a_field,
                        a.display()
                    ),
                    hint,
                );
            }
        }
    }
}

type Dir = (String, PathBuf, Option<Range<usize>>);

/// A source that passed its checks, with where it was written.
struct Found {
    index: usize,
    source: Source,
    /// The `[[sources]]` header.
    table: Range<usize>,
    /// The field that names the source (`path`, `queue_url`), else the header.
    name: Range<usize>,
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What makes two sources the same source, whatever their tuning.
fn identity(source: &Source) -> String {
    match source {
        Source::Spool(s) => format!("spool {}", s.path.display()),
        Source::Sqs(s) => format!("sqs {}", s.queue_url),
        Source::Codepipeline(s) => {
            format!(
                "codepipeline {:?}/{}/{} {:?}",
                s.category, s.provider, s.version, s.query_param
            )
        }
    }
}

/// CodePipeline's names and queryable values: 1 to `max` of `[0-9A-Za-z_-]`.
fn is_codepipeline_name(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_environment_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_region(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}
