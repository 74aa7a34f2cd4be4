//! The agent's command channel under a hostile build: a process of the build that reads the
//! shell's input, answers in its place, or silences its output can never make a command
//! count as run, or hang the build; tampering fails the build and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::time::{Duration, Instant};

use common::{Exec, Project, Run, run_local};

const TAMPERED: &str = "The build tampered with the agent's command channel";

/// Runs a project made by `make` on both executors at once, each in its own directory.
fn on_both(
    make: impl Fn() -> Project + Sync,
    extra: &[&str],
) -> Vec<(Exec, Project, Run, Duration)> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = [Exec::Host, Exec::Docker]
            .into_iter()
            .map(|exec| {
                let make = &make;
                scope.spawn(move || {
                    let p = make();
                    let started = Instant::now();
                    let run = run_local(&p, exec, extra);
                    (exec, p, run, started.elapsed())
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

fn explain(exec: Exec, run: &Run) -> String {
    format!("{exec:?}: {}\n{}\n{}", run.summary, run.stdout, run.stderr)
}

/// Finds the shell's input, the pipe it reads from, among its descriptors (while a command
/// runs, its standard input is /dev/null and the shell keeps the pipe on another one), then
/// says it is about to read.
const INPUT: &str = "sleep 0.5\ninput=$(ls -l /proc/$1/fd | sed -n 's/^lr-x.* \\([0-9]*\\) -> pipe:.*/\\1/p' | head -n 1)\ntouch ready\n";

/// A command that waits until the thief is about to read.
const WAIT: &str = "while [ ! -f ready ]; do sleep 0.1; done; sleep 2";

/// The sequence number of the frame in a file a thief wrote.
fn stolen_seq(p: &Project, file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p.path().join(file)).ok()?;
    let at = text.find(":go:")? + 4;
    text[at..].split(':').next()?.parse().ok()
}

/// Under load the thief may take a later frame than the one it waited for: every command
/// from the stolen frame on (`echo cN ran` in frame N) must not have run, all before it must.
fn assert_nothing_ran_from(run: &Run, stolen: u64, last: u64, why: &str) {
    for n in 3..=last {
        assert_eq!(
            run.printed(&format!("c{n} ran")),
            n < stolen,
            "c{n}, stolen {stolen}: {why}"
        );
    }
}

#[test]
fn a_process_that_reads_the_shells_input_fails_the_build() {
    let make = || {
        let p = Project::new(&format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - sh steal.sh $$ &\n      - {WAIT}\n      - echo c3 ran\n      - echo c4 ran\n  post_build:\n    commands:\n      - echo c5 ran\n",
        ));
        p.write(
            "steal.sh",
            &format!("{INPUT}cat /proc/$1/fd/$input > stolen.txt\n"),
        );
        p
    };
    for (exec, p, run, _) in on_both(make, &["--bind"]) {
        let why = explain(exec, &run);
        assert_eq!(run.code, 1, "{why}");
        assert_eq!(run.status(), "FAILED", "{why}");
        assert!(run.stdout.contains(TAMPERED), "{why}");
        assert!(
            run.stdout.contains("read the agent's command channel"),
            "{why}"
        );
        // The command whose frame was taken never ran, and nothing after it did.
        let stolen = stolen_seq(&p, "stolen.txt")
            .unwrap_or_else(|| panic!("the thief read no frame: {why}"));
        assert_nothing_ran_from(&run, stolen, 5, &why);
        assert!(run.phase("UPLOAD_ARTIFACTS").is_none(), "{why}");
    }
}

/// Reads the next frame meant for shell `$1` and answers it in the shell's place, with the
/// token, sequence number and nonces it carries: a forgery as good as one can be without
/// the shell's own memory.
const FORGER: &str = r#"frame=$(head -n 1 /proc/$1/fd/$input)
field() { printf '%s\n' "$frame" | sed -n "$1" | head -n 1; }
tok=$(field 's/.*\\036\([0-9a-f]*\):go:.*/\1/p')
seq=$(field 's/.*:go:\([0-9]*\):.*/\1/p')
go=$(field 's/.*:go:[0-9]*:\([0-9a-f]*\):.*/\1/p')
ok=$(field 's/.*then __agent_p=\([0-9a-f]*\);.*/\1/p')
printf '%s\n' "$frame" > frame.txt
printf '\036%s:go:%s:%s:%s\n' "$tok" "$seq" "$go" "$seq"
printf '\036%s:rc:%s:0:%s:/\n' "$tok" "$seq" "$ok"
"#;

#[test]
fn a_command_answered_in_the_shells_place_is_found_out() {
    for last in [false, true] {
        // The stolen command fails; then either more commands run, or none does and the
        // shell is checked before anything leaves the build.
        let more = if last { "" } else { "      - echo c4 ran\n" };
        let make = || {
            let p = Project::new(&format!(
                "version: 0.2\nphases:\n  build:\n    commands:\n      - sh forge.sh $$ &\n      - {WAIT}\n      - echo c3 ran; false\n{more}"
            ));
            p.write("forge.sh", &format!("{INPUT}{FORGER}"));
            p
        };
        for (exec, p, run, _) in on_both(make, &["--bind"]) {
            let why = explain(exec, &run);
            let stolen = stolen_seq(&p, "frame.txt")
                .unwrap_or_else(|| panic!("the forger read no frame: {why}"));
            assert_eq!(run.code, 1, "{why}");
            assert_eq!(run.status(), "FAILED", "{why}");
            assert!(run.stdout.contains(TAMPERED), "{why}");
            assert!(
                run.stdout.contains(&format!(
                    "received {stolen} commands where the agent sent {}",
                    stolen + 1
                )),
                "{why}"
            );
            assert_nothing_ran_from(&run, stolen, if last { 3 } else { 4 }, &why);
            assert!(run.phase("UPLOAD_ARTIFACTS").is_none(), "{why}");
        }
    }
}

#[test]
fn a_status_line_flipped_from_failure_to_success_is_refused() {
    // A build that sees a failed status line cannot turn it into a success: the proof of
    // a success is not in a failure's line. Here the thief answers with everything it
    // learned but that proof.
    let make = || {
        let p = Project::new(&format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - sh forge.sh $$ &\n      - {WAIT}\n      - echo c3 ran\n      - echo c4 ran\n"
        ));
        p.write(
            "forge.sh",
            &format!(
                "{INPUT}{}",
                FORGER.replace("then __agent_p=", "else __agent_p=")
            ),
        );
        p
    };
    for (exec, p, run, _) in on_both(make, &["--bind"]) {
        let why = explain(exec, &run);
        assert_eq!(run.status(), "FAILED", "{why}");
        assert!(run.stdout.contains("was forged"), "{why}");
        let stolen = stolen_seq(&p, "frame.txt")
            .unwrap_or_else(|| panic!("the forger read no frame: {why}"));
        assert_nothing_ran_from(&run, stolen, 4, &why);
    }
}

#[test]
fn commands_that_silence_or_close_their_output_do_not_hang_the_build() {
    let make = || {
        Project::new(
            "version: 0.2\nphases:\n  install:\n    commands:\n      - exec >/dev/null 2>&1\n      - echo hidden\n      - 'true'\n  build:\n    commands:\n      - exec 1>&-\n      - 'true'\n      - export REACHED=yes\n  post_build:\n    commands:\n      - test \"$REACHED\" = yes\n",
        )
    };
    for (exec, _, run, took) in on_both(make, &["--timeout", "2m"]) {
        let why = explain(exec, &run);
        assert_eq!(run.code, 0, "{why}");
        assert_eq!(run.status(), "SUCCEEDED", "{why}");
        assert!(!run.printed("hidden"), "{why}");
        assert!(took < Duration::from_secs(60), "{took:?}: {why}");
    }
    // A failure after the output is gone is still a failure, reported at once.
    let make = || {
        Project::new(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - exec >/dev/null 2>&1\n      - exit 3\n",
        )
    };
    for (exec, _, run, took) in on_both(make, &["--timeout", "2m"]) {
        let why = explain(exec, &run);
        assert_eq!(run.status(), "FAILED", "{why}");
        let message = run.phase("BUILD").unwrap()["message"].as_str().unwrap();
        assert!(message.contains("exit status 3"), "{message}");
        assert!(took < Duration::from_secs(60), "{took:?}: {why}");
    }
}

#[test]
fn closing_the_agents_descriptor_fails_the_command_instead_of_hanging() {
    let make = || {
        Project::new(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - exec 7>&-\n      - echo never\n",
        )
    };
    for (exec, _, run, took) in on_both(make, &["--timeout", "2m"]) {
        let why = explain(exec, &run);
        assert_eq!(run.status(), "FAILED", "{why}");
        assert!(!run.printed("never"), "{why}");
        assert!(took < Duration::from_secs(60), "{took:?}: {why}");
    }
}

#[test]
fn lines_that_look_like_reports_without_the_token_are_output() {
    let make = || {
        Project::new(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - printf '\\036deadbeef:rc:1:0:x:/\\n'\n      - printf 'a\\036b\\n'\n      - echo fine\n",
        )
    };
    for (exec, _, run, _) in on_both(make, &["--bind"]) {
        let why = explain(exec, &run);
        assert_eq!(run.status(), "SUCCEEDED", "{why}");
        assert!(run.printed("\u{1e}deadbeef:rc:1:0:x:/"), "{why}");
        assert!(run.printed("a\u{1e}b"), "{why}");
        assert!(run.printed("fine"), "{why}");
    }
}
