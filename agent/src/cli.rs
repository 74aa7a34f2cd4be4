//! The command line: flags and subcommands, dispatched to the module that does the work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit;
use crate::validate::{self, Format, KindArg};

/// `0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-04)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("AGENT_COMMIT"),
    ", built ",
    env!("AGENT_BUILD_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version = VERSION,
    about = "Runs CodeBuild buildspecs in containers and CodeDeploy appspecs on hosts",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check buildspec and appspec files: every problem with file:line:column and a hint.
    ///
    /// Exits 0 when every file is valid (warnings allowed), 2 when any is not.
    Validate {
        /// Files to check; `-` reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// What the files are; `auto` decides from their content.
        #[arg(long, value_enum, default_value_t = KindArg::Auto)]
        kind: KindArg,
        /// `human` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Colors in human output.
        #[arg(long, value_enum, default_value_t = Color::Auto)]
        color: Color,
    },
    /// Run a buildspec locally, in a container (or on the host), as CodeBuild would.
    ///
    /// The source directory is `-s DIR`; without it, the current directory, or the
    /// buildspec's own directory when the buildspec lies outside the current directory. The
    /// build runs in a copy of the source (`--bind` builds in it), and logs, artifacts and
    /// cache go to $XDG_STATE_HOME/agent/<dir>-<hash>/ (~/.local/state/agent/…), never into
    /// the source.
    ///
    /// Exits 0 when the build succeeded, 1 when it failed, timed out or was stopped, 2 on
    /// bad input (nothing ran), 3 when the agent could not run it (no Docker, no image) or
    /// lost its container mid-build (FAULT).
    #[command(name = "run-local")]
    RunLocal(Box<crate::run_local::RunLocalArgs>),
    /// Deploy a revision to this host, running its appspec's lifecycle hooks as the
    /// CodeDeploy agent would.
    ///
    /// Exits 0 when the deployment succeeded, 1 when it failed (even if the rollback
    /// succeeded), 2 on bad input (nothing on the host changed), 3 when the agent could not
    /// run it.
    #[command(name = "deploy-local")]
    DeployLocal(Box<crate::deploy_local::DeployLocalArgs>),
    /// Run as a daemon: take jobs from the config's sources and run them.
    ///
    /// SIGTERM drains (no new jobs; running ones finish within `agent.drain_timeout`, then
    /// stop and go back to their source); a second SIGTERM or SIGQUIT stops them at once;
    /// SIGHUP reloads the config.
    Daemon {
        /// The config file.
        #[arg(
            long,
            short,
            value_name = "FILE",
            default_value = "/etc/agent/agent.toml"
        )]
        config: PathBuf,
        /// `plain` lines (for journald) or one JSON object per line (for log shippers).
        /// Default: the config's `agent.log_format`, else `plain`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Work with the daemon's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with JobSpec job messages.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Show what a running daemon is doing (from its `/status.json`).
    Status {
        /// The daemon's metrics address, `host:port`; default: read from the config.
        #[arg(long, value_name = "ADDRESS")]
        address: Option<String>,
        /// The config file to read the address from.
        #[arg(
            long,
            short,
            value_name = "FILE",
            default_value = "/etc/agent/agent.toml"
        )]
        config: PathBuf,
        /// Print the JSON as the daemon serves it.
        #[arg(long)]
        json: bool,
    },
    /// Print the agent's version.
    Version,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file: every problem with file:line:column and a hint.
    ///
    /// Exits 0 when it is valid, 2 when it is not.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file, or of JobSpec messages.
    Schema {
        #[arg(value_enum, default_value_t = SchemaKind::Config)]
        kind: SchemaKind,
    },
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Check JobSpec files as the daemon checks the messages it receives: every problem
    /// with file:line:column and a hint.
    ///
    /// With `--config`, also whether that agent's config allows each job (role, image,
    /// privileged mode, timeout). Exits 0 when every file is valid, 2 when one is not.
    Check {
        /// Files to check; `-` reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// An agent's config file to hold the jobs against.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaKind {
    Config,
    Jobspec,
}

/// `--color`: of `agent validate` and `agent run-local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    /// On standard output.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        self.enabled_on(std::io::stdout().is_terminal())
    }

    /// On a stream that is a terminal or not: `auto` colors a terminal unless `NO_COLOR`
    /// is set (to anything but the empty string, as no-color.org says).
    pub fn enabled_on(self, terminal: bool) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
}

/// Parses the command line and runs the command; the exit code follows DESIGN.md.
pub fn run() -> ExitCode {
    // Builds on the host run as this user: without this, a build could read the agent's
    // environment, memory and open files (its credentials, the daemon's control channel)
    // through /proc. Children get the attribute back when they exec.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::debug!(error = %e, "cannot make the agent non-dumpable");
    }
    // Before anything else: `--secret NAME=VALUE` values leave the command line.
    crate::run_local::hide::reexec_without_secret_values();
    let cli = Cli::parse();
    match &cli.command {
        // The daemon starts its log once it has read its config, which may choose the format.
        Command::Daemon { .. } => {}
        _ => init_tracing("warn", false),
    }
    let status = match cli.command {
        Command::Validate {
            files,
            kind,
            format,
            color,
        } => validate::run(&files, kind, format, color.enabled()),
        Command::RunLocal(args) => crate::run_local::run(*args),
        Command::DeployLocal(args) => crate::deploy_local::run(*args),
        Command::Daemon { config, log_format } => {
            crate::daemon::run(&config, log_format.map(|f| f == LogFormat::Json))
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match agent_config::load(&file) {
            Ok(_) => {
                println!("{}: valid", file.display());
                exit::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                exit::BAD_INPUT
            }
        },
        Command::Config {
            command: ConfigCommand::Schema { kind },
        } => {
            match kind {
                SchemaKind::Config => println!("{}", agent_config::config_schema()),
                SchemaKind::Jobspec => println!("{}", agent_config::jobspec_schema()),
            }
            exit::SUCCESS
        }
        Command::Job {
            command: JobCommand::Check { files, config },
        } => crate::job_check::run(&files, config.as_deref()),
        Command::Status {
            address,
            config,
            json,
        } => crate::daemon::status(address, &config, json),
        Command::Version => {
            println!("agent {VERSION}");
            exit::SUCCESS
        }
    };
    ExitCode::from(status)
}

/// The agent's own diagnostics (not build output) go to standard error, filtered by
/// `AGENT_LOG`: a bare level (`AGENT_LOG=debug`) is for the agent's own code, its
/// dependencies staying at `warn`; `AGENT_LOG=trace` shows everything; a filter with
/// targets (`AGENT_LOG=agent::exec=trace,hyper=debug`) is used as written.
pub(crate) fn init_tracing(default_level: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(agent_log_directives(
        std::env::var("AGENT_LOG").ok().as_deref(),
        default_level,
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// The filter directives `AGENT_LOG` stands for.
fn agent_log_directives(value: Option<&str>, default_level: &str) -> String {
    let value = value.map(str::trim).unwrap_or("");
    match value.to_ascii_lowercase().as_str() {
        "" => default_level.to_string(),
        "trace" => "trace".to_string(),
        level @ ("error" | "warn" | "info" | "debug") => {
            let deps = if level == "error" { "error" } else { "warn" };
            format!("{deps},agent={level},buildspec={level},agent_config={level}")
        }
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::agent_log_directives;

    #[test]
    fn a_bare_level_is_for_the_agent_only() {
        assert_eq!(agent_log_directives(None, "warn"), "warn");
        assert_eq!(
            agent_log_directives(Some("debug"), "warn"),
            "warn,agent=debug,buildspec=debug,agent_config=debug"
        );
        assert_eq!(agent_log_directives(Some("trace"), "warn"), "trace");
        assert_eq!(
            agent_log_directives(Some("hyper=debug,agent=trace"), "warn"),
            "hyper=debug,agent=trace"
        );
    }
}
