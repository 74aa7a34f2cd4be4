//! `agent daemon`: takes jobs from its sources and runs them, N at a time, each in its
//! own workspace and container, with results stored before deliveries are settled, a
//! journal that lets a restarted agent clean up after a crash, a drain on SIGTERM, a live
//! reload on SIGHUP, and metrics and health over HTTP.

pub mod aws_setup;
pub mod codepipeline;
pub mod git_credentials;
pub mod http;
pub mod janitor;
pub mod lease;
pub mod metrics;
pub mod notify;
pub mod result;
pub mod retention;
pub mod runner;
pub mod source;
pub mod spool;
pub mod sqs;
pub mod state;
pub mod webhook;
pub mod workspace;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_config::Config;
use agent_config::config::Source as SourceConfig;
use std::sync::atomic::Ordering;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use self::metrics::Metrics;
use self::runner::{Cancel, Runner};
use self::source::{JobSource, SourceError};
use crate::exit;

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Runs the daemon until it is stopped; returns the exit status.
/// `json_logs` is `--log-format`; without it the config's `agent.log_format` decides.
pub fn run(config_path: &Path, json_logs: Option<bool>) -> u8 {
    let config = match agent_config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return exit::BAD_INPUT;
        }
    };
    // A service logs its progress; journald or a log shipper reads it.
    let json =
        json_logs.unwrap_or(config.agent.log_format == agent_config::config::LogFormat::Json);
    crate::cli::init_tracing("info", json);
    let runtime = match crate::runtime::start() {
        Ok(rt) => rt,
        Err(status) => return status,
    };
    runtime.block_on(Daemon::run(config_path.to_path_buf(), config))
}

/// `agent status`: asks a running daemon for its `/status.json`.
pub fn status(address: Option<String>, config_path: &Path, json: bool) -> u8 {
    let address = match address {
        Some(a) => a,
        None => match agent_config::load(config_path) {
            Ok(config) => match config.agent.metrics_address {
                Some(a) => a.to_string(),
                None => {
                    eprintln!(
                        "error: {} sets no `agent.metrics_address`; the daemon serves no status",
                        config_path.display()
                    );
                    return exit::BAD_INPUT;
                }
            },
            Err(e) => {
                eprintln!("{e}");
                return exit::BAD_INPUT;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CANNOT_RUN;
        }
    };
    match runtime.block_on(http::fetch_status(&address)) {
        Ok(status) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                print!("{}", http::render_status(&status));
            }
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot reach the agent at {address}: {e}");
            exit::CANNOT_RUN
        }
    }
}

/// A source with what the daemon needs to know about it.
#[derive(Clone)]
struct Polled {
    source: Arc<dyn JobSource>,
    /// Deliveries beyond this count are failed as poison, not run.
    max_receives: Option<u32>,
    health: Arc<std::sync::Mutex<SourceHealth>>,
    spool: Option<Arc<spool::SpoolSource>>,
}

#[derive(Debug, Default, Clone)]
struct SourceHealth {
    healthy: bool,
    last_poll: Option<String>,
    last_error: Option<String>,
}

struct Daemon {
    config_path: PathBuf,
    config_tx: watch::Sender<Arc<Config>>,
    runner: Arc<Runner>,
    cancel_tx: watch::Sender<Cancel>,
    slots: Arc<Semaphore>,
    /// Told when a slot may have come free (a job ended, the concurrency went up).
    freed: tokio::sync::Notify,
    /// When the main loop last turned, for `/healthz`.
    last_beat: std::sync::Mutex<Instant>,
    capacity: std::sync::Mutex<usize>,
    draining: std::sync::atomic::AtomicBool,
    started_at: String,
    sources: std::sync::Mutex<Vec<Polled>>,
}

impl Daemon {
    async fn run(config_path: PathBuf, config: Config) -> u8 {
        let state = match prepare_dirs(&config) {
            Ok(state) => state,
            Err(message) => {
                eprintln!("error: {message}");
                return exit::CANNOT_RUN;
            }
        };
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")).with_own_uploads());
        let concurrency = usize::try_from(config.agent.concurrency)
            .unwrap_or(1)
            .max(1);
        metrics.set_capacity(concurrency);
        metrics.set_labels(&config.agent.labels);
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("error: cannot find the agent's own binary: {e}");
                return exit::CANNOT_RUN;
            }
        };
        let current = config_rx.borrow().clone();
        let webhooks = match webhook::Webhooks::new(&current.agent.name) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::CANNOT_RUN;
            }
        };
        let runner = Arc::new(Runner {
            aws: aws_setup::AwsSetup::default(),
            webhooks,
            config: config_rx,
            state,
            metrics: Arc::clone(&metrics),
            exe,
            running: std::sync::Mutex::new(Default::default()),
            active: std::sync::Mutex::new(Default::default()),
            recent: std::sync::Mutex::new(Vec::new()),
        });
        let (cancel_tx, _) = watch::channel(Cancel::No);
        let daemon = Arc::new(Daemon {
            config_path,
            config_tx,
            runner,
            cancel_tx,
            slots: Arc::new(Semaphore::new(concurrency)),
            freed: tokio::sync::Notify::new(),
            last_beat: std::sync::Mutex::new(Instant::now()),
            capacity: std::sync::Mutex::new(concurrency),
            draining: std::sync::atomic::AtomicBool::new(false),
            started_at: now_rfc3339(),
            sources: std::sync::Mutex::new(Vec::new()),
        });
        daemon.main().await
    }

    fn config(&self) -> Arc<Config> {
        self.config_tx.borrow().clone()
    }

    async fn main(self: Arc<Self>) -> u8 {
        let config = self.config();
        let sources = match open_sources(&config).await {
            Ok(sources) => sources,
            Err(message) => {
                eprintln!("error: {message}");
                return exit::CANNOT_RUN;
            }
        };
        let plain: Vec<Arc<dyn JobSource>> =
            sources.iter().map(|p| Arc::clone(&p.source)).collect();
        janitor::reconcile(&config, &self.runner.state, &plain).await;
        for polled in &sources {
            if let Some(spool) = &polled.spool {
                for name in spool.release_all_claimed() {
                    tracing::info!(file = %name, "a job claimed before the restart is back in the inbox");
                }
            }
        }
        if let Ok(mut list) = self.sources.lock() {
            *list = sources.clone();
        }
        // A drain stops it; what it did not finish stays pending for the next start.
        tokio::spawn({
            let runner = Arc::clone(&self.runner);
            let stopping = self.cancel_tx.subscribe();
            async move { runner.finish_pending(stopping).await }
        });
        let Ok(mut signals) = Signals::new() else {
            eprintln!("error: cannot install signal handlers");
            return exit::CANNOT_RUN;
        };
        let (job_tx, mut job_rx) = mpsc::channel::<Taken>(8);
        let mut pollers = Pollers::start(&self, sources, &job_tx);
        let mut server = self.start_http(&config).await;
        let notifier = notify::Notifier::from_env();
        let _ = notifier.ready();
        let mut watchdog = notifier
            .watchdog_interval()
            .map(|every| tokio::time::interval(every / 2));
        tracing::info!(agent = %config.agent.name, concurrency = config.agent.concurrency, "agent daemon ready");
        let (edited_tx, mut edited) = mpsc::channel::<()>(1);
        let _config_watch = watch_config(&self.config_path, edited_tx);
        let mut jobs = JoinSet::new();
        let mut alive = tokio::time::interval(LOOP_BEAT);
        let mut shown = String::new();
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        let drained = loop {
            tokio::select! {
                _ = prune.tick() => {
                    let config = self.config();
                    let (state, keep) = (config.agent.state_dir.clone(), config.agent.retention);
                    tokio::task::spawn_blocking(move || {
                        let pruned = retention::prune(&state, keep);
                        if pruned != retention::Pruned::default() {
                            tracing::info!(results = pruned.results, logs = pruned.logs, artifacts = pruned.artifacts, mirrors = pruned.mirrors, retention_h = keep.as_secs() / 3600, "removed finished jobs' records and unused git mirrors past the retention");
                        }
                    });
                }
                _ = alive.tick() => {
                    self.beat();
                    // `systemctl status` shows it; sent when it changes.
                    let status = self.status_line(jobs.len());
                    if status != shown {
                        let _ = notifier.status(&status);
                        shown = status;
                    }
                }
                Some(()) = edited.recv() => {
                    // Editors write in several steps; read the file once they are done.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    while edited.try_recv().is_ok() {}
                    let _ = notifier.reloading();
                    let reloaded = self.reload().await;
                    self.restart(reloaded, &mut pollers, &mut server, &job_tx).await;
                    let _ = notifier.ready();
                }
                Some(taken) = job_rx.recv() => {
                    let daemon = Arc::clone(&self);
                    let cancel = self.cancel_tx.subscribe();
                    jobs.spawn(async move {
                        let Taken { polled, delivery, keeper, permit } = taken;
                        let runner = Arc::clone(&daemon.runner);
                        runner.handle(Arc::clone(&polled.source), delivery, keeper, polled.max_receives, cancel).await;
                        drop(permit);
                        daemon.freed.notify_waiters();
                    });
                }
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                () = tick(watchdog.as_mut()) => {
                    // The watchdog is fed only while the sources answer.
                    if self.healthy() {
                        let _ = notifier.watchdog();
                    }
                }
                signal = signals.next() => match signal {
                    Sig::Term | Sig::Int => break true,
                    Sig::Quit => break false,
                    Sig::Hup => {
                        let _ = notifier.reloading();
                        let reloaded = self.reload().await;
                        self.restart(reloaded, &mut pollers, &mut server, &job_tx).await;
                        let _ = notifier.ready();
                    }
                }
            }
        };
        let _ = notifier.stopping();
        self.draining.store(true, Ordering::SeqCst);
        self.runner.metrics.set_draining(true);
        drop(job_tx);
        pollers.stop().await;
        // Deliveries taken by a poller just before the drain go back to their source.
        while let Ok(taken) = job_rx.try_recv() {
            taken.keeper.stop().await;
            let _ = taken.polled.source.release(&taken.delivery).await;
        }
        let drain = self.config().agent.drain_timeout;
        if drained && !jobs.is_empty() {
            // The drain, then the graceful stop, then the webhooks' flush, with a margin.
            let _ = notifier
                .extend_timeout(drain + STOP_GRACE + WEBHOOK_FLUSH + Duration::from_secs(30));
            tracing::info!(
                running = jobs.len(),
                timeout_s = drain.as_secs(),
                "draining: no new jobs; the running ones may finish (SIGTERM again stops them now)"
            );
            let deadline = tokio::time::sleep(drain);
            tokio::pin!(deadline);
            let mut shown = usize::MAX;
            loop {
                if jobs.len() != shown {
                    shown = jobs.len();
                    let _ = notifier.status(&format!("draining: {shown} jobs left"));
                }
                tokio::select! {
                    // Still turning: /healthz must not fail a host that is draining.
                    _ = alive.tick() => self.beat(),
                    next = jobs.join_next() => if next.is_none() { break },
                    () = &mut deadline => {
                        tracing::warn!("the drain timeout passed: stopping the running jobs");
                        break;
                    }
                    signal = signals.next() => if !matches!(signal, Sig::Hup) {
                        tracing::warn!("stopping the running jobs now");
                        break;
                    }
                }
            }
        }
        if !jobs.is_empty() {
            // Stopped jobs run `finally`, report STOPPED and go back to their source.
            let _ = self.cancel_tx.send(Cancel::Graceful);
            let grace = tokio::time::sleep(STOP_GRACE);
            tokio::pin!(grace);
            let mut killed = false;
            loop {
                tokio::select! {
                    _ = alive.tick() => self.beat(),
                    next = jobs.join_next() => if next.is_none() { break },
                    // A spent sleep is ready at every poll: fire once.
                    () = &mut grace, if !killed => {
                        killed = true;
                        let _ = self.cancel_tx.send(Cancel::Now);
                    }
                    signal = signals.next() => if !matches!(signal, Sig::Hup) {
                        let _ = self.cancel_tx.send(Cancel::Now);
                    }
                }
            }
        }
        if let Some((server, stop)) = server {
            stop.send_replace(true);
            let _ = server.handle.await;
        }
        // Webhooks already sent on their way get a moment to arrive.
        self.runner.webhooks.flush(WEBHOOK_FLUSH).await;
        tracing::info!("agent daemon stopped");
        exit::SUCCESS
    }

    /// Takes jobs from one source while slots are free, until told to stop.
    ///
    /// A poll holds no slot: an SQS long poll must not keep another source's job waiting.
    /// A source is polled only while a slot is free, or after a failed poll (to learn
    /// whether it is back, so that its health is never stale while jobs fill the slots).
    /// What it delivers then waits for a slot with its lease kept, at most one delivery per
    /// source.
    async fn poll(
        self: Arc<Self>,
        polled: Polled,
        mut stop: watch::Receiver<bool>,
        jobs: mpsc::Sender<Taken>,
    ) {
        let name = polled.source.name().to_string();
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        loop {
            if *stop.borrow() {
                return;
            }
            if !failing && !self.wait_for_free_slot(&mut stop).await {
                return;
            }
            let started = Instant::now();
            let mut poll = polled.source.next();
            let next = tokio::select! {
                next = &mut poll => next,
                _ = stop.changed() => {
                    // An SQS long poll may already carry a message the queue handed out:
                    // dropping it would leave that message invisible for the whole
                    // visibility timeout. The poll is let finish (a long poll ends within
                    // its wait time) and whatever it brought is handed back at once.
                    if let Ok(Ok(Some(delivery))) = tokio::time::timeout(POLL_FINISH, poll).await {
                        tracing::info!(source = %name, delivery = %delivery.name(), "handing back a job received while stopping");
                        if let Err(e) = polled.source.release(&delivery).await {
                            tracing::warn!(source = %name, error = %e, "could not hand back a job received while stopping");
                        }
                    }
                    return;
                }
            };
            let error = next.is_err();
            let got = matches!(next, Ok(Some(_)));
            self.runner
                .metrics
                .poll(&name, started.elapsed(), got, error);
            let mut health = SourceHealth {
                healthy: !error,
                last_poll: Some(now_rfc3339()),
                last_error: None,
            };
            failing = error;
            match next {
                Ok(Some(delivery)) => {
                    backoff = Duration::from_secs(1);
                    self.set_health(&polled, health);
                    let keeper = lease::LeaseKeeper::start(&polled.source, &delivery);
                    let permit = tokio::select! {
                        permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
                        _ = stop.changed() => None,
                    };
                    let Some(permit) = permit else {
                        keeper.stop().await;
                        let _ = polled.source.release(&delivery).await;
                        return;
                    };
                    let taken = Taken {
                        polled: polled.clone(),
                        delivery,
                        keeper,
                        permit,
                    };
                    if let Err(unsent) = jobs.send(taken).await {
                        let taken = unsent.0;
                        taken.keeper.stop().await;
                        let _ = taken.polled.source.release(&taken.delivery).await;
                        return;
                    }
                }
                Ok(None) => {
                    backoff = Duration::from_secs(1);
                    self.set_health(&polled, health);
                }
                Err(e) => {
                    let fatal = matches!(e, SourceError::Fatal(_));
                    tracing::warn!(source = %name, error = %e, "polling failed");
                    health.last_error = Some(e.to_string());
                    self.set_health(&polled, health);
                    let pause = if fatal {
                        Duration::from_secs(30)
                    } else {
                        backoff
                    };
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    /// Waits until a job slot is free, without taking it; `false` when told to stop.
    async fn wait_for_free_slot(&self, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a slot freed in between is not missed.
            freed.as_mut().enable();
            if self.slots.available_permits() > 0 {
                return true;
            }
            tokio::select! {
                () = &mut freed => {}
                // A fallback: permits can also come back without a job ending (a reload).
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return false,
            }
        }
    }

    fn set_health(&self, polled: &Polled, health: SourceHealth) {
        self.runner
            .metrics
            .set_source_healthy(polled.source.name(), health.healthy);
        if let Ok(mut h) = polled.health.lock() {
            let last_error = health
                .last_error
                .or_else(|| h.last_error.clone().filter(|_| !health.healthy));
            *h = SourceHealth {
                last_error,
                ..health
            };
        }
    }

    /// One line for `systemctl status`: how busy the agent is, and a failing source.
    fn status_line(&self, running: usize) -> String {
        let capacity = self.capacity.lock().map(|c| *c).unwrap_or(0);
        let failing = self.failing_sources();
        if failing.is_empty() {
            format!("{running} of {capacity} jobs running; sources answer")
        } else {
            format!(
                "{running} of {capacity} jobs running; failing: {}",
                failing.join(", ")
            )
        }
    }

    fn beat(&self) {
        if let Ok(mut last) = self.last_beat.lock() {
            *last = Instant::now();
        }
    }

    /// Whether the main loop has turned lately (it beats every [`LOOP_BEAT`]).
    fn loop_alive(&self) -> bool {
        self.last_beat
            .lock()
            .is_ok_and(|last| last.elapsed() < LOOP_BEAT * 6)
    }

    /// The sources whose last poll failed; one not polled yet is given the benefit of
    /// the doubt.
    fn failing_sources(&self) -> Vec<String> {
        self.sources
            .lock()
            .map(|sources| {
                sources
                    .iter()
                    .filter(|p| {
                        p.health
                            .lock()
                            .is_ok_and(|h| !h.healthy && h.last_poll.is_some())
                    })
                    .map(|p| p.source.name().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn healthy(&self) -> bool {
        self.failing_sources().is_empty()
    }

    /// SIGHUP: read the config again; what can change live changes now (concurrency,
    /// allow-lists, limits, timeouts); sources (and the metrics listener) that changed are
    /// opened here, for [`Daemon::restart`] to put in place; what is read only at start is
    /// reported. A config with errors, or whose sources cannot be opened, changes nothing.
    async fn reload(&self) -> Reloaded {
        let new = match agent_config::load(&self.config_path) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("the config was not reloaded, it has errors:\n{e}");
                return Reloaded::default();
            }
        };
        let old = self.config();
        let changes = agent_config::live_changes(&old, &new);
        let sources_changed = changes
            .restart
            .iter()
            .any(|f| *f == "sources" || f.starts_with("aws."));
        let sources = if sources_changed {
            match open_sources(&new).await {
                Ok(sources) => Some(sources),
                Err(e) => {
                    tracing::error!(error = %e, "the config was not reloaded: its sources cannot be opened");
                    return Reloaded::default();
                }
            }
        } else {
            None
        };
        if !changes.process.is_empty() {
            tracing::warn!(fields = ?changes.process, "these config changes take effect when the agent next starts");
        }
        let wanted = usize::try_from(new.agent.concurrency).unwrap_or(1).max(1);
        if let Ok(mut capacity) = self.capacity.lock() {
            if wanted > *capacity {
                self.slots.add_permits(wanted - *capacity);
                self.freed.notify_waiters();
            } else if wanted < *capacity {
                // Slots in use are taken back as their jobs finish.
                let slots = Arc::clone(&self.slots);
                let fewer = u32::try_from(*capacity - wanted).unwrap_or(0);
                tokio::spawn(async move {
                    if let Ok(permits) = slots.acquire_many_owned(fewer).await {
                        permits.forget();
                    }
                });
            }
            *capacity = wanted;
        }
        self.runner.metrics.set_capacity(wanted);
        self.runner.metrics.set_labels(&new.agent.labels);
        tracing::info!(live = ?changes.live, restarted = ?changes.restart, concurrency = wanted, "config reloaded");
        let listener_moved = old.agent.metrics_address != new.agent.metrics_address;
        self.config_tx.send_replace(Arc::new(new));
        Reloaded {
            sources,
            listener_moved,
        }
    }

    /// Puts a reload's new sources and listener in place. Pollers of the old sources stop
    /// between polls; jobs they delivered run on and are settled with the source that
    /// delivered them.
    async fn restart(
        self: &Arc<Self>,
        reloaded: Reloaded,
        pollers: &mut Pollers,
        server: &mut Option<(http::BoundServer, watch::Sender<bool>)>,
        jobs: &mpsc::Sender<Taken>,
    ) {
        if let Some(sources) = reloaded.sources {
            pollers.stop().await;
            if let Ok(mut list) = self.sources.lock() {
                *list = sources.clone();
            }
            let names: Vec<&str> = sources.iter().map(|p| p.source.name()).collect();
            tracing::info!(sources = ?names, "job sources restarted");
            *pollers = Pollers::start(self, sources, jobs);
        }
        if reloaded.listener_moved {
            if let Some((old, stop)) = server.take() {
                stop.send_replace(true);
                let _ = old.handle.await;
            }
            *server = self.start_http(&self.config()).await;
        }
    }

    async fn start_http(
        self: &Arc<Self>,
        config: &Config,
    ) -> Option<(http::BoundServer, watch::Sender<bool>)> {
        let address = config.agent.metrics_address?;
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let provider: Arc<dyn http::StatusProvider> = Arc::new(StatusView(Arc::clone(self)));
        let shutdown = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        match http::serve(
            address,
            provider,
            Arc::clone(&self.runner.metrics),
            shutdown,
        )
        .await
        {
            Ok(server) => {
                tracing::info!(address = %server.local_addr, "serving /metrics, /healthz, /readyz and /status.json");
                Some((server, stop_tx))
            }
            Err(e) => {
                tracing::error!(address = %address, error = %e, "cannot serve metrics and health");
                None
            }
        }
    }
}

/// What a reload left for the main loop to put in place.
#[derive(Default)]
struct Reloaded {
    /// The sources of the new config, opened, when they differ from the running ones.
    sources: Option<Vec<Polled>>,
    /// `agent.metrics_address` changed.
    listener_moved: bool,
}

/// The tasks polling the sources.
struct Pollers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Pollers {
    fn start(daemon: &Arc<Daemon>, sources: Vec<Polled>, jobs: &mpsc::Sender<Taken>) -> Pollers {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for polled in sources {
            tasks.spawn(Arc::clone(daemon).poll(polled, stopped.clone(), jobs.clone()));
        }
        Pollers { stop, tasks }
    }

    /// Stops polling: a poll under way is dropped (every source loses nothing that way),
    /// a delivery being handed over is handed over first.
    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        let ended = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(POLLERS_STOP, ended).await.is_err() {
            tracing::warn!("a source did not stop polling in time; stopping it now");
            self.tasks.shutdown().await;
        }
    }
}

/// How long pollers get to stop: a poll in flight is let finish (see [`POLL_FINISH`]).
const POLLERS_STOP: Duration = Duration::from_secs(30);

/// How long a poll in flight when the daemon stops may take to finish: an SQS long poll's
/// longest wait (20 s), and a margin.
const POLL_FINISH: Duration = Duration::from_secs(25);

/// Reloads the config when its file changes, as on SIGHUP. The directory is watched, not
/// the file: editors and config management replace files by renaming new ones in.
fn watch_config(path: &Path, edited: mpsc::Sender<()>) -> Option<::notify::RecommendedWatcher> {
    use ::notify::Watcher;
    let name = path.file_name()?.to_os_string();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut watcher =
        ::notify::recommended_watcher(move |event: ::notify::Result<::notify::Event>| {
            let Ok(event) = event else { return };
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()));
            if ours && (event.kind.is_modify() || event.kind.is_create()) {
                let _ = edited.try_send(());
            }
        })
        .ok()?;
    match watcher.watch(dir, ::notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, "the config file is not watched; reload it with SIGHUP");
            None
        }
    }
}

/// How long stopped jobs get for `finally` before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(45);
/// How long webhooks already on their way may take once the jobs have stopped.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(30);

/// How often the state directory is pruned of records past `agent.retention`.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often the main loop marks itself alive; `/healthz` fails after six missed beats.
const LOOP_BEAT: Duration = Duration::from_secs(5);

/// A delivery a poller took, with the slot it will run in.
struct Taken {
    polled: Polled,
    delivery: source::Delivery,
    /// Keeps the delivery's lease from its receipt on, slot wait included.
    keeper: lease::LeaseKeeper,
    permit: tokio::sync::OwnedSemaphorePermit,
}

async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct StatusView(Arc<Daemon>);

impl http::StatusProvider for StatusView {
    fn status(&self) -> http::Status {
        let daemon = &self.0;
        let config = daemon.config();
        let running = daemon
            .runner
            .running
            .lock()
            .map(|r| {
                r.values()
                    .map(|j| http::RunningJob {
                        job_id: j.job_id.clone(),
                        kind: j.kind.clone(),
                        source: j.source.clone(),
                        started_at: j.started_at.clone(),
                        elapsed_ms: u64::try_from(j.started.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sources = daemon
            .sources
            .lock()
            .map(|s| {
                s.iter()
                    .map(|p| {
                        let h = p.health.lock().map(|h| h.clone()).unwrap_or_default();
                        http::SourceStatus {
                            name: p.source.name().to_string(),
                            healthy: h.healthy || h.last_poll.is_none(),
                            last_poll: h.last_poll,
                            last_error: h.last_error,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let recent: Vec<result::JobResult> = daemon
            .runner
            .recent
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for r in &recent {
            *counts.entry(r.status.as_str().to_string()).or_insert(0) += 1;
        }
        http::Status {
            agent: config.agent.name.clone(),
            labels: config.agent.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: daemon.started_at.clone(),
            state: if daemon.draining.load(Ordering::SeqCst) {
                "draining"
            } else {
                "running"
            }
            .to_string(),
            concurrency: daemon.capacity.lock().map(|c| *c).unwrap_or(0),
            running,
            sources,
            recent: recent
                .iter()
                .rev()
                .map(|r| http::RecentJob {
                    job_id: r.job_id.clone(),
                    status: r.status,
                    finished_at: r.finished_at.clone(),
                    duration_ms: r.duration_ms,
                })
                .collect(),
            counts,
        }
    }

    fn healthy(&self) -> bool {
        // The main loop, which takes jobs and answers signals, is turning.
        self.0.loop_alive()
    }

    fn ready(&self) -> bool {
        !self.0.draining.load(Ordering::SeqCst) && self.0.healthy()
    }
}

/// Creates the state and work directories; the state directory holds the journal.
fn prepare_dirs(config: &Config) -> Result<state::State, String> {
    std::fs::create_dir_all(&config.agent.work_dir).map_err(|e| {
        format!(
            "cannot create the work directory {}: {e}",
            config.agent.work_dir.display()
        )
    })?;
    state::State::open(&config.agent.state_dir).map_err(|e| {
        format!(
            "cannot use the state directory {}: {e}",
            config.agent.state_dir.display()
        )
    })
}

async fn open_sources(config: &Config) -> Result<Vec<Polled>, String> {
    let mut out = Vec::new();
    for source in &config.sources {
        let health = Arc::new(std::sync::Mutex::new(SourceHealth::default()));
        match source {
            SourceConfig::Spool(spool) => {
                let opened = Arc::new(
                    spool::SpoolSource::open(&spool.path, &config.agent.name)
                        .map_err(|e| e.to_string())?,
                );
                out.push(Polled {
                    source: opened.clone(),
                    max_receives: Some(spool.max_receive_count),
                    health,
                    spool: Some(opened),
                });
            }
            SourceConfig::Sqs(sqs) => {
                crate::aws::ca::require(config.aws.endpoint_url.as_deref())?;
                let aws = aws_config(config).await;
                let opened = sqs::SqsSource::new(
                    &aws,
                    sqs::SqsOptions {
                        queue_url: sqs.queue_url.clone(),
                        visibility_timeout: sqs.visibility_timeout,
                        wait_time: sqs.wait_time,
                        max_receive_count: sqs.max_receive_count,
                        dead_letter_queue_url: sqs.dead_letter_queue_url.clone(),
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                out.push(Polled {
                    source: Arc::new(opened),
                    max_receives: Some(sqs.max_receive_count),
                    health,
                    spool: None,
                });
            }
            SourceConfig::Codepipeline(cp) => {
                crate::aws::ca::require(config.aws.endpoint_url.as_deref())?;
                let aws = aws_config(config).await;
                let opened = codepipeline::CodePipelineSource::new(
                    &aws,
                    codepipeline::CodePipelineOptions {
                        category: cp.category,
                        provider: cp.provider.clone(),
                        version: cp.version.clone(),
                        poll_interval: cp.poll_interval,
                        // On the workspaces' file system (inputs are moved, not copied), under a
                        // name no job id can take (`+` is not allowed in ids).
                        work_dir: config.agent.work_dir.join("+codepipeline"),
                        job_timeout: cp.job_timeout,
                        agent: config.agent.name.clone(),
                        query_param: cp.query_param.clone(),
                    },
                )
                .map_err(|e| e.to_string())?;
                out.push(Polled {
                    source: Arc::new(opened),
                    max_receives: None,
                    health,
                    spool: None,
                });
            }
        }
    }
    Ok(out)
}

/// The AWS setup of the config: its region, profile and endpoint over the standard chain.
pub(crate) async fn aws_config(config: &Config) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(crate::aws::timeouts());
    if let Some(region) = &config.aws.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &config.aws.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = &config.aws.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Term,
    Int,
    Quit,
    Hup,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Term,
            _ = self.int.recv() => Sig::Int,
            _ = self.quit.recv() => Sig::Quit,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
}
