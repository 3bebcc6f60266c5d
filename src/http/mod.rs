//! HTTP on top of the relay: the only place that knows axum. [`server`] is the accept loop
//! (connection cap, header and idle timeouts, head size), [`app`] builds the router and runs it,
//! [`observe`] gives each request its span, log line and metrics, [`error`] is [`error::ApiError`]
//! (every failure a caller sees, as problem+json), [`state`] is what handlers reach, [`auth`] turns
//! a bearer token into a caller, and [`routes`] holds one module per resource, each an adapter over
//! the library below (the send pipeline is [`crate::relay`]).

pub mod app;
pub mod auth;
pub mod error;
pub mod observe;
pub mod routes;
pub mod server;
pub mod state;
