//! Flags of `agent deploy-local`, after codedeploy-local's.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub struct DeployLocalArgs {
    /// The revision: a directory, a .zip/.tar/.tgz file, or s3://bucket/key[?versionId=…].
    #[arg(short = 'l', long, value_name = "BUNDLE", default_value = ".")]
    pub bundle: String,
    /// `APPLICATION_NAME` for the hooks.
    #[arg(
        short = 'a',
        long,
        value_name = "NAME",
        default_value = "LocalApplication"
    )]
    pub application_name: String,
    /// `DEPLOYMENT_GROUP_NAME` for the hooks; with the application, it names the group whose
    /// revisions, last good revision and installed files are kept together.
    #[arg(short = 'g', long, value_name = "NAME", default_value = "LocalFleet")]
    pub deployment_group: String,
    /// `DEPLOYMENT_GROUP_ID` (default: made from the application and group names).
    #[arg(long, value_name = "ID")]
    pub deployment_group_id: Option<String>,
    /// `DEPLOYMENT_ID` (default: a new `d-XXXXXXXXX`).
    #[arg(long, value_name = "ID")]
    pub deployment_id: Option<String>,
    /// Run only these events (comma-separated); DownloadBundle and Install always run.
    #[arg(short = 'e', long, value_name = "EVENT,…", value_delimiter = ',')]
    pub events: Option<Vec<String>>,
    /// For files already at a destination that the group's last deployment did not install;
    /// the appspec's own `file_exists_behavior` wins.
    #[arg(short = 'b', long, value_enum, default_value_t = Behavior::Disallow)]
    pub file_exists_behavior: Behavior,
    /// The deployment root (default /var/lib/agent/deployment-root as root, else
    /// ~/.local/state/agent/deployment-root).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Failures of ApplicationStop, BeforeBlockTraffic and AfterBlockTraffic do not fail the
    /// deployment.
    #[arg(long)]
    pub ignore_application_stop_failures: bool,
    /// After a failure, redeploy the group's last successful revision.
    #[arg(long)]
    pub rollback_on_failure: bool,
    /// Run the traffic hooks (BeforeBlockTraffic, AfterBlockTraffic, BeforeAllowTraffic,
    /// AfterAllowTraffic), as for a deployment group behind a load balancer.
    #[arg(long)]
    pub traffic: bool,
    /// The appspec's file name in the revision (default appspec.yml, then appspec.yaml).
    #[arg(long, value_name = "NAME")]
    pub appspec: Option<String>,
    /// Directories files may be installed under (repeatable; replaces the defaults /opt,
    /// /srv, /var/www, /var/app, /usr/local, /home, /tmp, /var/tmp).
    #[arg(long = "allow-destination", value_name = "DIR")]
    pub allow_destination: Vec<PathBuf>,
    /// Install no files at all, only run hooks: an appspec with `files` fails. What the
    /// daemon passes when its config's `deploy.allowed_destinations` is empty.
    #[arg(long = "no-destinations", conflicts_with = "allow_destination")]
    pub no_destinations: bool,
    /// Revisions kept per deployment group.
    #[arg(long, value_name = "N", default_value_t = crate::deploy::DEFAULT_MAX_REVISIONS,
          value_parser = clap::value_parser!(usize))]
    pub max_revisions: usize,
    /// How long a script's stdout and stderr may stay open after it exits (a background
    /// process holding them) before the event fails: `30s`, `2m`; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_wait)]
    pub output_wait: Duration,
    /// Write the JSON summary here.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Only the events' results, not the scripts' output.
    #[arg(short, long)]
    pub quiet: bool,
    /// AWS profile, for S3 bundles.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// AWS region, for S3 bundles.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// A role to assume for fetching an S3 bundle; repeat for a chain (base → first →
    /// second). Hooks never get its credentials.
    #[arg(long = "role-arn", value_name = "ARN")]
    pub role_arn: Vec<String>,
    /// The external id the roles' trust policies require.
    #[arg(long = "external-id", value_name = "ID", requires = "role_arn")]
    pub external_id: Option<String>,
    /// A session tag for the assumed roles. Repeatable.
    #[arg(long = "session-tag", value_name = "KEY=VALUE", requires = "role_arn",
          value_parser = crate::run_local::parse_key_value)]
    pub session_tag: Vec<(String, String)>,
    /// The whole run's time limit, rollback included: `90m`, `30s`, `2h`; a bare number is
    /// minutes. Past it the running hook is stopped, and the deployment ends TimedOut.
    #[arg(long, value_name = "DURATION", value_parser = crate::run_local::parse_timeout)]
    pub timeout: Option<Duration>,
    /// The daemon's channel: a first line of JSON `{"env": {…}}` on standard input
    /// (variables for the hooks that must not be in argv), and the end of standard input
    /// as a stop.
    #[arg(long = "control-stdin", hide = true)]
    pub control_stdin: bool,
}

/// What the daemon hands a deployment on standard input: run-local's `Control` less the
/// secrets, which deploy-local cannot mask in the hooks' output.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

impl Control {
    /// Reads and checks the first line of standard input.
    pub fn read() -> Result<Control, String> {
        Control::check(crate::control::read(Self::SHAPE)?)
    }

    const SHAPE: &'static str = "`{\"env\": {NAME: \"VALUE\"}}`";

    #[cfg(test)]
    fn parse(line: &str) -> Result<Control, String> {
        Control::check(crate::control::parse(line, Self::SHAPE)?)
    }

    fn check(control: Control) -> Result<Control, String> {
        for (name, value) in &control.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!(
                    "--control-stdin: `{}` is not a variable name",
                    name.escape_debug()
                ));
            }
            if value.contains('\0') {
                return Err(format!(
                    "--control-stdin: the value of {name} holds a NUL byte, which no environment can"
                ));
            }
        }
        Ok(control)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Behavior {
    Disallow,
    Overwrite,
    Retain,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => crate::run_local::parse_timeout(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        let control = Control::parse("{\"env\": {\"STAGE\": \"prod\"}}\n").unwrap();
        assert_eq!(control.env["STAGE"], "prod");
        assert!(Control::parse("{}\n").unwrap().env.is_empty());
        for (bad, says) in [
            ("", "ended before"),
            ("{\"env\": {\"A\": 1}}", "shape"),
            ("{\"secrets\": {\"A\": \"x\"}}", "shape"),
            ("{\"env\": {\"A=B\": \"x\"}}", "not a variable name"),
            ("{\"env\": {\"A\": \"x\\u0000\"}}", "NUL"),
            ("env=1", "not JSON"),
        ] {
            let message = Control::parse(bad).unwrap_err();
            assert!(message.contains(says), "{bad}: {message}");
        }
        // A value never reaches the message, even when it is the wrong type.
        let message = Control::parse("{\"env\": \"hunter2\"}").unwrap_err();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn tags() {
        assert_eq!(
            crate::run_local::parse_key_value("team=web"),
            Ok(("team".into(), "web".into()))
        );
        assert!(crate::run_local::parse_key_value("=web").is_err());
        assert!(crate::run_local::parse_key_value("web").is_err());
    }
}
