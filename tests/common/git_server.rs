//! A git repository served over smart HTTP (`git http-backend`, as a forge serves it) on
//! loopback, with one commit: a buildspec that exports the commit, the repository URL and a
//! file's content. Stopped and removed when dropped.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct GitServer {
    /// `http://127.0.0.1:PORT/repo.git`.
    pub url: String,
    /// The commit `main` points at.
    pub commit: String,
    /// `http://127.0.0.1:PORT`, for a proxy in front.
    pub origin: String,
    child: Child,
    _root: tempfile::TempDir,
}

impl GitServer {
    pub fn start() -> GitServer {
        GitServer::serve(None)
    }

    /// Answers only requests with HTTP basic auth `user:password`, as a private
    /// repository on a forge does.
    pub fn start_with_auth(user: &str, password: &str) -> GitServer {
        GitServer::serve(Some(format!("{user}:{password}")))
    }

    fn serve(auth: Option<String>) -> GitServer {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        fs::create_dir_all(&work).unwrap();
        let git = |dir: &Path, args: &[&str]| {
            let out = Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@example.com",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&work, &["init", "-q"]);
        fs::write(
            work.join("buildspec.yml"),
            "version: 0.2\nenv:\n  exported-variables: [COMMIT, REPO, BRANCH_FILE]\nphases:\n  build:\n    commands:\n      - export COMMIT=$CODEBUILD_RESOLVED_SOURCE_VERSION REPO=$CODEBUILD_SOURCE_REPO_URL\n      - export BRANCH_FILE=$(cat which.txt)\n",
        )
        .unwrap();
        fs::write(work.join("which.txt"), "main").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "first"]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        git(
            root.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                "served/repo.git",
            ],
        );
        // Smart HTTP through git's own CGI program, as a forge serves it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("python3")
            .args(["-c", GIT_HTTP_SERVER, &port.to_string()])
            .args(auth)
            .current_dir(root.path().join("served"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        super::wait_until(
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || "the git server did not start".into(),
        );
        let url = format!("http://127.0.0.1:{port}/repo.git");
        GitServer {
            origin: format!("http://127.0.0.1:{port}"),
            url,
            commit,
            child: server,
            _root: root,
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git http-backend` behind a small HTTP/1.1 server (libgit2 sends chunked bodies, which
/// Python's own CGI handler does not read).
const GIT_HTTP_SERVER: &str = r#"
import base64, http.server, os, subprocess, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                chunk = self.rfile.read(size + 2)
                if size == 0:
                    return data
                data += chunk[:size]
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))
    def handle_one(self):
        path, _, query = self.path.partition("?")
        data = self.body()
        if len(sys.argv) > 2:
            wanted = "Basic " + base64.b64encode(sys.argv[2].encode()).decode()
            if self.headers.get("Authorization", "") != wanted:
                self.send_response_only(401, "Unauthorized")
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        env = dict(os.environ, GIT_PROJECT_ROOT=os.getcwd(), GIT_HTTP_EXPORT_ALL="1",
                   REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), CONTENT_LENGTH=str(len(data)),
                   REMOTE_ADDR="127.0.0.1")
        out = subprocess.run(["git", "http-backend"], input=data, env=env, capture_output=True).stdout
        head, _, content = out.partition(b"\r\n\r\n")
        status = "200 OK"
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        self.send_response_only(int(status.split()[0]), status.partition(" ")[2])
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
    do_GET = do_POST = handle_one
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;
