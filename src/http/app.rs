//! The application: the router with its middleware stack, and the server's life from bind to a
//! drained shutdown.
//!
//! [`router`] is pure (no I/O), so tests can drive it in-process; [`App::build`] binds a port
//! (port 0 allowed) so tests can also run the real server.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
};
use tracing::{info, warn};

use super::{
    error::{self, ApiError, REQUEST_ID},
    routes::{self, BodyLimits},
    server,
    state::AppState,
};
use crate::config::{Config, ConnectionLimits};

/// Every route and the middleware around them.
pub fn router(state: AppState, body: BodyLimits) -> Router {
    // Listed outermost first: a request passes them top to bottom, its response bottom to top.
    let middleware = ServiceBuilder::new()
        // The request id comes first so that everything below (span, errors) can use it; a
        // caller's own x-request-id is kept.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        // The span and the one log line per request see the final status, problems included.
        .layer(middleware::from_fn(super::observe::observe))
        // Renders every ApiError (handlers', extractors', the panic handler's) as problem+json.
        .layer(middleware::from_fn(error::problem_json))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        // Every body is read whole, within its size and time limits, before any handler runs:
        // a slow or oversized body is refused here for every route alike (408, 413).
        .layer(middleware::from_fn_with_state(body, routes::read_body))
        .layer(DefaultBodyLimit::max(
            body.max_bytes.max(body.max_batch_bytes),
        ));

    Router::new()
        .route("/send", post(routes::send::send))
        .route("/messages", post(routes::outbox::accept))
        .route("/messages/batch", post(routes::outbox::batch))
        .route(
            "/messages/{id}",
            get(routes::messages::status).delete(routes::outbox::cancel),
        )
        .route("/outbox/dead-letters", get(routes::outbox::dead_letters))
        .route(
            "/customers/{number}/window",
            get(routes::conversation::window),
        )
        .route("/opt-outs", get(routes::conversation::list))
        .route(
            "/opt-outs/{number}",
            put(routes::conversation::add).delete(routes::conversation::remove),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route(
            "/webhooks/qikchat/{secret}",
            post(routes::webhooks::receive),
        )
        .route(
            "/webhooks/dead-letters",
            get(routes::webhooks::dead_letters),
        )
        .route(
            "/webhooks/dead-letters/{id}/replay",
            post(routes::webhooks::replay),
        )
        .merge(routes::docs::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware)
}

async fn not_found() -> Response {
    ApiError::NotFound("no such endpoint".to_owned()).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// A bound, ready-to-run relay.
pub struct App {
    /// The loops that run beside the server: the policy's reloads, the webhook fan-out.
    background: Background,
    listener: TcpListener,
    router: Router,
    state: AppState,
    drain_timeout: Duration,
    connections: ConnectionLimits,
    /// `RELAY_MAX_CONNECTIONS`, or fewer if the open-files limit holds fewer.
    max_connections: usize,
}

impl App {
    /// Reads the policy's sources (the callers file, the key file), then builds the app.
    pub async fn build(config: Config) -> std::io::Result<Self> {
        let policy = crate::policy::Live::start(config.policy.clone(), config.upstream_timeout())
            .map_err(std::io::Error::other)?;
        Self::build_with_policy(config, policy).await
    }

    /// Builds the app around a policy read already: `main` reads it first, so that a broken
    /// callers file or key file is a configuration error like any other.
    pub async fn build_with_policy(
        config: Config,
        policy: crate::policy::Live,
    ) -> std::io::Result<Self> {
        let state = AppState::new(&config, policy)?;
        let background = Background::default();
        state.policy.clone().watch(
            Duration::from_millis(config.reload_interval_ms),
            &background.tasks,
            background.stop.clone(),
        );
        state.outbox.start(&background.tasks, &background.stop);
        if let Some(webhooks) = &state.webhooks {
            webhooks.start(&background.tasks, &background.stop);
        }
        let listener = TcpListener::bind(config.listen_addr).await?;
        let max_connections =
            server::connection_budget(config.connections.max_connections, config.max_in_flight);
        Ok(Self {
            background,
            router: router(
                state.clone(),
                BodyLimits {
                    max_bytes: config.max_body_bytes,
                    max_batch_bytes: config.max_batch_bytes,
                    timeout: config.connections.body_timeout(),
                },
            ),
            listener,
            state,
            drain_timeout: config.drain_timeout(),
            connections: config.connections,
            max_connections,
        })
    }

    /// The policy in force: callers and accounts.
    pub fn policy(&self) -> Arc<crate::policy::Policy> {
        self.state.policy.current()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets requests in flight finish
    /// for at most the drain timeout.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let mut server = tokio::spawn(server::serve(
            self.listener,
            self.router,
            self.connections,
            self.max_connections,
            stop.clone(),
        ));

        tokio::select! {
            result = &mut server => {
                self.background.stop().await;
                return result.map_err(std::io::Error::other);
            }
            () = shutdown => {}
        }
        let relay = &self.state.relay;
        let in_flight = relay.max_in_flight - relay.in_flight.available_permits();
        info!(
            in_flight,
            drain_timeout_ms = self.drain_timeout.as_millis() as u64,
            "shutting down: no new connections, draining requests in flight"
        );
        relay.draining.store(true, Ordering::Relaxed);
        stop.cancel();

        // Connections close once their answers are out; a send whose caller hung up is still in
        // flight after that, holding its permit. Both are waited for, within the drain timeout.
        let in_flight = relay.in_flight.clone();
        let all_permits = relay.max_in_flight as u32;
        let drained = async {
            let served = (&mut server).await;
            let _all_back = in_flight.acquire_many(all_permits).await;
            served
        };
        let served = match tokio::time::timeout(self.drain_timeout, drained).await {
            Ok(result) => {
                info!("drained; exiting");
                result.map_err(std::io::Error::other)
            }
            Err(_) => {
                let in_flight = relay.max_in_flight - relay.in_flight.available_permits();
                warn!(
                    in_flight,
                    "drain timeout reached; exiting with requests still in flight"
                );
                server.abort();
                Ok(())
            }
        };
        // After the drain: deliveries and reloads go on while requests finish.
        self.background.stop().await;
        served
    }
}

/// How long the background loops get to stop once told to: they stop at their next await, so
/// this bounds only a policy reload or a store call already under way.
const BACKGROUND_STOP: Duration = Duration::from_secs(5);

/// The loops that run beside the server, owned by the [`App`]: started on `tasks`, told to stop
/// through `stop`, and waited for before [`App::run`] returns, so that nothing of a relay keeps
/// running once it has (a test's relay, or the process winding down).
#[derive(Default)]
struct Background {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Background {
    async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(BACKGROUND_STOP, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = self.tasks.len(),
                "background tasks did not stop in time; exiting without them"
            );
        } else {
            info!("background tasks stopped");
        }
    }
}

/// Completes on SIGTERM (Kubernetes, Docker) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => info!(signal = "SIGTERM", "shutdown requested"),
    }
}
