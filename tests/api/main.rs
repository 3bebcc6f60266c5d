//! Black-box tests: the relay on a real port, a fake Qikchat (wiremock) that counts its calls.
//! One binary, one module per feature; `helpers` starts everything.

mod auth;
mod conversation;
mod dashboards;
mod errors;
mod failure_reasons;
mod fairness;
mod helpers;
mod hostile;
mod idempotency;
mod limiter;
mod observability;
mod operations;
mod outbox;
mod outbox_store;
mod policy;
mod preflight;
mod process;
mod relay;
mod send;
mod status;
mod templates;
mod validation;
mod webhook_store;
mod webhooks;
