//! The host's CA certificates, which every https call to AWS needs: checked before the SDK
//! is set up, so a host without them gets the fix instead of a TLS failure on every call
//! (or, in a debug build, a panic inside the SDK).

/// Ok when AWS will be reached over plain http (a local stand-in such as moto) or the host
/// has CA certificates; otherwise what to install. `endpoint` is the configured endpoint
/// URL, if any; `AWS_ENDPOINT_URL` counts too.
pub fn require(endpoint: Option<&str>) -> Result<(), String> {
    let from_env = std::env::var("AWS_ENDPOINT_URL").ok();
    let endpoint = endpoint.or(from_env.as_deref());
    if endpoint.is_some_and(|e| e.trim_start().to_ascii_lowercase().starts_with("http://")) {
        return Ok(());
    }
    let found = rustls_native_certs::load_native_certs();
    if !found.certs.is_empty() {
        return Ok(());
    }
    Err(missing_message(&found.errors))
}

fn missing_message(errors: &[rustls_native_certs::Error]) -> String {
    let looked = match (
        std::env::var("SSL_CERT_FILE"),
        std::env::var("SSL_CERT_DIR"),
    ) {
        (Ok(file), _) => format!("SSL_CERT_FILE={file}"),
        (_, Ok(dir)) => format!("SSL_CERT_DIR={dir}"),
        _ => "the system's certificate store (/etc/ssl/certs)".to_string(),
    };
    let detail = errors
        .first()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    format!(
        "no CA certificates found in {looked}{detail}: AWS cannot be reached over https. Install them (Debian/Ubuntu: `apt-get install ca-certificates`; RHEL/Amazon Linux: `dnf install ca-certificates`), or point SSL_CERT_FILE at a PEM bundle"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_http_endpoint_needs_no_certificates() {
        assert_eq!(require(Some("http://127.0.0.1:5000")), Ok(()));
        assert_eq!(require(Some(" HTTP://localhost")), Ok(()));
    }

    #[test]
    fn the_message_names_the_fix() {
        let message = missing_message(&[]);
        assert!(
            message.contains("apt-get install ca-certificates"),
            "{message}"
        );
        assert!(message.contains("SSL_CERT_FILE"), "{message}");
    }
}
