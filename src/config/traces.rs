//! Whether the relay exports traces ([`Traces`]), from the standard `OTEL_*` variables.

use url::Url;

use super::ConfigError;
use super::env::{Env, set};

/// Whether spans are exported. The OpenTelemetry SDK reads the other `OTEL_*` variables itself
/// (headers, timeout, sampler, batching, resource attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traces {
    Off,
    /// OTLP over HTTP with protobuf, to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    Otlp {
        /// Neither `OTEL_SERVICE_NAME` nor a `service.name` resource attribute is set: the relay
        /// names itself `qikchat-relay`.
        default_service_name: bool,
    },
}

/// Traces are exported when an OTLP endpoint is set, unless the SDK or the traces exporter is
/// turned off by the standard variables. What the relay cannot do is refused at start.
pub(super) fn traces(env: &Env) -> Result<Traces, ConfigError> {
    let endpoints = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            set(&env.otel_exporter_otlp_traces_endpoint),
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            set(&env.otel_exporter_otlp_endpoint),
        ),
    ];
    let disabled = set(&env.otel_sdk_disabled).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter = set(&env.otel_traces_exporter).unwrap_or("otlp");
    if disabled || exporter == "none" || endpoints.iter().all(|(_, v)| v.is_none()) {
        return Ok(Traces::Off);
    }
    if exporter != "otlp" {
        return Err(ConfigError::new(
            "OTEL_TRACES_EXPORTER",
            "must be otlp or none",
        ));
    }
    for (variable, endpoint) in endpoints {
        if let Some(endpoint) = endpoint {
            let url =
                Url::parse(endpoint).map_err(|_| ConfigError::new(variable, "is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::new(variable, "must be an http or https URL"));
            }
        }
    }
    for (variable, protocol) in [
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            set(&env.otel_exporter_otlp_traces_protocol),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            set(&env.otel_exporter_otlp_protocol),
        ),
    ] {
        if protocol.is_some_and(|p| p != "http/protobuf") {
            return Err(ConfigError::new(
                variable,
                "must be http/protobuf: the relay exports OTLP over HTTP (port 4318), not gRPC",
            ));
        }
    }
    let named = set(&env.otel_service_name).is_some()
        || set(&env.otel_resource_attributes).is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        });
    Ok(Traces::Otlp {
        default_service_name: !named,
    })
}
