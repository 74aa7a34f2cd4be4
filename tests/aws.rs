//! The AWS side of run-local against `moto_server`, with the real AWS SDK: the role chain,
//! Parameter Store and Secrets Manager values, their masking.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests fail loudly, like the tests

mod common;

use common::{Project, agent, aws_env, boto3, finish};

fn run(project: &Project, args: &[&str]) -> common::Run {
    run_through(project, common::moto(), args)
}

/// run-local on the host with AWS calls sent to `endpoint` (moto, or a proxy in front of it).
fn run_through(project: &Project, endpoint: &str, args: &[&str]) -> common::Run {
    let summary = project.path().join(".summary.json");
    let output = agent()
        .args(["run-local", "--executor", "host", "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(project.path())
        // The tests compare what the build wrote into the source with what reached S3.
        .arg("--bind")
        .args(args)
        .envs(aws_env())
        .env("AWS_ENDPOINT_URL", endpoint)
        .output()
        .unwrap();
    finish(output, &summary)
}

#[test]
fn parameters_and_secrets_are_resolved_and_masked() {
    let unique = uuid();
    boto3(&format!(
        "ssm = boto3.client('ssm', **kw)\n\
         ssm.put_parameter(Name='/{unique}/db/password', Value='Db-Pa55-{unique}', Type='SecureString')\n\
         ssm.put_parameter(Name='/{unique}/plain', Value='plain-{unique}', Type='String')\n\
         sm = boto3.client('secretsmanager', **kw)\n\
         sm.create_secret(Name='{unique}/api', SecretString=json.dumps({{'key': 'Api-K3y-{unique}', 'port': 443}}))\n\
         arn = sm.create_secret(Name='{unique}/whole', SecretString='Wh0le-{unique}-old')['ARN']\n\
         sm.put_secret_value(SecretId='{unique}/whole', SecretString='Wh0le-{unique}-new')\n\
         print(arn)"
    ));
    let arn = boto3(&format!(
        "print(boto3.client('secretsmanager', **kw).describe_secret(SecretId='{unique}/whole')['ARN'])"
    ));
    let p = Project::new(&format!(
        "version: 0.2\nenv:\n  variables:\n    DB_PASSWORD: overridden-by-parameter-store\n  parameter-store:\n    DB_PASSWORD: /{unique}/db/password\n    PLAIN: /{unique}/plain\n  secrets-manager:\n    API_KEY: {unique}/api:key\n    PORT: {unique}/api:port\n    WHOLE: {arn}\n    PREVIOUS: {unique}/whole::AWSPREVIOUS\nphases:\n  build:\n    commands:\n      - echo \"db=$DB_PASSWORD api=$API_KEY whole=$WHOLE previous=$PREVIOUS\"\n      - echo \"$API_KEY\" | base64\n      - test \"$DB_PASSWORD\" = Db-Pa55-{unique} && echo db-ok\n      - test \"$API_KEY\" = Api-K3y-{unique} && test \"$PORT\" = 443 && echo api-ok\n      - test \"$WHOLE\" = Wh0le-{unique}-new && test \"$PREVIOUS\" = Wh0le-{unique}-old && echo whole-ok\n      - test \"$PLAIN\" = plain-{unique} && echo plain-ok\n"
    ));
    let run = run(&p, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for ok in ["db-ok", "api-ok", "whole-ok", "plain-ok"] {
        assert!(run.printed(ok), "{ok}: {}", run.stdout);
    }
    assert!(
        run.printed("db=*** api=*** whole=*** previous=***"),
        "{}",
        run.stdout
    );
    let build_id = run.summary["build_id"].as_str().unwrap().to_string();
    let log = std::fs::read_to_string(p.log_file(&build_id)).unwrap();
    let summary = run.summary.to_string();
    for value in [
        format!("Db-Pa55-{unique}"),
        format!("Api-K3y-{unique}"),
        format!("Wh0le-{unique}"),
    ] {
        for (sink, text) in [
            ("stdout", &run.stdout),
            ("log file", &log),
            ("summary", &summary),
        ] {
            assert!(!text.contains(&value), "{sink} leaks {value}");
        }
    }
}

#[test]
fn a_missing_parameter_fails_before_install() {
    let p = Project::new(
        "version: 0.2\nenv:\n  parameter-store:\n    GONE: /no/such/parameter\nphases:\n  install:\n    commands:\n      - echo never\n",
    );
    let run = run(&p, &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(!run.printed("never"));
    assert_eq!(run.status(), "FAILED");
    assert_eq!(run.phase_names(), ["PROVISIONING"]);
    let message = run.phase("PROVISIONING").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("/no/such/parameter"), "{message}");
    assert!(run.stderr.contains("/no/such/parameter"), "{}", run.stderr);
}

#[test]
fn a_missing_secret_key_is_named() {
    let unique = uuid();
    boto3(&format!(
        "boto3.client('secretsmanager', **kw).create_secret(Name='{unique}/s', SecretString='{{\"a\": \"1\"}}')"
    ));
    let p = Project::new(&format!(
        "version: 0.2\nenv:\n  secrets-manager:\n    B: {unique}/s:b\nphases:\n  build:\n    commands:\n      - echo never\n"
    ));
    let run = run(&p, &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(&format!("secret {unique}/s has no JSON key `b` (for B)")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_role_chain_with_an_external_id_reaches_the_build() {
    let p = Project::new(&format!(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - test -z \"$AWS_ACCESS_KEY_ID\" && echo no-static-keys\n      - echo \"uri=$AWS_CONTAINER_CREDENTIALS_FULL_URI token=$AWS_CONTAINER_AUTHORIZATION_TOKEN\"\n      - python3 -c \"import boto3; print('caller=' + boto3.client('sts', endpoint_url='{}').get_caller_identity()['Arn'])\"\n",
        common::moto()
    ));
    let run = run(
        &p,
        &[
            "--role-arn",
            "arn:aws:iam::111111111111:role/first",
            "--role-arn",
            "arn:aws:iam::222222222222:role/deploy",
            "--external-id",
            "ext-1234",
            "--duration",
            "2h",
            "--session-tag",
            "team=ci",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.printed("no-static-keys"), "{}", run.stdout);
    let uri = run
        .output_lines()
        .into_iter()
        .find(|l| l.starts_with("uri="))
        .unwrap()
        .to_string();
    assert!(
        uri.starts_with("uri=http://127.0.0.1:") && uri.ends_with(" token=***"),
        "{uri}"
    );
    let caller = run
        .output_lines()
        .into_iter()
        .find(|l| l.starts_with("caller="))
        .unwrap()
        .to_string();
    let build_id = run.summary["build_id"].as_str().unwrap().replace(':', "-");
    assert_eq!(
        caller,
        format!("caller=arn:aws:sts::222222222222:assumed-role/deploy/agent-{build_id}")
    );
    assert!(
        run.stderr.contains("role chaining caps sessions at 1 hour"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_container_fetches_fresh_role_credentials_from_the_endpoint() {
    // A 15-minute session is always within the refresh margin: every fetch re-assumes the
    // role, as a long build would see near the end of each session.
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - sh creds.sh\n");
    p.write(
        "creds.sh",
        r#"fetch() { wget -q -O - --header "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI"; }
key() { fetch | sed 's/.*"AccessKeyId": *"\([^"]*\)".*/\1/'; }
one=$(key)
two=$(key)
test -n "$one" && test "$one" != "$two" && echo refreshed
case "$one" in ASIA*) echo role-keys;; esac
echo "the key is $one"
wget -q -O - "$AWS_CONTAINER_CREDENTIALS_FULL_URI" 2>/dev/null || echo refused-without-token
"#,
    );
    let summary = p.path().join(".summary.json");
    let output = agent()
        .args(["run-local", "--image", common::busybox_image(), "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        .args([
            "--role-arn",
            "arn:aws:iam::333333333333:role/builder",
            "--duration",
            "15m",
        ])
        .envs(aws_env())
        .output()
        .unwrap();
    let run = finish(output, &summary);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for line in [
        "refreshed",
        "role-keys",
        "refused-without-token",
        "the key is ***",
    ] {
        assert!(run.printed(line), "{line}: {}{}", run.stdout, run.stderr);
    }
}

#[test]
fn a_bad_duration_is_refused_before_anything_runs() {
    let p = Project::new("version: 0.2\nphases:\n  build:\n    commands:\n      - echo never\n");
    let run = run(
        &p,
        &[
            "--role-arn",
            "arn:aws:iam::111111111111:role/first",
            "--duration",
            "1m",
        ],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("--duration must be between 15 minutes and 12 hours"),
        "{}",
        run.stderr
    );
    assert!(!run.printed("never"));
}

fn uuid() -> String {
    format!(
        "t{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn make_bucket() -> String {
    let bucket = format!("artifacts-{}", uuid()).to_lowercase();
    boto3(&format!(
        "boto3.client('s3', **kw).create_bucket(Bucket='{bucket}')"
    ));
    bucket
}

fn list(bucket: &str) -> Vec<String> {
    let out = boto3(&format!(
        "r = boto3.client('s3', **kw).list_objects_v2(Bucket='{bucket}')\nprint('\\n'.join(sorted(o['Key'] for o in r.get('Contents', []))))"
    ));
    out.lines().map(str::to_string).collect()
}

const ARTIFACT_SPEC: &str = "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p out/lib docs\n      - echo app > out/app.txt\n      - echo lib > out/lib/lib.txt\n      - echo doc > docs/guide.md\n      - head -c 20000000 /dev/urandom > out/big.bin\nartifacts:\n  files:\n    - '**/*'\n  base-directory: out\n  name: app-$(echo 1.0)\n  secondary-artifacts:\n    docs:\n      files:\n        - docs/*\n";

#[test]
fn artifacts_reach_s3_as_codebuild_lays_them_out() {
    let bucket = make_bucket();
    let p = Project::new(ARTIFACT_SPEC);
    let url = format!("s3://{bucket}/builds");
    let run = run(
        &p,
        &["--artifacts", &url, "--artifacts-namespace", "build-id"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let build = run.summary["build_id"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let keys = list(&bucket);
    assert_eq!(
        keys,
        [
            format!("builds/{build}/app-1.0/app.txt"),
            format!("builds/{build}/app-1.0/big.bin"),
            format!("builds/{build}/app-1.0/lib/lib.txt"),
            format!("builds/{build}/docs/docs/guide.md"),
        ]
    );
    // The large file went up in parts and arrived whole.
    let local = std::fs::read(p.path().join("out/big.bin")).unwrap();
    let digest = boto3(&format!(
        "import hashlib\nb = boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='builds/{build}/app-1.0/big.bin')\nprint(hashlib.sha256(b['Body'].read()).hexdigest(), b['Metadata'].get('agent-build-id'))"
    ));
    let expected = sha256_hex(&local);
    let full_id = run.summary["build_id"].as_str().unwrap();
    assert_eq!(digest, format!("{expected} {full_id}"));
    assert_eq!(
        run.summary["artifacts"][0]["location"],
        format!("s3://{bucket}/builds/{build}/app-1.0")
    );
}

#[test]
fn zip_artifacts_are_streamed_to_s3() {
    let bucket = make_bucket();
    let p = Project::new(ARTIFACT_SPEC);
    let url = format!("s3://{bucket}/zips");
    let run = run(&p, &["--artifacts", &url, "--artifacts-packaging", "zip"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(list(&bucket), ["zips/app-1.0", "zips/docs.zip"]);
    let entries = boto3(&format!(
        "import io, zipfile, hashlib\nb = boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='zips/app-1.0')['Body'].read()\nz = zipfile.ZipFile(io.BytesIO(b))\nprint(' '.join(sorted(z.namelist())), hashlib.sha256(z.read('big.bin')).hexdigest())"
    ));
    let local = std::fs::read(p.path().join("out/big.bin")).unwrap();
    assert_eq!(
        entries,
        format!("app.txt big.bin lib/lib.txt {}", sha256_hex(&local))
    );
}

#[test]
fn a_failed_upload_leaves_nothing_behind() {
    let p = Project::new(ARTIFACT_SPEC);
    let run = run(
        &p,
        &["--artifacts", "s3://no-such-bucket-for-agent-tests/x"],
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.phase_status("UPLOAD_ARTIFACTS").as_deref(),
        Some("FAILED")
    );
    let message = run.phase("UPLOAD_ARTIFACTS").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("no-such-bucket-for-agent-tests"),
        "{message}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_log_reaches_s3_gzipped_and_masked() {
    let bucket = make_bucket();
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"token is $TOKEN\"\n      - seq 1 20000\n",
    );
    let url = format!("s3://{bucket}/ci");
    let run = run(
        &p,
        &["--logs", &url, "--secret", "TOKEN=Very-Secret-Token-42"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let build_id = run.summary["build_id"].as_str().unwrap();
    let key = format!("ci/logs/{build_id}.log");
    assert_eq!(
        list(&bucket),
        std::slice::from_ref(&key),
        "checkpoints must be gone"
    );
    let text = boto3(&format!(
        "import gzip\nb = boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='{key}')['Body'].read()\nt = gzip.decompress(b).decode()\nprint(t.count('\\n'), 'token is ***' in t, 'Very-Secret' in t, '20000' in t.split())"
    ));
    let lines = run.stdout.lines().count();
    assert_eq!(text, format!("{lines} True False True"));
    assert!(
        run.stderr
            .contains(&format!("Log in S3: s3://{bucket}/{key}")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_crash_loses_at_most_the_last_seconds_of_the_s3_log() {
    let bucket = make_bucket();
    let p = Project::new(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo before-the-crash\n      - sleep 10\n",
    );
    let summary = p.path().join(".summary.json");
    let mut child = agent()
        .args(["run-local", "--executor", "host", "--summary"])
        .arg(&summary)
        .arg("--source")
        .arg(p.path())
        .args(["--logs", &format!("s3://{bucket}/ci")])
        .envs(aws_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(7000));
    child.kill().unwrap();
    child.wait().unwrap();
    let keys = list(&bucket);
    let checkpoint = keys
        .iter()
        .find(|k| k.contains(".log.parts/"))
        .expect("a checkpoint");
    let text = boto3(&format!(
        "import gzip\nb = boto3.client('s3', **kw).get_object(Bucket='{bucket}', Key='{checkpoint}')['Body'].read()\nprint('before-the-crash' in gzip.decompress(b).decode())"
    ));
    assert_eq!(text, "True");
    assert!(
        !keys.iter().any(|k| k.ends_with(".log")),
        "no final object after a crash: {keys:?}"
    );
}

#[test]
fn the_cache_lives_in_s3_by_key_and_fallback() {
    let bucket = make_bucket();
    let spec = |key: &str| {
        format!(
            "version: 0.2\nphases:\n  build:\n    commands:\n      - 'if [ -f deps/stamp ]; then echo \"restored $(cat deps/stamp)\"; else echo fresh; fi'\n      - mkdir -p deps/sub && echo {key} > deps/stamp && head -c 100000 /dev/zero > deps/sub/blob\ncache:\n  key: {key}\n  fallback-keys:\n    - deps-\n  paths:\n    - 'deps/**/*'\n"
        )
    };
    let p = Project::new(&spec("deps-one"));
    let url = format!("s3://{bucket}/cache");
    let args = ["--cache", url.as_str()];
    let first = run(&p, &args);
    assert!(first.printed("fresh"), "{}{}", first.stdout, first.stderr);
    assert_eq!(list(&bucket), ["cache/deps-one"]);
    std::fs::remove_dir_all(p.path().join("deps")).unwrap();
    let second = run(&p, &args);
    assert!(second.printed("restored deps-one"), "{}", second.stdout);
    assert!(
        second.stdout.contains("keyed entries are never replaced"),
        "{}",
        second.stdout
    );
    assert_eq!(
        std::fs::metadata(p.path().join("deps/sub/blob"))
            .unwrap()
            .len(),
        100_000
    );
    std::fs::remove_dir_all(p.path().join("deps")).unwrap();
    p.write("buildspec.yml", &spec("deps-two"));
    let third = run(&p, &args);
    assert!(third.printed("restored deps-one"), "{}", third.stdout);
    assert_eq!(list(&bucket), ["cache/deps-one", "cache/deps-two"]);
    // Nothing is left staged on disk.
    let staged: Vec<_> = std::fs::read_dir(p.state_dir().join("cache"))
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert_eq!(staged, [0]);
}

#[test]
fn sources_come_from_s3_zips_and_prefixes() {
    let bucket = make_bucket();
    boto3(&format!(
        "import io, zipfile\n\
         s3 = boto3.client('s3', **kw)\n\
         buf = io.BytesIO()\n\
         z = zipfile.ZipFile(buf, 'w')\n\
         z.writestr('buildspec.yml', 'version: 0.2\\nphases:\\n  build:\\n    commands:\\n      - cat src/main.txt\\n      - echo \"url=$CODEBUILD_SOURCE_REPO_URL\"\\n')\n\
         z.writestr('src/main.txt', 'from the zip')\n\
         z.close()\n\
         s3.put_object(Bucket='{bucket}', Key='sources/app.zip', Body=buf.getvalue())\n\
         s3.put_object(Bucket='{bucket}', Key='tree/buildspec.yml', Body=b'version: 0.2\\nphases:\\n  build:\\n    commands:\\n      - cat lib/a.txt\\n')\n\
         s3.put_object(Bucket='{bucket}', Key='tree/lib/a.txt', Body=b'from the prefix')\n\
         evil = io.BytesIO()\n\
         z = zipfile.ZipFile(evil, 'w')\n\
         z.writestr('../../escaped.txt', 'x')\n\
         z.close()\n\
         s3.put_object(Bucket='{bucket}', Key='sources/evil.zip', Body=evil.getvalue())"
    ));
    let cwd = tempfile::tempdir().unwrap();
    let go = |source: String| {
        let output = agent()
            .args(["run-local", "--executor", "host", "--source", &source])
            .current_dir(cwd.path())
            .envs(aws_env())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, err) = go(format!("s3://{bucket}/sources/app.zip"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.lines().any(|l| l == "from the zip"), "{out}");
    assert!(
        out.lines()
            .any(|l| l == format!("url=s3://{bucket}/sources/app.zip")),
        "{out}"
    );
    assert!(
        !cwd.path().join(".agent").exists(),
        "nothing is written where the agent runs"
    );
    let state = std::fs::read_dir(common::state_home().join("agent"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("app.zip-"))
        .expect("a state directory named after the S3 object");
    assert!(
        state.path().join("logs").is_dir(),
        "{}",
        state.path().display()
    );
    let (code, out, err) = go(format!("s3://{bucket}/tree"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.lines().any(|l| l == "from the prefix"), "{out}");
    let (code, out, err) = go(format!("s3://{bucket}/sources/evil.zip"));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("outside the destination"), "{err}");
    assert!(!std::env::temp_dir().join("escaped.txt").exists());
}

#[test]
fn uploads_survive_resets_and_server_errors() {
    let bucket = make_bucket();
    let proxy = common::fault_proxy::faulty_proxy(
        common::moto(),
        common::fault_proxy::Faults::ResetThen500,
    );
    let p = Project::new(ARTIFACT_SPEC);
    for packaging in ["none", "zip"] {
        let url = format!("s3://{bucket}/{packaging}");
        let run = run_through(
            &p,
            &proxy,
            &["--artifacts", &url, "--artifacts-packaging", packaging],
        );
        assert_eq!(run.code, 0, "{packaging}: {}{}", run.stdout, run.stderr);
        // Each build writes a new big.bin: compare with this build's.
        let local = std::fs::read(p.path().join("out/big.bin")).unwrap();
        let read = if packaging == "zip" {
            format!(
                "zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket='{bucket}', Key='zip/app-1.0')['Body'].read())).read('big.bin')"
            )
        } else {
            format!("s3.get_object(Bucket='{bucket}', Key='none/app-1.0/big.bin')['Body'].read()")
        };
        let digest = boto3(&format!(
            "import hashlib, io, zipfile\ns3 = boto3.client('s3', **kw)\nprint(hashlib.sha256({read}).hexdigest())"
        ));
        assert_eq!(digest, sha256_hex(&local), "{packaging}");
    }
}

#[test]
fn an_upload_that_cannot_succeed_fails_clearly_and_leaves_nothing() {
    let bucket = make_bucket();
    let proxy = common::fault_proxy::faulty_proxy(common::moto(), common::fault_proxy::Faults::All);
    let p = Project::new(ARTIFACT_SPEC);
    let url = format!("s3://{bucket}/broken");
    let run = run_through(&p, &proxy, &["--artifacts", &url]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.phase_status("UPLOAD_ARTIFACTS").as_deref(),
        Some("FAILED")
    );
    let message = run.phase("UPLOAD_ARTIFACTS").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("S3 upload of"), "{message}");
    assert!(list(&bucket).is_empty(), "{:?}", list(&bucket));
}
