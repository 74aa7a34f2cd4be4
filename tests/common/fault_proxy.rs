//! A TCP proxy on loopback that injects faults between the agent and a service.
//!
//! Faults are decided per request, not per connection number: a request is known by its
//! request line, its `X-Amz-Target` (the JSON protocols send every call to `POST /`) and,
//! when small, its body; the first connections that carry it are faulted, later ones
//! served. Every request that opens a connection thus meets its faults and then succeeds,
//! however requests interleave; a count of connections would let one request draw faults
//! on every attempt while its neighbours drew the served ones.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How the proxy treats the requests it carries.
#[derive(Debug, Clone, Copy)]
pub enum Faults {
    /// A request's first connection is reset, its second answered 500, its third served.
    ResetThen500,
    /// A request's first connection is answered 503 SlowDown (throttling), its second served.
    SlowDown,
    /// A request's first connection is read and then left unanswered (a stall); its
    /// second is served.
    StallFirst,
    /// Every request served, both directions throttled to this many bytes a second.
    Slow(u64),
    /// Every connection answered 500.
    All,
    /// Every request served, its answer held back this many milliseconds after the
    /// service gave it: what a slow network does to a long poll that already has a message.
    Delay(u64),
}

/// A running proxy.
pub struct Proxy {
    pub url: String,
    injected: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// How many faults the proxy has injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// The `X-Amz-Target` of each request carried so far, in order (empty for a request
    /// without one).
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

/// Starts the proxy in front of `target` (`http://host:port`); returns its URL. Its threads
/// end with the test process.
pub fn faulty_proxy(target: &str, faults: Faults) -> String {
    start(target, faults).url
}

/// Starts the proxy; the handle also counts the faults injected.
pub fn start(target: &str, faults: Faults) -> Proxy {
    let target = target.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let injected = Arc::new(AtomicUsize::new(0));
    let targets: Arc<Mutex<Vec<String>>> = Arc::default();
    let (counter, seen_targets) = (injected.clone(), targets.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(client) = stream else { continue };
            let (target, seen, counter, seen_targets) = (
                target.clone(),
                seen.clone(),
                counter.clone(),
                seen_targets.clone(),
            );
            std::thread::spawn(move || {
                carry(client, &target, faults, &seen, &counter, &seen_targets)
            });
        }
    });
    Proxy {
        url,
        injected,
        targets,
    }
}

fn carry(
    mut client: TcpStream,
    target: &str,
    faults: Faults,
    seen: &Mutex<HashMap<u64, u32>>,
    injected: &AtomicUsize,
    targets: &Mutex<Vec<String>>,
) {
    let Some(request) = read_request(&mut client) else {
        return;
    };
    targets.lock().unwrap().push(request.target.clone());
    let attempt = {
        let mut seen = seen.lock().unwrap();
        let count = seen.entry(request.key).or_insert(0);
        *count += 1;
        *count
    };
    let fault = match (faults, attempt) {
        (Faults::All, _) => Some(500),
        (Faults::StallFirst, 1) => Some(1),
        (Faults::ResetThen500, 1) => Some(0),
        (Faults::ResetThen500, 2) | (Faults::SlowDown, 1) => {
            Some(if matches!(faults, Faults::SlowDown) {
                503
            } else {
                500
            })
        }
        _ => None,
    };
    if fault.is_some() {
        injected.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Some(0) => reset(client),
        // Held open, silent, until the test process ends or the client gives up.
        Some(1) => {
            let _ = std::io::copy(&mut &client, &mut std::io::sink());
        }
        Some(status) => answer_error(client, status),
        None => {
            let rate = match faults {
                Faults::Slow(rate) => Some(rate),
                _ => None,
            };
            let delay = match faults {
                Faults::Delay(ms) => Some(std::time::Duration::from_millis(ms)),
                _ => None,
            };
            pass_through(client, target, &request.read, rate, delay);
        }
    }
}

struct Request {
    /// What identifies the request across its retries.
    key: u64,
    /// Its `X-Amz-Target`, empty when it has none.
    target: String,
    /// Every byte read from the client so far.
    read: Vec<u8>,
}

/// Reads the head, and the body when it is small; hashes what identifies the request.
fn read_request(client: &mut TcpStream) -> Option<Request> {
    let mut read = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = find(&read, b"\r\n\r\n") {
            break at + 4;
        }
        if read.len() > 64 * 1024 {
            return None;
        }
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => read.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&read[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut hasher = DefaultHasher::new();
    lines.next().unwrap_or_default().hash(&mut hasher);
    let mut length = 0usize;
    let mut target = String::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "x-amz-target" {
            value.hash(&mut hasher);
            target = value.to_string();
        } else if name == "content-length" {
            length = value.parse().unwrap_or(0);
        }
    }
    if length <= 64 * 1024 {
        while read.len() < head_end + length {
            match client.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => read.extend_from_slice(&chunk[..n]),
            }
        }
        read[head_end..head_end + length].hash(&mut hasher);
    }
    Some(Request {
        key: hasher.finish(),
        target,
        read,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn answer_error(mut client: TcpStream, status: u16) {
    let (reason, code, message) = match status {
        503 => ("Slow Down", "SlowDown", "Please reduce your request rate."),
        _ => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error.",
        ),
    };
    let body = format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>");
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes());
    let _ = client.shutdown(Shutdown::Write);
    // Drain what the client still sends, so closing does not reset the answer away.
    let _ = std::io::copy(&mut client, &mut std::io::sink());
}

/// Closes with SO_LINGER 0: the kernel answers with RST whatever was read.
fn reset(client: TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(&client, Linger, &linger);
    drop(client);
}

fn pass_through(
    client: TcpStream,
    target: &str,
    read: &[u8],
    rate: Option<u64>,
    delay: Option<std::time::Duration>,
) {
    let Ok(mut server) = TcpStream::connect(target) else {
        return;
    };
    if server.write_all(read).is_err() {
        return;
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut c1, mut s1) = (client, server);
    std::thread::spawn(move || {
        let _ = copy(&mut c1, &mut s1, rate);
        let _ = s1.shutdown(Shutdown::Write);
    });
    if let Some(delay) = delay {
        // The service has answered (its first byte is here); the client hears it later.
        let mut first = [0u8; 1];
        if s2.read_exact(&mut first).is_err() {
            return;
        }
        std::thread::sleep(delay);
        if c2.write_all(&first).is_err() {
            return;
        }
    }
    let _ = copy(&mut s2, &mut c2, rate);
    let _ = c2.shutdown(Shutdown::Write);
}

/// Copies until the end, at most `rate` bytes a second when given.
fn copy(from: &mut TcpStream, to: &mut TcpStream, rate: Option<u64>) -> std::io::Result<()> {
    let Some(rate) = rate else {
        return std::io::copy(from, to).map(drop);
    };
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut chunk = [0u8; 4096];
    loop {
        let n = from.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&chunk[..n])?;
        sent += n as u64;
        let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}
