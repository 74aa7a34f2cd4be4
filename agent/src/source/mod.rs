//! Getting and describing a build's source.

pub mod git;
pub mod git_fetch;
pub mod https;
pub mod local;
pub mod s3;
pub mod unpack;
