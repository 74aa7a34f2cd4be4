//! The CodeDeploy `appspec.yml` model for EC2 and on-premises deployments.

mod decode;

pub(crate) use decode::decode;

use serde::Serialize;

use crate::decode::Spanned;

#[derive(Debug, Clone, Serialize)]
pub struct AppSpec {
    pub os: Os,
    pub files: Vec<FileMapping>,
    /// `None` leaves it to the deployment (DISALLOW unless told otherwise); a value here
    /// takes precedence over the deployment's option.
    pub file_exists_behavior: Option<FileExistsBehavior>,
    pub permissions: Vec<Permission>,
    /// Events with scripts, in file order.
    pub hooks: Vec<Hook>,
}

impl AppSpec {
    /// The scripts of `event`, in the order they run; empty when it has none.
    pub fn scripts(&self, event: &LifecycleEvent) -> &[HookScript] {
        self.hooks
            .iter()
            .find(|h| &h.event == event)
            .map_or(&[], |h| h.scripts.as_slice())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    Linux,
    Windows,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileMapping {
    /// Relative to the revision root; `/` is the whole revision.
    pub source: Spanned<String>,
    /// Absolute.
    pub destination: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FileExistsBehavior {
    /// Fail the deployment.
    Disallow,
    Overwrite,
    /// Keep the file already there.
    Retain,
}

impl FileExistsBehavior {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "DISALLOW" => Some(FileExistsBehavior::Disallow),
            "OVERWRITE" => Some(FileExistsBehavior::Overwrite),
            "RETAIN" => Some(FileExistsBehavior::Retain),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionType {
    /// Files directly inside `object`.
    File,
    /// Directories anywhere under `object`.
    Directory,
}

#[derive(Debug, Clone, Serialize)]
pub struct Permission {
    pub object: Spanned<String>,
    /// Glob of names to apply to; `**` (the default) is everything.
    pub pattern: String,
    pub except: Vec<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Octal mode bits, e.g. `0o644`.
    pub mode: Option<u32>,
    pub acls: Vec<String>,
    pub context: Option<SelinuxContext>,
    pub types: Vec<PermissionType>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelinuxContext {
    pub user: Option<String>,
    pub r#type: String,
    pub range: Option<String>,
}

/// A lifecycle event that can run scripts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum LifecycleEvent {
    ApplicationStop,
    BeforeInstall,
    AfterInstall,
    ApplicationStart,
    ValidateService,
    BeforeBlockTraffic,
    AfterBlockTraffic,
    BeforeAllowTraffic,
    AfterAllowTraffic,
    /// A custom event, run only when a deployment names it.
    Custom(String),
}

impl LifecycleEvent {
    pub const SCRIPTABLE: [LifecycleEvent; 9] = [
        LifecycleEvent::ApplicationStop,
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::ApplicationStart,
        LifecycleEvent::ValidateService,
        LifecycleEvent::BeforeBlockTraffic,
        LifecycleEvent::AfterBlockTraffic,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
    ];

    /// Events the agent or the service performs itself; an appspec cannot script them.
    pub const RESERVED: [&'static str; 4] =
        ["DownloadBundle", "Install", "BlockTraffic", "AllowTraffic"];

    pub fn name(&self) -> &str {
        match self {
            LifecycleEvent::ApplicationStop => "ApplicationStop",
            LifecycleEvent::BeforeInstall => "BeforeInstall",
            LifecycleEvent::AfterInstall => "AfterInstall",
            LifecycleEvent::ApplicationStart => "ApplicationStart",
            LifecycleEvent::ValidateService => "ValidateService",
            LifecycleEvent::BeforeBlockTraffic => "BeforeBlockTraffic",
            LifecycleEvent::AfterBlockTraffic => "AfterBlockTraffic",
            LifecycleEvent::BeforeAllowTraffic => "BeforeAllowTraffic",
            LifecycleEvent::AfterAllowTraffic => "AfterAllowTraffic",
            LifecycleEvent::Custom(name) => name,
        }
    }

    pub fn from_name(name: &str) -> LifecycleEvent {
        LifecycleEvent::SCRIPTABLE
            .into_iter()
            .find(|e| e.name() == name)
            .unwrap_or_else(|| LifecycleEvent::Custom(name.to_string()))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    pub event: LifecycleEvent,
    pub scripts: Vec<HookScript>,
}

/// CodeDeploy's default and its limit for all scripts of one event together.
pub const MAX_EVENT_SECONDS: u32 = 3600;

#[derive(Debug, Clone, Serialize)]
pub struct HookScript {
    /// Relative to the revision root.
    pub location: Spanned<String>,
    /// As written; [`HookScript::timeout_seconds`] applies the default.
    pub timeout: Option<u32>,
    pub runas: Option<String>,
    /// The agent's undocumented `sudo: true`.
    pub sudo: bool,
}

impl HookScript {
    pub fn timeout_seconds(&self) -> u32 {
        self.timeout.unwrap_or(MAX_EVENT_SECONDS)
    }
}
