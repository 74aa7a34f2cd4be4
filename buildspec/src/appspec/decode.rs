//! Reads an appspec from the YAML tree, checking it as the CodeDeploy agent does.

use super::{
    AppSpec, FileExistsBehavior, FileMapping, Hook, HookScript, LifecycleEvent, MAX_EVENT_SECONDS,
    Os, Permission, PermissionType, SelinuxContext,
};
use crate::decode::{Decoder, Fields, join};
use crate::diag::{Code, did_you_mean};
use crate::source::Span;
use crate::yaml::{Node, Style, Value};

const TOP_KEYS: [&str; 6] = [
    "version",
    "os",
    "files",
    "file_exists_behavior",
    "permissions",
    "hooks",
];
const PERMISSION_KEYS: [&str; 9] = [
    "object", "pattern", "except", "owner", "group", "mode", "acls", "context", "type",
];
const SCRIPT_KEYS: [&str; 4] = ["location", "timeout", "runas", "sudo"];

pub(crate) fn decode(d: &mut Decoder<'_>, root: &Node) -> Option<AppSpec> {
    let empty = root.is_null() || matches!(&root.value, Value::Map(e) if e.is_empty());
    if empty {
        d.diags.error(
            Code::EmptyDocument,
            root.span,
            "the appspec is empty",
            "an appspec needs at least `version: 0.0` and `os: linux`",
        );
        return None;
    }
    if !matches!(root.value, Value::Map(_)) {
        d.diags.error(
            Code::WrongType,
            root.span,
            format!(
                "an appspec must be a mapping of keys, but this file is {}",
                root.kind_name()
            ),
            "start the file with `version: 0.0` and `os: linux`, each on its own line",
        );
        return None;
    }
    let top_keys: Vec<(&str, Span)> = match &root.value {
        Value::Map(entries) => entries
            .iter()
            .filter_map(|(k, _)| Some((k.scalar()?.trim(), k.span)))
            .collect(),
        _ => Vec::new(),
    };
    // Lifecycle events at the top level: a `hooks:` whose entries lost their indentation.
    let stray_hooks: Vec<(&str, Span)> = top_keys
        .iter()
        .filter(|(name, _)| LifecycleEvent::SCRIPTABLE.iter().any(|e| e.name() == *name))
        .copied()
        .collect();
    let mut known = TOP_KEYS.to_vec();
    known.push("Resources");
    // ECS and Lambda appspecs spell it `Hooks`: no hint to change it to `hooks`.
    if top_keys.iter().any(|(name, _)| *name == "Resources") {
        known.push("Hooks");
    }
    known.extend(stray_hooks.iter().map(|(name, _)| *name));
    let fields = d.fields(root, "", &known)?;
    for (name, span) in &stray_hooks {
        d.diags.error(
            Code::FlattenedDocument,
            *span,
            format!("`{name}` is at the top level, not under `hooks`: this hook would never run"),
            format!("indent `{name}:` and its scripts two spaces under `hooks:`"),
        );
    }
    if let Some(span) = fields.key_span("Resources") {
        d.diags.error(
            Code::Unsupported,
            span,
            "this is an ECS or Lambda appspec (it has `Resources`); only EC2/On-Premises appspecs run on a host",
            "deploy it with CodeDeploy's ECS or Lambda platform; a host appspec has `os`, `files` and `hooks`",
        );
        return None;
    }
    check_version(d, &fields, root);
    let os = decode_os(d, &fields, root);
    let files = fields
        .get("files")
        .map(|n| decode_files(d, n, os))
        .unwrap_or_default();
    let file_exists_behavior = decode_file_exists_behavior(d, &fields);
    let permissions = match (fields.get("permissions"), os) {
        (Some(node), Some(Os::Windows)) if !node.is_null() => {
            d.diags.error(
                Code::Unsupported,
                fields.key_span("permissions").unwrap_or(node.span),
                "`permissions` applies to Linux only, and this appspec is for windows",
                "remove `permissions`, or set `os: linux`",
            );
            Vec::new()
        }
        (Some(node), _) => decode_permissions(d, node),
        (None, _) => Vec::new(),
    };
    let hooks = fields
        .get("hooks")
        .map(|n| decode_hooks(d, n, os))
        .unwrap_or_default();
    if d.diags.has_errors() {
        return None;
    }
    Some(AppSpec {
        os: os?,
        files,
        file_exists_behavior,
        permissions,
        hooks,
    })
}

fn check_version(d: &mut Decoder<'_>, fields: &Fields<'_>, root: &Node) {
    let Some(node) = fields.get("version") else {
        let first = fields.iter().next().map_or(root.span, |(_, k, _)| k.span);
        d.diags.error(
            Code::MissingVersion,
            first,
            "the appspec has no `version`",
            "add `version: 0.0` as the first line",
        );
        return;
    };
    let text = node.scalar().filter(|_| !node.is_null()).map(str::trim);
    let numeric_zero = text.is_some_and(|t| t.parse::<f64>().ok() == Some(0.0));
    match (text, node.style()) {
        (Some(_), Some(Style::Plain)) if numeric_zero => {}
        (Some(_), _) if numeric_zero => d.diags.warning(
            Code::InvalidValue,
            node.span,
            "the version is quoted; the CodeDeploy agent accepts only the number 0.0",
            "write `version: 0.0` without quotes",
        ),
        (Some(t), _) => {
            let hint = if matches!(t, "0.1" | "0.2") {
                "this looks like a buildspec version; an appspec uses `version: 0.0`"
            } else {
                "the only appspec version is `version: 0.0`"
            };
            d.diags.error(
                Code::UnknownVersion,
                node.span,
                format!("unknown appspec version `{t}`"),
                hint,
            );
        }
        (None, _) => d.wrong_type(node, "version", "the number 0.0", "write `version: 0.0`"),
    }
}

fn decode_os(d: &mut Decoder<'_>, fields: &Fields<'_>, root: &Node) -> Option<Os> {
    let Some(text) = d.opt_string(fields, "os", "") else {
        if fields.get("os").is_none() {
            let span = fields.key_span("version").unwrap_or(root.span);
            d.diags.error(
                Code::MissingField,
                span,
                "the appspec has no `os`",
                "add `os: linux` (or `os: windows`)",
            );
        } else {
            let node = fields.get("os").unwrap_or(root);
            d.wrong_type(node, "os", "linux or windows", "write `os: linux`");
        }
        return None;
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "linux" => Some(Os::Linux),
        "windows" => Some(Os::Windows),
        other => {
            d.diags.error(
                Code::InvalidValue,
                text.span,
                format!("unknown os `{other}`"),
                "write `os: linux` or `os: windows`",
            );
            None
        }
    }
}

fn decode_file_exists_behavior(
    d: &mut Decoder<'_>,
    fields: &Fields<'_>,
) -> Option<FileExistsBehavior> {
    let text = d.opt_string(fields, "file_exists_behavior", "")?;
    let behavior = FileExistsBehavior::parse(text.trim());
    if behavior.is_none() {
        let upper = text.trim().to_ascii_uppercase();
        let hint = if FileExistsBehavior::parse(&upper).is_some() {
            format!("write it in capitals: `{upper}`")
        } else {
            "use DISALLOW (fail), OVERWRITE or RETAIN (keep the existing file)".to_string()
        };
        d.diags.error(
            Code::InvalidValue,
            text.span,
            format!("unknown file_exists_behavior `{}`", text.value),
            hint,
        );
    }
    behavior
}

/// A path inside the revision: no `..` that climbs out of it.
fn escapes_root(path: &str) -> bool {
    let mut depth: i64 = 0;
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

fn is_absolute(path: &str, os: Option<Os>) -> bool {
    let windows_drive = {
        let b = path.as_bytes();
        b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && (b[2] == b'\\' || b[2] == b'/')
    };
    match os {
        Some(Os::Windows) => windows_drive || path.starts_with("\\\\"),
        _ => path.starts_with('/'),
    }
}

fn decode_files(d: &mut Decoder<'_>, node: &Node, os: Option<Os>) -> Vec<FileMapping> {
    let Value::Seq(items) = &node.value else {
        if !node.is_null() {
            d.wrong_type(
                node,
                "files",
                "a list",
                "write each mapping as `- source: …` with `destination: …` below it",
            );
        }
        return Vec::new();
    };
    let mut files = Vec::new();
    for item in items {
        let Some(fields) = d.fields(item, "files[]", &["source", "destination"]) else {
            continue;
        };
        let source = d.opt_string(&fields, "source", "files[]");
        let destination = d.opt_string(&fields, "destination", "files[]");
        if source.is_none() {
            d.diags.error(
                Code::MissingField,
                item.span,
                "a `files` entry has no `source`",
                "name a file or directory of the revision, or `/` for all of it",
            );
        }
        if destination.is_none() {
            d.diags.error(
                Code::MissingField,
                item.span,
                "a `files` entry has no `destination`",
                "give the absolute directory to copy into, e.g. `/var/www/html`",
            );
        }
        let (Some(source), Some(destination)) = (source, destination) else {
            continue;
        };
        if escapes_root(&source) {
            d.diags.error(
                Code::InvalidValue,
                source.span,
                format!(
                    "source `{}` climbs out of the revision with `..`",
                    source.value
                ),
                "name a path inside the revision",
            );
        }
        if !is_absolute(&destination, os) {
            let example = if os == Some(Os::Windows) {
                "c:\\inetpub\\wwwroot"
            } else {
                "/var/www/html"
            };
            d.diags.error(
                Code::InvalidValue,
                destination.span,
                format!(
                    "destination `{}` is not an absolute path",
                    destination.value
                ),
                format!("write the full path, e.g. `{example}`"),
            );
        }
        files.push(FileMapping {
            source,
            destination,
        });
    }
    files
}

fn decode_permissions(d: &mut Decoder<'_>, node: &Node) -> Vec<Permission> {
    let Value::Seq(items) = &node.value else {
        if !node.is_null() {
            d.wrong_type(
                node,
                "permissions",
                "a list",
                "write each rule as `- object: /path`",
            );
        }
        return Vec::new();
    };
    let mut rules = Vec::new();
    for item in items {
        let path = "permissions[]";
        let Some(fields) = d.fields(item, path, &PERMISSION_KEYS) else {
            continue;
        };
        let Some(object) = d.opt_string(&fields, "object", path) else {
            d.diags.error(
                Code::MissingField,
                item.span,
                "a permission has no `object`",
                "name the file or directory the permission applies to, e.g. `object: /var/www/html`",
            );
            continue;
        };
        let mode = d.opt_string(&fields, "mode", path).and_then(|text| {
            let t = text.trim();
            let valid = (3..=4).contains(&t.len()) && t.bytes().all(|b| (b'0'..=b'7').contains(&b));
            let parsed = valid.then(|| u32::from_str_radix(t, 8).ok()).flatten();
            if parsed.is_none() {
                d.diags.error(
                    Code::InvalidValue,
                    text.span,
                    format!("mode `{t}` is not an octal mode"),
                    "write three or four octal digits, e.g. `644` or `\"0755\"` (symbolic modes such as u+x are not accepted)",
                );
            }
            parsed
        });
        let acls: Vec<String> = fields
            .get("acls")
            .map(|n| d.string_list(n, "permissions[].acls"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|acl| match check_acl(&acl) {
                Ok(()) => Some(acl.value),
                Err(why) => {
                    d.diags.error(
                        Code::InvalidValue,
                        acl.span,
                        format!("acl `{}` is invalid: {why}", acl.value),
                        "write `u:USER:rwx`, `g:GROUP:r-x`, `m::rwx` or `o::r--` (prefix `d:` for defaults)",
                    );
                    None
                }
            })
            .collect();
        let types = match fields.get("type") {
            None => vec![PermissionType::File, PermissionType::Directory],
            Some(n) => d
                .string_list(n, "permissions[].type")
                .into_iter()
                .filter_map(|t| match t.trim() {
                    "file" => Some(PermissionType::File),
                    "directory" => Some(PermissionType::Directory),
                    other => {
                        d.diags.error(
                            Code::InvalidValue,
                            t.span,
                            format!("permission type `{other}` is neither `file` nor `directory`"),
                            "write `type: [file]`, `[directory]` or `[file, directory]`",
                        );
                        None
                    }
                })
                .collect(),
        };
        let context = fields.get("context").and_then(|n| decode_context(d, n));
        rules.push(Permission {
            pattern: d
                .opt_string(&fields, "pattern", path)
                .map_or_else(|| "**".to_string(), |p| p.value),
            except: fields
                .get("except")
                .map(|n| d.string_list(n, "permissions[].except"))
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.value)
                .collect(),
            owner: d.opt_string(&fields, "owner", path).map(|s| s.value),
            group: d.opt_string(&fields, "group", path).map(|s| s.value),
            object,
            mode,
            acls,
            context,
            types,
        });
    }
    rules
}

/// `[d[efault]:]{u[ser]|g[roup]|m[ask]|o[ther]}:[name]:perms`, with a name for user and
/// group entries, as the CodeDeploy agent requires.
fn check_acl(acl: &str) -> Result<(), String> {
    let mut parts: Vec<&str> = acl.trim().split(':').collect();
    if matches!(parts.first(), Some(&"d" | &"default")) {
        parts.remove(0);
    }
    let [kind, name, perms] = parts.as_slice() else {
        return Err("expected three fields separated by `:`".to_string());
    };
    match *kind {
        "u" | "user" | "g" | "group" => {
            if name.is_empty() {
                return Err("user and group entries need a name".to_string());
            }
        }
        "m" | "mask" | "o" | "other" => {}
        other => return Err(format!("`{other}` is not u, g, m or o")),
    }
    if perms.is_empty() || perms.len() > 3 || !perms.chars().all(|c| "rwx-".contains(c)) {
        return Err(format!(
            "permissions `{perms}` are not made of r, w, x and -"
        ));
    }
    Ok(())
}

fn decode_context(d: &mut Decoder<'_>, node: &Node) -> Option<SelinuxContext> {
    let path = "permissions[].context";
    let fields = d.fields(node, path, &["user", "type", "range"])?;
    let Some(r#type) = d.opt_string(&fields, "type", path) else {
        d.diags.error(
            Code::MissingField,
            node.span,
            "an SELinux `context` has no `type`",
            "add `type:`, e.g. `type: httpd_sys_content_t`",
        );
        return None;
    };
    Some(SelinuxContext {
        user: d.opt_string(&fields, "user", path).map(|s| s.value),
        r#type: r#type.value,
        range: d.opt_string(&fields, "range", path).map(|s| s.value),
    })
}

fn decode_hooks(d: &mut Decoder<'_>, node: &Node, os: Option<Os>) -> Vec<Hook> {
    let Some(fields) = d.fields(node, "hooks", &[]) else {
        return Vec::new();
    };
    let scriptable: Vec<&str> = LifecycleEvent::SCRIPTABLE
        .iter()
        .map(LifecycleEvent::name)
        .collect();
    let mut hooks = Vec::new();
    for (name, key, value) in fields.iter() {
        if LifecycleEvent::RESERVED.contains(&name) {
            d.diags.error(
                Code::ReservedEvent,
                key.span,
                format!("`{name}` is performed by the deployment itself and cannot run scripts"),
                "move these scripts to BeforeInstall or AfterInstall (or Before/AfterAllowTraffic)",
            );
            continue;
        }
        let event = LifecycleEvent::from_name(name);
        if let LifecycleEvent::Custom(_) = event {
            let hint = match did_you_mean(name, &scriptable) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("the lifecycle events are: {}", scriptable.join(", ")),
            };
            d.diags.warning(
                Code::UnknownEvent,
                key.span,
                format!("`{name}` is not a lifecycle event: its scripts run only if a deployment names it"),
                hint,
            );
        }
        let path = join("hooks", name);
        let scripts = decode_scripts(d, value, &path, os);
        check_event_budget(d, key.span, name, &scripts);
        hooks.push(Hook { event, scripts });
    }
    hooks
}

fn decode_scripts(d: &mut Decoder<'_>, node: &Node, path: &str, os: Option<Os>) -> Vec<HookScript> {
    let items = match &node.value {
        Value::Seq(items) => items.as_slice(),
        _ if node.is_null() => {
            d.diags.warning(
                Code::Ignored,
                node.span,
                format!("`{path}` lists no scripts"),
                "add `- location: scripts/NAME.sh`, or remove the event",
            );
            return Vec::new();
        }
        _ => {
            d.wrong_type(
                node,
                path,
                "a list of scripts",
                "write each script as `- location: scripts/NAME.sh` (note the `- `)",
            );
            return Vec::new();
        }
    };
    let mut scripts = Vec::new();
    for item in items {
        let spath = format!("{path}[]");
        let Some(fields) = d.fields(item, &spath, &SCRIPT_KEYS) else {
            continue;
        };
        let Some(location) = d.opt_string(&fields, "location", &spath) else {
            d.diags.error(
                Code::MissingField,
                item.span,
                format!("a script in `{path}` has no `location`"),
                "give the script's path in the revision, e.g. `location: scripts/start.sh`",
            );
            continue;
        };
        if location.trim().is_empty() || escapes_root(&location) {
            d.diags.error(
                Code::InvalidValue,
                location.span,
                format!(
                    "script location `{}` is not a path inside the revision",
                    location.value
                ),
                "give a path relative to the revision root, without `..`",
            );
        }
        let timeout = match fields.get("timeout").filter(|n| !n.is_null()) {
            Some(n) => {
                let Some(t) =
                    d.number(
                        n,
                        &join(&spath, "timeout"),
                        (1, u64::from(MAX_EVENT_SECONDS)),
                        "give the seconds the script may run, e.g. `timeout: 300`; one event may take at most 3600 s in all",
                    )
                else {
                    continue;
                };
                u32::try_from(t).ok()
            }
            None => None,
        };
        let runas = d.opt_string(&fields, "runas", &spath).map(|s| s.value);
        if runas.is_some() && os == Some(Os::Windows) {
            let span = fields.key_span("runas").unwrap_or(item.span);
            d.diags.warning(
                Code::Ignored,
                span,
                "`runas` is ignored on windows",
                "remove it; scripts run as the agent's user on Windows",
            );
        }
        scripts.push(HookScript {
            location,
            timeout,
            runas,
            sudo: d.opt_bool(&fields, "sudo", &spath).unwrap_or(false),
        });
    }
    scripts
}

/// The explicit timeouts of one event's scripts may not add up past CodeDeploy's limit.
fn check_event_budget(d: &mut Decoder<'_>, key_span: Span, name: &str, scripts: &[HookScript]) {
    let explicit: u64 = scripts
        .iter()
        .filter_map(|s| s.timeout)
        .map(u64::from)
        .sum();
    if explicit > u64::from(MAX_EVENT_SECONDS) {
        d.diags.error(
            Code::OverLimit,
            key_span,
            format!("the scripts of `{name}` have timeouts adding up to {explicit} s; one event may take at most {MAX_EVENT_SECONDS} s"),
            "lower the timeouts so their sum is at most 3600",
        );
    }
}
