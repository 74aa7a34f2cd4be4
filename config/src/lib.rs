//! Configuration and job messages of `agent`: the daemon's TOML config, the JobSpec JSON
//! messages its job sources deliver, the allow-lists that decide what a job may do, and
//! the JSON Schemas published for both formats.

pub mod allow;
pub mod config;
mod diag;
pub mod files;
pub mod jobspec;
mod json_index;
pub mod schema;
pub mod units;
pub mod values;

pub use config::{Config, ConfigError, Reload, live_changes, load, parse};
pub use diag::Problem;
pub use jobspec::{JobSpec, JobSpecError, PolicyViolation, Resolved, check_policy};
pub use schema::{config_schema, jobspec_schema};
