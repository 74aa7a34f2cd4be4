//! Getting and describing a build's source.

pub mod git;
pub mod s3;
pub mod unpack;
