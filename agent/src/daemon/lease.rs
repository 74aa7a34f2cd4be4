//! Keeps a delivery's lease from its receipt to its settlement: the source's heartbeat runs
//! while the workspace is prepared (a git fetch with retries can outlast an SQS visibility
//! timeout), while the job runs and while its result is stored, so no other agent is handed
//! the job in the meantime. A source that calls the job off says so through
//! [`LeaseKeeper::called_off`].

use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::source::{Delivery, JobSource, Lease};

pub struct LeaseKeeper {
    called_off: watch::Receiver<Option<String>>,
    /// The beating task and how to stop it; `None` for a source with no lease.
    beats: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl LeaseKeeper {
    /// Starts beating at once (a job called off before it started stops before it runs),
    /// then at the source's interval. A source with no lease gets no task.
    pub fn start(source: &Arc<dyn JobSource>, delivery: &Delivery) -> LeaseKeeper {
        let (tx, called_off) = watch::channel(None);
        let Some(every) = source.heartbeat() else {
            return LeaseKeeper {
                called_off,
                beats: None,
            };
        };
        let (stop, mut stopped) = oneshot::channel::<()>();
        let source = Arc::clone(source);
        let delivery = delivery.clone();
        let task = tokio::spawn(async move {
            let mut beat = tokio::time::interval(every);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // The stop is looked at only between beats: a beat cut off halfway (a
                // CodePipeline hand-back) could leave the source unsure whose the job is.
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = beat.tick() => {}
                }
                match source.extend(&delivery).await {
                    Ok(Lease::Held) => {}
                    Ok(Lease::Cancelled(reason)) => {
                        if tx.borrow().is_none() {
                            let _ = tx.send(Some(reason));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(source = source.name(), delivery = %delivery.name(), error = %e, "cannot extend the lease");
                    }
                }
            }
        });
        LeaseKeeper {
            called_off,
            beats: Some((stop, task)),
        }
    }

    /// Changes to `Some(reason)` once the source has called the job off.
    pub fn called_off(&self) -> watch::Receiver<Option<String>> {
        self.called_off.clone()
    }

    /// Stops beating, after a beat under way has finished: the delivery is about to be
    /// settled.
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.beats.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Not stopped through `stop` (the handler itself was dropped): end the beats now.
        if let Some((_, task)) = self.beats.take() {
            task.abort();
        }
    }
}
