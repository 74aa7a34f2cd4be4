//! The appspec's `permissions`, applied as the CodeDeploy agent applies them: only to what
//! this deployment installs (the files it copies and the directories it creates), with its
//! `pattern`/`except` matching, and never through a link.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildspec::appspec::{Permission, PermissionType};
use nix::unistd::{Group, User};
use serde::Serialize;

use super::allowed::normalize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PermissionOp {
    Chmod {
        file: PathBuf,
        mode: String,
    },
    Chown {
        file: PathBuf,
        owner: Option<String>,
        group: Option<String>,
        #[serde(skip)]
        uid: Option<u32>,
        #[serde(skip)]
        gid: Option<u32>,
    },
    Setfacl {
        file: PathBuf,
        acl: Vec<String>,
    },
    Semanage {
        file: PathBuf,
        user: Option<String>,
        r#type: String,
        range: Option<String>,
    },
}

/// The operations for `permissions`, given what the install copies and creates.
pub fn plan(
    permissions: &[Permission],
    copies: &[PathBuf],
    mkdirs: &[PathBuf],
    is_dir: impl Fn(&Path) -> bool,
) -> Result<Vec<PermissionOp>, String> {
    let mut ops = Vec::new();
    let mut targets: Vec<PathBuf> = Vec::new();
    for permission in permissions {
        let raw = &permission.object.value;
        let object = normalize(Path::new(raw))
            .filter(|p| p.is_absolute())
            .ok_or_else(|| {
                format!("the permissions object `{raw}` is not an absolute path; write it from `/`")
            })?;
        let types = if permission.types.is_empty() {
            vec![PermissionType::File, PermissionType::Directory]
        } else {
            permission.types.clone()
        };
        if copies.contains(&object) {
            if types.contains(&PermissionType::File) {
                if permission.pattern != "**" {
                    return Err(format!(
                        "The deployment failed because the application specification file includes an object ({raw}) with an invalid pattern ({}), such as a pattern for a file applied to a directory. Correct the permissions section of the AppSpec file, and then try again.",
                        permission.pattern
                    ));
                }
                if !permission.except.is_empty() {
                    return Err(format!(
                        "The deployment failed because the except parameter for a pattern in the permissions section ({:?}) for the object named {raw} contains an invalid format. Update the AppSpec file, and then try again.",
                        permission.except
                    ));
                }
                refuse_default_acl(permission, &object)?;
                set(permission, &object, &mut targets, &mut ops)?;
            }
        } else if mkdirs.contains(&object) || is_dir(&object) {
            let mut matches = Vec::new();
            if types.contains(&PermissionType::File) {
                for file in copies {
                    if matches_pattern(permission, &object, file)
                        && !matches_except(permission, &object, file)
                    {
                        refuse_default_acl(permission, file)?;
                        matches.push(file.clone());
                    }
                }
            }
            if types.contains(&PermissionType::Directory) {
                for dir in mkdirs {
                    if matches_pattern(permission, &object, dir)
                        && !matches_except(permission, &object, dir)
                    {
                        matches.push(dir.clone());
                    }
                }
            }
            for target in matches {
                set(permission, &target, &mut targets, &mut ops)?;
            }
        }
    }
    Ok(ops)
}

fn refuse_default_acl(permission: &Permission, file: &Path) -> Result<(), String> {
    if permission.acls.iter().any(|a| is_default_entry(a)) {
        return Err(format!(
            "The deployment failed because the -d parameter has been specified to apply an acl setting to a file ({}). This parameter is supported for directories only. Update the AppSpec file, and then try again.",
            file.display()
        ));
    }
    Ok(())
}

fn set(
    permission: &Permission,
    target: &Path,
    targets: &mut Vec<PathBuf>,
    ops: &mut Vec<PermissionOp>,
) -> Result<(), String> {
    if targets.iter().any(|t| t == target) {
        return Err(format!(
            "The deployment failed because the permissions setting for ({}) is specified more than once in the application specification file. Update the files section of the AppSpec file, and then try again.",
            target.display()
        ));
    }
    targets.push(target.to_path_buf());
    if let Some(mode) = permission.mode {
        ops.push(PermissionOp::Chmod {
            file: target.to_path_buf(),
            mode: format!("{mode:o}"),
        });
    }
    if !permission.acls.is_empty() {
        ops.push(PermissionOp::Setfacl {
            file: target.to_path_buf(),
            acl: permission.acls.clone(),
        });
    }
    if let Some(context) = &permission.context {
        ops.push(PermissionOp::Semanage {
            file: target.to_path_buf(),
            user: context.user.clone(),
            r#type: context.r#type.clone(),
            range: context.range.clone(),
        });
    }
    if permission.owner.is_some() || permission.group.is_some() {
        let uid = match &permission.owner {
            Some(name) => Some(
                User::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        format!("the permissions owner `{name}` does not exist on this host")
                    })?
                    .uid
                    .as_raw(),
            ),
            None => None,
        };
        let gid = match &permission.group {
            Some(name) => Some(
                Group::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        format!("the permissions group `{name}` does not exist on this host")
                    })?
                    .gid
                    .as_raw(),
            ),
            None => None,
        };
        ops.push(PermissionOp::Chown {
            file: target.to_path_buf(),
            owner: permission.owner.clone(),
            group: permission.group.clone(),
            uid,
            gid,
        });
    }
    Ok(())
}

/// Under `object/`: `**` takes everything below it, another pattern only the names directly
/// inside it (with `*` as the one wildcard), as the CodeDeploy agent matches.
fn matches_pattern(permission: &Permission, object: &Path, name: &Path) -> bool {
    let Ok(relative) = name.strip_prefix(object) else {
        return false;
    };
    if relative.as_os_str().is_empty() {
        return false;
    }
    permission.pattern == "**" || simple_glob(&relative.to_string_lossy(), &permission.pattern)
}

fn matches_except(permission: &Permission, object: &Path, name: &Path) -> bool {
    let Ok(relative) = name.strip_prefix(object) else {
        return false;
    };
    let relative = relative.to_string_lossy();
    permission.except.iter().any(|e| simple_glob(&relative, e))
}

fn simple_glob(name: &str, pattern: &str) -> bool {
    if name.contains('/') {
        return false;
    }
    let name: Vec<char> = name.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    let (mut n, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Applies one operation; returns the path whose SELinux context it registered, which the
/// next deployment unregisters.
pub fn apply(op: &PermissionOp) -> Result<Option<PathBuf>, String> {
    let is_link = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    match op {
        PermissionOp::Chmod { file, mode } => {
            // A mode on a link would land on whatever it points to.
            if is_link(file) {
                return Ok(None);
            }
            use std::os::unix::fs::PermissionsExt;
            let bits = u32::from_str_radix(mode, 8).map_err(|e| format!("mode {mode}: {e}"))?;
            fs::set_permissions(file, fs::Permissions::from_mode(bits))
                .map_err(|e| format!("cannot set mode {mode} on {}: {e}", file.display()))?;
            Ok(None)
        }
        PermissionOp::Chown {
            file,
            uid,
            gid,
            owner,
            group,
        } => {
            std::os::unix::fs::lchown(file, *uid, *gid).map_err(|e| {
                format!(
                    "cannot give {} to {}:{}: {e}",
                    file.display(),
                    owner.as_deref().unwrap_or(""),
                    group.as_deref().unwrap_or("")
                )
            })?;
            Ok(None)
        }
        PermissionOp::Setfacl { file, acl } => {
            if is_link(file) {
                return Ok(None);
            }
            let full = full_acl(file, acl)?;
            run(
                Command::new("setfacl").arg("--set").arg(&full).arg(file),
                "setfacl",
                "install the `acl` package, or remove `acls` from the permissions",
            )
            .map_err(|e| {
                format!(
                    "The deployment failed because of a problem with the acls permission settings in the application specification file for this object: {}. {e}",
                    file.display()
                )
            })?;
            Ok(None)
        }
        PermissionOp::Semanage {
            file,
            user,
            r#type,
            range,
        } => {
            if is_link(file) {
                return Ok(None);
            }
            let real = file
                .canonicalize()
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let mut command = Command::new("semanage");
            command.args(["fcontext", "-a"]);
            if let Some(user) = user {
                command.args(["-s", user]);
            }
            command.args(["-t", r#type]);
            if let Some(range) = range {
                command.args(["-r", range]);
            }
            command.arg(&real);
            let hint = "install the SELinux policy tools (policycoreutils), or remove `context` from the permissions";
            let fail = |e: String| {
                format!(
                    "The deployment failed because the application specification file contains an error in the settings for the context parameter: {e}"
                )
            };
            run(&mut command, "semanage", hint).map_err(fail)?;
            run(
                Command::new("restorecon").arg("-v").arg(&real),
                "restorecon",
                hint,
            )
            .map_err(fail)?;
            Ok(Some(real))
        }
    }
}

/// Unregisters a context an earlier deployment registered.
pub fn remove_context(path: &Path) {
    let _ = Command::new("semanage")
        .args(["fcontext", "-d"])
        .arg(path)
        .output();
}

fn run(command: &mut Command, program: &str, hint: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("`{program}` is not installed on this host; {hint}")
        }
        _ => format!("cannot run `{program}`: {e}"),
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

fn is_default_entry(entry: &str) -> bool {
    entry.starts_with("d:") || entry.starts_with("default:")
}

/// `setfacl --set` replaces the whole ACL, so the base entries are added from the file's
/// mode, with a mask when named entries need one, as the CodeDeploy agent does.
fn full_acl(file: &Path, entries: &[String]) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .permissions()
        .mode();
    let digit = |shift: u32| ((mode >> shift) & 0o7).to_string();
    let (user, group, other) = (digit(6), digit(3), digit(0));
    let mut acl: Vec<String> = entries.to_vec();
    let parsed: Vec<(bool, String, String)> = entries.iter().map(|e| split_entry(e)).collect();
    let has = |default: bool, kind: &str, named: bool| {
        parsed
            .iter()
            .any(|(d, k, q)| *d == default && k == kind && (q.is_empty() != named))
    };
    if !has(false, "u", false) {
        acl.push(format!("u::{user}"));
    }
    if !has(false, "g", false) {
        acl.push(format!("g::{group}"));
    }
    if !has(false, "o", false) {
        acl.push(format!("o::{other}"));
    }
    if (has(false, "u", true) || has(false, "g", true)) && !has(false, "m", false) {
        acl.push(format!("m::{group}"));
    }
    if parsed.iter().any(|(d, _, _)| *d) {
        if !has(true, "u", false) {
            acl.push(format!("d:u::{user}"));
        }
        if !has(true, "g", false) {
            acl.push(format!("d:g::{group}"));
        }
        if !has(true, "o", false) {
            acl.push(format!("d:o::{other}"));
        }
        if (has(true, "u", true) || has(true, "g", true)) && !has(true, "m", false) {
            acl.push(format!("d:m::{group}"));
        }
    }
    Ok(acl.join(","))
}

/// (default, kind u/g/m/o, qualifier) of an ACL entry such as `d:user:bob:rw`.
fn split_entry(entry: &str) -> (bool, String, String) {
    let (default, rest) = match entry.split_once(':') {
        Some(("d" | "default", rest)) => (true, rest),
        _ => (false, entry),
    };
    let mut parts = rest.splitn(3, ':');
    let kind = match parts.next().unwrap_or("") {
        "user" | "u" => "u",
        "group" | "g" => "g",
        "mask" | "m" => "m",
        "other" | "o" => "o",
        other => other,
    };
    let qualifier = parts.next().unwrap_or("").to_string();
    (default, kind.to_string(), qualifier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildspec::{Span, Spanned};

    fn permission(
        object: &str,
        pattern: &str,
        except: &[&str],
        types: &[PermissionType],
    ) -> Permission {
        Permission {
            object: Spanned::new(object.to_string(), Span::new(0, 0)),
            pattern: pattern.to_string(),
            except: except.iter().map(|s| s.to_string()).collect(),
            owner: None,
            group: None,
            mode: Some(0o640),
            acls: Vec::new(),
            context: None,
            types: types.to_vec(),
        }
    }

    fn files(ops: &[PermissionOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                PermissionOp::Chmod { file, .. } => file.display().to_string(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn patterns_match_like_codedeploy() {
        let copies: Vec<PathBuf> = ["/a/x.sh", "/a/y.txt", "/a/sub/z.sh"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let mkdirs = vec![PathBuf::from("/a/sub")];
        let no_dirs = |p: &Path| p == Path::new("/a");
        let all = plan(
            &[permission("/a", "**", &[], &[])],
            &copies,
            &mkdirs,
            no_dirs,
        )
        .unwrap();
        assert_eq!(
            files(&all),
            ["/a/x.sh", "/a/y.txt", "/a/sub/z.sh", "/a/sub"]
        );
        let sh = plan(
            &[permission("/a", "*.sh", &[], &[PermissionType::File])],
            &copies,
            &mkdirs,
            no_dirs,
        )
        .unwrap();
        assert_eq!(
            files(&sh),
            ["/a/x.sh"],
            "a pattern takes names directly inside only"
        );
        let except = plan(
            &[permission("/a", "**", &["y*"], &[PermissionType::File])],
            &copies,
            &mkdirs,
            no_dirs,
        )
        .unwrap();
        assert_eq!(files(&except), ["/a/x.sh", "/a/sub/z.sh"]);
        let dirs = plan(
            &[permission("/a", "**", &[], &[PermissionType::Directory])],
            &copies,
            &mkdirs,
            no_dirs,
        )
        .unwrap();
        assert_eq!(files(&dirs), ["/a/sub"]);
        let one = plan(
            &[permission("/a/x.sh", "**", &[], &[])],
            &copies,
            &mkdirs,
            no_dirs,
        )
        .unwrap();
        assert_eq!(files(&one), ["/a/x.sh"]);
    }

    #[test]
    fn mistakes_codedeploy_refuses() {
        let copies = vec![PathBuf::from("/a/x.sh")];
        let err = plan(
            &[permission("/a/x.sh", "*.sh", &[], &[])],
            &copies,
            &[],
            |_| false,
        )
        .unwrap_err();
        assert!(err.contains("invalid pattern"), "{err}");
        let twice = [
            permission("/a", "**", &[], &[]),
            permission("/a/x.sh", "**", &[], &[]),
        ];
        let err = plan(&twice, &copies, &[], |_| true).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        let mut owned = permission("/a", "**", &[], &[]);
        owned.owner = Some("no-such-user-here".into());
        let err = plan(&[owned], &copies, &[], |_| true).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn simple_globs() {
        assert!(simple_glob("app.sh", "*.sh"));
        assert!(simple_glob("app.sh", "*"));
        assert!(simple_glob("a", "a*"));
        assert!(!simple_glob("app.sh", "*.txt"));
        assert!(!simple_glob("d/app.sh", "*"));
        assert!(simple_glob("abcabd", "*abd"));
    }

    #[test]
    fn modes_are_never_applied_through_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        apply(&PermissionOp::Chmod {
            file: link,
            mode: "777".into(),
        })
        .unwrap();
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn acl_gets_base_entries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let acl = full_acl(&file, &["u:bob:rw".to_string()]).unwrap();
        assert_eq!(acl, "u:bob:rw,u::6,g::4,o::0,m::4");
    }
}
