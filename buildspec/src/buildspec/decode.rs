//! Reads a buildspec from the YAML tree, checking it against CodeBuild's rules.

use std::collections::HashSet;

use super::batch::{Batch, decode_batch};
use super::commands::decode_commands;
use super::{
    Artifacts, Buildspec, Cache, CacheAction, Env, OnFailure, Phase, PhaseName, Phases, Proxy,
    ReportFormat, ReportGroup, SecretRef, SecretVariable, Shell, Variable, Version,
};
use crate::decode::{Decoder, Fields, Spanned, join};
use crate::diag::{Code, did_you_mean};
use crate::source::Span;
use crate::yaml::{Node, Style, Value};

const TOP_KEYS: [&str; 9] = [
    "version",
    "run-as",
    "env",
    "proxy",
    "batch",
    "phases",
    "reports",
    "artifacts",
    "cache",
];
const LEGACY_ENV_KEY: &str = "environment_variables";
const ENV_KEYS: [&str; 6] = [
    "shell",
    "variables",
    "parameter-store",
    "exported-variables",
    "secrets-manager",
    "git-credential-helper",
];
const PHASE_KEYS: [&str; 5] = [
    "run-as",
    "on-failure",
    "runtime-versions",
    "commands",
    "finally",
];
const ARTIFACT_KEYS: [&str; 9] = [
    "files",
    "name",
    "discard-paths",
    "base-directory",
    "exclude-paths",
    "enable-symlinks",
    "s3-prefix",
    "secondary-artifacts",
    "type",
];
const REPORT_KEYS: [&str; 4] = ["files", "base-directory", "discard-paths", "file-format"];
const CACHE_KEYS: [&str; 4] = ["key", "fallback-keys", "action", "paths"];
const MAX_REPORT_GROUPS: usize = 5;
const MAX_FALLBACK_KEYS: usize = 5;

pub(crate) fn decode(d: &mut Decoder<'_>, root: &Node) -> Option<Buildspec> {
    if root.is_null() {
        empty_document(d, root.span);
        return None;
    }
    let Value::Map(entries) = &root.value else {
        d.diags.error(
            Code::WrongType,
            root.span,
            format!(
                "a buildspec must be a mapping of keys, but this file is {}",
                root.kind_name()
            ),
            "start the file with `version: 0.2` and a `phases:` section, each key on its own line",
        );
        return None;
    };
    if entries.is_empty() {
        empty_document(d, root.span);
        return None;
    }

    // Phase names at the top level mean the indentation under `phases` was lost; say that
    // once instead of warning about each key.
    let stray_phases: Vec<(&str, Span)> = entries
        .iter()
        .filter_map(|(k, _)| {
            let name = k.scalar()?.trim();
            let stray = PhaseName::ALL.iter().any(|p| p.key() == name) || name == "commands";
            stray.then_some((name, k.span))
        })
        .collect();
    let mut known: Vec<&str> = TOP_KEYS.to_vec();
    known.push(LEGACY_ENV_KEY);
    known.extend(stray_phases.iter().map(|(n, _)| *n));
    let fields = d.fields(root, "", &known)?;

    let version = decode_version(d, &fields, root)?;
    let batch = fields.get("batch").and_then(|n| decode_batch(d, n));
    // A batch whose every member names a buildspec of its own needs no phases here, as
    // AWS's own CI repositories write it: this buildspec only lists the builds.
    let batch_only = fields.get("phases").is_none()
        && stray_phases.is_empty()
        && batch
            .as_ref()
            .and_then(|b| b.members_without_own_buildspec())
            .is_some_and(|without| without.is_empty());
    let phases = if batch_only {
        Some(Phases::default())
    } else {
        decode_phases(d, &fields, root, &stray_phases, batch.as_ref())
    };
    let env = decode_env_section(d, &fields, version);
    let run_as = d.opt_string(&fields, "run-as", "");
    let proxy = fields
        .get("proxy")
        .map(|n| decode_proxy(d, n))
        .unwrap_or_default();
    let reports = fields
        .get("reports")
        .map(|n| decode_reports(d, n))
        .unwrap_or_default();
    let artifacts = fields
        .get("artifacts")
        .and_then(|n| decode_artifacts(d, n, "artifacts", "primary", version));
    let cache = fields.get("cache").and_then(|n| decode_cache(d, n));

    if d.diags.has_errors() {
        return None;
    }
    Some(Buildspec {
        version,
        run_as,
        env,
        proxy,
        batch,
        phases: phases?,
        reports,
        artifacts,
        cache,
    })
}

fn empty_document(d: &mut Decoder<'_>, span: Span) {
    d.diags.error(
        Code::EmptyDocument,
        span,
        "the buildspec is empty",
        "a buildspec needs at least `version: 0.2` and a `phases:` section with commands",
    );
}

fn decode_version(d: &mut Decoder<'_>, fields: &Fields<'_>, root: &Node) -> Option<Version> {
    let Some(node) = fields.get("version") else {
        let first_key = fields.iter().next().map_or(root.span, |(_, k, _)| k.span);
        d.diags.error(
            Code::MissingVersion,
            first_key,
            "the buildspec has no `version`",
            "add `version: 0.2` as the first line",
        );
        return None;
    };
    let Some(text) = node.scalar().filter(|_| !node.is_null()) else {
        d.wrong_type(node, "version", "a version number", "write `version: 0.2`");
        return None;
    };
    let trimmed = text.trim();
    let numeric = node.style() == Some(Style::Plain)
        && trimmed.parse::<f64>().ok().is_some_and(|v| v.is_finite());
    let as_float = |v: f64| numeric && trimmed.parse::<f64>().ok() == Some(v);
    if trimmed == "0.2" || as_float(0.2) {
        return Some(Version::V0_2);
    }
    if trimmed == "0.1" || as_float(0.1) {
        d.diags.warning(
            Code::Deprecated,
            node.span,
            "buildspec version 0.1 is deprecated: it runs each command in a separate shell",
            "use `version: 0.2`, where `cd` and variables carry from one command to the next",
        );
        return Some(Version::V0_1);
    }
    let swallowed = ["0.1", "0.2"].iter().any(|v| {
        trimmed
            .strip_prefix(v)
            .is_some_and(|rest| rest.starts_with(char::is_whitespace))
    });
    if swallowed {
        let shown: String = trimmed.chars().take(40).collect();
        let more = if trimmed.chars().count() > 40 {
            "…"
        } else {
            ""
        };
        d.diags.error(
            Code::FlattenedDocument,
            node.span,
            format!("`version` swallowed the rest of the document: its value is `{shown}{more}`"),
            "the file lost its line breaks or indentation: put each top-level key (`phases:`, `artifacts:`…) on its own line, starting at column 1",
        );
        return None;
    }
    let hint = if trimmed == "0.0" {
        "`0.0` is the appspec.yml version; a buildspec uses `version: 0.2`".to_string()
    } else {
        "use `version: 0.2` (or `0.1`, which runs each command in its own shell)".to_string()
    };
    d.diags.error(
        Code::UnknownVersion,
        node.span,
        format!("unknown buildspec version `{trimmed}`"),
        hint,
    );
    None
}

fn decode_phases(
    d: &mut Decoder<'_>,
    fields: &Fields<'_>,
    root: &Node,
    stray: &[(&str, Span)],
    batch: Option<&Batch>,
) -> Option<Phases> {
    let stray_names = || {
        let names: Vec<String> = stray.iter().map(|(n, _)| format!("`{n}`")).collect();
        let verb = if names.len() == 1 { "sits" } else { "sit" };
        format!("{} {verb}", names.join(", "))
    };
    let Some(node) = fields.get("phases") else {
        let (span, message, hint) = match stray.first() {
            Some((_, span)) => (
                *span,
                format!(
                    "the buildspec has no `phases`, but {} at the top level",
                    stray_names()
                ),
                "put the phases under a `phases:` key, indented by two spaces".to_string(),
            ),
            None => match batch.map(Batch::members_without_own_buildspec) {
                Some(Some(members)) => {
                    let names: Vec<String> = members.iter().map(|m| format!("`{m}`")).collect();
                    let (who, they) = if names.len() == 1 {
                        ("batch member", "it")
                    } else {
                        ("batch members", "they")
                    };
                    (
                        fields.key_span("batch").unwrap_or(root.span),
                        format!(
                            "the buildspec has no `phases`, and {who} {} would run it: {they} would run nothing",
                            names.join(", ")
                        ),
                        format!(
                            "give {} `buildspec: path/to/its-buildspec.yml`, or add `phases:` here",
                            if names.len() == 1 { "it" } else { "each of them" }
                        ),
                    )
                }
                Some(None) => (
                    fields.key_span("batch").unwrap_or(root.span),
                    "the buildspec has no `phases`, and every member of this batch runs it: they would run nothing".to_string(),
                    "add `phases:`, or use a build-list or build-graph whose tasks name their own `buildspec`".to_string(),
                ),
                None => (
                    fields.key_span("version").unwrap_or(root.span),
                    "the buildspec has no `phases`: it would run nothing".to_string(),
                    "add `phases:` with at least one phase, e.g. `build:` with `commands:`".to_string(),
                ),
            },
        };
        d.diags.error(Code::MissingPhases, span, message, hint);
        return None;
    };
    let key_span = fields.key_span("phases").unwrap_or(node.span);
    let phase_fields = d.fields(node, "phases", &[])?;
    if phase_fields.is_empty() {
        if stray.is_empty() {
            d.diags.error(
                Code::MissingPhases,
                key_span,
                "`phases` is empty: the build would run nothing",
                "add at least one phase (`install`, `pre_build`, `build` or `post_build`) with commands",
            );
        } else {
            d.diags.error(
                Code::FlattenedDocument,
                key_span,
                format!("`phases` is empty, but {} at the top level", stray_names()),
                "the indentation under `phases:` was lost: indent each phase by two spaces and its keys by four",
            );
        }
        return None;
    }
    let names: Vec<&str> = PhaseName::ALL.iter().map(|p| p.key()).collect();
    let mut phases = Phases::default();
    for (name, key, value) in phase_fields.iter() {
        let Some(phase_name) = PhaseName::ALL.into_iter().find(|p| p.key() == name) else {
            let hint = match did_you_mean(name, &names) {
                Some(close) => format!("did you mean `{close}`? phase names cannot be changed"),
                None => {
                    "phases are named `install`, `pre_build`, `build` and `post_build`".to_string()
                }
            };
            d.diags.error(
                Code::UnknownPhase,
                key.span,
                format!("unknown phase `{name}`: its commands would never run"),
                hint,
            );
            continue;
        };
        if let Some(phase) = decode_phase(d, phase_name, key.span, value) {
            *phases.slot(phase_name) = Some(phase);
        }
    }
    Some(phases)
}

fn decode_phase(
    d: &mut Decoder<'_>,
    name: PhaseName,
    key_span: Span,
    node: &Node,
) -> Option<Phase> {
    let path = join("phases", name.key());
    let fields = d.fields(node, &path, &PHASE_KEYS)?;
    let mut phase = Phase {
        run_as: d.opt_string(&fields, "run-as", &path),
        ..Phase::default()
    };
    if let Some(node) = fields.get("on-failure").filter(|n| !n.is_null())
        && let Some(text) = d.string(node, &join(&path, "on-failure"))
    {
        match OnFailure::parse(text.trim()) {
            Ok(on_failure) => phase.on_failure = Some(Spanned::new(on_failure, text.span)),
            Err(why) => {
                let upper = text.trim().to_ascii_uppercase();
                let hint = if upper != text.trim() && OnFailure::parse(&upper).is_ok() {
                    format!("write it in capitals: `{upper}`")
                } else {
                    "write ABORT, CONTINUE, RETRY, RETRY-<count>, RETRY-<regex> or RETRY-<count>-<regex>".to_string()
                };
                d.diags.error(
                    Code::InvalidValue,
                    text.span,
                    format!("invalid `on-failure`: {why}"),
                    hint,
                );
            }
        }
    }
    if let Some(node) = fields.get("runtime-versions") {
        let rpath = join(&path, "runtime-versions");
        if name != PhaseName::Install {
            let span = fields.key_span("runtime-versions").unwrap_or(node.span);
            d.diags.error(
                Code::MisplacedKey,
                span,
                format!(
                    "`runtime-versions` is only allowed in the install phase, not in `{}`",
                    name.key()
                ),
                "move `runtime-versions` under `phases.install`",
            );
        } else {
            phase.runtime_versions = variables_raw(d, node, &rpath);
            if phase.runtime_versions.is_empty() {
                d.diags.error(
                    Code::MissingField,
                    fields.key_span("runtime-versions").unwrap_or(node.span),
                    "`runtime-versions` lists no runtime",
                    "name at least one runtime and version, e.g. `nodejs: 18.x`, or remove the key",
                );
            }
        }
    }
    match fields.get("commands") {
        Some(node) => {
            phase.commands = decode_commands(d, node, &join(&path, "commands"));
            let empty =
                node.is_null() || matches!(&node.value, Value::Seq(items) if items.is_empty());
            if empty {
                d.diags.warning(
                    Code::MissingCommands,
                    fields.key_span("commands").unwrap_or(node.span),
                    format!("`{path}.commands` is empty: the phase does nothing"),
                    "add commands, or remove the phase",
                );
            }
        }
        None if name != PhaseName::Install => {
            d.diags.error(
                Code::MissingCommands,
                key_span,
                format!("the `{}` phase has no `commands`", name.key()),
                format!(
                    "add `commands:` under `{}` with one `- command` per line",
                    name.key()
                ),
            );
        }
        None => {}
    }
    if let Some(node) = fields.get("finally") {
        phase.finally = decode_commands(d, node, &join(&path, "finally"));
    }
    Some(phase)
}

fn decode_env_section(d: &mut Decoder<'_>, fields: &Fields<'_>, version: Version) -> Env {
    let (node, legacy) = match (fields.get("env"), fields.get(LEGACY_ENV_KEY)) {
        (Some(env), Some(_)) => {
            let span = fields.key_span(LEGACY_ENV_KEY).unwrap_or(env.span);
            d.diags.error(
                Code::DuplicateKey,
                span,
                "the buildspec has both `env` and `environment_variables`",
                "`environment_variables` is the 0.1 name of `env`: move its variables into `env.variables`",
            );
            (env, false)
        }
        (Some(env), None) => (env, false),
        (None, Some(legacy)) => (legacy, true),
        (None, None) => return Env::default(),
    };
    if legacy {
        let span = fields.key_span(LEGACY_ENV_KEY).unwrap_or(node.span);
        let hint = if version == Version::V0_1 {
            "with `version: 0.2`, write `env:` with `variables:`"
        } else {
            "in version 0.2 this is `env:`, and `plaintext:` is `variables:`"
        };
        d.diags.warning(
            Code::Deprecated,
            span,
            "`environment_variables` is the deprecated 0.1 name of `env`",
            hint,
        );
    }
    let path = if legacy { LEGACY_ENV_KEY } else { "env" };
    let mut known = ENV_KEYS.to_vec();
    if legacy {
        known.push("plaintext");
    }
    let Some(env_fields) = d.fields(node, path, &known) else {
        return Env::default();
    };
    let mut env = Env {
        git_credential_helper: d
            .opt_bool(&env_fields, "git-credential-helper", path)
            .unwrap_or(false),
        ..Env::default()
    };
    if let Some(shell) = d.opt_string(&env_fields, "shell", path) {
        env.shell = match shell.trim() {
            "bash" | "/bin/bash" => Some(Shell::Bash),
            "sh" | "/bin/sh" => Some(Shell::Sh),
            "powershell.exe" => Some(Shell::PowerShell),
            "cmd.exe" => Some(Shell::Cmd),
            other => {
                d.diags.error(
                    Code::InvalidValue,
                    shell.span,
                    format!("unsupported shell `{other}`"),
                    "on Linux use `bash` or `/bin/sh`; on Windows `powershell.exe` or `cmd.exe`",
                );
                None
            }
        };
    }
    let variables_key = if legacy && env_fields.get("plaintext").is_some() {
        if let Some(span) = env_fields.key_span("plaintext") {
            d.diags.warning(
                Code::Deprecated,
                span,
                "`plaintext` is the deprecated 0.1 name of `variables`",
                "with `version: 0.2`, write `env.variables`",
            );
        }
        "plaintext"
    } else {
        "variables"
    };
    if let Some(node) = env_fields.get(variables_key) {
        env.variables = variables(d, node, &join(path, variables_key));
    }
    if let Some(node) = env_fields.get("parameter-store") {
        let ppath = join(path, "parameter-store");
        env.parameter_store = variables(d, node, &ppath);
        for var in &env.parameter_store {
            if var.value.trim().is_empty() {
                d.diags.error(
                    Code::MissingField,
                    var.value.span,
                    format!("`{}` names no parameter", var.name.value),
                    "write the Parameter Store name, e.g. `/my-app/db-password`",
                );
            }
        }
    }
    if let Some(node) = env_fields.get("secrets-manager") {
        let spath = join(path, "secrets-manager");
        for var in variables(d, node, &spath) {
            match SecretRef::parse(&var.value) {
                Ok(reference) => env.secrets_manager.push(SecretVariable {
                    name: var.name,
                    reference: Spanned::new(reference, var.value.span),
                }),
                Err(why) => d.diags.error(
                    Code::InvalidSecretReference,
                    var.value.span,
                    format!("invalid secret reference for `{}`: {why}", var.name.value),
                    "write `secret-id:json-key:version-stage:version-id`; only the secret id is required",
                ),
            }
        }
    }
    warn_redefined(d, &env);
    if let Some(node) = env_fields.get("exported-variables") {
        env.exported_variables = d.string_list(node, &join(path, "exported-variables"));
        check_exported(d, &env);
    }
    env
}

/// Each definition of a name in a later source replaces the earlier: say so.
fn warn_redefined(d: &mut Decoder<'_>, env: &Env) {
    let plain: Vec<&Spanned<String>> = env.variables.iter().map(|v| &v.name).collect();
    let resolved = env
        .parameter_store
        .iter()
        .map(|v| (&v.name, "parameter-store"))
        .chain(
            env.secrets_manager
                .iter()
                .map(|v| (&v.name, "secrets-manager")),
        );
    for (name, source) in resolved {
        if plain.iter().any(|p| p.value == name.value) {
            d.diags.warning(
                Code::DuplicateKey,
                name.span,
                format!(
                    "`{}` is also set in `env.variables`; the {source} value replaces it",
                    name.value
                ),
                "define each variable in one place",
            );
        }
    }
}

fn check_exported(d: &mut Decoder<'_>, env: &Env) {
    let mut seen = HashSet::new();
    for name in &env.exported_variables {
        let n = name.trim();
        if !seen.insert(n) {
            d.diags.warning(
                Code::DuplicateKey,
                name.span,
                format!("`{n}` is exported twice"),
                "list each exported variable once",
            );
        }
        if n.starts_with("AWS_") {
            d.diags.error(
                Code::ExportedVariable,
                name.span,
                format!(
                    "`{n}` cannot be exported: variables starting with `AWS_` are never exported"
                ),
                "copy the value into a variable of your own name and export that",
            );
        } else if env.parameter_store.iter().any(|v| v.name.value == n) {
            d.diags.error(
                Code::ExportedVariable,
                name.span,
                format!("`{n}` cannot be exported: it comes from Parameter Store, and secrets are never exported"),
                "export only plain values; remove it from `exported-variables`",
            );
        } else if env.secrets_manager.iter().any(|v| v.name.value == n) {
            d.diags.error(
                Code::ExportedVariable,
                name.span,
                format!("`{n}` cannot be exported: it comes from Secrets Manager, and secrets are never exported"),
                "export only plain values; remove it from `exported-variables`",
            );
        } else if !is_variable_name(n) {
            d.diags.error(
                Code::ExportedVariable,
                name.span,
                format!("`{n}` is not a variable name, so it cannot be exported"),
                "use letters, digits and underscores, not starting with a digit",
            );
        }
    }
}

/// Variables with checks on their names: reserved `CODEBUILD_` names and shell validity.
pub(super) fn variables(d: &mut Decoder<'_>, node: &Node, path: &str) -> Vec<Variable> {
    let vars = variables_raw(d, node, path);
    for var in &vars {
        let name = var.name.as_str();
        if name.starts_with("CODEBUILD_") {
            d.diags.error(
                Code::ReservedVariable,
                var.name.span,
                format!(
                    "`{name}` is reserved: names starting with `CODEBUILD_` are set by the build"
                ),
                "choose a name without the `CODEBUILD_` prefix",
            );
        } else if !is_variable_name(name) {
            d.diags.warning(
                Code::InvalidVariableName,
                var.name.span,
                format!("`{name}` is not a valid shell variable name; commands cannot read it as `${name}`"),
                "use letters, digits and underscores, not starting with a digit",
            );
        }
    }
    vars
}

fn variables_raw(d: &mut Decoder<'_>, node: &Node, path: &str) -> Vec<Variable> {
    d.string_map(node, path)
        .into_iter()
        .map(|(name, value)| Variable { name, value })
        .collect()
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn decode_proxy(d: &mut Decoder<'_>, node: &Node) -> Proxy {
    let Some(fields) = d.fields(node, "proxy", &["upload-artifacts", "logs"]) else {
        return Proxy::default();
    };
    Proxy {
        upload_artifacts: d
            .opt_bool(&fields, "upload-artifacts", "proxy")
            .unwrap_or(false),
        logs: d.opt_bool(&fields, "logs", "proxy").unwrap_or(false),
    }
}

/// A required list of paths: missing or empty is an error naming `what`.
fn required_paths(
    d: &mut Decoder<'_>,
    fields: &Fields<'_>,
    key: &str,
    path: &str,
    hint: &str,
) -> Vec<Spanned<String>> {
    let list = fields
        .get(key)
        .map(|n| d.string_list(n, &join(path, key)))
        .unwrap_or_default();
    if list.is_empty() {
        let span = fields.key_span(key).unwrap_or(fields.node.span);
        let message = if fields.get(key).is_some() {
            format!("`{path}.{key}` is empty")
        } else {
            format!("`{path}` has no `{key}`")
        };
        d.diags.error(Code::MissingField, span, message, hint);
    }
    list
}

fn decode_artifacts(
    d: &mut Decoder<'_>,
    node: &Node,
    path: &str,
    identifier: &str,
    version: Version,
) -> Option<Artifacts> {
    let primary = identifier == "primary";
    let known: &[&str] = if primary {
        &ARTIFACT_KEYS
    } else {
        &ARTIFACT_KEYS[..ARTIFACT_KEYS.len() - 2]
    };
    let fields = d.fields(node, path, known)?;
    if fields.is_empty() {
        d.diags.error(
            Code::MissingField,
            node.span,
            format!("`{path}` has no `files`"),
            "list what to keep under `files:`, e.g. `- '**/*'`, or remove the section",
        );
        return None;
    }
    if let Some(span) = fields.key_span("type") {
        let hint = if version == Version::V0_1 {
            "remove it: the packaging is set on the project, not in the buildspec"
        } else {
            "remove it: in version 0.2 the packaging is set on the project"
        };
        d.diags.warning(
            Code::Deprecated,
            span,
            "`artifacts.type` is deprecated and ignored",
            hint,
        );
    }
    let files_hint = if primary {
        "list what to keep under `files:`, e.g. `- '**/*'`; it is required even when only secondary-artifacts are defined"
    } else {
        "list what this artifact keeps under `files:`, e.g. `- '**/*'`"
    };
    let files = required_paths(d, &fields, "files", path, files_hint);
    let mut secondary = Vec::new();
    if let Some(node) = fields.get("secondary-artifacts") {
        let spath = join(path, "secondary-artifacts");
        if let Some(sf) = d.fields(node, &spath, &[]) {
            for (id, key, value) in sf.iter() {
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    d.diags.error(
                        Code::InvalidValue,
                        key.span,
                        format!("secondary artifact identifier `{id}` may only hold letters, digits and underscores"),
                        "rename it to match the artifactIdentifier on the project",
                    );
                }
                if let Some(artifact) = decode_artifacts(d, value, &join(&spath, id), id, version) {
                    secondary.push(artifact);
                }
            }
        }
    }
    Some(Artifacts {
        identifier: identifier.to_string(),
        files,
        name: d.opt_string(&fields, "name", path),
        discard_paths: d.opt_bool(&fields, "discard-paths", path).unwrap_or(false),
        base_directory: d.opt_string(&fields, "base-directory", path),
        exclude_paths: fields
            .get("exclude-paths")
            .map(|n| exclude_paths(d, n, &join(path, "exclude-paths")))
            .unwrap_or_default(),
        enable_symlinks: d
            .opt_bool(&fields, "enable-symlinks", path)
            .unwrap_or(false),
        s3_prefix: d.opt_string(&fields, "s3-prefix", path),
        secondary,
    })
}

/// `exclude-paths` is documented as "excluded paths": one string or a list, both fine.
fn exclude_paths(d: &mut Decoder<'_>, node: &Node, path: &str) -> Vec<Spanned<String>> {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => {
            vec![Spanned::new(text.clone(), node.span)]
        }
        _ => d.string_list(node, path),
    }
}

fn decode_reports(d: &mut Decoder<'_>, node: &Node) -> Vec<ReportGroup> {
    let Some(fields) = d.fields(node, "reports", &[]) else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for (index, (name, key, value)) in fields.iter().enumerate() {
        if index == MAX_REPORT_GROUPS {
            d.diags.warning(
                Code::OverLimit,
                key.span,
                format!("more than {MAX_REPORT_GROUPS} report groups: CodeBuild accepts at most {MAX_REPORT_GROUPS} per project"),
                "merge report groups, or this buildspec will fail on CodeBuild",
            );
        }
        let path = join("reports", name);
        let Some(rf) = d.fields(value, &path, &REPORT_KEYS) else {
            continue;
        };
        let files = required_paths(
            d,
            &rf,
            "files",
            &path,
            "list the report files under `files:`, e.g. `- 'reports/*.xml'`",
        );
        let mut file_format = ReportFormat::JunitXml;
        if let Some(text) = d.opt_string(&rf, "file-format", &path) {
            let upper = text.trim().to_ascii_uppercase();
            match ReportFormat::ALL.iter().find(|(n, _)| *n == upper) {
                Some((_, format)) => file_format = *format,
                None => {
                    let names: Vec<&str> = ReportFormat::ALL.iter().map(|(n, _)| *n).collect();
                    let hint = match did_you_mean(&upper, &names) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("use one of: {}", names.join(", ")),
                    };
                    d.diags.error(
                        Code::InvalidValue,
                        text.span,
                        format!("unknown report file-format `{}`", text.value),
                        hint,
                    );
                }
            }
        }
        groups.push(ReportGroup {
            name: Spanned::new(name.to_string(), key.span),
            files,
            base_directory: d.opt_string(&rf, "base-directory", &path),
            discard_paths: d.opt_bool(&rf, "discard-paths", &path).unwrap_or(false),
            file_format,
        });
    }
    groups
}

fn decode_cache(d: &mut Decoder<'_>, node: &Node) -> Option<Cache> {
    let fields = d.fields(node, "cache", &CACHE_KEYS)?;
    let paths = required_paths(
        d,
        &fields,
        "paths",
        "cache",
        "list the directories to cache under `paths:`, e.g. `- '/root/.m2/**/*'`",
    );
    let key = d.opt_string(&fields, "key", "cache");
    let fallback_keys = fields
        .get("fallback-keys")
        .map(|n| d.string_list(n, "cache.fallback-keys"))
        .unwrap_or_default();
    if let Some(extra) = fallback_keys.get(MAX_FALLBACK_KEYS) {
        d.diags.error(
            Code::OverLimit,
            extra.span,
            format!(
                "`cache.fallback-keys` has {} keys; at most {MAX_FALLBACK_KEYS} are allowed",
                fallback_keys.len()
            ),
            "keep the five most useful prefixes",
        );
    }
    if key.is_none() && !fallback_keys.is_empty() {
        let span = fields.key_span("fallback-keys").unwrap_or(node.span);
        d.diags.warning(
            Code::Ignored,
            span,
            "`cache.fallback-keys` is ignored without `cache.key`",
            "add `key:`, the exact key to save and restore first",
        );
    }
    let action = match d.opt_string(&fields, "action", "cache") {
        None => None,
        Some(text) => match text.trim().to_ascii_lowercase().as_str() {
            "restore" => Some(CacheAction::Restore),
            "save" => Some(CacheAction::Save),
            _ => {
                d.diags.error(
                    Code::InvalidValue,
                    text.span,
                    format!("unknown cache action `{}`", text.value),
                    "use `restore` (restore only) or `save` (save only); leave it out to do both",
                );
                None
            }
        },
    };
    Some(Cache {
        key,
        fallback_keys,
        action,
        paths,
    })
}
