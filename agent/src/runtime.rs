//! The async runtime the commands run on.

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
