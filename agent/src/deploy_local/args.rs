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
