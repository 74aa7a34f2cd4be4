//! The `agent` runner: the command line and the parts behind each command.

pub mod cli;
pub mod exit;
pub mod validate;
