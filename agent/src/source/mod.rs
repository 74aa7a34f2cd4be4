//! Getting and describing a build's source.

pub mod git;
