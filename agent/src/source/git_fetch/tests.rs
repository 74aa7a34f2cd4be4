use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn commit_file(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "-q", "-m", &format!("{file}: {text}")]);
    git(dir, &["rev-parse", "HEAD"])
}

/// An upstream repository:
/// c0 - c1 (annotated v1.0) - c2 (lightweight `light`) - c3 main (adds submodule libs/sub)
///                                                          \ c4 feature
struct Fixture {
    tmp: tempfile::TempDir,
    upstream: PathBuf,
    c0: String,
    c1: String,
    c2: String,
    main: String,
    feature: String,
    sub_head: String,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub");
        fs::create_dir(&sub).unwrap();
        git(&sub, &["init", "-q", "-b", "main"]);
        let sub_head = commit_file(&sub, "sub.txt", "in the submodule");

        let upstream = tmp.path().join("upstream");
        fs::create_dir(&upstream).unwrap();
        git(&upstream, &["init", "-q", "-b", "main"]);
        let c0 = commit_file(&upstream, "a.txt", "zero");
        let c1 = commit_file(&upstream, "a.txt", "one");
        git(&upstream, &["tag", "-a", "v1.0", "-m", "release one"]);
        let c2 = commit_file(&upstream, "a.txt", "two");
        git(&upstream, &["tag", "light"]);
        git(
            &upstream,
            &["submodule", "add", "-q", sub.to_str().unwrap(), "libs/sub"],
        );
        git(&upstream, &["commit", "-q", "-m", "add submodule"]);
        let main = git(&upstream, &["rev-parse", "HEAD"]);
        git(&upstream, &["checkout", "-q", "-b", "feature"]);
        let feature = commit_file(&upstream, "feature.txt", "feature work");
        git(&upstream, &["checkout", "-q", "main"]);
        Fixture {
            tmp,
            upstream,
            c0,
            c1,
            c2,
            main,
            feature,
            sub_head,
        }
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.upstream.display())
    }

    fn path_url(&self) -> String {
        self.upstream.display().to_string()
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.tmp.path().join("checkouts").join(name)
    }
}

/// Local repositories anywhere: the fixtures live in temporary directories.
static ANYWHERE: std::sync::LazyLock<Vec<PathBuf>> =
    std::sync::LazyLock::new(|| vec![PathBuf::from("/")]);

fn request<'a>(url: &'a str, git_ref: Option<&'a str>) -> GitRequest<'a> {
    GitRequest {
        url,
        git_ref,
        depth: None,
        submodules: false,
        credentials: None,
        local_roots: &ANYWHERE,
    }
}

async fn fetch_ok(cache: &Path, request: &GitRequest<'_>, dest: &Path) -> Fetched {
    match fetch(cache, request, dest).await {
        Ok(fetched) => fetched,
        Err(e) => panic!("fetch {:?} failed: {e}", request.git_ref),
    }
}

fn head(dest: &Path) -> String {
    git(dest, &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn default_branch_checks_out_main_with_real_origin() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let dest = fx.dest("default");
    let fetched = fetch_ok(&fx.cache(), &request(&url, None), &dest).await;
    assert_eq!(fetched.commit, fx.main);
    assert_eq!(fetched.branch.as_deref(), Some("main"));
    assert!(!fetched.reused_mirror);
    assert_eq!(head(&dest), fx.main);
    assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "two");
    assert!(!dest.join("feature.txt").exists());
    // Detached, clean, with history and the real url as origin.
    assert_eq!(git(&dest, &["rev-parse", "--abbrev-ref", "HEAD"]), "HEAD");
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "4");
    assert_eq!(git(&dest, &["remote", "get-url", "origin"]), url);
    assert_eq!(git(&dest, &["rev-parse", "origin/main"]), fx.main);
    assert_eq!(git(&dest, &["describe", "--tags", "--abbrev=0"]), "light");
    assert!(!dest.join(".git/shallow").exists());
    // Submodules only when asked.
    assert!(!dest.join("libs/sub/sub.txt").exists());
    let mirrors: Vec<_> = fs::read_dir(fx.cache().join("mirrors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        mirrors.iter().any(|m| m.len() == 20 && m.ends_with(".git")),
        "{mirrors:?}"
    );
}

#[tokio::test]
async fn branches_tags_and_shas_resolve() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let path = fx.path_url();
    let cases: Vec<(&str, &str, String, Option<&str>)> = vec![
        ("feature", &url, fx.feature.clone(), Some("feature")),
        (
            "refs/heads/feature",
            &path,
            fx.feature.clone(),
            Some("feature"),
        ),
        ("v1.0", &url, fx.c1.clone(), None),
        ("refs/tags/v1.0", &path, fx.c1.clone(), None),
        ("light", &path, fx.c2.clone(), None),
        (&fx.main, &url, fx.main.clone(), None),
        (&fx.main[..7], &path, fx.main.clone(), None),
        (&fx.c0, &url, fx.c0.clone(), None),
        (&fx.c0[..8], &path, fx.c0.clone(), None),
    ];
    for (i, (git_ref, url, commit, branch)) in cases.into_iter().enumerate() {
        let dest = fx.dest(&format!("case{i}"));
        let fetched = fetch_ok(&fx.cache(), &request(url, Some(git_ref)), &dest).await;
        assert_eq!(fetched.commit, commit, "{git_ref}");
        assert_eq!(fetched.branch.as_deref(), branch, "{git_ref}");
        assert_eq!(head(&dest), commit, "{git_ref}");
        assert_eq!(git(&dest, &["status", "--porcelain"]), "", "{git_ref}");
    }
    let tagged = fx.dest("case2");
    assert_eq!(fs::read_to_string(tagged.join("a.txt")).unwrap(), "one");
    assert_eq!(git(&tagged, &["describe", "--tags"]), "v1.0");
}

#[tokio::test]
async fn sha_fetched_by_name_when_no_ref_points_at_it() {
    let fx = Fixture::new();
    // A commit no branch or tag reaches: only an explicit sha fetch can get it.
    git(&fx.upstream, &["checkout", "-q", "--detach"]);
    let orphan = commit_file(&fx.upstream, "orphan.txt", "unreferenced");
    git(&fx.upstream, &["checkout", "-q", "main"]);
    let url = fx.file_url();
    let dest = fx.dest("orphan");
    let fetched = fetch_ok(&fx.cache(), &request(&url, Some(&orphan)), &dest).await;
    assert_eq!(fetched.commit, orphan);
    assert!(dest.join("orphan.txt").exists());
}

#[tokio::test]
async fn missing_ref_lists_known_branches() {
    let fx = Fixture::new();
    let url = fx.file_url();
    for missing in ["nope", "refs/heads/nope", "deadbeefdeadbeef"] {
        let err = fetch(
            &fx.cache(),
            &request(&url, Some(missing)),
            &fx.dest(missing),
        )
        .await
        .unwrap_err();
        match &err {
            GitError::NotFound {
                url: shown,
                reference,
                known,
            } => {
                assert_eq!(shown, &url);
                assert_eq!(reference, missing);
                assert_eq!(known, &["feature".to_string(), "main".to_string()]);
            }
            other => panic!("{missing}: {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(missing) && text.contains("feature, main"),
            "{text}"
        );
    }
    // A full sha nobody has.
    let absent = "0123456789012345678901234567890123456789";
    let err = fetch(
        &fx.cache(),
        &request(&url, Some(absent)),
        &fx.dest("absent"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GitError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn depth_one_is_shallow() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let dest = fx.dest("shallow");
    let mut req = request(&url, Some("feature"));
    req.depth = Some(1);
    let fetched = fetch_ok(&fx.cache(), &req, &dest).await;
    assert_eq!(fetched.commit, fx.feature);
    assert_eq!(
        fs::read_to_string(dest.join(".git/shallow"))
            .unwrap()
            .trim(),
        fx.feature
    );
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "1");
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");

    let dest = fx.dest("depth2");
    req.depth = Some(2);
    fetch_ok(&fx.cache(), &req, &dest).await;
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "2");
    git(&dest, &["fsck", "--connectivity-only", "--no-dangling"]);
}

#[tokio::test]
async fn second_fetch_reuses_the_mirror_and_gets_only_news() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let first = fetch_ok(&fx.cache(), &request(&url, None), &fx.dest("one")).await;
    assert!(!first.reused_mirror);
    assert!(first.fetched_bytes > 0);

    let news = commit_file(&fx.upstream, "news.txt", "new upstream commit");
    let second = fetch_ok(&fx.cache(), &request(&url, None), &fx.dest("two")).await;
    assert!(second.reused_mirror);
    assert_eq!(second.commit, news);
    assert!(
        second.fetched_bytes > 0 && second.fetched_bytes < first.fetched_bytes,
        "first {} then {}",
        first.fetched_bytes,
        second.fetched_bytes
    );
    assert!(fx.dest("two").join("news.txt").exists());

    let third = fetch_ok(&fx.cache(), &request(&url, None), &fx.dest("three")).await;
    assert!(third.reused_mirror);
    assert_eq!(third.fetched_bytes, 0);
    assert_eq!(third.commit, news);
    // A plain path names the same repository, so it shares the mirror.
    let path = fx.path_url();
    let fourth = fetch_ok(&fx.cache(), &request(&path, None), &fx.dest("four")).await;
    assert!(fourth.reused_mirror);
    assert_eq!(fourth.fetched_bytes, 0);
}

#[tokio::test]
async fn a_build_writing_into_its_objects_leaves_the_mirror_whole() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let first = fx.dest("one");
    fetch_ok(&fx.cache(), &request(&url, None), &first).await;
    // What a root build may do to its checkout: overwrite every object file in place.
    let mut overwritten = 0;
    for dir in std::fs::read_dir(first.join(".git/objects"))
        .unwrap()
        .flatten()
    {
        if dir.file_name() == "info" {
            continue;
        }
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let mut perms = file.metadata().unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(file.path(), perms).unwrap();
            std::fs::write(file.path(), b"garbage").unwrap();
            overwritten += 1;
        }
    }
    assert!(overwritten > 0);
    let second = fx.dest("two");
    let fetched = fetch_ok(&fx.cache(), &request(&url, None), &second).await;
    assert!(fetched.reused_mirror);
    git(&second, &["fsck", "--no-dangling"]);
    assert_eq!(git(&second, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn submodules_checked_out_when_asked() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let dest = fx.dest("with-subs");
    let mut req = request(&url, None);
    req.submodules = true;
    fetch_ok(&fx.cache(), &req, &dest).await;
    assert_eq!(
        fs::read_to_string(dest.join("libs/sub/sub.txt")).unwrap(),
        "in the submodule"
    );
    assert_eq!(head(&dest.join("libs/sub")), fx.sub_head);
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
    let status = git(&dest, &["submodule", "status"]);
    assert!(status.starts_with(&fx.sub_head), "{status}");
}

#[tokio::test]
async fn local_repositories_open_only_inside_their_roots() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let outside =
        |e: GitError| matches!(&e, GitError::Invalid(m) if m.contains("outside the directories"));
    // No root, or another directory: refused before anything is fetched.
    for roots in [Vec::new(), vec![fx.tmp.path().join("elsewhere")]] {
        let mut req = request(&url, None);
        req.local_roots = &roots;
        let err = fetch(&fx.cache(), &req, &fx.dest("refused"))
            .await
            .unwrap_err();
        assert!(outside(err), "{roots:?}");
        assert!(!fx.dest("refused").exists());
    }
    // A symlink inside the root that leads out of it.
    let root = fx.tmp.path().join("served");
    fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(&fx.upstream, root.join("link.git")).unwrap();
    let link = format!("file://{}", root.join("link.git").display());
    let roots = vec![root.clone()];
    let mut req = request(&link, None);
    req.local_roots = &roots;
    let err = fetch(&fx.cache(), &req, &fx.dest("link"))
        .await
        .unwrap_err();
    assert!(outside(err));
    // Inside its root the repository is cloned; its submodule, outside, is not.
    let roots = vec![fx.upstream.clone()];
    let mut req = request(&url, None);
    req.local_roots = &roots;
    fetch_ok(&fx.cache(), &req, &fx.dest("inside")).await;
    req.submodules = true;
    let err = fetch(&fx.cache(), &req, &fx.dest("sub-outside"))
        .await
        .unwrap_err();
    assert!(outside(err));
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_work() {
    let fx = Fixture::new();
    for url in [
        "https://user:s3cret@example.com/o/r.git",
        "https://s3cret@example.com/o/r.git",
        "ssh://git:s3cret@example.com/o/r.git",
        "git:s3cret@example.com:o/r.git",
    ] {
        let err = fetch(&fx.cache(), &request(url, None), &fx.dest("refused"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, GitError::Invalid(_)), "{url}: {err:?}");
        assert!(text.contains("credentials secret"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    assert!(!fx.cache().exists());

    let err = fetch(
        &fx.cache(),
        &request("relative/repo", None),
        &fx.dest("rel"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GitError::Invalid(_)), "{err:?}");

    let busy = fx.dest("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("x"), "").unwrap();
    let url = fx.file_url();
    let err = fetch(&fx.cache(), &request(&url, None), &busy)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_repository_both_succeed() {
    let fx = Fixture::new();
    let url = fx.file_url();
    let cache = fx.cache();
    let (a, b) = (fx.dest("a"), fx.dest("b"));
    let (req_a, req_b) = (request(&url, None), request(&url, Some("feature")));
    let (ra, rb) = tokio::join!(fetch(&cache, &req_a, &a), fetch(&cache, &req_b, &b));
    assert_eq!(ra.unwrap().commit, fx.main);
    assert_eq!(rb.unwrap().commit, fx.feature);
    assert_eq!(head(&a), fx.main);
    assert_eq!(head(&b), fx.feature);
}

#[test]
fn urls_normalise_to_one_mirror_and_hide_users() {
    let key = |u: &str| RemoteUrl::parse(u).unwrap().key;
    assert_eq!(
        key("https://GitHub.com/o/r.git"),
        key("https://github.com/o/r/")
    );
    assert_ne!(key("https://github.com/o/r"), key("https://github.com/o/s"));
    assert_eq!(key("file:///srv/r.git"), key("/srv/r"));
    assert_eq!(key("ssh://git@host/o/r.git"), key("ssh://host/o/r"));
    let scp = RemoteUrl::parse("git@Host.example:o/r.git").unwrap();
    assert_eq!(scp.shown, "Host.example:o/r.git");
    assert_eq!(scp.host.as_deref(), Some("host.example"));
    let ssh = RemoteUrl::parse("ssh://git@[::1]:2222/o/r").unwrap();
    assert_eq!(ssh.shown, "ssh://[::1]:2222/o/r");
    assert_eq!((ssh.host.as_deref(), ssh.port), (Some("::1"), Some(2222)));
    assert_eq!(
        RemoteUrl::parse("https://h/o/r").unwrap().key_hash().len(),
        16
    );
    assert!(RemoteUrl::parse("ftp://h/r").is_err());
    assert!(RemoteUrl::parse("file://relative").is_err());
}

#[test]
fn secrets_stay_out_of_debug_and_advice() {
    let token = GitCredentials::Token {
        username: "x".into(),
        token: "s3cret".into(),
    };
    let key = GitCredentials::SshKey {
        username: "git".into(),
        private_key: "-----BEGIN s3cret".into(),
        passphrase: Some("s3cret".into()),
    };
    assert!(!format!("{token:?}{key:?}").contains("s3cret"));

    let remote = RemoteUrl::parse("ssh://git@example.com:2222/o/r").unwrap();
    let session = Session::new(Some(&key), &remote);
    let advice = session.unknown_host_advice(&HostKeySeen {
        host: "example.com".into(),
        key_type: "ssh-ed25519",
        fingerprint: Some(base64(&[0xfb, 0xff, 0x00, 0x10])),
    });
    assert!(advice.contains("SHA256:+/8AEA"), "{advice}");
    assert!(
        advice.contains("ssh-keyscan -t ed25519 -p 2222 example.com >>"),
        "{advice}"
    );
    assert!(advice.contains("known_hosts"), "{advice}");
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg");
    assert_eq!(base64(b"fo"), "Zm8");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

/// `git http-backend` behind basic auth on a loopback port: the smart HTTP protocol a forge
/// speaks, so token auth and server-side shallow fetches run for real.
struct HttpServer {
    port: u16,
    /// Requests that carried the expected token: a server that must not see it counts here.
    authorized: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(project_root: PathBuf, user: &str, token: &str) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!(
            "Basic {}",
            padded_base64(format!("{user}:{token}").as_bytes())
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let authorized = Arc::new(AtomicUsize::new(0));
        let counted = authorized.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = serve_one(stream, &project_root, &expected, &counted);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        HttpServer {
            port,
            authorized,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn padded_base64(bytes: &[u8]) -> String {
    let mut text = base64(bytes);
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

fn serve_one(
    stream: TcpStream,
    root: &Path,
    expected_auth: &str,
    authorized: &AtomicUsize,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end().to_string();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = header("content-length") {
        body.resize(length.parse().unwrap_or(0), 0);
        reader.read_exact(&mut body)?;
    }
    let mut stream = stream;
    if header("authorization").as_deref() != Some(expected_auth) {
        return stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    authorized.fetch_add(1, Ordering::Relaxed);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "t")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            output
                .stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        })
        .unwrap_or((0, 0));
    let cgi_headers = String::from_utf8_lossy(&output.stdout[..split.0]).to_string();
    let content = &output.stdout[split.1..];
    let mut status = "200 OK".to_string();
    let mut response = String::new();
    for h in cgi_headers.lines() {
        match h.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string()
            }
            Some(_) => {
                response.push_str(h.trim_end());
                response.push_str("\r\n");
            }
            None => {}
        }
    }
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    )?;
    stream.write_all(content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_token_auth_and_server_side_shallow_fetch() {
    let fx = Fixture::new();
    let served = fx.tmp.path().join("served");
    fs::create_dir(&served).unwrap();
    git(
        &served,
        &[
            "clone",
            "-q",
            "--bare",
            fx.upstream.to_str().unwrap(),
            "repo.git",
        ],
    );
    let server = HttpServer::start(served.clone(), "ci", "tok3n");
    let url = format!("http://127.0.0.1:{}/repo.git", server.port);
    let cache = fx.cache();

    let good = GitCredentials::Token {
        username: "ci".into(),
        token: "tok3n".into(),
    };
    let bad = GitCredentials::Token {
        username: "ci".into(),
        token: "wrong".into(),
    };
    let err = fetch(&cache, &request(&url, None), &fx.dest("anon"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            GitError::Auth {
                kind: CredentialKind::None,
                ..
            }
        ),
        "{err:?}"
    );
    let mut req = request(&url, None);
    req.credentials = Some(&bad);
    let err = fetch(&cache, &req, &fx.dest("bad")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            GitError::Auth {
                kind: CredentialKind::Token,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong"), "{err}");

    // Shallow on the server side: the mirror itself holds one commit.
    req.credentials = Some(&good);
    req.depth = Some(1);
    let dest = fx.dest("shallow");
    let fetched = fetch_ok(&cache, &req, &dest).await;
    assert_eq!(fetched.commit, fx.main);
    assert!(!fetched.reused_mirror);
    assert!(fetched.fetched_bytes > 0);
    let mirror = fs::read_dir(cache.join("mirrors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "git"))
        .unwrap();
    assert_eq!(
        fs::read_to_string(mirror.join("shallow")).unwrap().trim(),
        fx.main
    );
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "1");
    assert_eq!(git(&dest, &["remote", "get-url", "origin"]), url);
    assert!(
        !fs::read_to_string(dest.join(".git/config"))
            .unwrap()
            .contains("tok3n")
    );

    // A full fetch afterwards deepens the mirror.
    req.depth = None;
    let dest = fx.dest("full");
    let fetched = fetch_ok(&cache, &req, &dest).await;
    assert!(fetched.reused_mirror);
    assert!(
        !mirror.join("shallow").exists()
            || fs::read_to_string(mirror.join("shallow"))
                .unwrap()
                .trim()
                .is_empty()
    );
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "4");
    assert!(!dest.join(".git/shallow").exists());

    // A sha at no branch tip, into a fresh cache: git refuses unadvertised wants unless told.
    let fresh = fx.tmp.path().join("fresh-cache");
    req.git_ref = Some(&fx.c0);
    let err = fetch(&fresh, &req, &fx.dest("refused-sha"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GitError::NotFound { reference, .. } if reference == &fx.c0),
        "{err:?}"
    );
    git(
        &served.join("repo.git"),
        &["config", "uploadpack.allowAnySHA1InWant", "true"],
    );
    let dest = fx.dest("by-sha");
    let fetched = fetch_ok(&fresh, &req, &dest).await;
    assert_eq!(fetched.commit, fx.c0);
    assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "zero");
    drop(server);
}

/// A bare repository `<served>/<name>.git` of one commit, with a submodule `dep` pinned at
/// `sub = (url, commit)` when given; the gitlink is written directly so that making it needs
/// no fetch from `url`. Returns the commit.
fn served_repo(work: &Path, served: &Path, name: &str, sub: Option<(&str, &str)>) -> String {
    let dir = work.join(name);
    fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    let mut head = commit_file(&dir, "file.txt", name);
    if let Some((url, commit)) = sub {
        fs::write(
            dir.join(".gitmodules"),
            format!("[submodule \"dep\"]\n\tpath = dep\n\turl = {url}\n"),
        )
        .unwrap();
        git(&dir, &["add", ".gitmodules"]);
        git(
            &dir,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{commit},dep"),
            ],
        );
        git(&dir, &["commit", "-q", "-m", "add dep"]);
        head = git(&dir, &["rev-parse", "HEAD"]);
    }
    let bare = format!("{name}.git");
    git(
        served,
        &["clone", "-q", "--bare", dir.to_str().unwrap(), &bare],
    );
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_submodules_get_the_token_only_on_the_root_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let (served_a, served_b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir_all(&served_a).unwrap();
    fs::create_dir_all(&served_b).unwrap();
    // Both ask for the same token: b stands for a host that would gladly collect it.
    let a = HttpServer::start(served_a.clone(), "ci", "tok3n");
    let b = HttpServer::start(served_b.clone(), "ci", "tok3n");
    let (url_a, url_b) = (
        format!("http://127.0.0.1:{}", a.port),
        format!("http://127.0.0.1:{}", b.port),
    );
    let token = GitCredentials::Token {
        username: "ci".into(),
        token: "tok3n".into(),
    };
    let cache = tmp.path().join("cache");

    // root -> one -> two, all on the root's origin: the token reaches every depth.
    let two = served_repo(&work, &served_a, "two", None);
    let one = served_repo(
        &work,
        &served_a,
        "one",
        Some((&format!("{url_a}/two.git"), &two)),
    );
    served_repo(
        &work,
        &served_a,
        "root",
        Some((&format!("{url_a}/one.git"), &one)),
    );
    let root = format!("{url_a}/root.git");
    let mut req = request(&root, None);
    req.credentials = Some(&token);
    req.submodules = true;
    let dest = tmp.path().join("same-origin");
    fetch_ok(&cache, &req, &dest).await;
    assert_eq!(head(&dest.join("dep/dep")), two);
    assert_eq!(
        fs::read_to_string(dest.join("dep/dep/file.txt")).unwrap(),
        "two"
    );

    // root -> hop (root's origin) -> far, on the same host but another port. Comparing the
    // nested submodule with its parent's host, or ignoring ports, handed b the token.
    let far = served_repo(&work, &served_b, "far", None);
    let hop = served_repo(
        &work,
        &served_a,
        "hop",
        Some((&format!("{url_b}/far.git"), &far)),
    );
    served_repo(
        &work,
        &served_a,
        "top",
        Some((&format!("{url_a}/hop.git"), &hop)),
    );
    let top = format!("{url_a}/top.git");
    let mut req = request(&top, None);
    req.credentials = Some(&token);
    req.submodules = true;
    let err = fetch(&cache, &req, &tmp.path().join("foreign"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GitError::Invalid(_)), "{err:?}");
    assert!(text.contains("submodule dep of"), "{text}");
    assert!(text.contains(&format!("{url_b}/far.git")), "{text}");
    assert!(text.contains("unencrypted"), "{text}");
    assert_eq!(b.authorized.load(Ordering::Relaxed), 0);
    drop((a, b));
}

#[test]
fn submodule_credentials_follow_the_root_origin() {
    let token = GitCredentials::Token {
        username: "ci".into(),
        token: "s3cret".into(),
    };
    let key = GitCredentials::SshKey {
        username: "git".into(),
        private_key: "-----BEGIN s3cret".into(),
        passphrase: None,
    };
    let parse = |u: &str| RemoteUrl::parse(u).unwrap();
    // Whether `sub`, a submodule of `parent`, is offered the job's secret for `root`; `Err`
    // when it is refused outright.
    let offered = |root: &str, parent: &str, sub: &str, creds: Option<&GitCredentials>| {
        submodule_credentials("dep", &parse(parent), &parse(sub), &parse(root), creds)
            .map(|c| c.is_some())
    };
    let root = "https://git.example.com/o/r.git";
    let foreign = "https://other.example/x/lib.git";
    for (parent, sub, expected) in [
        (root, "https://git.example.com/o/lib.git", true),
        (root, "https://GIT.example.com:443/o/lib", true),
        (root, foreign, false),
        // Nested under a foreign parent: judged by the root, not the parent.
        (foreign, "https://other.example/x/deeper.git", false),
        (foreign, "https://git.example.com/o/private.git", true),
        (root, "https://git.example.com:8443/o/lib.git", false),
        (root, "ssh://git@git.example.com/o/lib.git", false),
    ] {
        assert_eq!(
            offered(root, parent, sub, Some(&token)).unwrap(),
            expected,
            "{parent} -> {sub}"
        );
    }
    // Cleartext submodules of a job with credentials are refused, on any host.
    for sub in [
        "http://git.example.com/o/lib.git",
        "git://git.example.com/o/lib.git",
        "http://other.example/x/lib.git",
    ] {
        let err = offered(root, root, sub, Some(&token)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("submodule dep of"), "{text}");
        assert!(text.contains("unencrypted"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    // Without credentials nothing is at stake: cleartext submodules are fetched as before.
    assert!(!offered(root, root, "git://other.example/x/lib.git", None).unwrap());
    // A root the job itself reaches over http keeps its own origin's submodules.
    let plain = "http://127.0.0.1:8080/o/r.git";
    assert!(
        offered(
            plain,
            plain,
            "http://127.0.0.1:8080/o/lib.git",
            Some(&token)
        )
        .unwrap()
    );
    assert!(
        offered(
            plain,
            plain,
            "http://127.0.0.1:8081/o/lib.git",
            Some(&token)
        )
        .is_err()
    );
    // ssh keys: scp-like and ssh:// name one origin; another port does not.
    let scp = "git@git.example.com:o/r.git";
    for (sub, expected) in [
        ("ssh://git@git.example.com/o/lib.git", true),
        ("ssh://git@git.example.com:22/o/lib.git", true),
        ("git@git.example.com:o/lib.git", true),
        ("ssh://git@git.example.com:2222/o/lib.git", false),
        ("https://git.example.com/o/lib.git", false),
        ("git@other.example:x/lib.git", false),
    ] {
        assert_eq!(
            offered(scp, scp, sub, Some(&key)).unwrap(),
            expected,
            "{sub}"
        );
    }
}

#[test]
fn credential_callback_refuses_other_schemes_ports_and_odd_urls() {
    let token = GitCredentials::Token {
        username: "ci".into(),
        token: "s3cret".into(),
    };
    let key = GitCredentials::SshKey {
        username: "git".into(),
        private_key: "-----BEGIN s3cret".into(),
        passphrase: None,
    };
    // A fresh session per question: each callback counts as an attempt.
    let answers = |remote: &str, creds: &GitCredentials, asked: &str, allowed: CredentialType| {
        let remote = RemoteUrl::parse(remote).unwrap();
        Session::new(Some(creds), &remote)
            .credential(asked, None, allowed)
            .is_ok()
    };
    let https = "https://git.example.com/o/r.git";
    let plaintext = CredentialType::USER_PASS_PLAINTEXT;
    for (asked, expected) in [
        (
            "https://git.example.com/o/r.git/info/refs?service=git-upload-pack",
            true,
        ),
        ("https://GIT.example.com:443/o/r.git/info/refs", true),
        // A redirect down to http, or to another port or host.
        (
            "http://git.example.com/o/r.git/info/refs?service=git-upload-pack",
            false,
        ),
        ("https://git.example.com:8443/o/r.git/info/refs", false),
        ("https://other.example/o/r.git/info/refs", false),
        // libgit2 puts a redirect's user name in the url; it proves nothing about the host.
        ("https://x@other.example/o/r.git/info/refs", false),
    ] {
        assert_eq!(
            answers(https, &token, asked, plaintext),
            expected,
            "{asked}"
        );
    }
    let ssh = "ssh://git@git.example.com:2222/o/r.git";
    assert!(answers(ssh, &key, ssh, CredentialType::USERNAME));
    assert!(!answers(
        ssh,
        &key,
        "ssh://git@git.example.com/o/r.git",
        CredentialType::USERNAME
    ));
}

/// A loopback sshd serving `git-upload-pack`, for key auth and known_hosts checks.
struct SshServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ssh_keygen(path: &Path, passphrase: &str) -> String {
    git_free_command(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "test",
            "-f",
            path.to_str().unwrap(),
        ],
    );
    fs::read_to_string(path.with_extension("pub")).unwrap()
}

fn git_free_command(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn start_sshd(dir: &Path, authorized: &str) -> Option<SshServer> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        return None;
    }
    // sshd insists on its privilege separation directory, which its service would create.
    let _ = fs::create_dir_all("/run/sshd");
    let host_key = dir.join("host_key");
    ssh_keygen(&host_key, "");
    let authorized_keys = dir.join("authorized_keys");
    fs::write(&authorized_keys, authorized).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nPidFile none\nPermitRootLogin prohibit-password\n",
            host_key.display(),
            authorized_keys.display()
        ),
    )
    .unwrap();
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = SshServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

/// libgit2 reads known_hosts from `$HOME`, which only a fresh process can be given: each
/// case runs `ssh_case` in a child test process with its own `HOME`.
#[test]
fn ssh_key_auth_and_known_hosts() {
    let fx = Fixture::new();
    let dir = fx.tmp.path().join("ssh");
    fs::create_dir(&dir).unwrap();
    let user_key = dir.join("user_key");
    let locked_key = dir.join("locked_key");
    let other_key = dir.join("other_key");
    let authorized = ssh_keygen(&user_key, "") + &ssh_keygen(&locked_key, "pass phrase");
    ssh_keygen(&other_key, "");
    let Some(server) = start_sshd(&dir, &authorized) else {
        eprintln!("skipped: /usr/sbin/sshd is not installed (Debian: openssh-server)");
        return;
    };
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        whoami(),
        server.port,
        fx.upstream.join(".git").display()
    );
    let host_pub = fs::read_to_string(dir.join("host_key.pub")).unwrap();
    let fingerprint = git_free_command(
        "ssh-keygen",
        &[
            "-l",
            "-E",
            "sha256",
            "-f",
            dir.join("host_key.pub").to_str().unwrap(),
        ],
    );
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();

    let unknown_home = dir.join("home-unknown");
    fs::create_dir_all(unknown_home.join(".ssh")).unwrap();
    let known_home = dir.join("home-known");
    fs::create_dir_all(known_home.join(".ssh")).unwrap();
    let mut host_fields = host_pub.split_whitespace();
    fs::write(
        known_home.join(".ssh/known_hosts"),
        format!(
            "[127.0.0.1]:{} {} {}\n",
            server.port,
            host_fields.next().unwrap(),
            host_fields.next().unwrap()
        ),
    )
    .unwrap();

    let cases = [
        (
            &unknown_home,
            &user_key,
            "",
            format!("unknown-host {fingerprint}"),
        ),
        (&known_home, &user_key, "", format!("ok {}", fx.main)),
        (
            &known_home,
            &locked_key,
            "pass phrase",
            format!("ok {}", fx.main),
        ),
        (&known_home, &other_key, "", "auth".to_string()),
    ];
    let test_name = format!("{}::ssh_case", module_path!().split_once("::").unwrap().1);
    for (i, (home, key, passphrase, expect)) in cases.into_iter().enumerate() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test_name, "--ignored", "--test-threads=1"])
            .env("HOME", home)
            .env("SSH_CASE_URL", &url)
            .env("SSH_CASE_KEY", key)
            .env("SSH_CASE_PASSPHRASE", passphrase)
            .env("SSH_CASE_EXPECT", &expect)
            .env("SSH_CASE_DIR", dir.join(format!("case-{i}")))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{expect}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn whoami() -> String {
    git_free_command("id", &["-un"]).trim().to_string()
}

#[tokio::test]
#[ignore = "run by ssh_key_auth_and_known_hosts with its own HOME"]
async fn ssh_case() {
    let Ok(url) = std::env::var("SSH_CASE_URL") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let credentials = GitCredentials::SshKey {
        username: "ignored-when-the-url-names-a-user".into(),
        private_key: fs::read_to_string(var("SSH_CASE_KEY")).unwrap(),
        passphrase: Some(var("SSH_CASE_PASSPHRASE")).filter(|p| !p.is_empty()),
    };
    let dir = PathBuf::from(var("SSH_CASE_DIR"));
    let mut req = request(&url, None);
    req.credentials = Some(&credentials);
    let result = fetch(&dir.join("cache"), &req, &dir.join("checkout")).await;
    let expect = var("SSH_CASE_EXPECT");
    match (expect.split_once(' '), result) {
        (Some(("ok", sha)), Ok(fetched)) => assert_eq!(fetched.commit, sha),
        (Some(("unknown-host", fingerprint)), Err(GitError::Network { message, .. })) => {
            assert!(message.contains(fingerprint), "{message}");
            assert!(message.contains("ssh-keyscan -t ed25519 -p"), "{message}");
        }
        (None, Err(GitError::Auth { kind, .. })) => assert_eq!(kind, CredentialKind::SshKey),
        (_, other) => panic!("expected {expect}, got {other:?}"),
    }
}
