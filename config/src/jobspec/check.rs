//! From the message as written to a checked [`JobSpec`], collecting every problem.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{WireDeploy, WireJob, WireRole, WireSource};
use super::*;
use crate::allow::PARTITIONS;
use crate::diag::{Format, Problem, Problems, article, explain_serde};
use crate::json_index::JsonIndex;
use crate::values::{
    PlainHttp, check_env_name, check_external_id, check_git_ref, check_git_url, check_label,
    check_name, check_relative_path, parse_duration, parse_web_url,
};

pub(super) fn parse(bytes: &[u8]) -> Result<JobSpec, Vec<Problem>> {
    if bytes.len() > MAX_JOBSPEC_BYTES {
        let mut p = Problems::new("");
        p.push(
            0,
            "",
            format!(
                "the message is {} bytes; a JobSpec is at most {} bytes",
                bytes.len(),
                MAX_JOBSPEC_BYTES
            ),
            Some(
                "fetch large inputs with an `s3` or `https` source instead of `inline` files"
                    .into(),
            ),
        );
        return Err(p.finish());
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(crate::diag::not_utf8(bytes, e, "JSON messages")),
    };
    let mut p = Problems::new(text);
    let document: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(json_problem(p, None, &e)),
    };
    let index = JsonIndex::build(text);
    let Some(object) = document.as_object() else {
        p.push(
            index.value(&[]),
            "",
            "a JobSpec is a JSON object",
            Some("write `{\"version\": 1, \"id\": …, \"kind\": …, \"source\": …}`".into()),
        );
        return Err(p.finish());
    };
    match object.get("version") {
        None => {
            p.push(
                index.value(&[]),
                "version",
                "the message has no `version`",
                Some(format!(
                    "add `\"version\": 1`; this agent reads JobSpec version {}",
                    versions()
                )),
            );
            return Err(p.finish());
        }
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            p.push(
                index.value(&["version"]),
                "version",
                format!("JobSpec version {v} is not one this agent reads"),
                Some(format!(
                    "this agent reads JobSpec version {}; send `\"version\": 1`",
                    versions()
                )),
            );
            return Err(p.finish());
        }
    }
    if !index.duplicates.is_empty() {
        for (path, at) in &index.duplicates {
            let key = path.last().map(String::as_str).unwrap_or("");
            p.push(
                *at,
                field_name(path),
                format!("`{key}` is written twice in the same object"),
                Some("JSON readers disagree on which one counts; keep one".into()),
            );
        }
        return Err(p.finish());
    }
    let wire: WireJob = match serde_json::from_str(text) {
        Ok(wire) => wire,
        Err(e) => return Err(json_problem(p, Some(&index), &e)),
    };
    let mut check = Check { p, index: &index };
    let job = check.job(wire);
    match job {
        Some(job) if check.p.is_empty() => Ok(job),
        _ => {
            if check.p.is_empty() {
                check
                    .p
                    .push(0, "", "the message could not be read as a JobSpec", None);
            }
            Err(check.p.finish())
        }
    }
}

fn versions() -> String {
    JOBSPEC_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_problem(
    mut p: Problems<'_>,
    index: Option<&JsonIndex>,
    e: &serde_json::Error,
) -> Vec<Problem> {
    let raw = e.to_string();
    let message = match raw.rfind(" at line ") {
        Some(i) => &raw[..i],
        None => raw.as_str(),
    };
    let (message, hint) = explain_serde(message, Format::Json);
    let mut offset = p.lines().offset_of(e.line(), e.column());
    if let Some(index) = index {
        let better = if message.starts_with("unknown field") {
            index.key_before(offset)
        } else {
            index.value_around(offset)
        };
        offset = better.unwrap_or(offset);
    }
    let hint = hint.or_else(|| match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            Some("the message must be one JSON object".to_string())
        }
        _ => None,
    });
    p.push(offset, "", message, hint);
    p.finish()
}

/// A path as a dotted field name; array indexes as `[n]`.
fn field_name<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for segment in path {
        let segment = segment.as_ref();
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

struct Check<'t, 'i> {
    p: Problems<'t>,
    index: &'i JsonIndex,
}

impl Check<'_, '_> {
    fn at_value(&mut self, path: &[&str], message: impl Into<String>, hint: impl Into<String>) {
        let offset = self.index.value(path);
        self.p
            .push(offset, field_name(path), message, Some(hint.into()));
    }

    fn at_key(&mut self, path: &[&str], message: impl Into<String>, hint: impl Into<String>) {
        let offset = self.index.key(path);
        self.p
            .push(offset, field_name(path), message, Some(hint.into()));
    }

    fn one_of(&mut self, path: &[&str], value: &str, names: &[&str]) -> Option<usize> {
        let found = names.iter().position(|n| *n == value);
        if found.is_none() {
            let key = match path.last() {
                Some(last) if last.bytes().all(|b| b.is_ascii_digit()) => field_name(path),
                Some(last) => last.to_string(),
                None => String::new(),
            };
            self.at_value(
                path,
                format!("`{key}`: `{value}` is not a valid value"),
                crate::diag::suggest(value, names),
            );
        }
        found
    }

    fn job(&mut self, w: WireJob) -> Option<JobSpec> {
        if let Err(e) = check_name(&w.id, 128) {
            self.at_value(
                &["id"],
                format!("`id`: {e}"),
                "ids are 1 to 128 of `A-Z a-z 0-9 . _ -`, e.g. `job-2026-11-22-0001`",
            );
        }
        let kind = self
            .one_of(&["kind"], &w.kind, JobKind::NAMES)
            .map(|i| [JobKind::Build, JobKind::Deploy][i]);
        let source = self.source(w.source);
        if let Some(kind) = kind {
            let build_only = [
                ("buildspec", w.buildspec.is_some()),
                ("image", w.image.is_some()),
                ("privileged", w.privileged.is_some()),
                ("artifacts", w.artifacts.is_some()),
                ("cache", w.cache.is_some()),
                // Hooks run on the host with no masking pipeline around their output.
                (
                    "secrets",
                    !(w.secrets.secrets_manager.is_empty() && w.secrets.parameter_store.is_empty()),
                ),
            ];
            match kind {
                JobKind::Build => {
                    if w.deploy.is_some() {
                        self.at_key(
                            &["deploy"],
                            "`deploy` is for `\"kind\": \"deploy\"` jobs",
                            "remove `deploy`, or make this a deploy job",
                        );
                    }
                }
                JobKind::Deploy => {
                    for (name, present) in build_only {
                        if present {
                            self.at_key(
                                &[name],
                                format!("`{name}` is for `\"kind\": \"build\"` jobs"),
                                format!("a deployment runs on the host; remove `{name}`"),
                            );
                        }
                    }
                    if w.deploy.is_none() {
                        self.at_value(
                            &["kind"],
                            "a deploy job needs a `deploy` section",
                            "add `\"deploy\": {\"application_name\": …, \"deployment_group\": …}`",
                        );
                    }
                }
            }
        }
        let buildspec = w.buildspec.and_then(|b| match (b.path, b.inline, b.s3) {
            (Some(path), None, None) => {
                if let Err(e) = check_relative_path(&path) {
                    self.at_value(
                        &["buildspec", "path"],
                        format!("`buildspec.path`: {e}"),
                        "write a path inside the source, e.g. `ci/buildspec.yml`",
                    );
                }
                Some(Buildspec::Path(path))
            }
            (None, Some(text), None) => {
                if text.trim().is_empty() {
                    self.at_value(
                        &["buildspec", "inline"],
                        "`buildspec.inline` is empty",
                        "put the buildspec's YAML text here, or use `path`",
                    );
                }
                Some(Buildspec::Inline(text))
            }
            (None, None, Some(url)) => {
                // CodeBuild names a buildspec in S3 by its ARN; both spellings mean one object.
                let url = match url.strip_prefix("arn:aws:s3:::") {
                    Some(rest) => format!("s3://{rest}"),
                    None => url,
                };
                match S3Url::parse(&url) {
                    Ok(parsed) if !parsed.key.is_empty() && !parsed.key.ends_with('/') => {
                        Some(Buildspec::S3(parsed))
                    }
                    Ok(_) => {
                        self.at_value(
                            &["buildspec", "s3"],
                            format!("`buildspec.s3`: `{url}` names no object"),
                            "write the object's whole key, e.g. `s3://ci-config/buildspecs/java.yml`",
                        );
                        None
                    }
                    Err(e) => {
                        self.at_value(
                            &["buildspec", "s3"],
                            format!("`buildspec.s3`: {e}"),
                            "write `s3://bucket/key` or `arn:aws:s3:::bucket/key`",
                        );
                        None
                    }
                }
            }
            _ => {
                self.at_value(
                    &["buildspec"],
                    "`buildspec` takes exactly one of `path`, `inline` and `s3`",
                    "write `{\"path\": \"ci/buildspec.yml\"}`, `{\"inline\": \"version: 0.2…\"}` or `{\"s3\": \"s3://bucket/buildspec.yml\"}`",
                );
                None
            }
        });
        let image = w.image.inspect(|image| {
            if let Err(e) = ImageRef::parse(image) {
                self.at_value(
                    &["image"],
                    e,
                    "write a reference like `agent-standard:latest`",
                );
            }
        });
        self.env(&w.env);
        let secrets = self.secrets(w.secrets, &w.env);
        let role = w.role.and_then(|r| self.role(r));
        let artifacts = w.artifacts.and_then(|a| {
            let s3 =
                a.s3.and_then(|url| self.s3_prefix(&["artifacts", "s3"], &url));
            let packaging = match a.packaging {
                None => Some(Packaging::None),
                Some(v) => self
                    .one_of(&["artifacts", "packaging"], &v, Packaging::NAMES)
                    .map(|i| [Packaging::None, Packaging::Zip][i]),
            };
            let namespace = match a.namespace {
                None => Some(Namespace::None),
                Some(v) => self
                    .one_of(&["artifacts", "namespace"], &v, Namespace::NAMES)
                    .map(|i| [Namespace::None, Namespace::BuildId][i]),
            };
            if let Some(key) = &a.kms_key_id
                && (key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                self.at_value(
                    &["artifacts", "kms_key_id"],
                    "`kms_key_id` is empty or holds whitespace",
                    "write a KMS key id, key ARN or alias ARN",
                );
            }
            Some(Artifacts {
                s3,
                packaging: packaging?,
                namespace: namespace?,
                kms_key_id: a.kms_key_id,
            })
        });
        let cache = w
            .cache
            .and_then(|c| self.s3_prefix(&["cache", "s3"], &c.s3))
            .map(|s3| Cache { s3 });
        let timeout = w.timeout.and_then(|t| match parse_duration(&t.0) {
            Ok(d) if d.is_zero() => {
                self.at_value(
                    &["timeout"],
                    "`timeout` must be more than 0s",
                    "write e.g. `\"timeout\": \"30m\"`, or leave it out for the agent's default",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.at_value(
                    &["timeout"],
                    format!("`timeout`: {e}"),
                    "write e.g. `\"timeout\": \"30m\"`; a bare number is seconds",
                );
                None
            }
        });
        for (k, v) in &w.labels {
            if let Err((on_key, e)) = check_label(k, v) {
                let path = ["labels", k.as_str()];
                let hint = "label keys: letters, digits, `.`, `_`, `-` (at most 63); values: at most 256 characters";
                if on_key {
                    self.at_key(&path, e, hint);
                } else {
                    self.at_value(&path, e, hint);
                }
            }
        }
        let notify =
            w.notify.and_then(
                |n| match parse_web_url(&n.webhook, PlainHttp::LoopbackOnly) {
                    Ok(_) => Some(Notify { webhook: n.webhook }),
                    Err(e) => {
                        self.at_value(
                            &["notify", "webhook"],
                            format!("`notify.webhook`: {e}"),
                            "write a URL like `https://hooks.example.com/agent`",
                        );
                        None
                    }
                },
            );
        let deploy = w.deploy.and_then(|d| self.deploy(d));
        let privileged = w.privileged.unwrap_or(false);
        Some(JobSpec {
            version: 1,
            id: w.id,
            kind: kind?,
            source: source?,
            buildspec,
            image,
            privileged,
            env: w.env,
            secrets: secrets?,
            role,
            artifacts,
            cache,
            timeout,
            labels: w.labels,
            notify,
            deploy,
        })
    }

    fn source(&mut self, w: WireSource) -> Option<JobSource> {
        let kind = self.one_of(&["source", "type"], &w.kind, JobSource::TYPES)?;
        let takes: &[&str] = match kind {
            0 => &["url", "ref", "depth", "submodules", "credentials_secret"],
            1 => &["url"],
            2 => &["files"],
            _ => &["url", "sha256"],
        };
        let type_name = JobSource::TYPES[kind];
        for name in w.fields_set() {
            if !takes.contains(&name) {
                self.at_key(
                    &["source", name],
                    format!(
                        "`{name}` does not apply to {} `{type_name}` source",
                        article(type_name)
                    ),
                    format!(
                        "{} `{type_name}` source takes {}",
                        article(type_name),
                        takes
                            .iter()
                            .map(|t| format!("`{t}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        let needs_url = kind != 2;
        if needs_url && w.url.is_none() {
            self.at_value(
                &["source"],
                format!("this {type_name} source has no `url`"),
                "add `\"url\": …` to `source`",
            );
            return None;
        }
        let url = w.url.unwrap_or_default();
        match kind {
            0 => {
                let mut ok = true;
                if let Err(e) = check_git_url(&url) {
                    self.at_value(&["source", "url"], format!("`source.url`: {e}"), "write `https://host/org/repo.git` or `git@host:org/repo.git`; put credentials in `credentials_secret`");
                    ok = false;
                }
                if let Some(r) = &w.git_ref
                    && let Err(e) = check_git_ref(r)
                {
                    self.at_value(
                        &["source", "ref"],
                        e,
                        "write a branch, tag or commit, e.g. `main`",
                    );
                    ok = false;
                }
                let depth = match w.depth {
                    None => None,
                    Some(d) if d >= 1 && d <= i64::from(u32::MAX) => u32::try_from(d).ok(),
                    Some(_) => {
                        self.at_value(
                            &["source", "depth"],
                            "`depth` must be at least 1",
                            "leave `depth` out for the full history",
                        );
                        ok = false;
                        None
                    }
                };
                if let Some(secret) = &w.credentials_secret
                    && let Err(e) = check_secret_reference(secret)
                {
                    self.at_value(
                        &["source", "credentials_secret"],
                        e,
                        "write a Secrets Manager secret name or ARN",
                    );
                    ok = false;
                }
                ok.then_some(JobSource::Git(GitSource {
                    url,
                    git_ref: w.git_ref,
                    depth,
                    submodules: w.submodules.unwrap_or(false),
                    credentials_secret: w.credentials_secret,
                }))
            }
            1 => match S3Url::parse(&url) {
                Ok(s3) if s3.key.is_empty() => {
                    self.at_value(&["source", "url"], format!("`source.url`: `{url}` names a bucket but no object or prefix"), "write `s3://bucket/key.zip` for one archive or `s3://bucket/prefix/` for every object under it");
                    None
                }
                Ok(s3) => Some(JobSource::S3(S3Source { url: s3 })),
                Err(e) => {
                    self.at_value(
                        &["source", "url"],
                        format!("`source.url`: {e}"),
                        "write `s3://bucket/key.zip` or `s3://bucket/prefix/`",
                    );
                    None
                }
            },
            2 => {
                let Some(files) = w.files else {
                    self.at_value(
                        &["source"],
                        "this `inline` source has no `files`",
                        "add `\"files\": {\"buildspec.yml\": \"…\"}`",
                    );
                    return None;
                };
                if files.is_empty() {
                    self.at_value(
                        &["source", "files"],
                        "`files` is empty",
                        "give at least one file: `{\"buildspec.yml\": \"…\"}`",
                    );
                }
                let mut ok = !files.is_empty();
                let mut seen = BTreeSet::new();
                for path in files.keys() {
                    if let Err(e) = check_relative_path(path) {
                        self.at_key(
                            &["source", "files", path],
                            e,
                            "file names are relative paths inside the source, e.g. `src/app.py`",
                        );
                        ok = false;
                    } else if !seen.insert(path.to_ascii_lowercase()) {
                        // Case-insensitive file systems would write one over the other.
                        self.at_key(
                            &["source", "files", path],
                            format!("`{path}` differs from another file only in case"),
                            "rename one of them",
                        );
                        ok = false;
                    }
                }
                ok.then_some(JobSource::Inline(InlineSource { files }))
            }
            _ => {
                let mut ok = true;
                if let Err(e) = parse_web_url(&url, PlainHttp::LoopbackOnly) {
                    self.at_value(
                        &["source", "url"],
                        format!("`source.url`: {e}"),
                        "write `https://host/path/bundle.tgz`",
                    );
                    ok = false;
                }
                if let Some(sum) = &w.sha256
                    && !(sum.len() == 64
                        && sum
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                {
                    self.at_value(
                        &["source", "sha256"],
                        "`sha256` is not 64 lowercase hex digits",
                        "write the output of `sha256sum bundle.tgz`",
                    );
                    ok = false;
                }
                ok.then_some(JobSource::Https(HttpsSource {
                    url,
                    sha256: w.sha256,
                }))
            }
        }
    }

    fn s3_prefix(&mut self, path: &[&str], url: &str) -> Option<S3Url> {
        match S3Url::parse(url) {
            Ok(s3) => Some(s3),
            Err(e) => {
                self.at_value(
                    path,
                    format!("`{}`: {e}", field_name(path)),
                    "write `s3://bucket/prefix`",
                );
                None
            }
        }
    }

    fn env(&mut self, env: &BTreeMap<String, String>) {
        for (name, value) in env {
            if let Err(e) = check_env_name(name) {
                self.at_key(
                    &["env", name],
                    e,
                    "variable names are letters, digits and `_`",
                );
            }
            if value.contains('\0') {
                self.at_value(
                    &["env", name],
                    format!("the value of `{name}` holds a NUL character"),
                    "environment values cannot hold NUL",
                );
            }
        }
    }

    fn secrets(
        &mut self,
        w: super::wire::WireSecrets,
        env: &BTreeMap<String, String>,
    ) -> Option<Secrets> {
        let mut ok = true;
        for (map, entries) in [
            ("secrets_manager", &w.secrets_manager),
            ("parameter_store", &w.parameter_store),
        ] {
            for (name, reference) in entries {
                let path = ["secrets", map, name.as_str()];
                if let Err(e) = check_env_name(name) {
                    self.at_key(&path, e, "variable names are letters, digits and `_`");
                    ok = false;
                }
                if env.contains_key(name) {
                    self.at_key(
                        &path,
                        format!("`{name}` is set both in `env` and in `secrets`"),
                        "set each variable in one place",
                    );
                    ok = false;
                }
                if map == "parameter_store" && w.secrets_manager.contains_key(name) {
                    self.at_key(
                        &path,
                        format!(
                            "`{name}` is set both in `secrets_manager` and in `parameter_store`"
                        ),
                        "set each variable in one place",
                    );
                    ok = false;
                }
                let checked = if map == "secrets_manager" {
                    check_secret_reference(reference)
                } else {
                    check_parameter_name(reference)
                };
                if let Err(e) = checked {
                    let hint = if map == "secrets_manager" {
                        "write `secret-id[:json-key[:version-stage[:version-id]]]`, the secret id a name or ARN"
                    } else {
                        "write a parameter name such as `/team/db/password`, or its ARN"
                    };
                    self.at_value(&path, e, hint);
                    ok = false;
                }
            }
        }
        ok.then_some(Secrets {
            secrets_manager: w.secrets_manager,
            parameter_store: w.parameter_store,
        })
    }

    fn role(&mut self, w: WireRole) -> Option<JobRole> {
        let tags_ok = self.session_tags(&w.session_tags);
        match (w.arn, w.environment) {
            (Some(arn), None) => {
                let arn = match RoleArn::parse(&arn) {
                    Ok(arn) => Some(arn),
                    Err(e) => {
                        self.at_value(
                            &["role", "arn"],
                            e,
                            "write a role ARN, e.g. `arn:aws:iam::123456789012:role/deploy`",
                        );
                        None
                    }
                };
                if let Some(id) = &w.external_id
                    && let Err(e) = check_external_id(id)
                {
                    self.at_value(
                        &["role", "external_id"],
                        e,
                        "STS takes 2 to 1224 characters of letters, digits and `+=,.@:/-_`",
                    );
                    return None;
                }
                Some(JobRole::Arn {
                    arn: arn?,
                    external_id: w.external_id,
                    session_tags: w.session_tags,
                })
                .filter(|_| tags_ok)
            }
            (None, Some(environment)) => {
                if w.external_id.is_some() {
                    self.at_key(&["role", "external_id"], "`external_id` goes with `arn`, not `environment`", "the environment's external id comes from the agent's config; remove it here");
                    return None;
                }
                if environment.is_empty() {
                    self.at_value(
                        &["role", "environment"],
                        "`environment` is empty",
                        "name one of the agent's `[roles.environments]`",
                    );
                    return None;
                }
                Some(JobRole::Environment {
                    environment,
                    session_tags: w.session_tags,
                })
                .filter(|_| tags_ok)
            }
            (Some(_), Some(_)) => {
                self.at_key(
                    &["role", "environment"],
                    "`role` takes `arn` or `environment`, not both",
                    "name the role by ARN or by environment",
                );
                None
            }
            (None, None) => {
                self.at_value(
                    &["role"],
                    "`role` names no role",
                    "write `{\"arn\": \"arn:aws:iam::…:role/…\"}` or `{\"environment\": \"prod\"}`",
                );
                None
            }
        }
    }

    fn session_tags(&mut self, tags: &BTreeMap<String, String>) -> bool {
        let mut ok = true;
        if tags.len() > 50 {
            self.at_value(
                &["role", "session_tags"],
                format!("{} session tags; STS takes at most 50", tags.len()),
                "drop some tags",
            );
            ok = false;
        }
        let allowed = |c: char| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c);
        let mut seen = BTreeSet::new();
        for (key, value) in tags {
            let path = ["role", "session_tags", key.as_str()];
            if key.is_empty() || key.chars().count() > 128 || !key.chars().all(allowed) {
                self.at_key(
                    &path,
                    format!("`{key}` is not a session tag key"),
                    "keys are 1 to 128 letters, digits, spaces and `_.:/=+-@`",
                );
                ok = false;
            } else if key.to_ascii_lowercase().starts_with("aws:") {
                self.at_key(
                    &path,
                    format!("`{key}` starts with `aws:`, which AWS reserves"),
                    "choose another key",
                );
                ok = false;
            } else if !seen.insert(key.to_lowercase()) {
                self.at_key(
                    &path,
                    format!(
                        "`{key}` repeats another key in a different case; STS treats them as one"
                    ),
                    "keep one of them",
                );
                ok = false;
            }
            if value.chars().count() > 256 || !value.chars().all(allowed) {
                self.at_value(
                    &path,
                    format!("the value of session tag `{key}` is not allowed"),
                    "values are at most 256 letters, digits, spaces and `_.:/=+-@`",
                );
                ok = false;
            }
        }
        ok
    }

    fn deploy(&mut self, w: WireDeploy) -> Option<DeploySpec> {
        let mut ok = true;
        for (name, value) in [
            ("application_name", &w.application_name),
            ("deployment_group", &w.deployment_group),
        ] {
            let valid = (1..=100).contains(&value.chars().count())
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+=,@-".contains(c))
                && !value.chars().all(|c| c == '.');
            if !valid {
                self.at_value(&["deploy", name], format!("`{name}`: `{value}` is not a valid name"), "names are 1 to 100 of `A-Z a-z 0-9 . _ + = , @ -`; they name directories on the host");
                ok = false;
            }
        }
        if let Some(appspec) = &w.appspec
            && let Err(e) = check_relative_path(appspec)
        {
            self.at_value(
                &["deploy", "appspec"],
                format!("`appspec`: {e}"),
                "write a path inside the bundle, e.g. `appspec.yml`",
            );
            ok = false;
        }
        let file_exists_behavior = match &w.file_exists_behavior {
            None => FileExistsBehavior::Disallow,
            Some(v) => match self.one_of(
                &["deploy", "file_exists_behavior"],
                v,
                FileExistsBehavior::NAMES,
            ) {
                Some(i) => [
                    FileExistsBehavior::Disallow,
                    FileExistsBehavior::Overwrite,
                    FileExistsBehavior::Retain,
                ][i],
                None => {
                    ok = false;
                    FileExistsBehavior::Disallow
                }
            },
        };
        let events = w.events.map(|names| {
            let mut events = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let index = i.to_string();
                let path = ["deploy", "events", index.as_str()];
                if LifecycleEvent::RESERVED.contains(&name.as_str()) {
                    self.at_value(&path, format!("`{name}` is run by the agent, not by a hook"), "leave it out; it always runs");
                    ok = false;
                    continue;
                }
                let Some(found) = self.one_of(&path, name, LifecycleEvent::NAMES) else {
                    ok = false;
                    continue;
                };
                let event = LifecycleEvent::ALL[found];
                if event.is_traffic() && !w.traffic {
                    self.at_value(&path, format!("`{name}` is a traffic hook, and `traffic` is off"), "set `\"traffic\": true` when the host sits behind a load balancer, or leave the event out");
                    ok = false;
                }
                if events.contains(&event) {
                    self.at_value(&path, format!("`{name}` is listed twice"), "list each event once");
                    ok = false;
                }
                events.push(event);
            }
            events.sort();
            events
        });
        ok.then_some(DeploySpec {
            application_name: w.application_name,
            deployment_group: w.deployment_group,
            appspec: w.appspec,
            file_exists_behavior,
            events,
            rollback_on_failure: w.rollback_on_failure,
            traffic: w.traffic,
            ignore_application_stop_failures: w.ignore_application_stop_failures,
        })
    }
}

/// `secret-id[:json-key[:version-stage[:version-id]]]`, the secret id a name or an ARN, as
/// the buildspec's `env.secrets-manager` takes it.
fn check_secret_reference(text: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{}` is not a Secrets Manager reference: {why}",
            text.escape_debug()
        ))
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 512
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    };
    let fields: Vec<&str> = text.split(':').collect();
    let rest = if text.starts_with("arn:") {
        if fields.len() < 7 {
            return bad("an ARN is `arn:aws:secretsmanager:<region>:<account>:secret:<name>`");
        }
        let (partition, service, region, account, kind, name) = (
            fields[1], fields[2], fields[3], fields[4], fields[5], fields[6],
        );
        if !PARTITIONS.contains(&partition) || service != "secretsmanager" || region.is_empty() {
            return bad("expected `arn:<partition>:secretsmanager:<region>:…`");
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return bad("the account must be 12 digits");
        }
        if kind != "secret" || !name_ok(name) {
            return bad("expected `…:secret:<name>`");
        }
        &fields[7..]
    } else {
        if !name_ok(fields[0]) {
            return bad("a secret name is letters, digits and `/_+=.@-`");
        }
        &fields[1..]
    };
    if rest.len() > 3 {
        return bad(
            "after the secret id come at most a JSON key, a version stage and a version id",
        );
    }
    if rest
        .iter()
        .any(|f| f.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return bad("it holds whitespace");
    }
    Ok(())
}

/// A Parameter Store name or ARN.
fn check_parameter_name(text: &str) -> Result<(), String> {
    let name = match text.strip_prefix("arn:") {
        Some(_) => {
            let fields: Vec<&str> = text.splitn(6, ':').collect();
            match fields[..] {
                [_, partition, "ssm", region, account, resource]
                    if PARTITIONS.contains(&partition)
                        && !region.is_empty()
                        && account.len() == 12
                        && account.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    match resource.strip_prefix("parameter") {
                        Some(name) if name.starts_with('/') => name,
                        _ => {
                            return Err(format!(
                                "`{text}` is not a parameter ARN: expected `…:parameter/<name>`"
                            ));
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "`{text}` is not a parameter ARN: expected `arn:<partition>:ssm:<region>:<account>:parameter/<name>`"
                    ));
                }
            }
        }
        None => text,
    };
    let ok = !name.is_empty()
        && name.len() <= 2048
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        && !name.contains("//");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a Parameter Store name: letters, digits and `_.-/`",
            text.escape_debug()
        ))
    }
}
