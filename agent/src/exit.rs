//! Exit statuses shared by the commands, as DESIGN.md documents them.

/// The build succeeded, or the files are valid.
pub const SUCCESS: u8 = 0;
/// The build failed, timed out or was stopped.
pub const FAILED: u8 = 1;
/// Bad input: an invalid buildspec or appspec, bad flags, an unreadable file. Nothing ran.
pub const BAD_INPUT: u8 = 2;
/// The agent could not run the build (no Docker engine, image missing): says how to fix it.
pub const CANNOT_RUN: u8 = 3;
