//! The CodeBuild `buildspec.yml` model (versions 0.1 and 0.2).

mod batch;
mod commands;
mod decode;
mod on_failure;
mod secret_ref;

pub use batch::{Batch, BatchEnv, BatchKind, BatchTask, BuildFanout, BuildMatrix, MatrixDynamic};
pub use on_failure::OnFailure;
pub use secret_ref::SecretRef;

pub(crate) use decode::decode;

use serde::Serialize;

use crate::decode::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Version {
    /// Every command in a fresh shell.
    #[serde(rename = "0.1")]
    V0_1,
    /// One shell for the whole build: `cd` and variables carry across commands and phases.
    #[serde(rename = "0.2")]
    V0_2,
}

#[derive(Debug, Clone, Serialize)]
pub struct Buildspec {
    pub version: Version,
    pub run_as: Option<Spanned<String>>,
    pub env: Env,
    pub proxy: Proxy,
    pub batch: Option<Batch>,
    pub phases: Phases,
    pub reports: Vec<ReportGroup>,
    pub artifacts: Option<Artifacts>,
    pub cache: Option<Cache>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shell {
    Bash,
    Sh,
    PowerShell,
    Cmd,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Env {
    /// `None` means the image's default, `/bin/sh` on Linux.
    pub shell: Option<Shell>,
    pub variables: Vec<Variable>,
    pub parameter_store: Vec<Variable>,
    pub secrets_manager: Vec<SecretVariable>,
    pub exported_variables: Vec<Spanned<String>>,
    pub git_credential_helper: bool,
}

/// `NAME: value` from `env.variables` (the literal value) or `env.parameter-store`
/// (the parameter name).
#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    pub name: Spanned<String>,
    pub value: Spanned<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretVariable {
    pub name: Spanned<String>,
    pub reference: Spanned<SecretRef>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Proxy {
    pub upload_artifacts: bool,
    pub logs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PhaseName {
    Install,
    PreBuild,
    Build,
    PostBuild,
}

impl PhaseName {
    pub const ALL: [PhaseName; 4] = [
        PhaseName::Install,
        PhaseName::PreBuild,
        PhaseName::Build,
        PhaseName::PostBuild,
    ];

    /// The key in the buildspec: `pre_build`.
    pub fn key(self) -> &'static str {
        match self {
            PhaseName::Install => "install",
            PhaseName::PreBuild => "pre_build",
            PhaseName::Build => "build",
            PhaseName::PostBuild => "post_build",
        }
    }

    /// The name CodeBuild reports: `PRE_BUILD`.
    pub fn codebuild_name(self) -> &'static str {
        match self {
            PhaseName::Install => "INSTALL",
            PhaseName::PreBuild => "PRE_BUILD",
            PhaseName::Build => "BUILD",
            PhaseName::PostBuild => "POST_BUILD",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    pub install: Option<Phase>,
    pub pre_build: Option<Phase>,
    pub build: Option<Phase>,
    pub post_build: Option<Phase>,
}

impl Phases {
    pub fn get(&self, name: PhaseName) -> Option<&Phase> {
        match name {
            PhaseName::Install => self.install.as_ref(),
            PhaseName::PreBuild => self.pre_build.as_ref(),
            PhaseName::Build => self.build.as_ref(),
            PhaseName::PostBuild => self.post_build.as_ref(),
        }
    }

    fn slot(&mut self, name: PhaseName) -> &mut Option<Phase> {
        match name {
            PhaseName::Install => &mut self.install,
            PhaseName::PreBuild => &mut self.pre_build,
            PhaseName::Build => &mut self.build,
            PhaseName::PostBuild => &mut self.post_build,
        }
    }

    /// The phases present, in the order CodeBuild runs them.
    pub fn iter(&self) -> impl Iterator<Item = (PhaseName, &Phase)> {
        PhaseName::ALL
            .into_iter()
            .filter_map(|name| self.get(name).map(|p| (name, p)))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub run_as: Option<Spanned<String>>,
    pub on_failure: Option<Spanned<OnFailure>>,
    /// `install` only: runtime → version, in file order.
    pub runtime_versions: Vec<Variable>,
    pub commands: Vec<Command>,
    pub finally: Vec<Command>,
}

/// One command as the shell receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    pub text: String,
    /// 1-based line in the buildspec, for logs that point back to it.
    pub line: usize,
    #[serde(skip)]
    pub span: crate::source::Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportFormat {
    CucumberJson,
    JunitXml,
    NunitXml,
    Nunit3Xml,
    TestngXml,
    VisualStudioTrx,
    CloverXml,
    CoberturaXml,
    JacocoXml,
    SimpleCov,
}

impl ReportFormat {
    pub const ALL: [(&'static str, ReportFormat); 10] = [
        ("CUCUMBERJSON", ReportFormat::CucumberJson),
        ("JUNITXML", ReportFormat::JunitXml),
        ("NUNITXML", ReportFormat::NunitXml),
        ("NUNIT3XML", ReportFormat::Nunit3Xml),
        ("TESTNGXML", ReportFormat::TestngXml),
        ("VISUALSTUDIOTRX", ReportFormat::VisualStudioTrx),
        ("CLOVERXML", ReportFormat::CloverXml),
        ("COBERTURAXML", ReportFormat::CoberturaXml),
        ("JACOCOXML", ReportFormat::JacocoXml),
        ("SIMPLECOV", ReportFormat::SimpleCov),
    ];

    /// Coverage formats, as opposed to test results.
    pub fn is_coverage(self) -> bool {
        matches!(
            self,
            ReportFormat::CloverXml
                | ReportFormat::CoberturaXml
                | ReportFormat::JacocoXml
                | ReportFormat::SimpleCov
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportGroup {
    /// A report group name or ARN; may hold `$VARIABLES` expanded at build time.
    pub name: Spanned<String>,
    pub files: Vec<Spanned<String>>,
    pub base_directory: Option<Spanned<String>>,
    pub discard_paths: bool,
    pub file_format: ReportFormat,
}

#[derive(Debug, Clone, Serialize)]
pub struct Artifacts {
    /// `primary`, or the identifier of a secondary artifact.
    pub identifier: String,
    pub files: Vec<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub discard_paths: bool,
    pub base_directory: Option<Spanned<String>>,
    pub exclude_paths: Vec<Spanned<String>>,
    pub enable_symlinks: bool,
    pub s3_prefix: Option<Spanned<String>>,
    pub secondary: Vec<Artifacts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheAction {
    /// Restore only, never save.
    Restore,
    /// Save only, never restore.
    Save,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cache {
    pub key: Option<Spanned<String>>,
    pub fallback_keys: Vec<Spanned<String>>,
    /// `None`: restore, then save.
    pub action: Option<CacheAction>,
    pub paths: Vec<Spanned<String>>,
}
