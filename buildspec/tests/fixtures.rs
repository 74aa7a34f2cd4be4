//! Every fixture parsed as `agent validate` parses it: the kind detected from its content,
//! and for invalid and warning fixtures the exact diagnostics, position and message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use buildspec::{Document, Kind, Severity, Source};

const E: Severity = Severity::Error;
const W: Severity = Severity::Warning;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(relative: &str) -> Source {
    let path = fixtures().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Source::new(relative, text)
}

fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kind in ["buildspec", "appspec"] {
        let base = fixtures().join(dir).join(kind);
        for entry in std::fs::read_dir(&base).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yml") || name.ends_with(".yaml") {
                out.push(format!("{dir}/{kind}/{name}"));
            }
        }
    }
    out.sort();
    out
}

fn kind_of_dir(relative: &str) -> Kind {
    if relative.contains("/appspec/") {
        Kind::Appspec
    } else {
        Kind::Buildspec
    }
}

/// Parses a fixture with its kind detected, and checks every diagnostic exactly.
fn check(relative: &str, kind: Kind, expected: &[(Severity, usize, usize, &str, &str)]) {
    let source = load(relative);
    let (detected, parsed) = buildspec::parse(&source, None);
    assert_eq!(detected, kind, "{relative}: detected as the wrong kind");
    let actual: Vec<(Severity, usize, usize, &str, &str)> = parsed
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.severity,
                d.start.line,
                d.start.column,
                d.code.as_str(),
                d.message.as_str(),
            )
        })
        .collect();
    assert_eq!(actual, expected, "{relative}");
    let has_errors = expected.iter().any(|(s, ..)| *s == E);
    assert_eq!(parsed.value.is_some(), !has_errors, "{relative}");
    for d in &parsed.diagnostics {
        assert!(
            d.hint.as_deref().is_some_and(|h| !h.is_empty()),
            "{relative}: no hint for {d:?}"
        );
    }
}

macro_rules! fixture_tests {
    ($($name:ident: $path:literal as $kind:ident => [$($diag:expr),* $(,)?];)*) => {
        $(
            #[test]
            fn $name() {
                check($path, Kind::$kind, &[$($diag),*]);
            }
        )*
        const TESTED: &[&str] = &[$($path),*];
    };
}

fixture_tests! {
    invalid_appspec_ecs_appspec: "invalid/appspec/ecs-appspec.yml" as Appspec => [
        (E, 2, 1, "unsupported", "this is an ECS or Lambda appspec (it has `Resources`); only EC2/On-Premises appspecs run on a host"),
    ];
    invalid_appspec_escaping_script: "invalid/appspec/escaping-script.yml" as Appspec => [
        (E, 5, 17, "invalid-value", "script location `../../../usr/bin/reboot` is not a path inside the revision"),
    ];
    invalid_appspec_files: "invalid/appspec/files.yml" as Appspec => [
        (E, 5, 18, "invalid-value", "destination `opt/app` is not an absolute path"),
        (E, 6, 13, "invalid-value", "source `../../etc/shadow` climbs out of the revision with `..`"),
        (E, 8, 5, "missing-field", "a `files` entry has no `source`"),
        (E, 9, 23, "invalid-value", "unknown file_exists_behavior `overwrite`"),
    ];
    invalid_appspec_hook_not_a_list: "invalid/appspec/hook-not-a-list.yml" as Appspec => [
        (E, 5, 5, "wrong-type", "`hooks.ApplicationStart` must be a list of scripts, not a mapping"),
        (E, 8, 7, "missing-field", "a script in `hooks.ValidateService` has no `location`"),
    ];
    invalid_appspec_missing_os_and_version: "invalid/appspec/missing-os-and-version.yml" as Appspec => [
        (E, 1, 1, "missing-version", "the appspec has no `version`"),
        (E, 1, 1, "missing-field", "the appspec has no `os`"),
    ];
    invalid_appspec_permissions: "invalid/appspec/permissions.yml" as Appspec => [
        (E, 5, 11, "invalid-value", "mode `u+x` is not an octal mode"),
        (E, 7, 9, "invalid-value", "acl `u::rwx` is invalid: user and group entries need a name"),
        (E, 8, 9, "invalid-value", "acl `g:www-data:rwz` is invalid: permissions `rwz` are not made of r, w, x and -"),
        (E, 11, 9, "invalid-value", "permission type `symlink` is neither `file` nor `directory`"),
        (E, 12, 5, "missing-field", "a permission has no `object`"),
        (E, 15, 7, "missing-field", "an SELinux `context` has no `type`"),
    ];
    invalid_appspec_reserved_events: "invalid/appspec/reserved-events.yml" as Appspec => [
        (E, 4, 3, "reserved-event", "`DownloadBundle` is performed by the deployment itself and cannot run scripts"),
        (E, 6, 3, "reserved-event", "`Install` is performed by the deployment itself and cannot run scripts"),
        (W, 8, 3, "unknown-event", "`AfterInstal` is not a lifecycle event: its scripts run only if a deployment names it"),
    ];
    invalid_appspec_timeouts: "invalid/appspec/timeouts.yml" as Appspec => [
        (E, 6, 16, "invalid-value", "`hooks.BeforeInstall[].timeout` must be a whole number from 1 to 3600, not `4000`"),
        (E, 7, 3, "over-limit", "the scripts of `ApplicationStart` have timeouts adding up to 3900 s; one event may take at most 3600 s"),
        (E, 14, 16, "invalid-value", "`hooks.ValidateService[].timeout` must be a whole number from 1 to 3600, not `0`"),
    ];
    invalid_appspec_unknown_version: "invalid/appspec/unknown-version.yml" as Appspec => [
        (E, 1, 10, "unknown-version", "unknown appspec version `0.2`"),
    ];
    invalid_appspec_windows_permissions: "invalid/appspec/windows-permissions.yml" as Appspec => [
        (E, 6, 1, "unsupported", "`permissions` applies to Linux only, and this appspec is for windows"),
        (W, 12, 7, "ignored", "`runas` is ignored on windows"),
    ];
    invalid_buildspec_appspec_version_in_buildspec: "invalid/buildspec/appspec-version-in-buildspec.yml" as Buildspec => [
        (E, 2, 10, "unknown-version", "unknown buildspec version `0.0`"),
    ];
    invalid_buildspec_artifacts_missing_files: "invalid/buildspec/artifacts-missing-files.yml" as Buildspec => [
        (E, 8, 3, "missing-field", "`artifacts` has no `files`"),
        (E, 13, 7, "missing-field", "`artifacts.secondary-artifacts.docs` has no `files`"),
    ];
    invalid_buildspec_batch_graph: "invalid/buildspec/batch-graph.yml" as Buildspec => [
        (E, 9, 11, "invalid-batch", "`build2` depends on `biuld1`, which is not a task of this build-graph"),
        (E, 12, 11, "invalid-batch", "the build-graph has a cycle: build1 -> build3 -> build1"),
        (E, 13, 19, "invalid-batch", "task identifier `build2` is used twice (first on line 7)"),
    ];
    invalid_buildspec_batch_two_kinds: "invalid/buildspec/batch-two-kinds.yml" as Buildspec => [
        (E, 7, 9, "invalid-batch", "`depend-on` is only meaningful in a `build-graph`"),
        (E, 9, 3, "invalid-batch", "`batch` has both `build-list` and `build-fanout`"),
    ];
    invalid_buildspec_cache_and_reports: "invalid/buildspec/cache-and-reports.yml" as Buildspec => [
        (E, 10, 18, "invalid-value", "unknown report file-format `JUNIT`"),
        (E, 12, 5, "missing-field", "`reports.coverage` has no `files`"),
        (E, 14, 3, "missing-field", "`cache` has no `paths`"),
        (E, 21, 7, "over-limit", "`cache.fallback-keys` has 6 keys; at most 5 are allowed"),
        (E, 22, 11, "invalid-value", "unknown cache action `update`"),
    ];
    invalid_buildspec_command_is_mapping: "invalid/buildspec/command-is-mapping.yml" as Buildspec => [
        (E, 5, 9, "command-is-mapping", "a command in `phases.build.commands` was read as a mapping, not as a command"),
        (E, 11, 9, "command-is-mapping", "a command in `phases.post_build.finally` was read as a mapping, not as a command"),
    ];
    invalid_buildspec_duplicate_phase: "invalid/buildspec/duplicate-phase.yml" as Buildspec => [
        (E, 6, 3, "duplicate-key", "`build` is defined twice in this mapping (first on line 3)"),
    ];
    invalid_buildspec_empty_command: "invalid/buildspec/empty-command.yml" as Buildspec => [
        (E, 6, 8, "empty-command", "`phases.build.commands` has an empty command"),
        (E, 7, 9, "empty-command", "`phases.build.commands` has an empty command"),
    ];
    invalid_buildspec_empty_phases: "invalid/buildspec/empty-phases.yml" as Buildspec => [
        (E, 2, 1, "missing-phases", "`phases` is empty: the build would run nothing"),
    ];
    invalid_buildspec_empty: "invalid/buildspec/empty.yml" as Buildspec => [
        (E, 1, 1, "empty-document", "the buildspec is empty"),
    ];
    invalid_buildspec_exported_variables: "invalid/buildspec/exported-variables.yml" as Buildspec => [
        (E, 8, 7, "exported-variable", "`AWS_REGION` cannot be exported: variables starting with `AWS_` are never exported"),
        (E, 9, 7, "exported-variable", "`DB_PASSWORD` cannot be exported: it comes from Parameter Store, and secrets are never exported"),
        (E, 10, 7, "exported-variable", "`API_KEY` cannot be exported: it comes from Secrets Manager, and secrets are never exported"),
        (E, 11, 7, "exported-variable", "`IMAGE-TAG` is not a variable name, so it cannot be exported"),
    ];
    invalid_buildspec_flattened_indented_under_version: "invalid/buildspec/flattened-indented-under-version.yml" as Buildspec => [
        (E, 3, 3, "flattened-document", "invalid YAML: this line is indented under `version: 0.2`, which already has a value"),
    ];
    invalid_buildspec_flattened_phases: "invalid/buildspec/flattened-phases.yml" as Buildspec => [
        (E, 3, 1, "flattened-document", "`phases` is empty, but `build`, `commands` sit at the top level"),
    ];
    invalid_buildspec_flattened_version_swallowed: "invalid/buildspec/flattened-version-swallowed.yml" as Buildspec => [
        (E, 2, 10, "flattened-document", "`version` swallowed the rest of the document: its value is `0.2 phases build commands - make`"),
    ];
    invalid_buildspec_missing_commands: "invalid/buildspec/missing-commands.yml" as Buildspec => [
        (E, 3, 3, "missing-commands", "the `build` phase has no `commands`"),
        (E, 6, 3, "missing-commands", "the `post_build` phase has no `commands`"),
    ];
    invalid_buildspec_missing_phases: "invalid/buildspec/missing-phases.yml" as Buildspec => [
        (E, 2, 1, "missing-phases", "the buildspec has no `phases`: it would run nothing"),
    ];
    invalid_buildspec_missing_version: "invalid/buildspec/missing-version.yml" as Buildspec => [
        (E, 2, 1, "missing-version", "the buildspec has no `version`"),
    ];
    invalid_buildspec_multiple_documents: "invalid/buildspec/multiple-documents.yml" as Buildspec => [
        (E, 7, 1, "multiple-documents", "the file holds more than one YAML document"),
    ];
    invalid_buildspec_not_a_mapping: "invalid/buildspec/not-a-mapping.yml" as Buildspec => [
        (E, 2, 1, "wrong-type", "a buildspec must be a mapping of keys, but this file is a list"),
    ];
    invalid_buildspec_on_failure_invalid: "invalid/buildspec/on-failure-invalid.yml" as Buildspec => [
        (E, 4, 17, "invalid-value", "invalid `on-failure`: `abort` is not an on-failure action"),
        (E, 8, 17, "invalid-value", "invalid `on-failure`: retry count `101` is over the limit of 100"),
        (E, 12, 17, "invalid-value", "invalid `on-failure`: the retry regex `(unclosed` is invalid: unclosed group"),
    ];
    invalid_buildspec_phase_is_string: "invalid/buildspec/phase-is-string.yml" as Buildspec => [
        (E, 3, 10, "wrong-type", "`phases.build` must be a mapping, not a string"),
    ];
    invalid_buildspec_phases_at_top_level: "invalid/buildspec/phases-at-top-level.yml" as Buildspec => [
        (E, 2, 1, "missing-phases", "the buildspec has no `phases`, but `install`, `build` sit at the top level"),
    ];
    invalid_buildspec_reserved_variables: "invalid/buildspec/reserved-variables.yml" as Buildspec => [
        (E, 4, 5, "reserved-variable", "`CODEBUILD_BUILD_ID` is reserved: names starting with `CODEBUILD_` are set by the build"),
        (E, 7, 5, "reserved-variable", "`CODEBUILD_TOKEN` is reserved: names starting with `CODEBUILD_` are set by the build"),
    ];
    invalid_buildspec_runtime_versions_misplaced: "invalid/buildspec/runtime-versions-misplaced.yml" as Buildspec => [
        (E, 4, 5, "missing-field", "`runtime-versions` lists no runtime"),
        (E, 6, 5, "misplaced-key", "`runtime-versions` is only allowed in the install phase, not in `build`"),
    ];
    invalid_buildspec_secret_references: "invalid/buildspec/secret-references.yml" as Buildspec => [
        (E, 4, 11, "invalid-secret-reference", "invalid secret reference for `BOTH`: give a version stage or a version id, not both"),
        (E, 5, 15, "invalid-secret-reference", "invalid secret reference for `EMPTY_ID`: the secret id (before the first `:`) is empty"),
        (E, 6, 15, "invalid-secret-reference", "invalid secret reference for `TOO_MANY`: `a:b:c:d:e` has 4 fields after the secret id; at most 3 are allowed (json-key:version-stage:version-id)"),
        (E, 7, 17, "invalid-secret-reference", "invalid secret reference for `NOT_SECRET`: `arn:aws:ssm:us-east-1:123456789012:parameter/db` is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"),
    ];
    invalid_buildspec_tab_indentation: "invalid/buildspec/tab-indentation.yml" as Buildspec => [
        (E, 4, 1, "yaml-syntax", "invalid YAML: a tab character is used for indentation"),
    ];
    invalid_buildspec_unclosed_quote: "invalid/buildspec/unclosed-quote.yml" as Buildspec => [
        (E, 5, 9, "yaml-syntax", "invalid YAML: while scanning a quoted scalar, found unexpected end of stream"),
    ];
    invalid_buildspec_unknown_phase: "invalid/buildspec/unknown-phase.yml" as Buildspec => [
        (E, 3, 3, "unknown-phase", "unknown phase `pre-build`: its commands would never run"),
        (E, 9, 3, "unknown-phase", "unknown phase `deploy`: its commands would never run"),
    ];
    invalid_buildspec_unknown_version: "invalid/buildspec/unknown-version.yml" as Buildspec => [
        (E, 2, 10, "unknown-version", "unknown buildspec version `0.3`"),
    ];
    invalid_buildspec_unquoted_glob: "invalid/buildspec/unquoted-glob.yml" as Buildspec => [
        (E, 8, 7, "yaml-syntax", "invalid YAML: while parsing node, found unknown anchor"),
    ];
    invalid_buildspec_unsupported_shell: "invalid/buildspec/unsupported-shell.yml" as Buildspec => [
        (E, 3, 10, "invalid-value", "unsupported shell `zsh`"),
    ];
    invalid_buildspec_wrong_types: "invalid/buildspec/wrong-types.yml" as Buildspec => [
        (E, 4, 11, "wrong-type", "`env.variables.LIST` must be a string, not a list"),
        (E, 5, 26, "invalid-value", "`env.git-credential-helper` must be yes or no, not `sometimes`"),
        (E, 11, 3, "wrong-type", "`artifacts` must be a mapping, not a list"),
        (E, 16, 20, "invalid-value", "`reports.unit.discard-paths` must be yes or no, not `maybe`"),
    ];
    warnings_appspec_unknown_event_and_empty: "warnings/appspec/unknown-event-and-empty.yml" as Appspec => [
        (W, 4, 3, "unknown-event", "`ValidateServce` is not a lifecycle event: its scripts run only if a deployment names it"),
        (W, 6, 18, "ignored", "`hooks.ApplicationStop` lists no scripts"),
        (W, 7, 3, "unknown-event", "`Flush` is not a lifecycle event: its scripts run only if a deployment names it"),
    ];
    warnings_buildspec_multiline_command: "warnings/buildspec/multiline-command.yml" as Buildspec => [
        (W, 5, 9, "multiline-command", "this multi-line command runs as one script: only its last line's exit status counts"),
    ];
    warnings_buildspec_single_string_lists: "warnings/buildspec/single-string-lists.yml" as Buildspec => [
        (W, 5, 5, "invalid-variable-name", "`my-var` is not a valid shell variable name; commands cannot read it as `$my-var`"),
        (W, 8, 15, "wrong-type", "`phases.build.commands` should be a list; this string is read as its only command"),
        (W, 10, 5, "missing-commands", "`phases.post_build.commands` is empty: the phase does nothing"),
        (W, 12, 10, "wrong-type", "`artifacts.files` should be a list; this string is read as its only item"),
    ];
    warnings_buildspec_unknown_keys: "warnings/buildspec/unknown-keys.yml" as Buildspec => [
        (W, 6, 5, "unknown-key", "unknown key `finaly` in `phases.build` is ignored"),
        (W, 11, 3, "unknown-key", "unknown key `discard-path` in `artifacts` is ignored"),
        (W, 15, 3, "ignored", "`cache.fallback-keys` is ignored without `cache.key`"),
        (W, 17, 1, "unknown-key", "unknown key `notes` at the top level is ignored"),
    ];

}

#[test]
fn every_invalid_and_warning_fixture_has_its_test() {
    let on_disk: BTreeSet<String> = files_under("invalid")
        .into_iter()
        .chain(files_under("warnings"))
        .collect();
    let tested: BTreeSet<String> = TESTED.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, tested);
    assert!(files_under("invalid").len() >= 25);
}

#[test]
fn every_valid_fixture_is_valid_and_detected() {
    let valid = files_under("valid");
    assert!(valid.len() >= 40, "only {} valid fixtures", valid.len());
    for relative in valid {
        let source = load(&relative);
        let (kind, parsed) = buildspec::parse(&source, None);
        assert_eq!(
            kind,
            kind_of_dir(&relative),
            "{relative}: detected as the wrong kind"
        );
        let errors: Vec<_> = parsed.errors().collect();
        assert!(errors.is_empty(), "{relative}: {errors:#?}");
        assert!(parsed.value.is_some(), "{relative}");
    }
}

fn buildspec(relative: &str) -> buildspec::Buildspec {
    let parsed = buildspec::parse_buildspec(&load(relative));
    parsed
        .value
        .unwrap_or_else(|| panic!("{relative}: {:#?}", parsed.diagnostics))
}

fn appspec(relative: &str) -> buildspec::AppSpec {
    let parsed = buildspec::parse_appspec(&load(relative));
    parsed
        .value
        .unwrap_or_else(|| panic!("{relative}: {:#?}", parsed.diagnostics))
}

fn variable<'v>(vars: &'v [buildspec::buildspec::Variable], name: &str) -> &'v str {
    vars.iter()
        .find(|v| v.name.value == name)
        .map(|v| v.value.value.as_str())
        .unwrap_or_else(|| panic!("no variable {name}"))
}

#[test]
fn scalars_keep_the_text_that_was_written() {
    let spec = buildspec("valid/buildspec/env-values-stay-text.yml");
    let vars = &spec.env.variables;
    assert_eq!(variable(vars, "ACCOUNT_ID"), "012345678901");
    assert_eq!(variable(vars, "VERSION"), "1.10");
    assert_eq!(variable(vars, "ENABLED"), "yes");
    let spec = buildspec("valid/buildspec/runtime-versions-forms.yml");
    let install = spec.phases.install.as_ref().unwrap();
    assert_eq!(variable(&install.runtime_versions, "golang"), "1.20");
    assert_eq!(variable(&install.runtime_versions, "nodejs"), "18.x");
}

#[test]
fn numbers_and_booleans_in_commands_become_their_text() {
    let spec = buildspec("valid/buildspec/scalar-commands-bool-and-number.yml");
    let texts: Vec<&str> = spec
        .phases
        .iter()
        .flat_map(|(_, p)| p.commands.iter().map(|c| c.text.as_str()))
        .collect();
    assert!(texts.contains(&"true"), "{texts:?}");
    assert!(texts.contains(&"42"), "{texts:?}");
}

#[test]
fn commands_keep_their_lines_and_anchors_expand() {
    let spec = buildspec("valid/buildspec/yaml-anchors-shared-commands.yml");
    let all: Vec<&buildspec::buildspec::Command> = spec
        .phases
        .iter()
        .flat_map(|(_, p)| p.commands.iter().chain(&p.finally))
        .collect();
    assert!(all.len() >= 4);
    let source = load("valid/buildspec/yaml-anchors-shared-commands.yml");
    for command in &all {
        assert!(command.line >= 1 && command.line <= source.line_count());
    }
}

#[test]
fn quoted_colon_commands_are_single_commands() {
    let spec = buildspec("valid/buildspec/quoted-command-with-colon-space.yml");
    let texts: Vec<&str> = spec
        .phases
        .iter()
        .flat_map(|(_, p)| p.commands.iter().map(|c| c.text.as_str()))
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("awk -F: '{ print $2 }'")),
        "{texts:?}"
    );
}

#[test]
fn secret_references_are_split() {
    use buildspec::buildspec::SecretRef;
    let spec = buildspec("valid/buildspec/secrets-manager-reference-forms.yml");
    let refs: Vec<&SecretRef> = spec
        .env
        .secrets_manager
        .iter()
        .map(|s| &s.reference.value)
        .collect();
    assert!(
        refs.iter()
            .any(|r| r.secret_id.starts_with("arn:aws:secretsmanager:") && r.json_key.is_some())
    );
    assert!(
        refs.iter()
            .any(|r| r.version_stage.as_deref() == Some("AWSPREVIOUS") && r.json_key.is_none())
    );
    assert!(
        refs.iter()
            .any(|r| r.version_id.is_some() && r.version_stage.is_none())
    );
}

#[test]
fn on_failure_forms_are_typed() {
    use buildspec::buildspec::OnFailure;
    let spec = buildspec("valid/buildspec/on-failure-retry-count-regex.yml");
    let forms: Vec<&OnFailure> = spec
        .phases
        .iter()
        .filter_map(|(_, p)| p.on_failure.as_deref())
        .collect();
    assert!(forms.contains(&&OnFailure::Retry {
        count: 3,
        pattern: Some(".*connection timed out.*".to_string())
    }));
}

#[test]
fn batch_graph_keeps_its_dependencies() {
    use buildspec::buildspec::BatchKind;
    let spec = buildspec("valid/buildspec/batch-build-graph.yml");
    let batch = spec.batch.expect("batch");
    let BatchKind::BuildGraph(tasks) = batch.kind else {
        panic!("expected a build-graph");
    };
    assert!(tasks.iter().any(|t| !t.depend_on.is_empty()));
}

#[test]
fn appspec_spacing_oddities_are_accepted() {
    use buildspec::appspec::LifecycleEvent;
    let spec = appspec("valid/appspec/spacing-before-colon.yml");
    let scripts = spec.scripts(&LifecycleEvent::BeforeAllowTraffic);
    assert!(!scripts.is_empty());
    assert!(scripts.iter().all(|s| !s.location.value.is_empty()));
}

#[test]
fn appspec_defaults_are_applied() {
    use buildspec::appspec::{LifecycleEvent, PermissionType};
    let spec = appspec("valid/appspec/hooks-without-timeout-or-runas.yml");
    let all: Vec<_> = LifecycleEvent::SCRIPTABLE
        .iter()
        .flat_map(|e| spec.scripts(e))
        .collect();
    assert!(!all.is_empty());
    assert!(all.iter().all(|s| s.timeout_seconds() == 3600));
    let spec = appspec("valid/appspec/permissions-all-forms.yml");
    assert!(spec.permissions.iter().any(|p| p.mode == Some(0o644)));
    assert!(spec.permissions.iter().any(|p| p.mode == Some(0o4755)));
    assert!(
        spec.permissions
            .iter()
            .any(|p| p.types == [PermissionType::File, PermissionType::Directory])
    );
}

#[test]
fn parse_of_either_kind_returns_the_document() {
    let source = load("valid/appspec/minimal-linux.yml");
    let (_, parsed) = buildspec::parse(&source, None);
    assert!(matches!(parsed.value, Some(Document::Appspec(_))));
}
