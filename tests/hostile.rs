//! Hostile builds: each is contained by the container's limits or the agent's own bounds,
//! reported for what it is, and cleaned up; the agent's memory stays bounded whatever the
//! build prints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Exec, Project, containers_of, run_local};

fn assert_cleaned_up(run: &common::Run) {
    let build_id = run.summary["build_id"].as_str().unwrap();
    assert!(
        containers_of(build_id).is_empty(),
        "{build_id} left a container"
    );
}

#[test]
fn a_memory_hog_is_killed_by_the_limit_and_named() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - dd if=/dev/zero of=/dev/null bs=300M count=1\n      - echo never\n",
    );
    let run = run_local(&p, Exec::Docker, &["--memory", "64m"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.phase_status("BUILD").as_deref(), Some("FAILED"));
    let message = run.phase("BUILD").unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("exit status 137") && message.contains("ran out of memory"),
        "{message}"
    );
    assert!(message.contains("64 MiB"), "{message}");
    assert!(!run.printed("never"));
    assert_cleaned_up(&run);
}

#[test]
fn a_fork_bomb_meets_the_pids_limit_and_the_timeout() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - 'bomb() { bomb | bomb & }; bomb; sleep 300'\n",
    );
    let started = Instant::now();
    let run = run_local(&p, Exec::Docker, &["--pids-limit", "64", "--timeout", "5s"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    // Either the timeout ends it, or the shell itself cannot fork its next command once the
    // bomb holds every pid the limit allows: contained both ways, never SUCCEEDED.
    assert!(
        matches!(run.status(), "TIMED_OUT" | "FAILED"),
        "{}",
        run.summary
    );
    assert_cleaned_up(&run);
}

#[test]
fn a_command_ignoring_sigterm_is_killed_at_the_timeout() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - trap '' TERM INT; sleep 300 & trap '' TERM INT; wait; sleep 300\n",
    );
    let started = Instant::now();
    let run = run_local(&p, Exec::Docker, &["--timeout", "3s"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.status(), "TIMED_OUT", "{}{}", run.stdout, run.stderr);
    assert_cleaned_up(&run);
}

/// Runs a build in Docker while sampling the agent's peak RSS; returns the run and the peak
/// in MiB.
fn run_measuring_memory(p: &Project) -> (common::Run, u64) {
    let summary = p.path().join(".summary.json");
    let mut child = common::agent()
        .args(["run-local", "--quiet", "--image", common::busybox_image()])
        .arg("--source")
        .arg(p.path())
        .arg("--summary")
        .arg(&summary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        out.read_to_end(&mut all).unwrap();
        all
    });
    let mut peak_kib = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = reader.join().unwrap();
    let run = common::finish(std::process::Output { stdout, ..output }, &summary);
    (run, peak_kib / 1024)
}

fn log_of(p: &Project, run: &common::Run) -> std::path::PathBuf {
    let build_id = run.summary["build_id"].as_str().unwrap();
    run.log_path().unwrap_or_else(|| p.log_file(build_id))
}

#[test]
fn a_gibibyte_without_a_newline_keeps_the_agent_small() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - head -c 1073741824 /dev/zero | tr '\\000' a\n",
    );
    let (run, peak_mib) = run_measuring_memory(&p);
    eprintln!("1 GiB without a newline: the agent peaked at {peak_mib} MiB");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(peak_mib < 128, "the agent peaked at {peak_mib} MiB");
    let logged = std::fs::metadata(log_of(&p, &run)).unwrap().len();
    assert!(logged >= 1 << 30, "only {logged} bytes logged");
    assert_cleaned_up(&run);
}

#[test]
fn a_flood_of_short_lines_is_logged_whole() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - seq 1 1000000\n      - echo done\n",
    );
    let started = Instant::now();
    let (run, peak_mib) = run_measuring_memory(&p);
    eprintln!(
        "1,000,000 lines: {:.1} s, the agent peaked at {peak_mib} MiB",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(peak_mib < 128, "the agent peaked at {peak_mib} MiB");
    let log = std::fs::read_to_string(log_of(&p, &run)).unwrap();
    let numbers: Vec<u64> = log.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(numbers.len(), 1_000_000);
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines out of order"
    );
    assert!(log.lines().any(|l| l == "done"));
    assert_cleaned_up(&run);
}

#[test]
fn binary_output_is_logged_and_the_build_goes_on() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - head -c 1048576 /dev/urandom\n      - printf '\\000\\377\\033[2J\\r\\n'\n      - echo after\n",
    );
    let run = run_local(&p, Exec::Docker, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.printed("after"), "{}", run.stdout.len());
    let logged = std::fs::metadata(log_of(&p, &run)).unwrap().len();
    assert!(logged >= 1 << 20, "only {logged} bytes logged");
    assert_cleaned_up(&run);
}

/// A build on the host runs as the agent's user; it must still not reach the agent's
/// environment (its credentials), memory or open files (the daemon's control channel).
#[test]
fn a_host_build_cannot_read_the_agent_through_proc() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - cat /proc/$PPID/environ; echo environ status $?\n      - timeout 5 cat /proc/$PPID/fd/0; echo stdin status $?\n      - head -c 64 /proc/$PPID/mem; echo mem status $?\n      - cat; echo own stdin status $?\n      - echo ppid=$(cat /proc/$PPID/comm)\n",
    );
    // A user that is not root, for whom only the process's own attributes stand in the way.
    std::fs::set_permissions(
        p.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let summary = p.path().join(".summary.json");
    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_agent"))
        .args(["run-local", "--executor", "host", "--control-stdin"])
        .arg("--source")
        .arg(p.path())
        .arg("--summary")
        .arg(&summary)
        .env("AWS_SECRET_ACCESS_KEY", "agent-own-secret-value")
        .env("HOME", p.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"secrets\": {\"TOKEN\": \"control-line-secret\"}}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    let run = common::finish(output, &summary);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("ppid=agent"), "{}", run.stdout);
    // 1: cat and head were refused; 124 would be a read that blocked on the channel.
    for refused in [
        "environ status 1",
        "stdin status 1",
        "mem status 1",
        "own stdin status 0",
    ] {
        assert!(run.printed(refused), "{refused}: {}", run.stdout);
    }
    let log = std::fs::read_to_string(log_of(&p, &run)).unwrap();
    for text in [&run.stdout, &run.stderr, &log] {
        assert!(!text.contains("agent-own-secret-value"));
        assert!(!text.contains("control-line-secret"));
    }
}

/// The pids of live processes whose command line holds `token`.
fn processes_with(token: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(token) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Asserts that nothing the build started with `token` in its command line is left (a
/// little time for a SIGKILL to land), and kills what is, so a failing test leaves nothing.
fn assert_none_left(token: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = processes_with(token);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_with(token);
    }
    for (pid, _) in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Commands that leave the build's process group and ignore SIGTERM: `setsid`, a double
/// fork, and a double fork that also empties its environment.
fn escaping_commands(token: &str) -> String {
    format!(
        "      - setsid sh -c 'trap \"\" TERM HUP; while :; do sleep 1; done; true {token}-setsid' &\n\
         \x20     - (sh -c 'trap \"\" TERM HUP; while :; do sleep 1; done; true {token}-double' >/dev/null 2>&1 &) \n\
         \x20     - (env -i setsid sh -c 'trap \"\" TERM HUP; while :; do sleep 1; done; true {token}-bare' >/dev/null 2>&1 &) \n\
         \x20     - sleep 1\n"
    )
}

#[test]
fn processes_that_leave_the_group_end_with_a_host_build() {
    let token = format!("buildescapee{}", std::process::id());
    let p = Project::new(&format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n{}      - echo built\n",
        escaping_commands(&token)
    ));
    let run = run_local(&p, Exec::Host, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("built"), "{}", run.stdout);
    assert_none_left(&token);
}

#[test]
fn processes_that_leave_the_group_end_at_a_host_timeout() {
    let token = format!("timedescapee{}", std::process::id());
    let p = Project::new(&format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n{}      - sleep 300\n",
        escaping_commands(&token)
    ));
    let started = Instant::now();
    let run = run_local(&p, Exec::Host, &["--timeout", "4s"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.status(), "TIMED_OUT", "{}{}", run.stdout, run.stderr);
    assert_none_left(&token);
}

/// Runs `command` while sampling its peak RSS (VmHWM); kills it past 400 MiB so that a
/// regression fails the test instead of the machine. Returns the output and the peak in MiB.
fn output_measuring_memory(mut command: std::process::Command) -> (std::process::Output, u64) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = std::thread::scope(|s| {
            let h = s.spawn(|| pipes.1.read_to_end(&mut err).map(|_| ()));
            pipes.0.read_to_end(&mut out).unwrap();
            h.join().unwrap()
        });
        e.unwrap();
        (out, err)
    });
    let mut peak_kib = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
            if kib > 400 << 10 {
                let _ = child.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().unwrap();
    let (stdout, stderr) = reader.join().unwrap();
    (
        std::process::Output {
            status,
            stdout,
            stderr,
        },
        peak_kib / 1024,
    )
}

/// 1 MiB buildspecs whose aliases expand far beyond their size: wide aliases of a 512 KiB
/// scalar, of a 512 KiB mapping, and nested aliases (billion laughs).
fn alias_bombs() -> Vec<(&'static str, String, usize)> {
    const MIB: usize = 1 << 20;
    let mut scalar = format!(
        "version: 0.2\nenv:\n  variables:\n    BIG: &a \"{}\"\nphases:\n  build:\n    commands: [",
        "x".repeat(MIB / 2)
    );
    let n = (MIB - scalar.len() - 3) / 3;
    scalar.push_str(&vec!["*a"; n].join(","));
    scalar.push_str("]\n");
    let mut mapping = String::from("version: 0.2\nenv:\n  variables: &m\n");
    let mut i = 0;
    while mapping.len() < MIB / 2 {
        mapping.push_str(&format!("    K{i}: v\n"));
        i += 1;
    }
    mapping.push_str("phases:\n  build:\n    commands:\n      - echo\nx: [");
    let alias_line = mapping.lines().count();
    let n = (MIB - mapping.len() - 3) / 3;
    mapping.push_str(&vec!["*m"; n].join(","));
    mapping.push_str("]\n");
    let mut laughs = String::from("version: 0.2\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{p}"); 10].join(", ")
        ));
    }
    laughs.push_str("phases:\n  build:\n    commands:\n      - echo\n");
    vec![
        ("wide aliases of a big scalar", scalar, 7),
        ("wide aliases of a big mapping", mapping, alias_line),
        ("nested aliases", laughs, 0),
    ]
}

#[test]
fn alias_bombs_are_refused_within_100_mib() {
    for (what, text, line) in alias_bombs() {
        let p = Project::new(&text);
        let file = p.path().join("buildspec.yml");
        let mut command = common::agent();
        command.arg("validate").arg(&file);
        let (output, peak_mib) = output_measuring_memory(command);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = format!("{stdout}{stderr}");
        eprintln!(
            "{what} ({} bytes): validate peaked at {peak_mib} MiB",
            text.len()
        );
        assert_eq!(
            output.status.code(),
            Some(2),
            "{what}: {}",
            &said[..said.len().min(2000)]
        );
        assert!(peak_mib < 100, "{what}: validate peaked at {peak_mib} MiB");
        assert!(
            said.contains("this alias makes the document expand to more than"),
            "{what}: {}",
            &said[..said.len().min(2000)]
        );
        if line > 0 {
            let at = format!("buildspec.yml:{line}:");
            assert!(
                said.contains(&at),
                "{what}: no {at} in {}",
                &said[..said.len().min(2000)]
            );
        }
        // run-local reads the buildspec the same way: refused before anything runs.
        let mut command = common::agent();
        command
            .args(["run-local", "--executor", "host", "--source"])
            .arg(p.path());
        let (output, peak_mib) = output_measuring_memory(command);
        eprintln!("{what}: run-local peaked at {peak_mib} MiB");
        assert_eq!(output.status.code(), Some(2), "{what}");
        assert!(peak_mib < 100, "{what}: run-local peaked at {peak_mib} MiB");
    }
}

/// One line holding 90,000 flow items (no alias): positions along it must not be found by
/// walking the line from its start each time (that took minutes).
#[test]
fn a_long_flow_line_is_read_in_linear_time() {
    let text = format!(
        "version: 0.2\nphases:\n  build:\n    commands: [{}]\n",
        vec!["a"; 90_000].join(",")
    );
    let p = Project::new(&text);
    let started = Instant::now();
    let output = common::agent()
        .arg("validate")
        .arg(p.path().join("buildspec.yml"))
        .output()
        .unwrap();
    let took = started.elapsed();
    eprintln!("90,000 items on one line: validated in {took:?}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// A 100 MB file given as a config, a buildspec or an appspec is refused by its size (1 MiB
/// at most), without being read: exit 2 and an error that says both sizes.
#[test]
fn files_past_1_mib_are_refused_by_their_size() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args, what) in [
        ("agent.toml", vec!["config", "check"], "a config file"),
        ("buildspec.yml", vec!["validate"], "a buildspec or appspec"),
        ("appspec.yml", vec!["validate"], "a buildspec or appspec"),
        (
            "big.yml",
            vec!["run-local", "--executor", "host"],
            "a buildspec",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        let mut command = common::agent();
        command.args(&args).arg(&path);
        let started = Instant::now();
        let (output, peak_mib) = output_measuring_memory(command);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(2), "{name}: {said}");
        assert!(
            said.contains(&format!(
                "it is 104857600 bytes; {what} is at most 1048576 bytes"
            )),
            "{name}: {said}"
        );
        assert!(peak_mib < 64, "{name}: peaked at {peak_mib} MiB");
        assert!(started.elapsed() < Duration::from_secs(10), "{name}");
    }
    // run-local's environment and secret files likewise.
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo ran\n");
    let big = dir.path().join("big.env");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    for flag in ["--env-file", "--secret-file"] {
        let output = common::agent()
            .args(["run-local", "--executor", "host", flag])
            .arg(&big)
            .arg("--source")
            .arg(p.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {said}");
        assert!(
            said.contains("it is 104857600 bytes; an environment or secret file is at most"),
            "{flag}: {said}"
        );
    }
}

/// Every numeric flag of run-local is range-checked by the parser the config uses: a value
/// that would remove a limit (`--cpus 0`, `NaN`), overflow (a huge `--timeout` or
/// `--memory`) or exceed CodeBuild's 36 h is refused with exit 2 before anything runs.
#[test]
fn out_of_range_numbers_are_refused_on_the_command_line() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo ran\n");
    for (flag, value, said) in [
        ("--timeout", "0", "at least 1s"),
        ("--timeout", "0s", "at least 1s"),
        ("--timeout", "37h", "CodeBuild's maximum"),
        ("--timeout", "2161", "CodeBuild's maximum"),
        ("--timeout", "99999999999999999999", "CodeBuild's maximum"),
        ("--timeout", "18446744073709551615s", "CodeBuild's maximum"),
        ("--timeout", "soon", "not a duration"),
        ("--cpus", "0", "between 0.01 and 1024"),
        ("--cpus", "NaN", "between 0.01 and 1024"),
        ("--cpus", "inf", "between 0.01 and 1024"),
        ("--cpus", "1025", "between 0.01 and 1024"),
        ("--memory", "5m", "at least 6m"),
        ("--memory", "99999999999999999999g", "at most 1024t"),
        ("--memory", "16777216t", "at most 1024t"),
        ("--pids-limit", "0", "between 16 and 4194304"),
    ] {
        let run = run_local(&p, Exec::Host, &[flag, value]);
        assert_eq!(run.code, 2, "{flag} {value}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(said), "{flag} {value}: {}", run.stderr);
        assert!(!run.printed("ran"), "{flag} {value} ran the build");
    }
}

/// The log names the time limit as given: `5 seconds`, not `1 minutes`.
#[test]
fn a_timeout_in_seconds_is_logged_in_seconds() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 30\n");
    let run = run_local(&p, Exec::Host, &["--timeout", "2s"]);
    assert_eq!(run.status(), "TIMED_OUT", "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Build timed out after 2 seconds"),
        "{}",
        run.stdout
    );
}

/// The same values in the config are refused by `agent config check`, each at its line.
#[test]
fn out_of_range_numbers_are_refused_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    for (line, said) in [
        ("max_timeout = \"37h\"", "`max_timeout` must be at most 36h"),
        (
            "default_timeout = \"0s\"",
            "`default_timeout` must be at least 1s",
        ),
        ("memory = \"5m\"", "at least 6m"),
        ("memory = \"16777216t\"", "at most 1024t"),
        ("memory = \"99999999999999999999g\"", "at most 1024t"),
        ("cpus = 0.0", "between 0.01 and 1024"),
        ("cpus = nan", "between 0.01 and 1024"),
        ("cpus = inf", "between 0.01 and 1024"),
    ] {
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "version = 1\n\n[[sources]]\ntype = \"spool\"\npath = \"/var/lib/agent/spool\"\n\n[jobs]\n{line}\n"
            ),
        )
        .unwrap();
        let output = common::agent()
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let said_all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(2), "{line}: {said_all}");
        assert!(said_all.contains(said), "{line}: {said_all}");
        assert!(said_all.contains("agent.toml:8:"), "{line}: {said_all}");
    }
}

/// Orphans a host build leaves are adopted by the agent (a child subreaper) and reaped
/// while the build runs, not left as zombies until it ends.
#[test]
fn orphans_of_a_host_build_are_reaped_while_it_runs() {
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - for i in 1 2 3 4 5; do (setsid sleep 0.1 &); done; sleep 4\n      - echo zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p=$PPID '$4 == p && $3 == \"Z\"' | wc -l)\n",
    );
    let run = run_local(&p, Exec::Host, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("zombies=0"), "{}", run.stdout);
}

/// One member of a host batch ending sweeps its own processes only: the other member's
/// command, still running, is not killed with them.
#[test]
fn a_host_batch_member_ending_leaves_the_others_running() {
    let p = Project::new(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: quick\n      env:\n        variables:\n          WAIT: \"0\"\n    - identifier: slow\n      env:\n        variables:\n          WAIT: \"3\"\nphases:\n  build:\n    commands:\n      - sleep $WAIT; echo \"$WAIT survived\"\n",
    );
    let run = run_local(&p, Exec::Host, &["--parallel", "2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("[slow] 3 survived"), "{}", run.stdout);
}
