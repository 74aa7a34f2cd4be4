//! A TCP proxy on loopback that injects faults between the agent and a service.
//!
//! Faults are decided per request, not per connection number: the first connection that
//! carries a given request line is reset, the second answered 500, later ones served. Every
//! request that opens a connection thus meets both faults, and then succeeds, however
//! requests interleave; a count of connections would let one request draw faults on every
//! attempt while its neighbours drew the served ones.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the proxy treats the requests it carries.
#[derive(Debug, Clone, Copy)]
pub enum Faults {
    /// A request's first connection is reset, its second answered 500, its third served.
    /// Requests sent on a connection already served are passed through.
    ResetThen500,
    /// Every connection answered 500.
    All,
}

/// Starts the proxy in front of `target` (`http://host:port`); returns its URL. Its threads
/// end with the test process.
pub fn faulty_proxy(target: &str, faults: Faults) -> String {
    let target = target.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(client) = stream else { continue };
            let (target, seen) = (target.clone(), seen.clone());
            std::thread::spawn(move || carry(client, &target, faults, &seen));
        }
    });
    url
}

fn carry(mut client: TcpStream, target: &str, faults: Faults, seen: &Mutex<HashMap<String, u32>>) {
    let Some(head) = read_request_line(&mut client) else {
        return;
    };
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let attempt = {
        let mut seen = seen.lock().unwrap();
        let count = seen.entry(line).or_insert(0);
        *count += 1;
        *count
    };
    match (faults, attempt) {
        (Faults::ResetThen500, 1) => reset(client),
        (Faults::All, _) | (Faults::ResetThen500, 2) => {
            let body = "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>";
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes());
            let _ = client.shutdown(Shutdown::Write);
            // Drain what the client still sends, so closing does not reset the answer away.
            let _ = std::io::copy(&mut client, &mut std::io::sink());
        }
        _ => pass_through(client, target, &head),
    }
}

/// Reads until the first line has arrived; returns every byte read so far.
fn read_request_line(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.contains(&b'\n') && head.len() < 64 * 1024 {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    Some(head)
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

fn pass_through(client: TcpStream, target: &str, head: &[u8]) {
    let Ok(mut server) = TcpStream::connect(target) else {
        return;
    };
    if server.write_all(head).is_err() {
        return;
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut c1, mut s1) = (client, server);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c1, &mut s1);
        let _ = s1.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut s2, &mut c2);
    let _ = c2.shutdown(Shutdown::Write);
}
