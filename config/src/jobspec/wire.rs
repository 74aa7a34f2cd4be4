//! The JobSpec message as written: strings where the checks need to explain a bad value,
//! and one flat table per section so every field can be pointed at.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::values::Scalar;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireJob {
    #[serde(rename = "version")]
    pub _version: serde_json::Value,
    pub id: String,
    pub kind: String,
    pub source: WireSource,
    pub buildspec: Option<WireBuildspec>,
    pub image: Option<String>,
    pub privileged: Option<bool>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: WireSecrets,
    pub role: Option<WireRole>,
    pub artifacts: Option<WireArtifacts>,
    pub cache: Option<WireCache>,
    pub timeout: Option<Scalar>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub notify: Option<WireNotify>,
    pub deploy: Option<WireDeploy>,
}

/// Every source type's fields in one table; which apply is checked by `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireSource {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub depth: Option<i64>,
    pub submodules: Option<bool>,
    pub credentials_secret: Option<String>,
    pub files: Option<BTreeMap<String, String>>,
    pub sha256: Option<String>,
}

impl WireSource {
    pub fn fields_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut add = |name, present: bool| {
            if present {
                set.push(name);
            }
        };
        add("url", self.url.is_some());
        add("ref", self.git_ref.is_some());
        add("depth", self.depth.is_some());
        add("submodules", self.submodules.is_some());
        add("credentials_secret", self.credentials_secret.is_some());
        add("files", self.files.is_some());
        add("sha256", self.sha256.is_some());
        set
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireBuildspec {
    pub path: Option<String>,
    pub inline: Option<String>,
    pub s3: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireSecrets {
    #[serde(default)]
    pub secrets_manager: BTreeMap<String, String>,
    #[serde(default)]
    pub parameter_store: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireRole {
    pub arn: Option<String>,
    pub external_id: Option<String>,
    pub environment: Option<String>,
    #[serde(default)]
    pub session_tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireArtifacts {
    pub s3: Option<String>,
    pub packaging: Option<String>,
    pub namespace: Option<String>,
    pub kms_key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireCache {
    pub s3: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireNotify {
    pub webhook: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireDeploy {
    pub application_name: String,
    pub deployment_group: String,
    pub appspec: Option<String>,
    pub file_exists_behavior: Option<String>,
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub rollback_on_failure: bool,
    #[serde(default)]
    pub traffic: bool,
    #[serde(default)]
    pub ignore_application_stop_failures: bool,
}
