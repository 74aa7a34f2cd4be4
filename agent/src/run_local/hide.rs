//! `--secret NAME=VALUE` would leave VALUE in the agent's command line, which any user of
//! the machine can read (`ps`, /proc/PID/cmdline) for the whole build. At start, before
//! anything else, the agent replaces its own process (same pid, `exec`) with one whose
//! command line says `--secret NAME` only; the values reach the new process through an
//! anonymous in-memory file (memfd) whose descriptor it reads once and closes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

/// The hidden flag that carries the descriptor's number.
pub const FD_FLAG: &str = "--secret-values-fd";

/// When the command line is `agent run-local … --secret NAME=VALUE …`, re-executes the
/// agent without the values; returns only when there is nothing to hide, or when the
/// re-exec failed (then with a warning: the build goes on with the values in argv).
pub fn reexec_without_secret_values() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "run-local") {
        return;
    }
    let Some((kept, values)) = split(&args) else {
        return;
    };
    if let Err(e) = reexec(&kept, &values) {
        eprintln!(
            "warning: cannot hide the --secret values from the process list ({e}); prefer `--secret NAME`, which takes the value from the environment"
        );
    }
}

/// The command line without secret values, and the values; `None` when there is none.
fn split(args: &[OsString]) -> Option<(Vec<OsString>, BTreeMap<String, String>)> {
    let mut kept = Vec::with_capacity(args.len());
    let mut values = BTreeMap::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            kept.push(arg.clone());
            kept.extend(iter.by_ref().cloned());
            break;
        }
        let bytes = arg.as_bytes();
        let (entry, joined) = if arg == "--secret" {
            match iter.next() {
                Some(next) => (next.clone(), false),
                None => {
                    kept.push(arg.clone());
                    break;
                }
            }
        } else if let Some(rest) = bytes.strip_prefix(b"--secret=") {
            (OsString::from(std::ffi::OsStr::from_bytes(rest)), true)
        } else {
            kept.push(arg.clone());
            continue;
        };
        match entry.to_str().and_then(|e| e.split_once('=')) {
            Some((name, value)) => {
                values.insert(name.to_string(), value.to_string());
                kept.push("--secret".into());
                kept.push(name.into());
            }
            None if joined => kept.push(arg.clone()),
            None => {
                kept.push("--secret".into());
                kept.push(entry);
            }
        }
    }
    (!values.is_empty()).then_some((kept, values))
}

fn reexec(kept: &[OsString], values: &BTreeMap<String, String>) -> std::io::Result<()> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    // Not close-on-exec: the new process inherits it.
    let fd =
        memfd_create("agent-secret-values", MFdFlags::empty()).map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec(values).map_err(std::io::Error::other)?)?;
    let number = file.as_raw_fd();
    let (arg0, rest) = kept
        .split_first()
        .ok_or_else(|| std::io::Error::other("no argv"))?;
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(&rest[..1])
        .arg(format!("{FD_FLAG}={number}"))
        .args(&rest[1..])
        .exec();
    drop(file);
    Err(error)
}

/// The values the re-exec handed over, read from the descriptor, which is then closed.
pub fn take_values(fd: i32) -> Result<BTreeMap<String, String>, String> {
    let read = std::fs::read(format!("/proc/self/fd/{fd}"))
        .map_err(|e| format!("cannot read the --secret values handed over at start: {e}"));
    let _ = nix::unistd::close(fd);
    serde_json::from_slice(&read?)
        .map_err(|_| "the --secret values handed over at start are not readable".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn values_leave_the_command_line() {
        let (kept, values) = split(&os(&[
            "agent",
            "run-local",
            "--secret",
            "A=1",
            "--secret=B=x=y",
            "--secret",
            "C",
            "-e",
            "D=2",
        ]))
        .unwrap();
        assert_eq!(
            kept,
            os(&[
                "agent",
                "run-local",
                "--secret",
                "A",
                "--secret",
                "B",
                "--secret",
                "C",
                "-e",
                "D=2"
            ])
        );
        assert_eq!(values["A"], "1");
        assert_eq!(values["B"], "x=y");
        assert!(split(&os(&["agent", "run-local", "--secret", "C"])).is_none());
    }
}
