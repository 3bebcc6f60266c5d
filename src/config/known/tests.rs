use super::{closest, refuse_unknown, service_link, settings};

#[test]
fn the_settings_are_the_fields_of_env() {
    let known = settings();
    for name in [
        "RELAY_MAX_IN_FLIGHT",
        "RELAY_WEBHOOK_STORE_MAX_MB",
        "QIKCHAT_API_KEY",
        "RUST_LOG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(known.iter().any(|k| k == name), "{name} in {known:?}");
    }
    assert!(known.iter().all(|k| k == &k.to_ascii_uppercase()));
}

/// The table of docs/configuration.md lists every `RELAY_` setting, and no other `RELAY_` name.
#[test]
fn the_documented_settings_are_the_known_ones() {
    let docs = include_str!("../../../docs/configuration.md");
    let mut documented: Vec<&str> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
        .filter(|name| name.starts_with("RELAY_"))
        .collect();
    let mut known: Vec<String> = settings()
        .into_iter()
        .filter(|k| k.starts_with("RELAY_"))
        .collect();
    documented.sort_unstable();
    known.sort_unstable();
    assert_eq!(documented, known);
}

#[test]
fn the_closest_setting_is_offered_only_when_it_is_close() {
    let known = settings();
    for (slip, meant) in [
        ("RELAY_MAX_INFLIGHT", "RELAY_MAX_IN_FLIGHT"),
        ("RELAY_MAXINFLIGHT", "RELAY_MAX_IN_FLIGHT"),
        ("RELAY_WEBHOOK_SECRT", "RELAY_WEBHOOK_SECRET"),
        ("RELAY_CLIENT", "RELAY_CLIENTS"),
        ("RELAY_SANDBOXED", "RELAY_SANDBOX"),
        ("RELAY_LISTEN_ADR", "RELAY_LISTEN_ADDR"),
        ("RELAY_IDEMPOTENCY_TTL_MS", "RELAY_IDEMPOTENCY_TTL_S"),
    ] {
        assert_eq!(closest(slip, &known), Some(meant), "{slip}");
    }
    for far in [
        "RELAY_FOO_BAR",
        "RELAY_REDIS_CLUSTER_NODES",
        "RELAY_X",
        "RELAY_",
    ] {
        assert_eq!(closest(far, &known), None, "{far}");
    }
}

#[test]
fn kubernetes_service_links_are_told_by_their_shape() {
    for link in [
        "RELAY_SERVICE_HOST",
        "RELAY_SERVICE_PORT",
        "RELAY_SERVICE_PORT_HTTP",
        "RELAY_SERVICE_PORT_METRICS_2",
        "RELAY_PORT",
        "RELAY_PORT_8080_TCP",
        "RELAY_PORT_8080_TCP_PROTO",
        "RELAY_PORT_8080_TCP_PORT",
        "RELAY_PORT_8080_TCP_ADDR",
        "RELAY_PORT_53_UDP_ADDR",
        "RELAY_PORT_9_SCTP",
    ] {
        assert!(service_link(link), "{link}");
    }
    for other in [
        "RELAY_SERVICE_PORT_",
        "RELAY_SERVICE_HOSTS",
        "RELAY_PORT_",
        "RELAY_PORT_HTTP",
        "RELAY_PORT_8080",
        "RELAY_PORT_8080_TCP_HOST",
        "RELAY_PORT_8080_TCP_ADDR_X",
        "RELAY_PORT_123456_TCP",
        "RELAY_PORT_8080_HTTP",
        "RELAY_LISTEN_PORT",
        "RELAY_REDIS_SERVICE_HOST",
        "SERVICE_HOST",
    ] {
        assert!(!service_link(other), "{other}");
    }
}

#[test]
fn an_unknown_relay_variable_is_refused_by_name_with_the_others_listed() {
    let names = [
        "RELAY_SANDBOX",
        "RELAY_ZZZ",
        "RELAY_MAX_INFLIGHT",
        "RELAY_PORT",
        "QIKCHAT_BRAND2_API_KEY",
        "OTEL_TRACES_SAMPLER",
        "HOME",
    ];
    let e = refuse_unknown(names.into_iter()).expect_err("unknown names");
    assert_eq!(e.variable, "RELAY_MAX_INFLIGHT");
    assert_eq!(
        e.problem,
        "is not a setting of the relay; did you mean RELAY_MAX_IN_FLIGHT? (nor is RELAY_ZZZ)"
    );
    let e = refuse_unknown(["RELAY_FOO_BAR"].into_iter()).expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "RELAY_FOO_BAR: is not a setting of the relay"
    );
    assert!(refuse_unknown(["RELAY_SANDBOX", "RELAY_SERVICE_HOST", "PATH"].into_iter()).is_ok());
}
