//! The async runtime the commands run on.

use std::future::Future;

use crate::exit;

/// A runtime with two workers: builds, deployments and the daemon spend their time waiting
/// on processes and the network, not computing. On failure, says why and gives the exit
/// status.
pub fn start() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::CANNOT_RUN
        })
}

/// Runs a command's future on a new runtime and returns its exit status, without waiting
/// for blocking threads when it is done: a read of standard input (`--control-stdin`) may
/// still be blocked on a thread that cannot be interrupted, and the process is finished.
/// That holds after a panic too: dropping the runtime would wait for that thread forever.
pub fn run_abandoning_blocked_reads(command: impl Future<Output = u8>) -> u8 {
    let runtime = match start() {
        Ok(rt) => rt,
        Err(status) => return status,
    };
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(command)));
    runtime.shutdown_background();
    match outcome {
        Ok(status) => status,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
