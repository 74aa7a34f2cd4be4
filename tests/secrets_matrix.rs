//! Ways a secret can leak, each checked against every sink: the terminal (stdout and
//! stderr), the log file and the summary JSON. Every vector prints a marker, so a vector
//! that printed nothing cannot pass for one that was masked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use common::{Exec, Project, run_local};

/// Needs JSON escaping (`"`, `\`), URL encoding (`/`, `+`, `=`, `&`) and is long enough
/// for every base64 alignment.
const TOKEN: &str = r#"Zq8"kP/2+mX=v&Lw\9yT4"#;
/// Plain, so that it can be written literally in a buildspec.
const SECOND: &str = "plainSecondSecret42";
/// Comes from a --secret-file.
const THIRD: &str = "thirdFromAFile77";

/// Each vector's command; each prints its marker (`V01:` …) with the secret in some form.
const BUILD: &[&str] = &[
    r#"echo "V01: $TOKEN""#,
    r#"echo "V02: $TOKEN" >&2"#,
    r#"printf 'V03: '; printf '%s' "$TOKEN" | head -c 5; sleep 0.2; printf '%s' "$TOKEN" | tail -c +6; echo"#,
    r#"printf 'V04: '; printf '%s\n' "$TOKEN" | fold -w1 | while IFS= read -r c; do printf '%s' "$c"; sleep 0.01; done; echo"#,
    r#"printf '%s' "$TOKEN" | base64 -w0 | sed 's/^/V05: /'; echo"#,
    r#"printf 'x%s' "$TOKEN" | base64 -w0 | sed 's/^/V06: /'; echo"#,
    r#"printf 'xy%s' "$TOKEN" | base64 -w0 | sed 's/^/V07: /'; echo"#,
    r#"python3 -c 'import os, urllib.parse; print("V08:", urllib.parse.quote(os.environ["TOKEN"], safe=""))'"#,
    r#"python3 -c 'import os, json; print("V09:", json.dumps({"t": os.environ["TOKEN"]}))'"#,
    r#"(set -x; : "V10 $TOKEN") 2>&1"#,
    r#"ls "/nonexistent/V11-$TOKEN" 2>&1 || true"#,
    r#"export LEAK="V12-$TOKEN""#,
    r#"echo "V13: plainSecondSecret42""#,
    r#"printf 'V14: %s' "$TOKEN""#,
    r#"head -c 65530 /dev/zero | tr '\000' a; printf '%s V15\n' "$TOKEN""#,
    r#"echo "V16: $TOKEN$TOKEN""#,
    r#"for i in 1 2 3; do echo "V17o: $TOKEN"; echo "V17e: $TOKEN" >&2; done"#,
    r#"printf '%s' "$TOKEN" > leak.txt; printf 'V20: '; cat leak.txt; echo"#,
    r#"env | grep '^TOKEN=' | sed 's/^/V21: /'"#,
    r#"echo "V22: $THIRD""#,
    r#"echo "V23: $(printf '%s' "$TOKEN" | rev | rev)""#,
    r#"printf 'V24: %s\r%s\n' "$TOKEN" "$SECOND""#,
];

const FINALLY: &[&str] = &[r#"echo "V18: $TOKEN""#];

/// Fails the phase on purpose, so that the phase message (which holds the command text)
/// is a sink too.
const POST_BUILD: &[&str] = &[r#"echo V19 plainSecondSecret42 && false"#];

/// The buildspec, every command a block scalar so that no shell quoting meets YAML's.
fn buildspec() -> String {
    let block = |commands: &[&str]| -> String {
        commands
            .iter()
            .map(|c| format!("      - |-\n        {c}\n"))
            .collect()
    };
    format!(
        "version: 0.2\nenv:\n  shell: bash\n  exported-variables:\n    - LEAK\nphases:\n  build:\n    commands:\n{}    finally:\n{}  post_build:\n    commands:\n{}artifacts:\n  name: V25-$SECOND\n  files:\n    - leak.txt\n",
        block(BUILD),
        block(FINALLY),
        block(POST_BUILD)
    )
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The forms of `secret` that must appear nowhere: itself, JSON- and URL-escaped, and the
/// part of its base64 that does not depend on its neighbours, at each alignment.
fn forbidden(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_string(),
        serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        url_encode(secret),
    ];
    for offset in 0..3 {
        let mut padded = vec![b'x'; offset];
        padded.extend_from_slice(secret.as_bytes());
        let encoded = base64(&padded);
        let skip = [0, 4, 4][offset];
        let stable = padded.len() / 3 * 4;
        forms.push(encoded[skip..stable].to_string());
    }
    forms
}

#[test]
fn no_secret_reaches_any_sink_in_any_form() {
    let p = Project::new(&buildspec());
    p.write("secrets.env", &format!("THIRD={THIRD}\n"));
    let run = run_local(
        &p,
        Exec::Host,
        &[
            "--secret",
            &format!("TOKEN={TOKEN}"),
            "--secret",
            &format!("SECOND={SECOND}"),
            "--secret-file",
            p.path().join("secrets.env").to_str().unwrap(),
        ],
    );
    // V19 fails the post_build phase on purpose; its message is a sink too.
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let build_id = run.summary["build_id"].as_str().unwrap().to_string();
    let log = std::fs::read_to_string(p.log_file(&build_id)).unwrap();
    let summary = run.summary.to_string();
    let sinks = [
        ("stdout", run.stdout.as_str()),
        ("stderr", run.stderr.as_str()),
        ("log file", log.as_str()),
        ("summary", summary.as_str()),
    ];
    for secret in [TOKEN, SECOND, THIRD] {
        for form in forbidden(secret) {
            for (sink, text) in sinks {
                assert!(
                    !text.contains(&form),
                    "{sink} holds `{form}` (a form of {secret}):\n{text}"
                );
            }
        }
    }
    // Each vector ran and printed, masked.
    let vectors = [
        "V01", "V02", "V03", "V04", "V05", "V06", "V07", "V08", "V09", "V10", "V11", "V13", "V14",
        "V15", "V16", "V17o", "V17e", "V18", "V19", "V20", "V21", "V22", "V23", "V24",
    ];
    for marker in vectors {
        let line = log
            .lines()
            .find(|l| l.contains(marker) && !l.contains("Running command"))
            .unwrap_or_else(|| panic!("{marker} printed nothing:\n{log}"));
        assert!(line.contains("***"), "{marker} is not masked: {line}");
    }
    assert_eq!(run.summary["exported_variables"]["LEAK"], "V12-***");
    let message = run.phase("POST_BUILD").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("V19 ***"), "{message}");
    // V25: an artifact named after a secret variable.
    let names: Vec<&str> = run.summary["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["V25-***"], "{}", run.summary);
}

/// An STS stand-in that refuses every call with a message echoing the request's
/// credentials, as a verbose service or a debugging proxy might; returns its URL.
fn echoing_sts(secret: &str, token: &str) -> String {
    let xml = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized: signed with {secret}, token {token}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    );
    common::daemon::http_server_answering(
        "403 Forbidden",
        "Content-Type: text/xml\r\n",
        xml.into_bytes(),
    )
    .0
}

#[test]
fn a_failed_assume_role_message_does_not_show_the_callers_secrets() {
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYcallerKEY";
    const TOKEN: &str = "IQoJb3JpZ2luX2VjEFsessionTOKENcaller0042";
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo never\n");
    let summary = p.dir.path().join("summary.json");
    let out = common::agent()
        .args(["run-local", "--executor", "host", "--role-arn"])
        .arg("arn:aws:iam::123456789012:role/deploy")
        .arg("--summary")
        .arg(&summary)
        .current_dir(p.dir.path())
        .env("AWS_ENDPOINT_URL", echoing_sts(SECRET, TOKEN))
        .env("AWS_ACCESS_KEY_ID", "ASIACALLERKEY0000001")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", TOKEN)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot assume role"), "{stderr}");
    // The message is there, with the secrets hidden in it.
    assert!(stderr.contains("signed with ***, token ***"), "{stderr}");
    let written = std::fs::read_to_string(&summary).unwrap();
    for sink in [stderr.as_ref(), stdout.as_ref(), written.as_str()] {
        for secret in [SECRET, TOKEN] {
            for form in forbidden(secret) {
                assert!(!sink.contains(&form), "`{form}` leaked:\n{sink}");
            }
        }
    }
}

/// A value of `len` bytes that needs JSON and URL escaping (`"`, `\`, `/`, `+`, `=`, `&`,
/// space) and has no `*` (a mask's neighbours could rebuild a value with `*`).
fn sized_secret(len: usize, seed: u64) -> String {
    const CHARS: &[u8] = b"Zq8\"kP/2+mX=v&Lw\\9yT4 a%b?c#d<e>f;g@h:iABCDEFGHJ0123456789";
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            CHARS[(state >> 33) as usize % CHARS.len()] as char
        })
        .collect()
}

/// The secrets of the encodings matrix: the sizes around base64's 57-byte line, a long one
/// and a non-ASCII one (with an astral character, for JSON's surrogate pairs).
fn matrix_secrets() -> Vec<(&'static str, String)> {
    vec![
        ("S20", sized_secret(20, 1)),
        ("S57", sized_secret(57, 2)),
        ("S58", sized_secret(58, 3)),
        ("S200", sized_secret(200, 4)),
        ("S3000", sized_secret(3000, 5)),
        ("UNI", "pässwörd/€ geheim😀x\"y".to_string()),
    ]
}

/// Writes every encoded form of every secret into `forms/<secret>_<form>` with Python's
/// own encoders, as a build would produce them; returns, per secret, the unwrapped forms
/// that must appear in no sink.
fn write_forms(p: &Project, secrets: &[(&str, String)]) -> serde_json::Value {
    const SCRIPT: &str = r#"
import base64, json, os, re, sys, urllib.parse
out = {}
os.makedirs("forms", exist_ok=True)
def wrap(text, width, eol):
    return eol.join(text[i:i + width] for i in range(0, len(text), width)) + eol
def lower_hex(text):
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)
for name in sys.argv[1:]:
    s = os.environ[name]
    b = s.encode()
    forms = {
        "quote": urllib.parse.quote(s),
        "quoteplus": urllib.parse.quote_plus(s),
        "quotelower": lower_hex(urllib.parse.quote(s, safe="")),
        "jsonascii": json.dumps(s),
        "jsonupper": re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), json.dumps(s)),
        "jsonplain": json.dumps(s, ensure_ascii=False),
        "jsonslash": json.dumps(s).replace("/", "\\/"),
    }
    files = dict(forms)
    files["b76o0"] = base64.encodebytes(b).decode()
    files["b64o1"] = wrap(base64.b64encode(b"x" + b + b"tail").decode(), 64, "\n")
    files["b64crlfo2"] = wrap(base64.b64encode(b"xy" + b).decode(), 64, "\r\n")
    files["b76o2"] = base64.encodebytes(b"xy" + b + b"t").decode()
    files["urlsafeo1"] = base64.urlsafe_b64encode(b"x" + b).decode()
    for form, text in files.items():
        with open(f"forms/{name}_{form}", "w", newline="") as f:
            f.write(text)
    out[name] = [v.strip('"') for v in forms.values()]
json.dump(out, sys.stdout)
"#;
    let mut command = std::process::Command::new("python3");
    command.arg("-c").arg(SCRIPT).current_dir(p.path());
    for (name, value) in secrets {
        command.arg(name).env(name, value);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The base64 characters only `secret` determines, at each offset, both alphabets.
fn base64_cores(secret: &str) -> Vec<String> {
    let mut cores = Vec::new();
    for offset in 0..3 {
        let mut padded = vec![b'x'; offset];
        padded.extend_from_slice(secret.as_bytes());
        let encoded = base64(&padded);
        let skip = [0, 2, 3][offset];
        let stable = padded.len() * 8 / 6;
        cores.push(encoded[skip..stable].to_string());
        cores.push(encoded[skip..stable].replace('+', "-").replace('/', "_"));
    }
    cores
}

/// Every encoded form (JSON, URL, base64 wrapped at 76 and 64 with LF and CRLF, at offsets
/// 0, 1 and 2, URL-safe) of secrets of 20 to 3,000 bytes and a non-ASCII one, printed by
/// the build on each executor, reaches no sink: the terminal (on docker: `--json-logs`),
/// the log file, the S3 log (on the host, in moto), the summary.
#[test]
fn encoded_forms_of_every_size_reach_no_sink_on_either_executor() {
    let secrets = matrix_secrets();
    let names: Vec<&str> = secrets.iter().map(|(n, _)| *n).collect();
    let mut commands = vec![
        // Each file, behind its name as a marker.
        r#"for f in forms/*; do printf '%s: ' "${f#forms/}"; cat "$f"; echo; done"#.to_string(),
    ];
    for name in &names {
        // The build's own base64, wrapped at 76, at offset 2.
        commands.push(format!(
            r#"printf 'TOOL_{name}: '; printf 'xy%s' "${name}" | base64"#
        ));
    }
    let block: String = commands
        .iter()
        .map(|c| format!("      - |-\n        {c}\n"))
        .collect();
    let spec = format!("version: 0.2\nphases:\n  build:\n    commands:\n{block}");
    for exec in [Exec::Host, Exec::Docker] {
        let docker = matches!(exec, Exec::Docker);
        let p = Project::new(&spec);
        let forms = write_forms(&p, &secrets);
        let args: Vec<String> = secrets
            .iter()
            .flat_map(|(n, v)| ["--secret".to_string(), format!("{n}={v}")])
            .chain(docker.then(|| "--json-logs".to_string()))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // On the host the log goes to S3 (moto) too.
        let (run, bucket) = if docker {
            (run_local(&p, exec, &args), None)
        } else {
            let bucket = format!("matrix-{}", std::process::id());
            common::boto3(&format!(
                "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"
            ));
            let summary = p.path().join(".summary.json");
            let output = common::agent()
                .args(["run-local", "--executor", "host", "--summary"])
                .arg(&summary)
                .arg("--source")
                .arg(p.path())
                .args(["--logs", &format!("s3://{bucket}/ci")])
                .args(&args)
                .envs(common::aws_env())
                .output()
                .unwrap();
            (common::finish(output, &summary), Some(bucket))
        };
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let build_id = run.summary["build_id"].as_str().unwrap().to_string();
        let s3_log = bucket.map_or_else(String::new, |bucket| {
            common::boto3(&format!(
                "import gzip, sys\nb = boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='ci/logs/{build_id}.log')['Body'].read()\nsys.stdout.write(gzip.decompress(b).decode())"
            ))
        });
        if !docker {
            assert!(s3_log.contains("TOOL_S20: "), "{s3_log}");
        }
        let log = std::fs::read_to_string(p.log_file(&build_id)).unwrap();
        // JSON lines hold the text escaped: read it back from the records.
        let terminal = if docker {
            run.stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|r| r["line"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            run.stdout.clone()
        };
        let summary = run.summary.to_string();
        let sinks = [
            ("terminal", terminal.as_str()),
            ("stderr", run.stderr.as_str()),
            ("log file", log.as_str()),
            ("S3 log", s3_log.as_str()),
            ("summary", summary.as_str()),
        ];
        let flat = |t: &str| t.replace(['\r', '\n'], "");
        for (name, value) in &secrets {
            let mut plain: Vec<String> = vec![value.clone()];
            plain.extend(
                forms[name]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string()),
            );
            for (sink, text) in sinks {
                for form in &plain {
                    assert!(
                        !text.contains(form.as_str()),
                        "{} {sink} holds `{form}` (a form of {name}):\n{text}",
                        if docker { "docker" } else { "host" }
                    );
                }
                let text = flat(text);
                for core in base64_cores(value) {
                    assert!(
                        !text.contains(&core),
                        "{} {sink} holds `{core}` (base64 of {name})",
                        if docker { "docker" } else { "host" }
                    );
                }
            }
        }
        // Every form was printed, masked.
        let printed: Vec<String> = std::fs::read_dir(p.path().join("forms"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .chain(names.iter().map(|n| format!("TOOL_{n}")))
            .collect();
        for marker in printed {
            let line = log
                .lines()
                .find(|l| l.starts_with(&format!("{marker}: ")))
                .unwrap_or_else(|| panic!("{marker} printed nothing:\n{log}"));
            assert!(line.contains("***"), "{marker} is not masked: {line}");
        }
    }
}
