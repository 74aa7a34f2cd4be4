//! A job's secrets, printed by its build in the forms a build prints them, reach none of the
//! daemon's sinks: the job's log, its result (stored and announced), the webhook, the
//! status page while it runs, and the daemon's own log (journald's view).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{Daemon, http_get, http_server, serial, uuid_like};
use serde_json::json;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What must not appear in any sink: the value, each of its lines of 4 characters or more,
/// and the middle of its base64 at each alignment (compared with line breaks removed).
fn forbidden(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    out.extend(secret.lines().filter(|l| l.len() >= 4).map(str::to_string));
    for prefix in ["", "x", "xy"] {
        let encoded = base64(format!("{prefix}{secret}").as_bytes());
        out.push(encoded[4..encoded.len() - 4].to_string());
    }
    out
}

fn assert_clean(sink: &str, text: &str, secrets: &[String]) {
    let flat: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    for secret in secrets {
        for form in forbidden(secret) {
            assert!(
                !text.contains(&form) && !flat.contains(&form),
                "{sink} holds {form:?}:\n{text}"
            );
        }
    }
}

#[test]
fn job_secrets_reach_no_sink_of_the_daemon_in_any_form() {
    let _serial = serial();
    let unique = &uuid_like()[..10];
    // 200 bytes with non-ASCII, `/`, `+` and spaces; and a PEM-like key of many lines.
    let mut db = format!("pä55 wörd/{unique}+");
    while db.len() < 200 {
        db.push_str("Zq8kPmXvLw9yT4");
    }
    let db: String = db.chars().take(190).collect();
    let pem_body: Vec<String> = (0..40)
        .map(|i| format!("{unique}{i:02}").repeat(6)[..64].to_string())
        .collect();
    let pem = format!(
        "-----BEGIN TEST KEY-----\n{}\n-----END TEST KEY-----",
        pem_body.join("\n")
    );
    common::boto3(&format!(
        "boto3.client('ssm', **kw).put_parameter(Name='/{unique}/db', Value={db:?}, Type='SecureString')\n\
         boto3.client('secretsmanager', **kw).create_secret(Name='{unique}/pem', SecretString={pem:?})"
    ));
    let (hook_url, seen) = http_server(b"ok".to_vec());
    let mut daemon = Daemon::new(&format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[notifications]\nwebhook = \"{hook_url}/hook\"\n",
        common::moto()
    ));
    daemon.launch();
    let commands = [
        r#"echo "raw=$DB""#,
        r#"printf '%s' "$DB" | base64"#,
        r#"printf 'x%s' "$DB" | base64 -w 64"#,
        r#"printf 'xy%s' "$PEM" | base64"#,
        r#"echo "$PEM""#,
        r#"echo "$PEM" | sed -n 7p"#,
        r#"export LEAK="$DB""#,
        "sleep 4",
        "echo printed-all",
    ];
    let buildspec = format!(
        "version: 0.2\nenv:\n  exported-variables: [LEAK]\nphases:\n  build:\n    commands:\n{}\n",
        commands
            .iter()
            .map(|c| format!("      - {}", serde_json::to_string(c).unwrap()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    daemon.submit(
        "secrets-all-sinks",
        &json!({
            "version": 1, "id": "secrets-all-sinks", "kind": "build",
            "source": {"type": "inline", "files": {"buildspec.yml": buildspec}},
            "secrets": {
                "parameter_store": {"DB": format!("/{unique}/db")},
                "secrets_manager": {"PEM": format!("{unique}/pem")}
            }
        }),
    );
    // The status page, read while the job runs.
    let pages = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..20 {
        pages
            .lock()
            .unwrap()
            .push(http_get(daemon.port, "/status.json"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let result = daemon.result("secrets-all-sinks", Duration::from_secs(120));
    assert_eq!(result["status"], "SUCCEEDED", "{result:#}");
    let log = fs::read_to_string(result["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("printed-all"), "{log}");
    assert!(log.contains("raw=***"), "{log}");
    assert_eq!(result["exported_variables"]["LEAK"], "***", "{result:#}");
    common::wait_until(
        Duration::from_secs(30),
        || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|e| e.contains("job.finished"))
        },
        || format!("no job.finished: {:?}", seen.lock().unwrap()),
    );
    let secrets = [db.clone(), pem.clone()];
    assert_clean("the job's log", &log, &secrets);
    assert_clean("the result", &result.to_string(), &secrets);
    assert_clean("the webhooks", &seen.lock().unwrap().join("\n"), &secrets);
    assert_clean(
        "the status page",
        &pages.lock().unwrap().join("\n"),
        &secrets,
    );
    assert_clean("the daemon's log", &daemon.log(), &secrets);
}
