//! Operational endpoints: liveness, readiness and Prometheus metrics. No auth: they hold no secret
//! and orchestrators call them without credentials.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{http::state::AppState, metric};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `draining`, `redis_unreachable` or `store_unwritable`.
    #[schema(examples("ok"))]
    pub status: String,
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    security(()),
    summary = "Liveness: 200 while the process serves",
    responses((status = 200, description = "The process serves", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    security(()),
    summary = "Readiness: 200 when sends can be served; never calls Qikchat",
    responses(
        (status = 200, description = "Ready for sends", body = Health),
        (status = 503, description = "Not ready: `draining` (shutting down), `redis_unreachable` (RELAY_REDIS_URL is set but Redis does not answer) or `store_unwritable` (the embedded store in RELAY_DATA_DIR failed its last write: disk full, read-only or an I/O error; or Redis refused this replica's write for memory; webhook events would be refused)", body = Health),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let status = if state.relay.is_draining() {
        "draining"
    } else if !state.relay.idempotency.is_ready().await {
        // With RELAY_REDIS_URL set, sends that carry an Idempotency-Key need Redis.
        "redis_unreachable"
    } else if let Some(reason) = state.relay.store.unwritable().await {
        // So that Qikchat's calls go to a replica that can keep them.
        tracing::warn!(reason = %reason, "not ready: the store cannot be written");
        "store_unwritable"
    } else {
        return (
            StatusCode::OK,
            Json(Health {
                status: "ready".to_owned(),
            }),
        );
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Health {
            status: status.to_owned(),
        }),
    )
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    security(()),
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let in_flight = state.relay.max_in_flight - state.relay.in_flight.available_permits();
    metrics::gauge!(metric::SENDS_IN_FLIGHT).set(in_flight as f64);
    metrics::gauge!(metric::SENDS_IN_FLIGHT_LIMIT).set(state.relay.max_in_flight as f64);
    if state.webhooks.is_some() {
        // Read at the scrape: one query of a counter the store keeps (SQLite row or Redis key).
        match state.relay.store.bytes().await {
            Ok(bytes) => metrics::gauge!(metric::WEBHOOK_STORE_BYTES).set(bytes as f64),
            Err(e) => tracing::warn!(error = %e, "the webhook store's size could not be read"),
        }
    }
    // CPU, memory and descriptors as of this scrape, not of some timer's last tick.
    metric::collect_process();
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
