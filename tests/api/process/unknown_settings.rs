//! A `RELAY_` variable that is not a setting stops the start (exit 2, one line naming it and the
//! setting meant), but the variables of a Kubernetes service link do not.

use std::time::Duration;

use wiremock::MockServer;

use super::{command, start};
use crate::helpers::settings;

/// Runs the binary with a valid configuration plus `extra`, and returns its exit code and stderr
/// (stdout must stay empty).
async fn refused(extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let qikchat = MockServer::start().await;
    let output = command(&settings(&qikchat, extra))
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.stdout.is_empty(), "{extra:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
    (output.status.code(), stderr)
}

#[tokio::test]
async fn an_unknown_relay_variable_stops_the_start_naming_it_without_a_hint() {
    let (code, stderr) = refused(&[("RELAY_FOO_BAR", "1")]).await;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("RELAY_FOO_BAR: is not a setting of the relay"),
        "{stderr}"
    );
    assert!(!stderr.contains("did you mean"), "{stderr}");
}

#[tokio::test]
async fn a_misspelt_setting_stops_the_start_and_names_the_setting_meant() {
    let (code, stderr) = refused(&[("RELAY_MAX_INFLIGHT", "100")]).await;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("RELAY_MAX_INFLIGHT: is not a setting of the relay"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean RELAY_MAX_IN_FLIGHT?"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_setting_the_relay_does_not_have_stops_the_start() {
    let (code, stderr) =
        refused(&[("RELAY_REDIS_CLUSTER_NODES", "redis-a:6379,redis-b:6379")]).await;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("RELAY_REDIS_CLUSTER_NODES"), "{stderr}");
    assert!(
        !stderr.contains("redis-a"),
        "the value is not printed: {stderr}"
    );
}

#[tokio::test]
async fn the_value_of_a_misspelt_secret_is_printed_nowhere() {
    const SECRET: &str = "whsec_SENTINEL_misspelt_0123456789";
    let (code, stderr) = refused(&[("RELAY_WEBHOOK_SECRT", SECRET), ("RUST_LOG", "trace")]).await;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("RELAY_WEBHOOK_SECRT"), "{stderr}");
    assert!(
        stderr.contains("did you mean RELAY_WEBHOOK_SECRET?"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "the value was printed: {stderr}");
    assert!(
        !stderr.contains("SENTINEL"),
        "part of the value was printed: {stderr}"
    );
}

#[tokio::test]
async fn kubernetes_service_links_for_a_service_named_relay_are_ignored() {
    let qikchat = MockServer::start().await;
    let links = [
        ("RELAY_SERVICE_HOST", "10.0.0.1"),
        ("RELAY_SERVICE_PORT", "8080"),
        ("RELAY_SERVICE_PORT_HTTP", "8080"),
        ("RELAY_PORT", "tcp://10.0.0.1:8080"),
        ("RELAY_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
        ("RELAY_PORT_8080_TCP_PROTO", "tcp"),
        ("RELAY_PORT_8080_TCP_PORT", "8080"),
        ("RELAY_PORT_8080_TCP_ADDR", "10.0.0.1"),
    ];
    let mut relay = start(&settings(&qikchat, &links)).await;

    let health = reqwest::get(format!("{}/healthz", relay.url))
        .await
        .expect("answer");
    assert_eq!(health.status(), 200);
    relay.terminate();
    assert_eq!(relay.exit_code(Duration::from_secs(10)).await, 0);
}

/// Runs the binary with a valid configuration plus `extra` and one variable whose value is not
/// Unicode; returns its exit code and stderr.
async fn with_a_value_not_unicode(extra: &[(&str, &str)], name: &str) -> (Option<i32>, String) {
    use std::os::unix::ffi::OsStrExt;
    let qikchat = MockServer::start().await;
    let output = command(&settings(&qikchat, extra))
        .env(name, std::ffi::OsStr::from_bytes(b"js\xffon"))
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[tokio::test]
async fn a_setting_whose_value_is_not_unicode_stops_the_start_naming_it() {
    let (code, stderr) = with_a_value_not_unicode(&[], "RELAY_LOG_FORMAT").await;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("RELAY_LOG_FORMAT: the value is not valid UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn another_programs_variable_that_is_not_unicode_is_left_alone() {
    // A bad setting beside it, so that the relay stops at once: with its own error, not a panic.
    let (code, stderr) = with_a_value_not_unicode(&[("RELAY_FOO_BAR", "1")], "LESSOPEN").await;

    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("RELAY_FOO_BAR: is not a setting"),
        "{stderr}"
    );
    assert!(!stderr.contains("LESSOPEN"), "{stderr}");
}
