//! `env.secrets-manager` references: `secret-id:json-key:version-stage:version-id`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    /// A secret name, or a full ARN for a secret in another account.
    pub secret_id: String,
    /// A key inside a JSON secret; `None` means the whole `SecretString`.
    pub json_key: Option<String>,
    pub version_stage: Option<String>,
    pub version_id: Option<String>,
}

impl SecretRef {
    /// Parses a reference. An `arn:` reference keeps its first seven colon-separated fields
    /// (`arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`) as the secret id.
    pub fn parse(text: &str) -> Result<SecretRef, String> {
        let text = text.trim();
        let fields: Vec<&str> = text.split(':').collect();
        let (secret_id, rest) = if text.starts_with("arn:") {
            if fields
                .get(2)
                .is_some_and(|service| *service != "secretsmanager")
                || fields.get(5).is_some_and(|kind| *kind != "secret")
            {
                return Err(format!(
                    "`{text}` is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
                ));
            }
            if fields.len() < 7 {
                return Err(format!(
                    "`{text}` is an incomplete ARN: expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"
                ));
            }
            if fields[..7].iter().skip(1).any(|f| f.is_empty()) {
                return Err(format!("`{text}` has an empty field in its ARN"));
            }
            (fields[..7].join(":"), &fields[7..])
        } else {
            (fields[0].to_string(), &fields[1..])
        };
        if secret_id.is_empty() {
            return Err("the secret id (before the first `:`) is empty".to_string());
        }
        if rest.len() > 3 {
            return Err(format!(
                "`{text}` has {} fields after the secret id; at most 3 are allowed (json-key:version-stage:version-id)",
                rest.len()
            ));
        }
        let field = |i: usize| {
            rest.get(i)
                .filter(|f| !f.is_empty())
                .map(|f| (*f).to_string())
        };
        let reference = SecretRef {
            secret_id,
            json_key: field(0),
            version_stage: field(1),
            version_id: field(2),
        };
        if reference.version_stage.is_some() && reference.version_id.is_some() {
            return Err("give a version stage or a version id, not both".to_string());
        }
        Ok(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, key: Option<&str>, stage: Option<&str>, vid: Option<&str>) -> SecretRef {
        SecretRef {
            secret_id: id.into(),
            json_key: key.map(Into::into),
            version_stage: stage.map(Into::into),
            version_id: vid.map(Into::into),
        }
    }

    #[test]
    fn every_documented_form() {
        assert_eq!(
            SecretRef::parse("TestSecret"),
            Ok(r("TestSecret", None, None, None))
        );
        assert_eq!(
            SecretRef::parse("TestSecret:MY_SECRET_VAR"),
            Ok(r("TestSecret", Some("MY_SECRET_VAR"), None, None))
        );
        assert_eq!(
            SecretRef::parse("name::AWSPREVIOUS"),
            Ok(r("name", None, Some("AWSPREVIOUS"), None))
        );
        assert_eq!(
            SecretRef::parse("name:key::0f1e2d3c"),
            Ok(r("name", Some("key"), None, Some("0f1e2d3c")))
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
        assert_eq!(SecretRef::parse(arn), Ok(r(arn, None, None, None)));
        assert_eq!(
            SecretRef::parse(&format!("{arn}:password:AWSCURRENT")),
            Ok(r(arn, Some("password"), Some("AWSCURRENT"), None))
        );
        let cn = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x";
        assert_eq!(SecretRef::parse(cn), Ok(r(cn, None, None, None)));
    }

    #[test]
    fn bad_references_say_why() {
        assert!(SecretRef::parse("").is_err());
        assert!(SecretRef::parse(":key").is_err());
        assert!(SecretRef::parse("a:b:c:d:e").is_err());
        assert!(SecretRef::parse("a:b:AWSCURRENT:vid").is_err());
        assert!(SecretRef::parse("arn:aws:ssm:us-east-1:1:parameter:x").is_err());
        assert!(SecretRef::parse("arn:aws:secretsmanager:us-east-1").is_err());
    }
}
