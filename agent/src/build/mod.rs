//! The phase engine: runs a parsed buildspec on an [`Executor`](crate::exec::Executor) with
//! CodeBuild's phase rules, and describes the result in the summary JSON.

pub mod artifacts;
pub mod batch;
pub mod cache;
mod engine;
pub mod env;
pub mod reports;
pub mod shell;
mod summary;

pub use engine::{Build, Stop};
pub use summary::{
    ArtifactRecord, BatchMember, BuildStatus, PhaseRecord, PhaseStatus, ReportRecord, Summary,
};

use std::path::PathBuf;
use std::time::Duration;

use buildspec::Buildspec;

/// Where and how artifacts are uploaded to S3, as a CodeBuild project's artifact settings
/// say it: packaging NONE (a folder of objects) or ZIP, namespace NONE or BUILD_ID.
#[derive(Debug, Clone)]
pub struct S3Artifacts {
    pub client: aws_sdk_s3::Client,
    pub url: crate::aws::s3::S3Url,
    pub zip: bool,
    pub build_id_namespace: bool,
    pub put: crate::aws::s3::PutOptions,
}

/// Everything the engine needs to run one build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// `local:<uuid>` for run-local.
    pub build_id: String,
    pub buildspec: Buildspec,
    /// Where the buildspec came from, for the log.
    pub buildspec_path: String,
    /// The primary source on the host.
    pub source_dir: PathBuf,
    /// The image, or `None` on the host executor.
    pub image: Option<String>,
    /// Variables from `--env-file` and then `-e`, later entries winning.
    pub env: Vec<(String, String)>,
    /// Secret variables: set like `env`, and masked in every output.
    pub secrets: Vec<(String, String)>,
    /// `env.parameter-store` and `env.secrets-manager`, resolved: above the buildspec's
    /// variables, below the job's; masked in every output.
    pub resolved: Vec<(String, String)>,
    /// AWS credentials and region for the build's own AWS calls; masked.
    pub aws_env: Vec<(String, String)>,
    /// The whole build's time limit.
    pub timeout: Option<Duration>,
    /// Where artifacts land (and reports, always); `None` collects none.
    pub artifacts_dir: Option<PathBuf>,
    /// Artifacts go to S3 instead of `artifacts_dir`.
    pub artifacts_s3: Option<S3Artifacts>,
    /// The build log also goes to S3, under `logs/` of this URL.
    pub logs_s3: Option<(aws_sdk_s3::Client, crate::aws::s3::S3Url)>,
    /// Where `cache.paths` are kept between builds (with S3, where entries are staged);
    /// `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The cache lives in S3 under this URL, one `tar`+zstd object per key.
    pub cache_s3: Option<(aws_sdk_s3::Client, crate::aws::s3::S3Url)>,
    /// `CODEBUILD_SOURCE_REPO_URL` for sources that are not a local checkout.
    pub source_url: Option<String>,
    /// `CODEBUILD_INITIATOR`.
    pub initiator: String,
}
