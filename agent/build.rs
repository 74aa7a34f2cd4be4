//! Release builds lay out the daemon's code together: the functions `agent daemon` runs
//! while it waits for and hands out jobs (listed in `link/daemon.order`, made by
//! `tests/bench/daemon-order.sh`) go first in `.text`, so an idle daemon keeps a few
//! hundred pages of the binary resident instead of pages from all over it.
//!
//! The list is a layout hint only: a name it lists that the binary lacks is skipped, a
//! function it misses is placed as usual. It needs LLD, which rustup's toolchains for
//! x86_64-unknown-linux-gnu link with by default since Rust 1.90 (`gcc-ld/ld.lld` in the
//! sysroot). Another linker would reject the flag and fail the build, so the list is only
//! passed when that default holds: a compiler of 1.90 or later whose sysroot ships
//! `gcc-ld/ld.lld`, and no linker, `-fuse-ld`, linker flavor or linker features chosen by
//! configuration. Otherwise, or with `AGENT_NO_SYMBOL_ORDERING=1`, nothing changes.

use std::path::Path;
use std::process::Command;

fn main() {
    describe_build();
    let order = Path::new("link/daemon.order");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=AGENT_NO_SYMBOL_ORDERING");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
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
        || !env("RUSTC_LINKER").is_empty()
    {
        return false;
    }
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    if !flags.split('\x1f').all(leaves_the_linker_alone) {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90) && ships_lld(&env("TARGET"))
}

/// Whether a rustc flag keeps the default linker: `-C linker=…`, `-C linker-flavor=…`,
/// `-C linker-features=…`, `-C link-self-contained=…` and `-C link-arg(s)=-fuse-ld=…` may
/// all swap LLD for another linker.
fn leaves_the_linker_alone(flag: &str) -> bool {
    !(flag.contains("linker") || flag.contains("link-self-contained") || flag.contains("fuse-ld"))
}

/// Whether the compiler's sysroot has the LLD its default link uses; distribution builds of
/// rustc may leave it out and link with the system's `ld`.
fn ships_lld(target: &str) -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Some(sysroot) = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
    else {
        return false;
    };
    Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(target)
        .join("bin/gcc-ld/ld.lld")
        .is_file()
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

/// `AGENT_COMMIT` and `AGENT_BUILD_DATE` for `agent --version`: the commit the binary was
/// built from (`unknown` outside a git checkout) and the day, UTC, or `SOURCE_DATE_EPOCH`'s
/// for a reproducible build.
fn describe_build() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo::rerun-if-changed={dir}/HEAD");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo::rerun-if-changed={dir}/{reference}");
        }
    }
    println!("cargo::rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    println!("cargo::rustc-env=AGENT_COMMIT={commit}");
    println!("cargo::rustc-env=AGENT_BUILD_DATE={}", civil_date(epoch));
}

/// `YYYY-MM-DD` of a Unix time, by the days-from-civil inverse (no date crate in a build
/// script).
fn civil_date(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
