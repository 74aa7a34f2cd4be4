//! `agent deploy-local` end to end: the sample service in `examples/deploy-app` deployed,
//! redeployed, failed, rolled back, with hostile bundles and misbehaving hooks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{agent, repo_root, wait_for, wait_until};
use serde_json::Value;

/// A host to deploy to: a deployment root, an allowed destination, the service's run dir.
struct Host {
    dir: tempfile::TempDir,
}

struct Deploy {
    code: i32,
    stdout: String,
    stderr: String,
    summary: Value,
}

impl Deploy {
    fn event(&self, name: &str) -> &Value {
        self.summary["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no event {name} in {:#}", self.summary))
    }

    fn status(&self, event: &str) -> String {
        self.event(event)["status"].as_str().unwrap().to_string()
    }

    fn events(&self) -> Vec<(String, String)> {
        self.summary["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_string(),
                    e["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Host {
    fn new() -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(host.apps()).unwrap();
        host
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("deployment-root")
    }

    fn apps(&self) -> PathBuf {
        self.dir.path().join("apps")
    }

    fn app_home(&self) -> PathBuf {
        self.apps().join("sample-app")
    }

    fn run_dir(&self) -> PathBuf {
        self.apps().join("sample-app-run")
    }

    /// A copy of the sample revision at `version`, installing under this host's apps dir;
    /// `tweak` edits it before use.
    fn revision(&self, version: &str, tweak: impl FnOnce(&Path)) -> PathBuf {
        let dest = self.dir.path().join("revisions").join(version);
        copy_dir(&repo_root().join("examples/deploy-app"), &dest);
        let appspec = fs::read_to_string(dest.join("appspec.yml")).unwrap();
        fs::write(
            dest.join("appspec.yml"),
            appspec.replace("/opt/sample-app", self.app_home().to_str().unwrap()),
        )
        .unwrap();
        fs::write(dest.join("app/VERSION"), format!("{version}\n")).unwrap();
        tweak(&dest);
        dest
    }

    /// `agent deploy-local` of `bundle` on this host, its summary in `summary`.
    fn deploy_command(
        &self,
        bundle: &Path,
        extra: &[&str],
        summary: &Path,
    ) -> std::process::Command {
        let _ = fs::remove_file(summary);
        let mut command = agent();
        command
            .arg("deploy-local")
            .arg("--bundle")
            .arg(bundle)
            .arg("--root")
            .arg(self.root())
            .arg("--allow-destination")
            .arg(self.apps())
            .arg("--summary")
            .arg(summary)
            .args(extra)
            .env("SAMPLE_APP_HOME", self.app_home())
            .env("SAMPLE_APP_RUN", self.run_dir())
            .env("AWS_SECRET_ACCESS_KEY", "agent-own-secret");
        command
    }

    fn deploy(&self, bundle: &Path, extra: &[&str]) -> Deploy {
        let summary = self.dir.path().join("summary.json");
        let output = self
            .deploy_command(bundle, extra, &summary)
            .output()
            .unwrap();
        let summary = fs::read_to_string(&summary)
            .ok()
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or(Value::Null);
        Deploy {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            summary,
        }
    }

    fn running_version(&self) -> Option<String> {
        let beat = fs::read_to_string(self.run_dir().join("heartbeat")).ok()?;
        beat.lines().nth(1).map(str::to_string)
    }

    fn server_pid(&self) -> Option<i32> {
        fs::read_to_string(self.run_dir().join("server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(pid) = self.server_pid() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every file under `dir`: its content and mode, for exact comparisons.
fn tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let body = if meta.is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                (body, meta.permissions().mode()),
            )
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; only a running process counts.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

fn write_script(revision: &Path, name: &str, body: &str) {
    let path = revision.join("scripts").join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

const IN_PLACE: [&str; 7] = [
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

#[test]
fn two_deployments_in_a_row_the_second_stops_the_first() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |r| {
        fs::write(r.join("app/only-in-v1.txt"), "old").unwrap()
    });
    let first = host.deploy(&v1, &["--deployment-id", "d-FIRST0001"]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let names: Vec<_> = first.events().into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, IN_PLACE);
    assert_eq!(
        first.status("ApplicationStop"),
        "Skipped",
        "first deployment"
    );
    for event in &IN_PLACE[1..] {
        assert_eq!(first.status(event), "Succeeded", "{event}");
    }
    assert_eq!(host.running_version().as_deref(), Some("1.0.0"));
    assert!(host.app_home().join("only-in-v1.txt").exists());
    let first_pid = host.server_pid().unwrap();

    let v2 = host.revision("2.0.0", |_| {});
    let second = host.deploy(&v2, &["--deployment-id", "d-SECOND001"]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    // ApplicationStop ran the first revision's script, with the new deployment's id.
    assert_eq!(second.event("ApplicationStop")["revision"], "d-FIRST0001");
    assert_eq!(second.status("ApplicationStop"), "Succeeded");
    let stops = fs::read_to_string(host.run_dir().join("stops")).unwrap();
    assert_eq!(stops.trim(), "d-SECOND001 1.0.0");
    assert!(!alive(first_pid), "the old server was stopped");
    assert_eq!(host.running_version().as_deref(), Some("2.0.0"));
    // The first revision's files that the second lacks are gone.
    assert!(!host.app_home().join("only-in-v1.txt").exists());
    assert_eq!(
        fs::read_to_string(host.app_home().join("VERSION")).unwrap(),
        "2.0.0\n"
    );
    // Permissions from the appspec: config files 640, directories 755.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&host.app_home().join("config/app.conf")), 0o640);
    assert_eq!(mode(&host.app_home().join("config")), 0o755);
    // The layout of the deployment root.
    let dir = host.root().join("LocalApplication_LocalFleet/d-SECOND001");
    assert!(dir.join("deployment-archive/appspec.yml").is_file());
    let scripts_log = fs::read_to_string(dir.join("logs/scripts.log")).unwrap();
    assert!(
        scripts_log.contains("LifecycleEvent - ValidateService"),
        "{scripts_log}"
    );
    assert!(
        scripts_log.contains("[stdout][ValidateService d-SECOND001] version 2.0.0 is up"),
        "{scripts_log}"
    );
    let pointer = fs::read_to_string(
        host.root()
            .join("deployment-instructions/LocalApplication_LocalFleet_last_successful_install"),
    )
    .unwrap();
    assert_eq!(pointer.trim(), dir.to_str().unwrap());
    assert!(
        second
            .stdout
            .contains("Deployment d-SECOND001 (LocalApplication / LocalFleet): Succeeded"),
        "{}",
        second.stdout
    );
}

#[test]
fn a_failed_validation_is_rolled_back_to_the_last_good_revision_exactly() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |_| {});
    assert_eq!(
        host.deploy(&v1, &["--deployment-id", "d-GOOD00001"]).code,
        0
    );
    let good_tree = tree(&host.app_home());

    let v2 = host.revision("2.0.0", |r| {
        fs::write(r.join("app/config/extra.conf"), "new=1\n").unwrap();
        fs::write(r.join("app/config/app.conf"), "greeting=changed\n").unwrap();
        write_script(
            r,
            "validate.sh",
            "echo checking the new version\necho 'health check failed: 503' >&2\nexit 3",
        );
    });
    let failed = host.deploy(
        &v2,
        &["--deployment-id", "d-BAD000001", "--rollback-on-failure"],
    );
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    assert_eq!(failed.summary["status"], "Failed");
    let validate = failed.event("ValidateService");
    assert_eq!(validate["status"], "Failed");
    assert_eq!(validate["error_code"], "ScriptFailed");
    assert_eq!(validate["script_name"], "scripts/validate.sh");
    assert_eq!(
        validate["message"],
        "Script at specified location: scripts/validate.sh failed with exit code 3"
    );
    let log = validate["log"].as_str().unwrap();
    assert!(log.contains("[stderr]health check failed: 503"), "{log}");

    let rollback = &failed.summary["rollback"];
    assert_eq!(rollback["status"], "Succeeded", "{rollback:#}");
    assert_eq!(rollback["creator"], "rollback");
    assert_eq!(rollback["rollback_of"], "d-BAD000001");
    // The rollback's ApplicationStop stopped the failed revision's service.
    let stop = rollback["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "ApplicationStop")
        .unwrap();
    assert_eq!(stop["revision"], "d-BAD000001");
    assert_eq!(
        tree(&host.app_home()),
        good_tree,
        "the first revision's exact files"
    );
    assert_eq!(host.running_version().as_deref(), Some("1.0.0"));
    assert!(
        failed
            .stdout
            .contains("the last successful revision is back in place"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("health check failed: 503"),
        "{}",
        failed.stdout
    );
}

#[test]
fn a_hook_timeout_kills_the_whole_process_tree() {
    let host = Host::new();
    let pids = host.dir.path().join("pids");
    let v1 = host.revision("1.0.0", |r| {
        let appspec = fs::read_to_string(r.join("appspec.yml")).unwrap();
        fs::write(
            r.join("appspec.yml"),
            appspec.replace(
                "    - location: scripts/before_install.sh\n      timeout: 60",
                "    - location: scripts/before_install.sh\n      timeout: 2",
            ),
        )
        .unwrap();
        write_script(
            r,
            "before_install.sh",
            &format!(
                "sh -c 'sleep 300; echo never' &\necho $! >> {p}\nsetsid sh -c 'echo $$ >> {p}; sleep 300' &\nsleep 300 &\necho $! >> {p}\necho $$ >> {p}\nwait",
                p = pids.display()
            ),
        );
    });
    let started = Instant::now();
    let run = host.deploy(&v1, &[]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let event = run.event("BeforeInstall");
    assert_eq!(event["error_code"], "ScriptTimedOut");
    assert_eq!(
        event["message"],
        "Script at specified location: scripts/before_install.sh failed to complete in 2 seconds"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    for later in [
        "Install",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ] {
        assert_eq!(run.status(later), "Skipped", "{later}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids: Vec<i32> = fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4, "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the timeout");
    }
}

#[test]
fn a_background_process_holding_stdout_is_reported() {
    let host = Host::new();
    let pid_file = host.dir.path().join("holder.pid");
    let v1 = host.revision("1.0.0", |r| {
        write_script(
            r,
            "start.sh",
            &format!(
                "echo starting\nsleep 120 &\necho $! > {}\necho started",
                pid_file.display()
            ),
        );
    });
    let started = Instant::now();
    let run = host.deploy(&v1, &["--output-wait", "1s"]);
    let holder: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let still_there = alive(holder);
    let _ = std::process::Command::new("kill")
        .arg(holder.to_string())
        .status();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let event = run.event("ApplicationStart");
    assert_eq!(event["error_code"], "OutputsLeftOpen");
    let message = event["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("Script at specified location: scripts/start.sh failed to close STDOUT"),
        "{message}"
    );
    assert!(message.contains(&format!("{holder} sleep")), "{message}");
    assert!(
        still_there,
        "the background process is the service's, it is left running"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(run.status("ValidateService"), "Skipped");
}

#[test]
fn runas_runs_the_script_as_that_user() {
    if !nix_is_root() {
        eprintln!("runas needs root; this test runs as root in CI");
        return;
    }
    let user = "agentdeploytest";
    let _ = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        ])
        .output();
    let out_dir = host_shared_dir();
    let out = out_dir.path().join("who");
    let host = Host::new();
    let v1 = host.revision("1.0.0", |r| {
        let appspec = fs::read_to_string(r.join("appspec.yml")).unwrap();
        fs::write(
            r.join("appspec.yml"),
            appspec.replace(
                "    - location: scripts/after_install.sh\n      timeout: 60",
                &format!("    - location: scripts/after_install.sh\n      timeout: 60\n      runas: {user}"),
            ),
        )
        .unwrap();
        write_script(r, "after_install.sh", &format!("id -un > {}\necho \"$HOME $LIFECYCLE_EVENT\" >> {}", out.display(), out.display()));
    });
    let run = host.deploy(&v1, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let who = fs::read_to_string(&out).unwrap();
    let mut lines = who.lines();
    assert_eq!(lines.next(), Some(user));
    assert!(lines.next().unwrap().ends_with(" AfterInstall"), "{who}");

    // A user that does not exist is refused before anything runs.
    let v2 = host.revision("2.0.0", |r| {
        let appspec = fs::read_to_string(r.join("appspec.yml")).unwrap();
        fs::write(
            r.join("appspec.yml"),
            appspec.replace(
                "    - location: scripts/start.sh\n      timeout: 60",
                "    - location: scripts/start.sh\n      timeout: 60\n      runas: nobody-by-that-name",
            ),
        )
        .unwrap();
    });
    let before = fs::read_to_string(host.run_dir().join("stops")).unwrap_or_default();
    let refused = host.deploy(&v2, &[]);
    assert_eq!(refused.code, 2, "{}\n{}", refused.stdout, refused.stderr);
    let message = refused.event("DownloadBundle")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("runs as `nobody-by-that-name`, which does not exist"),
        "{message}"
    );
    assert_eq!(refused.status("ApplicationStop"), "Skipped");
    assert_eq!(
        fs::read_to_string(host.run_dir().join("stops")).unwrap_or_default(),
        before
    );
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A directory any user can write to (for scripts run as another user).
fn host_shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn the_hook_environment_is_codedeploys() {
    let host = Host::new();
    let env_file = host.dir.path().join("env");
    let v1 = host.revision("1.0.0", |r| {
        write_script(
            r,
            "before_install.sh",
            &format!(
                "env > {}\npwd >> {}",
                env_file.display(),
                env_file.display()
            ),
        );
    });
    let run = host.deploy(
        &v1,
        &[
            "--deployment-id",
            "d-ENV000001",
            "--application-name",
            "Shop",
            "--deployment-group",
            "eu-prod",
        ],
    );
    assert_eq!(
        run.code, 1,
        "the rest of the sample needs its run dir: {}",
        run.stdout
    );
    let env = fs::read_to_string(&env_file).unwrap();
    for line in [
        "LIFECYCLE_EVENT=BeforeInstall",
        "DEPLOYMENT_ID=d-ENV000001",
        "APPLICATION_NAME=Shop",
        "DEPLOYMENT_GROUP_NAME=eu-prod",
        "DEPLOYMENT_GROUP_ID=Shop_eu-prod",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in\n{env}");
    }
    assert!(
        !env.contains("agent-own-secret"),
        "the agent's credentials reach no hook"
    );
    assert!(
        !env.contains("BUNDLE_BUCKET"),
        "only S3 revisions have bundle variables"
    );
    assert!(
        env.trim_end().ends_with("d-ENV000001/deployment-archive"),
        "{env}"
    );
}

#[test]
fn bad_bundles_are_refused_before_anything_changes() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |_| {});
    assert_eq!(host.deploy(&v1, &[]).code, 0);
    let stops = || fs::read_to_string(host.run_dir().join("stops")).unwrap_or_default();
    let installed = tree(&host.app_home());
    let before = stops();
    let outside = host.dir.path().join("outside");
    type Tweak = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Tweak, &str)> = vec![
        (
            "windows",
            Box::new(|r: &Path| {
                let windows = "version: 0.0\nos: windows\nfiles:\n  - source: app\n    destination: C:\\inetpub\\app\n";
                fs::write(r.join("appspec.yml"), windows).unwrap();
            }),
            "this agent deploys to Linux hosts",
        ),
        (
            "outside",
            Box::new(move |r: &Path| {
                let a = fs::read_to_string(r.join("appspec.yml")).unwrap();
                fs::write(
                    r.join("appspec.yml"),
                    a.replace(
                        "files:\n",
                        &format!(
                            "files:\n  - source: app/VERSION\n    destination: {}\n",
                            outside.display()
                        ),
                    ),
                )
                .unwrap();
            }),
            "is outside the directories deployments may write to",
        ),
        (
            "missing script",
            Box::new(|r: &Path| fs::remove_file(r.join("scripts/validate.sh")).unwrap()),
            "ValidateService: Script does not exist at specified location: scripts/validate.sh",
        ),
        (
            "invalid appspec",
            Box::new(|r: &Path| {
                let a = fs::read_to_string(r.join("appspec.yml")).unwrap();
                fs::write(
                    r.join("appspec.yml"),
                    a.replace("version: 0.0", "version: 1.0"),
                )
                .unwrap();
            }),
            "appspec.yml:2:10",
        ),
        (
            "no appspec",
            Box::new(|r: &Path| fs::remove_file(r.join("appspec.yml")).unwrap()),
            "the revision has no appspec.yml or appspec.yaml at its root",
        ),
    ];
    for (i, (what, tweak, expected)) in cases.into_iter().enumerate() {
        let bad = host.revision(&format!("9.0.{i}"), |r| tweak(r));
        let run = host.deploy(&bad, &["--rollback-on-failure"]);
        assert_eq!(run.code, 2, "{what}: {}\n{}", run.stdout, run.stderr);
        let message = run.event("DownloadBundle")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(expected), "{what}: {message}");
        assert_eq!(run.status("ApplicationStop"), "Skipped", "{what}");
        assert!(
            run.summary["rollback"].is_null(),
            "{what}: nothing to roll back"
        );
        assert_eq!(
            stops(),
            before,
            "{what}: the running service was not stopped"
        );
        assert_eq!(tree(&host.app_home()), installed, "{what}");
        assert!(
            run.stdout.contains(expected.lines().next().unwrap()),
            "{what}: {}",
            run.stdout
        );
    }
    assert!(!host.dir.path().join("outside").exists());
}

#[test]
fn existing_files_follow_file_exists_behavior() {
    let host = Host::new();
    fs::create_dir_all(host.app_home()).unwrap();
    fs::write(host.app_home().join("VERSION"), "someone else's\n").unwrap();
    let v1 = host.revision("1.0.0", |_| {});
    let refused = host.deploy(&v1, &[]);
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.event("Install")["message"],
        format!(
            "The deployment failed because a specified file already exists at this location: {}",
            host.app_home().join("VERSION").display()
        )
    );
    assert!(
        !host.app_home().join("bin").exists(),
        "a refused install writes nothing"
    );
    let run = host.deploy(&v1, &["--file-exists-behavior", "RETAIN"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.summary["install"]["retained"], 1);
    assert_eq!(
        fs::read_to_string(host.app_home().join("VERSION")).unwrap(),
        "someone else's\n"
    );
    let v2 = host.revision("2.0.0", |_| {});
    let run = host.deploy(&v2, &["--file-exists-behavior", "OVERWRITE"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        fs::read_to_string(host.app_home().join("VERSION")).unwrap(),
        "2.0.0\n"
    );
}

#[test]
fn events_subset_and_revision_retention() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |r| {
        write_script(
            r,
            "before_install.sh",
            "mkdir -p \"$SAMPLE_APP_RUN\"; echo subset",
        )
    });
    let run = host.deploy(&v1, &["--events", "BeforeInstall", "--max-revisions", "2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let names: Vec<_> = run.events().into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, ["DownloadBundle", "BeforeInstall", "Install"]);
    for i in 0..3 {
        let run = host.deploy(
            &v1,
            &[
                "--events",
                "BeforeInstall",
                "--max-revisions",
                "2",
                "--deployment-id",
                &format!("d-KEEP0000{i}"),
            ],
        );
        assert_eq!(run.code, 0, "{}", run.stdout);
    }
    let mut kept: Vec<String> = fs::read_dir(host.root().join("LocalApplication_LocalFleet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["d-KEEP00001", "d-KEEP00002"]);
    let reused = host.deploy(&v1, &["--deployment-id", "d-KEEP00002"]);
    assert_eq!(reused.code, 2);
    assert!(reused.stderr.contains("already used"), "{}", reused.stderr);
}

#[test]
fn archives_deploy_like_directories() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |_| {});
    let archives = host.dir.path().join("archives");
    fs::create_dir_all(&archives).unwrap();
    // A tgz wrapping the revision in one directory, as GitHub tarballs do.
    let tgz = archives.join("app-1.0.0.tgz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(v1.parent().unwrap())
        .arg("1.0.0")
        .status()
        .unwrap();
    assert!(status.success());
    let run = host.deploy(&tgz, &["--deployment-id", "d-TGZ000001"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let bundle = host
        .root()
        .join("LocalApplication_LocalFleet/d-TGZ000001/bundle.tar");
    assert!(bundle.is_file());
    // A zip of the revision's contents.
    let zip = archives.join("app.zip");
    let file = fs::File::create(&zip).unwrap();
    let mut writer = zip::ZipWriter::new(file);
    for entry in walkdir::WalkDir::new(&v1).min_depth(1) {
        let entry = entry.unwrap();
        let name = entry
            .path()
            .strip_prefix(&v1)
            .unwrap()
            .display()
            .to_string();
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.metadata().unwrap().permissions().mode();
        let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
        if entry.file_type().is_dir() {
            writer.add_directory(name, options).unwrap();
        } else {
            writer.start_file(name, options).unwrap();
            std::io::Write::write_all(&mut writer, &fs::read(entry.path()).unwrap()).unwrap();
        }
    }
    writer.finish().unwrap();
    let run = host.deploy(&zip, &["--deployment-id", "d-ZIP000001"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.event("ApplicationStop")["revision"], "d-TGZ000001");
}

/// Hostile archives: each refused, with nothing written outside the deployment root and the
/// running service untouched.
#[test]
fn hostile_archives_are_refused_with_nothing_written_outside() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |_| {});
    assert_eq!(host.deploy(&v1, &[]).code, 0);
    let stops_before = fs::read_to_string(host.run_dir().join("stops")).unwrap_or_default();
    let victim = host.dir.path().join("victim");
    let victim_name = victim.to_str().unwrap().trim_start_matches('/').to_string();
    let appspec = fs::read(v1.join("appspec.yml")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dot-dot",
            tar_with(&appspec, |b| raw_file(b, "../../../../victim", b"x")),
        ),
        (
            "absolute",
            tar_with(&appspec, |b| raw_file(b, &format!("/{victim_name}"), b"x")),
        ),
        (
            "symlink out",
            tar_with(&appspec, |b| {
                link(b, tar::EntryType::Symlink, "out", victim.to_str().unwrap())
            }),
        ),
        (
            "through a symlink",
            tar_with(&appspec, |b| {
                link(b, tar::EntryType::Symlink, "d", ".");
                raw_file(b, "d/../../victim", b"x");
            }),
        ),
        (
            "symlink then write",
            tar_with(&appspec, |b| {
                link(b, tar::EntryType::Symlink, "d", "../..");
                raw_file(b, "d/victim", b"x");
            }),
        ),
        (
            "hard link out",
            tar_with(&appspec, |b| {
                link(b, tar::EntryType::Link, "passwd", "/etc/passwd")
            }),
        ),
        (
            "hard link up",
            tar_with(&appspec, |b| {
                link(b, tar::EntryType::Link, "x", "../../victim")
            }),
        ),
        (
            "device",
            tar_with(&appspec, |b| {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Char);
                header.set_path("null").unwrap();
                header.set_size(0);
                header.set_cksum();
                b.append(&header, std::io::empty()).unwrap();
            }),
        ),
        (
            "zip dot-dot",
            zip_with(&appspec, |z| {
                z.start_file(
                    "../../../../victim",
                    zip::write::SimpleFileOptions::default(),
                )
                .unwrap();
                std::io::Write::write_all(z, b"x").unwrap();
            }),
        ),
        (
            "zip symlink out",
            zip_with(&appspec, |z| {
                z.add_symlink(
                    "out",
                    victim.to_str().unwrap(),
                    zip::write::SimpleFileOptions::default(),
                )
                .unwrap();
            }),
        ),
    ];
    for (what, bytes) in cases {
        let archive = host
            .dir
            .path()
            .join(format!("{}.bundle", what.replace(' ', "-")));
        fs::write(&archive, bytes).unwrap();
        let run = host.deploy(&archive, &[]);
        assert_eq!(run.code, 2, "{what}: {}\n{}", run.stdout, run.stderr);
        let message = run.event("DownloadBundle")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains("refusing the archive"),
            "{what}: {message}"
        );
        assert!(!victim.exists(), "{what}: wrote outside");
        assert_eq!(run.status("ApplicationStop"), "Skipped", "{what}");
        assert_eq!(
            fs::read_to_string(host.run_dir().join("stops")).unwrap_or_default(),
            stops_before,
            "{what}"
        );
        assert_eq!(host.running_version().as_deref(), Some("1.0.0"), "{what}");
    }
}

fn tar_with(appspec: &[u8], add: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_path("appspec.yml").unwrap();
    header.set_size(appspec.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, appspec).unwrap();
    add(&mut builder);
    builder.into_inner().unwrap()
}

/// A file entry whose name is written raw, bypassing the tar crate's own refusal of `..`.
fn raw_file(builder: &mut tar::Builder<Vec<u8>>, name: &str, body: &[u8]) {
    let mut header = tar::Header::new_gnu();
    let field = &mut header.as_old_mut().name;
    field[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, body).unwrap();
}

fn link(builder: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_path(name).unwrap();
    let field = &mut header.as_old_mut().linkname;
    field[..target.len()].copy_from_slice(target.as_bytes());
    header.set_size(0);
    header.set_cksum();
    builder.append(&header, std::io::empty()).unwrap();
}

fn zip_with(
    appspec: &[u8],
    add: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>),
) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file("appspec.yml", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut writer, appspec).unwrap();
    add(&mut writer);
    writer.finish().unwrap().into_inner()
}

/// Uploads a revision to `s3://bucket/key` whose BeforeInstall hook writes the variables
/// `grep` picks from its environment to the returned file.
fn env_dumping_bundle_in_s3(host: &Host, grep: &str, bucket: &str, key: &str) -> PathBuf {
    let env_file = host.dir.path().join("env");
    let v1 = host.revision("1.0.0", |r| {
        write_script(
            r,
            "before_install.sh",
            &format!(
                "mkdir -p \"$SAMPLE_APP_RUN\"; env | grep {grep} > {} || true",
                env_file.display()
            ),
        );
    });
    let tgz = host.dir.path().join("bundle.tgz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&v1)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    common::boto3(&format!(
        "s3 = boto3.client('s3', **kw)\ns3.create_bucket(Bucket='{bucket}')\ns3.upload_file('{}', '{bucket}', '{key}')",
        tgz.display()
    ));
    env_file
}

#[test]
fn an_s3_bundle_sets_the_bundle_variables() {
    let host = Host::new();
    let env_file =
        env_dumping_bundle_in_s3(&host, "^BUNDLE_", "deploy-bundles", "web/app-1.0.0.tgz");
    let summary = host.dir.path().join("s3-summary.json");
    let output = agent()
        .arg("deploy-local")
        .args([
            "--bundle",
            "s3://deploy-bundles/web/app-1.0.0.tgz",
            "--root",
        ])
        .arg(host.root())
        .arg("--allow-destination")
        .arg(host.apps())
        .arg("--summary")
        .arg(&summary)
        .env("SAMPLE_APP_HOME", host.app_home())
        .env("SAMPLE_APP_RUN", host.run_dir())
        .envs(common::aws_env())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let env = fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("BUNDLE_BUCKET=deploy-bundles\n"), "{env}");
    assert!(env.contains("BUNDLE_KEY=web/app-1.0.0.tgz\n"), "{env}");
    assert!(
        env.lines()
            .any(|l| l.starts_with("BUNDLE_ETAG=") && l.len() > 20),
        "{env}"
    );
    assert_eq!(host.running_version().as_deref(), Some("1.0.0"));

    let missing = agent()
        .arg("deploy-local")
        .args(["--bundle", "s3://deploy-bundles/web/nope.tgz", "--root"])
        .arg(host.root())
        .envs(common::aws_env())
        .output()
        .unwrap();
    assert_eq!(
        missing.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&missing.stdout)
    );
    assert!(String::from_utf8_lossy(&missing.stdout).contains("does not exist"));
}

/// Adds hooks to the revision's appspec (`hooks:` is its last section).
fn add_hooks(revision: &Path, hooks: &[(&str, &str)]) {
    let mut appspec = fs::read_to_string(revision.join("appspec.yml")).unwrap();
    for (event, script) in hooks {
        appspec.push_str(&format!("  {event}:\n    - location: scripts/{script}\n"));
    }
    fs::write(revision.join("appspec.yml"), appspec).unwrap();
}

#[test]
fn traffic_hooks_run_around_the_install_from_the_right_revisions() {
    let host = Host::new();
    let trace = host.dir.path().join("trace");
    let traced = |version: &str| {
        host.revision(version, |r| {
            write_script(
                r,
                "traffic.sh",
                &format!(
                    "echo \"$LIFECYCLE_EVENT $(cat \"$(dirname \"$0\")/../app/VERSION\") $DEPLOYMENT_ID\" >> {}",
                    trace.display()
                ),
            );
            add_hooks(
                r,
                &[
                    ("BeforeBlockTraffic", "traffic.sh"),
                    ("AfterBlockTraffic", "traffic.sh"),
                    ("BeforeAllowTraffic", "traffic.sh"),
                    ("AfterAllowTraffic", "traffic.sh"),
                ],
            );
        })
    };
    let v1 = traced("1.0.0");
    let first = host.deploy(&v1, &["--traffic", "--deployment-id", "d-TRAFFIC01"]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let names: Vec<_> = first.events().into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        names,
        [
            "BeforeBlockTraffic",
            "AfterBlockTraffic",
            "ApplicationStop",
            "DownloadBundle",
            "BeforeInstall",
            "Install",
            "AfterInstall",
            "ApplicationStart",
            "ValidateService",
            "BeforeAllowTraffic",
            "AfterAllowTraffic"
        ]
    );
    assert_eq!(first.status("BeforeBlockTraffic"), "Skipped");
    let v2 = traced("2.0.0");
    let second = host.deploy(&v2, &["--traffic", "--deployment-id", "d-TRAFFIC02"]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert_eq!(
        fs::read_to_string(&trace).unwrap(),
        "BeforeAllowTraffic 1.0.0 d-TRAFFIC01\nAfterAllowTraffic 1.0.0 d-TRAFFIC01\n\
         BeforeBlockTraffic 1.0.0 d-TRAFFIC02\nAfterBlockTraffic 1.0.0 d-TRAFFIC02\n\
         BeforeAllowTraffic 2.0.0 d-TRAFFIC02\nAfterAllowTraffic 2.0.0 d-TRAFFIC02\n"
    );
    // Without --traffic the traffic hooks do not run.
    let v3 = traced("3.0.0");
    let third = host.deploy(&v3, &[]);
    assert_eq!(third.code, 0);
    assert!(
        third.summary["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["event"].as_str().unwrap().contains("Traffic"))
    );
}

#[test]
fn application_stop_failures_fail_the_deployment_unless_ignored() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |r| {
        write_script(r, "stop.sh", "echo cannot stop >&2\nexit 7")
    });
    assert_eq!(host.deploy(&v1, &[]).code, 0);
    let v2 = host.revision("2.0.0", |_| {});
    let failed = host.deploy(&v2, &[]);
    assert_eq!(failed.code, 1);
    assert_eq!(failed.status("ApplicationStop"), "Failed");
    assert_eq!(
        failed.event("ApplicationStop")["error_code"],
        "ScriptFailed"
    );
    for later in [
        "BeforeInstall",
        "Install",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ] {
        assert_eq!(failed.status(later), "Skipped", "{later}");
    }
    assert_eq!(host.running_version().as_deref(), Some("1.0.0"));
    if let Some(pid) = host.server_pid() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let ignored = host.deploy(&v2, &["--ignore-application-stop-failures"]);
    assert_eq!(ignored.code, 0, "{}\n{}", ignored.stdout, ignored.stderr);
    assert_eq!(ignored.status("ApplicationStop"), "Failed");
    assert_eq!(ignored.event("ApplicationStop")["ignored"], true);
    assert!(ignored.stdout.contains("(ignored)"), "{}", ignored.stdout);
    assert_eq!(host.running_version().as_deref(), Some("2.0.0"));
}

#[test]
fn permissions_set_owner_group_mode_and_acls_on_what_was_installed() {
    common::require_tool("setfacl", "acl");
    if !nix_is_root() {
        eprintln!("owners need root; this test runs as root in CI");
        return;
    }
    let user = "agentdeploytest";
    let _ = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        ])
        .output();
    let host = Host::new();
    let v1 = host.revision("1.0.0", |r| {
        let appspec = fs::read_to_string(r.join("appspec.yml")).unwrap();
        let home = host.app_home();
        let extra = format!(
            "  - object: {}/bin\n    owner: {user}\n    group: {user}\n    mode: 750\n    acls:\n      - \"u:root:rwx\"\n    type:\n      - file\n",
            home.display()
        );
        fs::write(r.join("appspec.yml"), appspec.replace("hooks:\n", &format!("{extra}hooks:\n"))).unwrap();
    });
    let run = host.deploy(&v1, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    use std::os::unix::fs::MetadataExt;
    let server = host.app_home().join("bin/server.sh");
    let meta = fs::metadata(&server).unwrap();
    let id = |flag: &str| -> u32 {
        String::from_utf8(
            std::process::Command::new("id")
                .args([flag, user])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    };
    assert_eq!(meta.uid(), id("-u"));
    assert_eq!(meta.gid(), id("-g"), "the user's own group");
    let acl = std::process::Command::new("getfacl")
        .arg("-p")
        .arg(&server)
        .output()
        .unwrap();
    let acl = String::from_utf8_lossy(&acl.stdout);
    assert!(acl.contains("user:root:rwx"), "{acl}");
    assert!(
        acl.contains("user::rwx") && acl.contains("group::r-x") && acl.contains("other::---"),
        "{acl}"
    );
    // The bin directory itself is the object: `file` applies to the files inside it only.
    assert_eq!(fs::metadata(host.app_home().join("bin")).unwrap().uid(), 0);
}

#[test]
fn a_deployment_interrupted_by_a_killed_agent_is_reported_by_the_next() {
    let host = Host::new();
    let marker = host.dir.path().join("hook-started");
    let v1 = host.revision("1.0.0", |r| {
        write_script(
            r,
            "before_install.sh",
            &format!(
                "mkdir -p \"$SAMPLE_APP_RUN\"\necho $$ > {}\nexec sleep 60",
                marker.display()
            ),
        );
    });
    let mut child = agent()
        .arg("deploy-local")
        .arg("--bundle")
        .arg(&v1)
        .arg("--root")
        .arg(host.root())
        .arg("--allow-destination")
        .arg(host.apps())
        .args(["--deployment-id", "d-KILLED001"])
        .env("SAMPLE_APP_HOME", host.app_home())
        .env("SAMPLE_APP_RUN", host.run_dir())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        || marker.exists(),
        || "the hook never started".into(),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The hook outlives the agent (its own process group); stop it as an operator would.
    let hook: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    let _ = std::process::Command::new("kill")
        .arg(hook.to_string())
        .status();

    let v2 = host.revision("2.0.0", |_| {});
    let next = host.deploy(&v2, &["--deployment-id", "d-AFTER0001"]);
    assert_eq!(next.code, 0, "{}\n{}", next.stdout, next.stderr);
    let notes = next.summary["notes"].to_string();
    assert!(
        notes.contains("deployment d-KILLED001 of this group was interrupted"),
        "{notes}"
    );
    let killed: Value = serde_json::from_str(
        &fs::read_to_string(
            host.root()
                .join("LocalApplication_LocalFleet/d-KILLED001/summary.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(killed["status"], "Failed");
    assert_eq!(killed["error_code"], "FailedAfterRestart");
    assert!(
        fs::read_dir(host.root().join("ongoing-deployment"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// A deploy-local started in the background, its standard input held by the test.
struct Running {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: PathBuf,
    stderr: PathBuf,
    summary: PathBuf,
}

impl Running {
    /// Waits for the exit, standard input still open until then.
    fn finish(mut self) -> Deploy {
        let status = self.child.wait().unwrap();
        drop(self.stdin.take());
        let summary = fs::read_to_string(&self.summary)
            .ok()
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or(Value::Null);
        Deploy {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
            summary,
        }
    }
}

impl Host {
    /// `deploy`, in the background and with `--control-stdin`: `control` is its first line.
    fn start_controlled(&self, bundle: &Path, extra: &[&str], control: &str) -> Running {
        use std::io::Write;
        let summary = self.dir.path().join("summary.json");
        let stdout = self.dir.path().join("stdout");
        let stderr = self.dir.path().join("stderr");
        let mut child = self
            .deploy_command(bundle, extra, &summary)
            .arg("--control-stdin")
            .stdin(std::process::Stdio::piped())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{control}\n").as_bytes()).unwrap();
        Running {
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
            summary,
        }
    }
}

/// A BeforeInstall that records its pid and its background child's, then waits forever.
fn hanging_before_install(revision: &Path, pids: &Path) {
    write_script(
        revision,
        "before_install.sh",
        &format!(
            "mkdir -p \"$SAMPLE_APP_RUN\"\nsleep 300 &\necho $! >> {p}\necho $$ >> {p}\nwait",
            p = pids.display()
        ),
    );
}

fn wait_for_pids(pids: &Path, count: usize) -> Vec<i32> {
    wait_for(
        Duration::from_secs(20),
        || {
            let found: Vec<i32> = fs::read_to_string(pids)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            (found.len() >= count).then_some(found)
        },
        || "the hook never started".into(),
    )
}

const AFTER_BEFORE_INSTALL: [&str; 4] = [
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

#[test]
fn control_stdin_variables_reach_the_hooks_under_codedeploys_own() {
    let host = Host::new();
    let env_file = host.dir.path().join("env");
    let v1 = host.revision("1.0.0", |r| {
        write_script(
            r,
            "before_install.sh",
            &format!("mkdir -p \"$SAMPLE_APP_RUN\"\nenv > {}", env_file.display()),
        );
    });
    let control = serde_json::json!({"env": {
        "JOB_STAGE": "blue",
        "JOB_TOKEN": "tok-5f1e-never-shown",
        "LIFECYCLE_EVENT": "forged",
        "DEPLOYMENT_ID": "forged",
    }});
    let run = host
        .start_controlled(
            &v1,
            &["--deployment-id", "d-CTRL00001"],
            &control.to_string(),
        )
        .finish();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.summary["status"], "Succeeded");
    let env = fs::read_to_string(&env_file).unwrap();
    for line in [
        "JOB_STAGE=blue",
        "JOB_TOKEN=tok-5f1e-never-shown",
        "LIFECYCLE_EVENT=BeforeInstall",
        "DEPLOYMENT_ID=d-CTRL00001",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in\n{env}");
    }
    assert!(!env.contains("forged"), "{env}");
    let scripts_log = fs::read_to_string(
        host.root()
            .join("LocalApplication_LocalFleet/d-CTRL00001/logs/scripts.log"),
    )
    .unwrap();
    for (what, text) in [
        ("stdout", &run.stdout),
        ("stderr", &run.stderr),
        ("summary", &run.summary.to_string()),
        ("scripts.log", &scripts_log),
    ] {
        assert!(!text.contains("tok-5f1e"), "the job's value is in {what}");
    }

    let bad = host
        .start_controlled(&v1, &[], r#"{"env": {"JOB_TOKEN": 42}}"#)
        .finish();
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--control-stdin"), "{}", bad.stderr);
}

#[test]
fn timeout_stops_the_running_hook_and_ends_the_deployment_timed_out() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |_| {});
    let first = host.deploy(&v1, &[]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let pids = host.dir.path().join("pids");
    let v2 = host.revision("2.0.0", |r| hanging_before_install(r, &pids));
    let started = Instant::now();
    let run = host.deploy(&v2, &["--timeout", "3s", "--rollback-on-failure"]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.summary["status"], "TimedOut", "{:#}", run.summary);
    assert_eq!(
        run.summary["message"],
        "the deployment did not finish within 3s (--timeout); no rollback was started \
         (--rollback-on-failure): the time limit covers the rollback too"
    );
    assert!(run.summary["rollback"].is_null(), "{:#}", run.summary);
    let event = run.event("BeforeInstall");
    assert_eq!(event["status"], "Failed");
    assert_eq!(event["error_code"], "ScriptTimedOut");
    assert_eq!(
        event["message"],
        "Script at specified location: scripts/before_install.sh was stopped: the deployment \
         did not finish within 3s (--timeout)"
    );
    for later in AFTER_BEFORE_INSTALL {
        assert_eq!(run.status(later), "Skipped", "{later}");
    }
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(12),
        "took {took:?}"
    );
    assert!(
        run.stdout
            .contains("TimedOut: the deployment did not finish within 3s")
    );
    std::thread::sleep(Duration::from_millis(300));
    for pid in wait_for_pids(&pids, 2) {
        assert!(
            !alive(pid),
            "process {pid} outlived the deployment's timeout"
        );
    }
}

#[test]
fn the_end_of_standard_input_stops_the_deployment() {
    let host = Host::new();
    let pids = host.dir.path().join("pids");
    let v1 = host.revision("1.0.0", |r| hanging_before_install(r, &pids));
    let mut running = host.start_controlled(&v1, &[], r#"{"env": {}}"#);
    let hook = wait_for_pids(&pids, 2);
    let asked = Instant::now();
    drop(running.stdin.take());
    let run = running.finish();
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.summary["status"], "Stopped", "{:#}", run.summary);
    assert_eq!(
        run.summary["message"],
        "the deployment was stopped (the end of standard input)"
    );
    assert_eq!(run.event("BeforeInstall")["error_code"], "UnknownError");
    for later in AFTER_BEFORE_INSTALL {
        assert_eq!(run.status(later), "Skipped", "{later}");
    }
    std::thread::sleep(Duration::from_millis(300));
    for pid in hook {
        assert!(!alive(pid), "process {pid} outlived the stop");
    }
}

#[test]
fn sigterm_stops_the_deployment_and_its_running_hook() {
    let host = Host::new();
    let pids = host.dir.path().join("pids");
    let v1 = host.revision("1.0.0", |r| hanging_before_install(r, &pids));
    let running = host.start_controlled(&v1, &["--deployment-id", "d-SIGTERM01"], "{}");
    let hook = wait_for_pids(&pids, 2);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = running.finish();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.summary["status"], "Stopped", "{:#}", run.summary);
    assert_eq!(
        run.summary["message"],
        "the deployment was stopped (SIGTERM)"
    );
    std::thread::sleep(Duration::from_millis(300));
    for pid in hook {
        assert!(!alive(pid), "process {pid} outlived the stop");
    }
    // A stopped deployment is finished, not interrupted: nothing is left marked ongoing.
    assert!(
        fs::read_dir(host.root().join("ongoing-deployment"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn an_s3_bundle_is_fetched_with_the_role_and_hooks_never_get_it() {
    let host = Host::new();
    let env_file = env_dumping_bundle_in_s3(&host, "^AWS_", "role-bundles", "app.tgz");
    let deploy = |extra_env: &[(&str, &str)]| {
        agent()
            .arg("deploy-local")
            .args(["--bundle", "s3://role-bundles/app.tgz", "--root"])
            .arg(host.root())
            .arg("--allow-destination")
            .arg(host.apps())
            .args([
                "--role-arn",
                "arn:aws:iam::222222222222:role/deploy",
                "--external-id",
                "ext-1",
                "--session-tag",
                "team=web",
            ])
            .env("SAMPLE_APP_HOME", host.app_home())
            .env("SAMPLE_APP_RUN", host.run_dir())
            .envs(common::aws_env())
            .envs(extra_env.iter().copied())
            .output()
            .unwrap()
    };
    // With STS out of reach, the fetch cannot start: the role really is assumed for it.
    let unreachable = deploy(&[
        ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9"),
        ("AWS_MAX_ATTEMPTS", "1"),
    ]);
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "cannot connect to AWS for the bundle: cannot assume role arn:aws:iam::222222222222:role/deploy"
        ),
        "{stderr}"
    );
    let output = deploy(&[]);
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let env = fs::read_to_string(&env_file).unwrap();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert!(!env.contains(name), "{name} reached a hook:\n{env}");
    }
}

/// A directory bundle follows the rule archives do: a symlink pointing out of the revision
/// (absolute, or up past its root) and a FIFO are refused before anything changes; a link
/// that stays inside is deployed as a link.
#[test]
fn directory_bundles_follow_the_archive_rule() {
    let host = Host::new();
    let v1 = host.revision("1.0.0", |_| {});
    assert_eq!(host.deploy(&v1, &[]).code, 0);
    let victim = host.dir.path().join("victim");
    fs::write(&victim, "secret").unwrap();
    let victim_path = victim.to_str().unwrap().to_string();
    type Plant = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Plant)> = vec![
        (
            "absolute symlink",
            Box::new(move |d: &Path| {
                std::os::unix::fs::symlink(&victim_path, d.join("out")).unwrap()
            }),
        ),
        (
            "symlink up",
            Box::new(|d: &Path| {
                std::os::unix::fs::symlink("../../../../../victim", d.join("out")).unwrap()
            }),
        ),
        (
            "fifo",
            Box::new(|d: &Path| {
                nix::unistd::mkfifo(
                    &d.join("pipe"),
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                )
                .unwrap()
            }),
        ),
    ];
    for (i, (what, tweak)) in cases.into_iter().enumerate() {
        let revision = host.revision(&format!("2.0.{i}"), |d| tweak(d));
        let run = host.deploy(&revision, &[]);
        assert_eq!(run.code, 2, "{what}: {}\n{}", run.stdout, run.stderr);
        let message = run.event("DownloadBundle")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("refusing the bundle"), "{what}: {message}");
        assert_eq!(run.status("ApplicationStop"), "Skipped", "{what}");
        assert_eq!(host.running_version().as_deref(), Some("1.0.0"), "{what}");
    }
    let inside = host.revision("3.0.0", |d| {
        std::os::unix::fs::symlink("appspec.yml", d.join("alias")).unwrap();
    });
    let run = host.deploy(&inside, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(host.running_version().as_deref(), Some("3.0.0"));
}
