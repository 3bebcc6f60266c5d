//! The accept loop: every client connection from accept to close, under the limits that keep one
//! client, with or without a token, from holding what the others need.
//!
//! hyper reads each connection with a timer of its own: a request head must arrive within
//! `RELAY_HEADER_TIMEOUT_MS` of the connection opening or of the previous answer, and fit in
//! [`MAX_HEAD_BYTES`] (else hyper answers 431). Around hyper, this module caps the connections
//! open at once (one beyond is closed at once, the others are served), closes a connection with no
//! request for `RELAY_IDLE_TIMEOUT_MS`, counts and logs each connection it sheds, and on shutdown
//! lets the open ones finish their requests.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::{config::ConnectionLimits, metric};

/// The largest request head (request line and headers) the relay reads: 32 KiB holds any real
/// request many times over (the relay's own requests need under 1 KiB), and bounds what a
/// connection can make the relay hold before it has a request: 4096 connections at most 128 MiB.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Descriptors kept for the relay's own use whatever clients do: beyond one upstream connection
/// per send in flight (`RELAY_MAX_IN_FLIGHT`), Redis, the SQLite store and its journal, webhook
/// deliveries, media checks, the listener, stdout.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Why a connection was shed: the label values of `relay_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// `RELAY_MAX_CONNECTIONS` (or the descriptors left) were all in use.
    MaxConnections,
    /// No complete request head within `RELAY_HEADER_TIMEOUT_MS`.
    HeaderTimeout,
    /// No request for `RELAY_IDLE_TIMEOUT_MS`.
    IdleTimeout,
    /// A request head over [`MAX_HEAD_BYTES`] (or too many headers): hyper answered 431.
    HeadTooLarge,
}

impl Shed {
    pub const ALL: [Self; 4] = [
        Self::MaxConnections,
        Self::HeaderTimeout,
        Self::IdleTimeout,
        Self::HeadTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::HeadTooLarge => "head_too_large",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Self::MaxConnections => {
                "connection refused: every connection slot is in use (RELAY_MAX_CONNECTIONS)"
            }
            Self::HeaderTimeout => {
                "connection closed: no complete request head in time (RELAY_HEADER_TIMEOUT_MS)"
            }
            Self::IdleTimeout => "connection closed: idle (RELAY_IDLE_TIMEOUT_MS)",
            Self::HeadTooLarge => "connection closed: request head over 32 KiB (answered 431)",
        }
    }
}

/// Raises the soft open-files limit to the hard one, and returns how many client connections
/// fit: `configured`, or fewer when the descriptors left after the relay's own would not hold them.
pub fn connection_budget(configured: usize, max_in_flight: usize) -> usize {
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft)
        }
    };
    let reserved = RESERVED_DESCRIPTORS + max_in_flight as u64;
    let fit = usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX);
    let budget = configured.min(fit).max(1);
    if budget < configured {
        warn!(
            open_files,
            reserved,
            max_connections = budget,
            configured,
            "the open-files limit holds fewer connections than RELAY_MAX_CONNECTIONS; raise the limit (ulimit -n) or lower the setting"
        );
    } else {
        info!(open_files, max_connections = budget, "connection limits");
    }
    budget
}

/// Serves `router` on `listener` until `stop` is cancelled; then stops accepting, asks every
/// connection to finish its requests and close, and returns once all of them have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    max_connections: usize,
    stop: CancellationToken,
) {
    // The counters alerts take rates of exist from the start, at 0.
    for reason in Shed::ALL {
        metrics::counter!(metric::CONNECTIONS_REJECTED_TOTAL, "reason" => reason.as_str())
            .increment(0);
    }
    metrics::gauge!(metric::CONNECTIONS_OPEN).set(0.0);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(max_connections));
    let open = metrics::gauge!(metric::CONNECTIONS_OPEN);
    let log = Arc::new(LogBudget::default());

    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Per-connection failures (reset before accept) are nothing to wait for;
                    // anything else (out of descriptors, despite the reserve) is.
                    if !is_connection_error(&e) {
                        warn!(error = %e, "accept failed; retrying in 50 ms");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: waiting would hold a descriptor for a client we cannot serve.
            drop(stream);
            shed(&log, Shed::MaxConnections, peer);
            continue;
        };
        open.increment(1.0);
        let connection = Connection {
            builder: builder.clone(),
            router: router.clone(),
            limits,
            stop: stop.clone(),
            log: log.clone(),
            open: open.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.serve(stream, peer));
    }
    // Every connection holds a slot until it closes: all slots back means all closed.
    let _all_closed = slots.acquire_many(max_connections as u32).await;
}

/// One client connection and what it needs to be served.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
    log: Arc<LogBudget>,
    open: metrics::Gauge,
    /// Given back when the connection closes.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let activity = Arc::new(Activity::new());
        let service = {
            let activity = activity.clone();
            let router = self.router.clone();
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let busy = activity.begin();
                let response = router.clone().oneshot(request.map(Body::new));
                async move {
                    let response = response.await;
                    drop(busy);
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut stopping = false;
        loop {
            let deadline = activity.next_check(&self.limits);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        if let Some(reason) = shed_by_hyper(&*e) {
                            shed(&self.log, reason, peer);
                        }
                    }
                    break;
                }
                () = self.stop.cancelled(), if !stopping => {
                    // Finishes the requests in flight, then closes (HTTP/2: GOAWAY).
                    connection.as_mut().graceful_shutdown();
                    stopping = true;
                }
                () = activity.answered.notified() => {}
                () = tokio::time::sleep_until(deadline.into()) => {
                    if let Some(reason) = activity.expired(&self.limits, Instant::now()) {
                        shed(&self.log, reason, peer);
                        break;
                    }
                }
            }
        }
        self.open.decrement(1.0);
    }
}

/// What a connection is doing, as its requests begin and end: enough to tell when it is idle.
struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// Milliseconds from `opened` to the end of the last request; `u64::MAX` before the first.
    last_answer_ms: AtomicU64,
    /// Woken when a request ends, so that the next deadline is the idle one.
    answered: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_answer_ms: AtomicU64::new(u64::MAX),
            answered: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection's limit would next run out if nothing happened meanwhile.
    fn next_check(&self, limits: &ConnectionLimits) -> Instant {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // A request's own time is bounded elsewhere (body timeout, upstream timeout).
            return Instant::now() + limits.idle_timeout();
        }
        match self.last_answer_ms.load(Ordering::Relaxed) {
            u64::MAX => self.opened + limits.header_timeout(),
            ms => self.opened + Duration::from_millis(ms) + limits.idle_timeout(),
        }
    }

    /// Why the connection should close now, if it should.
    fn expired(&self, limits: &ConnectionLimits, now: Instant) -> Option<Shed> {
        if self.in_flight.load(Ordering::Relaxed) > 0 || now < self.next_check(limits) {
            return None;
        }
        Some(match self.last_answer_ms.load(Ordering::Relaxed) {
            u64::MAX => Shed::HeaderTimeout,
            _ => Shed::IdleTimeout,
        })
    }
}

/// A request in flight on its connection; its end restarts the idle clock.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let since_open = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.last_answer_ms.store(since_open, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.answered.notify_one();
    }
}

/// Which of hyper's connection errors are the relay shedding a connection (the others are
/// clients going away, which is no news).
fn shed_by_hyper(error: &(dyn std::error::Error + 'static)) -> Option<Shed> {
    let error = error.downcast_ref::<hyper::Error>()?;
    if error.is_timeout() {
        Some(Shed::HeaderTimeout)
    } else if error.is_parse_too_large() {
        Some(Shed::HeadTooLarge)
    } else {
        None
    }
}

fn shed(log: &LogBudget, reason: Shed, peer: SocketAddr) {
    metrics::counter!(metric::CONNECTIONS_REJECTED_TOTAL, "reason" => reason.as_str()).increment(1);
    match log.take() {
        Take::Log { suppressed } if suppressed > 0 => {
            warn!(reason = reason.as_str(), %peer, suppressed, "{} ({suppressed} more shed in the last second, not logged one by one)", reason.detail());
        }
        Take::Log { .. } => warn!(reason = reason.as_str(), %peer, "{}", reason.detail()),
        Take::Suppress => {}
    }
}

/// At most [`LogBudget::PER_SECOND`] lines a second about shed connections: a flood of them must
/// not become a flood of log lines. The metric counts every one; the next line logged says how
/// many went unlogged.
#[derive(Default)]
struct LogBudget {
    second: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

enum Take {
    Log { suppressed: u64 },
    Suppress,
}

impl LogBudget {
    const PER_SECOND: u32 = 10;

    fn take(&self) -> Take {
        let now = crate::unix_ms() / 1000;
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < Self::PER_SECOND {
            Take::Log {
                suppressed: self.suppressed.swap(0, Ordering::Relaxed),
            }
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            Take::Suppress
        }
    }
}

/// Errors of one connection that failed before it was accepted (as hyper 0.14's server counted them).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_timeout_ms: 1_000,
        idle_timeout_ms: 5_000,
        body_timeout_ms: 1_000,
        max_connections: 10,
    };

    #[test]
    fn a_connection_without_a_request_is_judged_by_the_header_timeout() {
        let activity = Activity::new();
        let opened = activity.opened;
        assert_eq!(
            activity.expired(&LIMITS, opened + Duration::from_millis(999)),
            None
        );
        assert_eq!(
            activity.expired(&LIMITS, opened + Duration::from_millis(1_000)),
            Some(Shed::HeaderTimeout)
        );
    }

    #[test]
    fn a_request_in_flight_is_never_cut_and_its_end_starts_the_idle_clock() {
        let activity = Arc::new(Activity::new());
        let opened = activity.opened;
        let busy = activity.begin();
        assert_eq!(
            activity.expired(&LIMITS, opened + Duration::from_secs(60)),
            None
        );
        drop(busy);
        let answered = Instant::now();
        assert_eq!(
            activity.expired(&LIMITS, answered + Duration::from_millis(4_000)),
            None
        );
        assert_eq!(
            activity.expired(&LIMITS, answered + Duration::from_millis(5_100)),
            Some(Shed::IdleTimeout)
        );
    }

    #[test]
    fn the_log_budget_logs_ten_a_second_and_says_how_many_it_left_out() {
        let budget = LogBudget::default();
        let logged = (0..25)
            .filter(|_| matches!(budget.take(), Take::Log { .. }))
            .count();
        // 10, or up to 20 when the second turns during the loop.
        assert!((10..=20).contains(&logged), "{logged}");
        budget.second.store(0, Ordering::Relaxed);
        assert!(matches!(budget.take(), Take::Log { suppressed } if suppressed > 0));
    }
}
