//! The command line: flags and subcommands, dispatched to the module that does the work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit;
use crate::validate::{self, Format, KindArg};

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
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
    /// Exits 0 when the build succeeded, 1 when it failed, timed out or was stopped, 2 on
    /// bad input (nothing ran), 3 when the agent could not run it (no Docker, no image).
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
    /// Print the agent's version.
    Version,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
            }
        }
    }
}

/// Parses the command line and runs the command; the exit code follows DESIGN.md.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let status = match cli.command {
        Command::Validate {
            files,
            kind,
            format,
            color,
        } => validate::run(&files, kind, format, color.enabled()),
        Command::RunLocal(args) => crate::run_local::run(*args),
        Command::DeployLocal(args) => crate::deploy_local::run(*args),
        Command::Version => {
            println!("agent {}", env!("CARGO_PKG_VERSION"));
            exit::SUCCESS
        }
    };
    ExitCode::from(status)
}

/// The agent's own diagnostics (not build output) go to standard error, filtered by
/// `AGENT_LOG` (e.g. `AGENT_LOG=debug`, `AGENT_LOG=agent::exec=trace`); warnings by default.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
