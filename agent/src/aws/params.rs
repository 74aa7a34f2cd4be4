//! `env.parameter-store` and `env.secrets-manager`: values fetched before the build starts,
//! every one of them a secret to mask.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use buildspec::buildspec::{SecretVariable, Variable};

/// GetParameters takes at most ten names a call.
const BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("Parameter Store: {names} not found; create them, or check the names and --region")]
    MissingParameters { names: String },
    #[error("Parameter Store: cannot get {names}: {message}")]
    Parameters { names: String, message: String },
    #[error("Secrets Manager: cannot get secret {secret} for {variable}: {message}")]
    Secret {
        variable: String,
        secret: String,
        message: String,
    },
    #[error("Secrets Manager: secret {secret} has no JSON key `{key}` (for {variable})")]
    MissingKey {
        variable: String,
        secret: String,
        key: String,
    },
}

/// Resolves `env.parameter-store`: variable → value, decrypted, in buildspec order.
pub async fn parameters(
    config: &SdkConfig,
    vars: &[Variable],
) -> Result<Vec<(String, String)>, ParamError> {
    if vars.is_empty() {
        return Ok(Vec::new());
    }
    let client = aws_sdk_ssm::Client::new(config);
    let mut names: Vec<&str> = vars.iter().map(|v| v.value.value.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut missing = Vec::new();
    for chunk in names.chunks(BATCH) {
        let output = client
            .get_parameters()
            .set_names(Some(chunk.iter().map(|s| (*s).to_string()).collect()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| ParamError::Parameters {
                names: chunk.join(", "),
                message: e.message().map_or_else(|| e.to_string(), str::to_string),
            })?;
        missing.extend(output.invalid_parameters.unwrap_or_default());
        for parameter in output.parameters.unwrap_or_default() {
            if let (Some(name), Some(value)) = (parameter.name, parameter.value) {
                values.insert(name, value);
            }
        }
    }
    if !missing.is_empty() {
        return Err(ParamError::MissingParameters {
            names: missing.join(", "),
        });
    }
    Ok(vars
        .iter()
        .filter_map(|v| {
            let value = values.get(v.value.value.as_str())?;
            Some((v.name.value.clone(), value.clone()))
        })
        .collect())
}

/// Resolves `env.secrets-manager` with the whole reference: secret id or ARN, JSON key,
/// version stage or version id.
pub async fn secrets(
    config: &SdkConfig,
    vars: &[SecretVariable],
) -> Result<Vec<(String, String)>, ParamError> {
    if vars.is_empty() {
        return Ok(Vec::new());
    }
    let client = aws_sdk_secretsmanager::Client::new(config);
    let mut out = Vec::with_capacity(vars.len());
    for var in vars {
        let reference = &var.reference.value;
        let failed = |message: String| ParamError::Secret {
            variable: var.name.value.clone(),
            secret: reference.secret_id.clone(),
            message,
        };
        let output = client
            .get_secret_value()
            .secret_id(&reference.secret_id)
            .set_version_stage(reference.version_stage.clone())
            .set_version_id(reference.version_id.clone())
            .send()
            .await
            .map_err(|e| failed(e.message().map_or_else(|| e.to_string(), str::to_string)))?;
        let text = match (output.secret_string, output.secret_binary) {
            (Some(text), _) => text,
            (None, Some(blob)) => String::from_utf8_lossy(blob.as_ref()).into_owned(),
            (None, None) => return Err(failed("the secret has no value".into())),
        };
        let value = match &reference.json_key {
            None => text,
            Some(key) => json_key(&text, key).ok_or_else(|| ParamError::MissingKey {
                variable: var.name.value.clone(),
                secret: reference.secret_id.clone(),
                key: key.clone(),
            })?,
        };
        out.push((var.name.value.clone(), value));
    }
    Ok(out)
}

/// A key of a JSON secret: strings as they are, other values as their JSON text.
fn json_key(text: &str, key: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    match value.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::json_key;

    #[test]
    fn json_keys() {
        let text = r#"{"user":"admin","port":5432,"tls":true}"#;
        assert_eq!(json_key(text, "user").as_deref(), Some("admin"));
        assert_eq!(json_key(text, "port").as_deref(), Some("5432"));
        assert_eq!(json_key(text, "missing"), None);
        assert_eq!(json_key("not json", "user"), None);
    }
}
