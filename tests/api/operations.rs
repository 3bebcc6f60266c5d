//! Health, readiness, metrics, request ids, the OpenAPI document and Swagger UI.

use serde_json::{Value, json};

use crate::helpers::{OTHER_TOKEN, TOKEN, problem, spawn_app, text_message};

#[tokio::test]
async fn healthz_and_readyz_answer_200_without_calling_qikchat() {
    let app = spawn_app().await;
    app.qikchat_expects_no_call().await;

    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = app.http.get(app.url(path)).send().await.expect("answer");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], status);
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers_own() {
    let app = spawn_app().await;

    let generated = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("answer");
    let id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let own = app
        .http
        .post(app.url("/send"))
        .header("x-request-id", "caller-chosen-42")
        .json(&text_message())
        .send()
        .await
        .expect("answer");
    assert_eq!(own.headers()["x-request-id"], "caller-chosen-42");
    let body = problem(own, 401, "unauthorized").await;
    assert_eq!(body["request_id"], "caller-chosen-42");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_problem_json() {
    let app = spawn_app().await;
    problem(
        app.http.get(app.url("/nope")).send().await.expect("answer"),
        404,
        "not_found",
    )
    .await;
    problem(
        app.http.get(app.url("/send")).send().await.expect("answer"),
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn metrics_count_requests_and_sends_by_caller_type_and_outcome() {
    let app = spawn_app().await;
    app.qikchat_accepts("m-1", 2).await;
    // The recorder is shared by every test in this binary: this test's caller is its own.
    app.send_as(OTHER_TOKEN, &text_message()).await;
    app.send_as(OTHER_TOKEN, &text_message()).await;
    app.send_as(
        OTHER_TOKEN,
        &serde_json::json!({"to": "+918080808080", "type": "image"}),
    )
    .await;

    let response = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("answer");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let metrics = response.text().await.expect("text");

    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value(r#"relay_sends_total{caller="alerts",type="text",outcome="queued"}"#) >= 2.0,
        "{metrics}"
    );
    assert!(
        value(r#"relay_sends_total{caller="alerts",type="image",outcome="invalid_request"}"#)
            >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"relay_http_requests_total{method="POST",route="/send",status="200"}"#)
    );
    assert!(metrics.contains("relay_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("relay_build_info"));
    assert!(metrics.contains("relay_sends_in_flight"));
    for secret in [crate::helpers::KEY, TOKEN, OTHER_TOKEN, "+918080808080"] {
        assert!(!metrics.contains(secret), "{secret} in metrics");
    }
}

#[test]
fn the_committed_openapi_yaml_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .unwrap_or_default();
    assert!(
        committed == qikchat_relay::http::routes::docs::openapi_yaml(),
        "openapi.yaml is stale: run `cargo run -q -- openapi > openapi.yaml`"
    );
}

#[tokio::test]
async fn the_served_openapi_document_is_the_one_in_the_code() {
    use utoipa::OpenApi;
    let app = spawn_app().await;
    let served: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");

    let expected =
        serde_json::to_value(qikchat_relay::http::routes::docs::ApiDoc::openapi()).expect("json");
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served, expected);
}

/// What client generators need of the document (docs/development.md, "Generated clients"): each
/// discriminated union maps every value to a schema of its own whose discriminator is that `const`,
/// and no schema says `null`, which generators turn into `Option<Option<T>>` or a `Null` type.
#[test]
fn the_document_is_one_that_client_generators_read() {
    use utoipa::OpenApi;
    let document =
        serde_json::to_value(qikchat_relay::http::routes::docs::ApiDoc::openapi()).expect("json");
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    let mut unions = 0;
    for (name, schema) in schemas {
        let Some(discriminator) = schema.get("discriminator") else {
            continue;
        };
        unions += 1;
        let property = discriminator["propertyName"]
            .as_str()
            .expect("propertyName");
        let mapping = discriminator["mapping"].as_object().expect("mapping");
        let variants: Vec<&str> = schema["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .filter_map(|variant| variant["$ref"].as_str())
            .collect();
        assert_eq!(
            variants.len(),
            mapping.len(),
            "{name}: one variant per value"
        );
        for (value, target) in mapping {
            let target = target.as_str().expect("$ref");
            assert!(
                variants.contains(&target),
                "{name}: {value} maps outside oneOf"
            );
            let variant = &schemas[target.trim_start_matches("#/components/schemas/")];
            assert_eq!(
                variant["properties"][property]["const"], *value,
                "{name}: {target}.{property} is not `const: {value}`"
            );
        }
    }
    assert_eq!(
        unions, 5,
        "SendRequest, QueueRequest, Interactive, TemplateHeader, TemplateButton"
    );

    // `null` only as the second type of a required property (`open` of WindowState: true, false
    // or null), which generators read as a plain optional value; optional and nullable at once is
    // what becomes `Option<Option<T>>`, and a null-only type a `Null` model.
    let mut nullable = 0;
    for (name, schema) in schemas {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (field, property) in schema["properties"].as_object().into_iter().flatten() {
            let types = property["type"].as_array();
            if types.is_some_and(|t| t.contains(&json!("null"))) {
                assert!(
                    required.contains(&field.as_str()),
                    "{name}.{field}: optional and nullable"
                );
                assert_eq!(
                    types.map(Vec::len),
                    Some(2),
                    "{name}.{field}: a type besides null"
                );
                nullable += 1;
            }
        }
    }
    let text = document.to_string();
    assert_eq!(
        text.matches(r#""null""#).count(),
        nullable,
        "the document types something as null other than a required property's second type"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_relay_itself() {
    let app = spawn_app().await;
    let page = app
        .http
        .get(app.url("/docs/"))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("html");
    assert!(page.contains("swagger-ui"), "{page}");
    let config = app
        .http
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("answer");
    assert_eq!(config.status(), 200);
    let script = config.text().await.expect("js");
    assert!(script.contains("/openapi.json"), "{script}");
    let bundle = app
        .http
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        bundle.status(),
        200,
        "assets are vendored, not fetched from a CDN"
    );
}
