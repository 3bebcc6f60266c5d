//! `Config::from_pairs` against the contract: the defaults, every variable checked and named when
//! wrong, and no key or token in an error or in `Debug` output.

use super::*;

const KEY: &str = "qk_live_SENTINEL_KEY_0123456789";
const TOKEN: &str = "tok_SENTINEL_0123456789abcdef";

fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_pairs(pairs.iter().copied())
}

/// The configuration, then its policy read from its sources (the callers file, the key), as
/// `main` does before it starts anything.
fn started(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let c = config(pairs)?;
    policy::load(&c.policy).map_err(|e| ConfigError::new(e.source_name, e.problem))?;
    Ok(c)
}

#[test]
fn traces_are_exported_only_when_an_otlp_endpoint_is_set_and_nothing_turns_them_off() {
    let base = [
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_CLIENTS", "billing:tok_SENTINEL_0123456789abcdef"),
    ];
    let traces = |extra: &[(&str, &str)]| config(&[&base[..], extra].concat()).map(|c| c.traces);
    assert_eq!(traces(&[]).ok(), Some(Traces::Off));
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    assert_eq!(
        traces(&[endpoint]).ok(),
        Some(Traces::Otlp {
            default_service_name: true
        })
    );
    assert_eq!(
        traces(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector/v1/traces"
        )])
        .ok(),
        Some(Traces::Otlp {
            default_service_name: true
        })
    );
    assert_eq!(
        traces(&[endpoint, ("OTEL_SERVICE_NAME", "relay-eu")]).ok(),
        Some(Traces::Otlp {
            default_service_name: false
        })
    );
    assert_eq!(
        traces(&[
            endpoint,
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "team=chat, service.name=relay-eu"
            )
        ])
        .ok(),
        Some(Traces::Otlp {
            default_service_name: false
        })
    );
    assert_eq!(
        traces(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).ok(),
        Some(Traces::Off)
    );
    assert_eq!(
        traces(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).ok(),
        Some(Traces::Off)
    );
    for (bad, variable) in [
        (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
        (
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        (
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
    ] {
        let pairs = [
            &base[..],
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces",
                ),
                bad,
            ][..],
        ]
        .concat();
        let error = config(&pairs).expect_err("refused");
        assert_eq!(error.variable, variable, "{error}");
    }
}

#[test]
fn webhooks_are_on_with_a_secret_and_every_setting_is_checked() {
    let base = [
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_CLIENTS", "billing:tok_SENTINEL_0123456789abcdef"),
    ];
    let with = |extra: &[(&str, &str)]| config(&[&base[..], extra].concat());
    assert!(with(&[]).expect("valid").webhooks.is_none());
    let on = with(&[("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef")])
        .expect("valid")
        .webhooks
        .expect("on");
    assert_eq!(on.retry_base, Duration::from_secs(1));
    assert_eq!(on.max_attempts, 10);
    assert!(on.basic_auth.is_none());
    assert!(with(&[]).expect("valid").admin_token_sha256.is_none());
    for (pairs, variable) in [
        (
            vec![("RELAY_WEBHOOK_SECRET", "short")],
            "RELAY_WEBHOOK_SECRET",
        ),
        (
            vec![("RELAY_WEBHOOK_SECRET", "has/a/slash/0123456789")],
            "RELAY_WEBHOOK_SECRET",
        ),
        (
            vec![
                ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
                ("RELAY_WEBHOOK_BASIC_AUTH", "nopassword"),
            ],
            "RELAY_WEBHOOK_BASIC_AUTH",
        ),
        (
            vec![
                ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
                ("RELAY_ADMIN_TOKEN", "short"),
            ],
            "RELAY_ADMIN_TOKEN",
        ),
        (
            vec![
                ("RELAY_WEBHOOK_SECRET", "hook-0123456789abcdef"),
                ("RELAY_WEBHOOK_MAX_ATTEMPTS", "0"),
            ],
            "RELAY_WEBHOOK_MAX_ATTEMPTS",
        ),
    ] {
        let error = with(&pairs).expect_err("refused");
        assert_eq!(error.variable, variable, "{error}");
        assert!(!error.to_string().contains("0123456789abcdef"), "{error}");
    }
}

#[test]
fn defaults_match_the_contract() {
    let c = config(&[
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_CLIENTS", &format!("billing:{TOKEN}")),
    ])
    .expect("valid");
    assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(c.qikchat_base_url.as_str(), "https://api.qikchat.in/");
    assert_eq!(c.upstream_timeout(), Duration::from_secs(10));
    assert_eq!(c.drain_timeout(), Duration::from_secs(30));
    assert_eq!(c.max_in_flight, 512);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.log_filter, "info");
    assert!(!c.sandbox && !c.policy.allow_anonymous);
    assert_eq!(c.policy.clients.len(), 1);
    assert_eq!(c.policy.clients[0].name, "billing");
    assert_eq!(c.reload_interval_ms, 2000);
    assert_eq!(
        c.connections,
        ConnectionLimits {
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 10_000,
            max_connections: 4096,
        }
    );
}

#[test]
fn debug_output_never_shows_the_key_or_a_token() {
    let c = config(&[
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_CLIENTS", &format!("billing:{TOKEN}")),
    ])
    .expect("valid");
    let printed = format!("{c:?}");
    assert!(!printed.contains(KEY), "{printed}");
    assert!(!printed.contains(TOKEN), "{printed}");
    assert!(printed.contains("billing"));
}

#[test]
fn the_key_is_required_unless_sandbox_mode_is_on() {
    let clients = format!("billing:{TOKEN}");
    let err = started(&[("RELAY_CLIENTS", &clients)]).unwrap_err();
    assert_eq!(err.variable, "QIKCHAT_API_KEY");
    let sandbox = started(&[("RELAY_CLIENTS", &clients), ("RELAY_SANDBOX", "true")]);
    assert!(matches!(
        sandbox.expect("sandbox needs no key").policy.default_key,
        KeySource::None
    ));
}

#[test]
fn the_key_can_come_from_a_file_and_is_trimmed() {
    /// Removed when the test ends, however it ends: the shared /tmp keeps nothing of it.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(std::env::temp_dir().join(format!("relay-config-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let path = dir.0.join("key");
    std::fs::write(&path, format!("{KEY}\n")).expect("write key");
    let c = config(&[
        ("QIKCHAT_API_KEY_FILE", path.to_str().expect("utf-8 path")),
        ("RELAY_ALLOW_ANONYMOUS", "true"),
    ])
    .expect("valid");
    let (spec, _) = policy::load(&c.policy).expect("loads");
    let key = spec.accounts["default"].key.clone().expect("a key");
    assert_eq!(secrecy::ExposeSecret::expose_secret(&key), KEY);
}

#[test]
fn both_key_sources_at_once_are_refused() {
    let err = config(&[
        ("QIKCHAT_API_KEY", KEY),
        ("QIKCHAT_API_KEY_FILE", "/nonexistent"),
        ("RELAY_ALLOW_ANONYMOUS", "true"),
    ])
    .unwrap_err();
    assert_eq!(err.variable, "QIKCHAT_API_KEY_FILE");
}

#[test]
fn no_callers_and_no_anonymous_access_is_refused() {
    let err = started(&[("QIKCHAT_API_KEY", KEY)]).unwrap_err();
    assert_eq!(err.variable, "RELAY_CLIENTS");
    assert!(started(&[("QIKCHAT_API_KEY", KEY), ("RELAY_ALLOW_ANONYMOUS", "true")]).is_ok());
}

#[test]
fn bad_caller_entries_are_named_without_their_token() {
    for (clients, expected) in [
        ("billing", "entry 1"),
        (":abcdefghijklmnopqrstu", "entry 1"),
        ("billing:short", "billing"),
        ("a:abcdefghijklmnop,a:qrstuvwxyzabcdefgh", "listed twice"),
        ("a:abcdefghijklmnop,b:abcdefghijklmnop", "shares its token"),
    ] {
        let err = config(&[("QIKCHAT_API_KEY", KEY), ("RELAY_CLIENTS", clients)]).unwrap_err();
        assert_eq!(err.variable, "RELAY_CLIENTS");
        let line = err.to_string();
        assert!(line.contains(expected), "{clients}: {line}");
        assert!(!line.contains("abcdefghijklmnop"), "token leaked: {line}");
    }
}

#[test]
fn invalid_values_name_their_variable() {
    for (variable, value) in [
        ("RELAY_LISTEN_ADDR", "not-an-address"),
        ("RELAY_UPSTREAM_TIMEOUT_MS", "ten"),
        ("RELAY_SANDBOX", "yes please"),
        ("RELAY_LOG_FORMAT", "xml"),
        ("QIKCHAT_BASE_URL", "not a url"),
        ("RELAY_MAX_IN_FLIGHT", "0"),
        ("RELAY_HEADER_TIMEOUT_MS", "0"),
        ("RELAY_IDLE_TIMEOUT_MS", "soon"),
        ("RELAY_BODY_TIMEOUT_MS", "0"),
        ("RELAY_MAX_CONNECTIONS", "0"),
        ("RUST_LOG", "info,[[["),
        ("RELAY_REDIS_URL", "http://not-redis"),
        ("RELAY_IDEMPOTENCY_LEASE_MS", "100"),
        ("RELAY_MEDIA_PREFLIGHT", "strict"),
        ("RELAY_TEMPLATES", "strict"),
    ] {
        let err = config(&[
            ("QIKCHAT_API_KEY", KEY),
            ("RELAY_ALLOW_ANONYMOUS", "true"),
            (variable, value),
        ])
        .unwrap_err();
        assert_eq!(err.variable, variable, "{err}");
    }
}

#[test]
fn an_unknown_relay_variable_is_refused_before_any_value_is_read() {
    let base = [
        ("QIKCHAT_API_KEY", KEY),
        ("RELAY_CLIENTS", "billing:tok_SENTINEL_0123456789abcdef"),
    ];
    assert!(config(&[&base[..], &[("RELAY_SERVICE_HOST", "10.0.0.1")]].concat()).is_ok());
    // Even next to an invalid value: the slip may be why the other setting looks wrong.
    let e = config(
        &[
            &base[..],
            &[("RELAY_MAX_INFLIGHT", "9"), ("RELAY_MAX_IN_FLIGHT", "0")],
        ]
        .concat(),
    )
    .expect_err("an unknown variable");
    assert_eq!(e.variable, "RELAY_MAX_INFLIGHT");
    assert!(
        e.problem.ends_with("did you mean RELAY_MAX_IN_FLIGHT?"),
        "{e}"
    );
    assert!(!e.to_string().contains('9'), "no value in {e}");
}
