//! Exit statuses shared by the commands (see DESIGN.md: 0 success, 1 build failed,
//! 2 bad input, 3 the agent could not run).

/// The files are valid.
pub const SUCCESS: u8 = 0;
/// Bad input: an invalid buildspec or appspec, bad flags, an unreadable file. Nothing ran.
pub const BAD_INPUT: u8 = 2;
