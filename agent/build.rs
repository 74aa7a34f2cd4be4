//! Release builds lay out the daemon's code together: the functions `agent daemon` runs
//! while it waits for and hands out jobs (listed in `link/daemon.order`, made by
//! `tests/bench/daemon-order.sh`) go first in `.text`, so an idle daemon keeps a few
//! hundred pages of the binary resident instead of pages from all over it.
//!
//! The list is a layout hint only: a name it lists that the binary lacks is skipped, a
//! function it misses is placed as usual. It needs LLD, the default linker of
//! x86_64-unknown-linux-gnu since Rust 1.90; elsewhere (or with
//! `AGENT_NO_SYMBOL_ORDERING=1`, or another linker set) nothing changes.

use std::path::Path;
use std::process::Command;

fn main() {
    let order = Path::new("link/daemon.order");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=AGENT_NO_SYMBOL_ORDERING");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if !wanted() {
        return;
    }
    let Ok(path) = order.canonicalize() else {
        return;
    };
    println!(
        "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

fn wanted() -> bool {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || !env("AGENT_NO_SYMBOL_ORDERING").is_empty()
        || !env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
    {
        return false;
    }
    // A linker chosen by flag may not be LLD.
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    if flags.split('\x1f').any(|f| f.contains("linker")) {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The minor version of the compiler building this crate: `rustc 1.95.0 (…)` gives 95.
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
