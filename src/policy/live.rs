//! The policy in force ([`Live`]): read at start, swapped for a new one when a file changes or on
//! SIGHUP, by a watcher that polls the files.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use super::sources::{Fingerprint, KeySource, Sources, load};
use super::{Policy, PolicyError};

/// The policy in force, and how to replace it.
pub struct Live {
    current: ArcSwap<Policy>,
    sources: Sources,
    timeout: Duration,
    state: std::sync::Mutex<Reloads>,
}

/// What the last reloads saw, so an unchanged file is not rebuilt and a broken one is logged once.
struct Reloads {
    fingerprint: Fingerprint,
    last_error: Option<PolicyError>,
}

impl Live {
    /// Loads the policy for the first time; an error here stops the relay.
    pub fn start(sources: Sources, timeout: Duration) -> Result<Self, PolicyError> {
        let (spec, fingerprint) = load(&sources)?;
        let policy = Policy::build(spec, None, timeout)?;
        Ok(Self {
            current: ArcSwap::from_pointee(policy),
            sources,
            timeout,
            state: std::sync::Mutex::new(Reloads {
                fingerprint,
                last_error: None,
            }),
        })
    }

    /// The policy of this moment. A request keeps it to its end, whatever reloads meanwhile.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Reads the sources again and swaps in the result if anything changed. A source that fails
    /// to load leaves the running policy in place; the failure is logged once, not on every try.
    pub fn reload(&self, reason: &'static str) {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let loaded = load(&self.sources).and_then(|(spec, fingerprint)| {
            if fingerprint == state.fingerprint {
                return Ok(None);
            }
            let current = self.current();
            Policy::build(spec, Some(&current), self.timeout).map(|p| Some((p, fingerprint)))
        });
        match loaded {
            Ok(Some((policy, fingerprint))) => {
                let accounts: Vec<&str> = policy.accounts.keys().map(String::as_str).collect();
                info!(
                    reason,
                    callers = policy.callers.len(),
                    accounts = accounts.join(","),
                    "configuration reloaded"
                );
                self.current.store(Arc::new(policy));
                state.fingerprint = fingerprint;
                state.last_error = None;
            }
            Ok(None) => {
                if reason == "SIGHUP" {
                    info!(reason, "configuration unchanged");
                }
                state.last_error = None;
            }
            Err(e) => {
                if state.last_error.as_ref() != Some(&e) || reason == "SIGHUP" {
                    error!(reason, error = %e, "configuration not reloaded; the previous one stays in force");
                }
                state.last_error = Some(e);
            }
        }
    }

    /// Whether anything can change: files to watch.
    pub fn watches_files(&self) -> bool {
        self.sources.clients_file.is_some()
            || matches!(self.sources.default_key, KeySource::File(_))
    }

    /// Re-reads the sources every `every` and on SIGHUP, on `tasks`, until `stop` is cancelled.
    /// Polling reads the files through their path, so a Kubernetes secret update (a symlink
    /// swapped to a new directory) is seen like any other change.
    pub fn watch(
        self: Arc<Self>,
        every: Duration,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        // Installed before this returns: from then on SIGHUP reloads, instead of ending the
        // process as it does by default.
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                warn!(error = %e, "no SIGHUP handler; files are still re-read when they change");
                None
            }
        };
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let reason = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => "changed",
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                };
                if reason == "changed" && !self.watches_files() {
                    continue;
                }
                let live = self.clone();
                // File reads and building HTTP clients block; keep them off the request threads.
                let _ = tokio::task::spawn_blocking(move || live.reload(reason)).await;
            }
        });
    }
}
