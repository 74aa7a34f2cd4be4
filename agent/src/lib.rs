//! The `agent` runner: the command line and the parts behind each command.

pub mod aws;
pub mod build;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod deploy;
pub mod deploy_local;
pub mod exec;
pub mod exit;
pub mod job_check;
pub mod logs;
pub mod run_local;
pub mod runtime;
pub mod source;
pub mod validate;
