//! Media preflight: a bad link is caught before the message is sent, and the check never reaches
//! private addresses unless the operator allows it. A wiremock server stands in for the media host.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use crate::helpers::{RECIPIENT, TestApp, problem, spawn_app_with};

/// A relay whose preflight may fetch the (loopback) media server, in `mode`.
async fn relay(mode: &str) -> TestApp {
    spawn_app_with(&[
        ("RELAY_MEDIA_PREFLIGHT", mode),
        ("RELAY_MEDIA_PREFLIGHT_ALLOW_PRIVATE", "true"),
        ("RELAY_MEDIA_PREFLIGHT_TIMEOUT_MS", "500"),
    ])
    .await
}

/// The media host answers HEAD on `file` with these headers.
async fn serves(media: &MockServer, file: &str, headers: &[(&str, &str)]) {
    let mut answer = ResponseTemplate::new(200);
    for (name, value) in headers {
        answer = answer.insert_header(*name, *value);
    }
    Mock::given(method("HEAD"))
        .and(path(file))
        .respond_with(answer)
        .mount(media)
        .await;
}

/// The media host answers HEAD on `file` with `status` once, then with a PNG.
async fn fails_once_then_serves_a_png(media: &MockServer, file: &str, status: u16) {
    Mock::given(method("HEAD"))
        .and(path(file))
        .respond_with(ResponseTemplate::new(status))
        .up_to_n_times(1)
        .mount(media)
        .await;
    serves(media, file, &[("content-type", "image/png")]).await;
}

fn media_message(kind: &str, link: &str) -> Value {
    json!({"to": RECIPIENT, "type": kind, "link": link})
}

#[tokio::test]
async fn each_accepted_type_passes_and_is_sent() {
    let app = relay("enforce").await;
    let media = MockServer::start().await;
    let cases = [
        ("image", "/a.png", "image/png"),
        ("image", "/a.jpg", "image/jpeg"),
        ("video", "/a.mp4", "video/mp4"),
        ("video", "/a.3gp", "video/3gpp"),
        ("audio", "/a.ogg", "audio/ogg; codecs=opus"),
        ("audio", "/a.mp3", "audio/mpeg"),
        ("document", "/a.pdf", "application/pdf"),
        ("sticker", "/a.webp", "image/webp"),
    ];
    app.qikchat_accepts("media-ok", cases.len() as u64).await;
    for (kind, file, content_type) in cases {
        serves(
            &media,
            file,
            &[("content-type", content_type), ("content-length", "1000")],
        )
        .await;
        let response = app
            .send(&media_message(kind, &format!("{}{file}", media.uri())))
            .await;
        assert_eq!(response.status(), 200, "{kind} {file}");
        let body: Value = response.json().await.expect("json");
        assert!(body.get("warnings").is_none(), "{body}");
    }
}

#[tokio::test]
async fn a_web_page_instead_of_a_video_is_refused_with_what_was_found_and_what_is_accepted() {
    let app = relay("enforce").await;
    app.qikchat_expects_no_call().await;
    let media = MockServer::start().await;
    serves(
        &media,
        "/watch",
        &[("content-type", "text/html; charset=utf-8")],
    )
    .await;

    let response = app
        .send(&media_message("video", &format!("{}/watch", media.uri())))
        .await;

    let body = problem(response, 422, "media_type_not_supported").await;
    assert_eq!(
        body["detail"],
        "link answers text/html (a web page?); video accepts video/mp4, video/3gpp"
    );
    assert_eq!(body["errors"][0]["field"], "link");
}

#[tokio::test]
async fn a_png_sticker_and_an_oversized_video_are_refused() {
    let app = relay("enforce").await;
    app.qikchat_expects_no_call().await;
    let media = MockServer::start().await;
    serves(&media, "/s.png", &[("content-type", "image/png")]).await;
    serves(
        &media,
        "/big.mp4",
        &[
            ("content-type", "video/mp4"),
            ("content-length", "31457280"),
        ],
    )
    .await;

    problem(
        app.send(&media_message("sticker", &format!("{}/s.png", media.uri())))
            .await,
        422,
        "media_type_not_supported",
    )
    .await;
    let body = problem(
        app.send(&media_message("video", &format!("{}/big.mp4", media.uri())))
            .await,
        422,
        "media_too_large",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("31457280 bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn an_expired_link_is_unreachable() {
    let app = relay("enforce").await;
    app.qikchat_expects_no_call().await;
    let media = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/expired.png"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&media)
        .await;
    Mock::given(method("GET"))
        .and(path("/expired.png"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&media)
        .await;

    let body = problem(
        app.send(&media_message(
            "image",
            &format!("{}/expired.png", media.uri()),
        ))
        .await,
        422,
        "media_unreachable",
    )
    .await;
    assert_eq!(body["detail"], "link answers HTTP 403");
}

#[tokio::test]
async fn a_host_that_refuses_head_is_asked_for_one_byte_instead() {
    let app = relay("enforce").await;
    app.qikchat_accepts("ranged", 1).await;
    let media = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/doc.pdf"))
        .respond_with(ResponseTemplate::new(405))
        .mount(&media)
        .await;
    Mock::given(method("GET"))
        .and(path("/doc.pdf"))
        .and(header("range", "bytes=0-0"))
        .respond_with(
            ResponseTemplate::new(206)
                .insert_header("content-type", "application/pdf")
                .insert_header("content-range", "bytes 0-0/2048")
                .set_body_bytes(b"%".to_vec()),
        )
        .expect(1)
        .mount(&media)
        .await;

    let response = app
        .send(&media_message(
            "document",
            &format!("{}/doc.pdf", media.uri()),
        ))
        .await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn redirects_are_followed_a_bounded_number_of_times() {
    let app = relay("enforce").await;
    app.qikchat_accepts("redirected", 1).await;
    let media = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/short"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/real.png"))
        .mount(&media)
        .await;
    serves(&media, "/real.png", &[("content-type", "image/png")]).await;
    Mock::given(method("HEAD"))
        .and(path("/loop"))
        .respond_with(ResponseTemplate::new(301).insert_header("location", "/loop"))
        .mount(&media)
        .await;

    assert_eq!(
        app.send(&media_message("image", &format!("{}/short", media.uri())))
            .await
            .status(),
        200
    );
    let body = problem(
        app.send(&media_message("image", &format!("{}/loop", media.uri())))
            .await,
        422,
        "media_unreachable",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("redirects more than 5 times"),
        "{body}"
    );
}

#[tokio::test]
async fn a_slow_media_host_is_unreachable_within_the_timeout() {
    let app = relay("enforce").await;
    app.qikchat_expects_no_call().await;
    let media = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/slow.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&media)
        .await;

    let started = std::time::Instant::now();
    let body = problem(
        app.send(&media_message(
            "image",
            &format!("{}/slow.png", media.uri()),
        ))
        .await,
        422,
        "media_unreachable",
    )
    .await;

    assert_eq!(body["detail"], "link did not answer in time");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_template_header_link_is_checked_and_named() {
    let app = relay("enforce").await;
    app.qikchat_expects_no_call().await;
    let media = MockServer::start().await;
    serves(&media, "/banner", &[("content-type", "text/html")]).await;
    let message = json!({"to": RECIPIENT, "type": "template", "template": {"name": "promo", "language": "en",
        "header": {"type": "image", "link": format!("{}/banner", media.uri())}}});

    let body = problem(app.send(&message).await, 422, "media_type_not_supported").await;

    assert_eq!(body["errors"][0]["field"], "template.header.link");
}

#[tokio::test]
async fn private_addresses_are_refused_without_a_connection_unless_allowed() {
    let app = spawn_app_with(&[("RELAY_MEDIA_PREFLIGHT", "enforce")]).await;
    app.qikchat_expects_no_call().await;
    let media = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&media)
        .await;
    let port = media.address().port();

    for link in [
        format!("{}/a.png", media.uri()),
        format!("http://localhost:{port}/a.png"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]/a.png".to_owned(),
        format!("http://user:secret@localhost:{port}/a.png"),
    ] {
        let body = problem(
            app.send(&media_message("image", &link)).await,
            422,
            "media_unreachable",
        )
        .await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("private or reserved address") || detail.contains("credentials"),
            "{link}: {detail}"
        );
        assert!(!body.to_string().contains("secret"), "{body}");
    }
}

#[tokio::test]
async fn warn_mode_sends_anyway_and_says_why_it_may_fail() {
    let app = relay("warn").await;
    app.qikchat_accepts("warned", 1).await;
    let media = MockServer::start().await;
    serves(&media, "/watch", &[("content-type", "text/html")]).await;

    let response = app
        .send(&media_message("video", &format!("{}/watch", media.uri())))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["id"], "warned");
    assert_eq!(body["warnings"][0]["code"], "media_type_not_supported");
    assert_eq!(body["warnings"][0]["field"], "link");
}

#[tokio::test]
async fn off_mode_never_fetches_the_link() {
    let app = relay("off").await;
    app.qikchat_accepts("unchecked", 1).await;
    let media = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&media)
        .await;

    let response = app
        .send(&media_message("video", &format!("{}/watch", media.uri())))
        .await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_checked_link_is_cached_for_the_next_send() {
    let app = relay("enforce").await;
    app.qikchat_accepts("cached", 2).await;
    let media = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/logo.png"))
        .respond_with(ResponseTemplate::new(200).insert_header("content-type", "image/png"))
        .expect(1)
        .mount(&media)
        .await;

    for _ in 0..2 {
        let response = app
            .send(&media_message(
                "image",
                &format!("{}/logo.png", media.uri()),
            ))
            .await;
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn an_unreachable_link_is_checked_again_on_the_next_send() {
    let app = relay("enforce").await;
    app.qikchat_accepts("recovered", 1).await;
    let media = MockServer::start().await;
    fails_once_then_serves_a_png(&media, "/flaky.png", 503).await;
    let link = format!("{}/flaky.png", media.uri());

    problem(
        app.send(&media_message("image", &link)).await,
        422,
        "media_unreachable",
    )
    .await;
    let retried = app.send(&media_message("image", &link)).await;

    assert_eq!(retried.status(), 200, "the failure was not cached");
}

#[tokio::test]
async fn a_send_shed_for_overload_never_fetches_its_link() {
    let app = spawn_app_with(&[
        ("RELAY_MEDIA_PREFLIGHT", "enforce"),
        ("RELAY_MEDIA_PREFLIGHT_ALLOW_PRIVATE", "true"),
        ("RELAY_MAX_IN_FLIGHT", "1"),
    ])
    .await;
    crate::helpers::qikchat_accepts_slowly(&app.qikchat, "slow", Duration::from_millis(700), 1)
        .await;
    let media = MockServer::start().await;
    serves(&media, "/a.png", &[("content-type", "image/png")]).await;

    let text = json!({"to": RECIPIENT, "type": "text", "text": "hi"});
    let first = app.send(&text);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.send(&media_message("image", &format!("{}/a.png", media.uri())))
            .await
    };
    let (first, second) = tokio::join!(first, second);

    assert_eq!(first.status(), 200);
    problem(second, 503, "overloaded").await;
    let fetched = media.received_requests().await.unwrap_or_default();
    assert!(fetched.is_empty(), "the link was fetched: {fetched:?}");
}

#[tokio::test]
async fn a_link_refused_in_enforce_mode_leaves_its_idempotency_key_free_for_the_retry() {
    let app = relay("enforce").await;
    app.qikchat_accepts("after-the-fix", 1).await;
    let media = MockServer::start().await;
    fails_once_then_serves_a_png(&media, "/late.png", 404).await;
    let send = || {
        app.http
            .post(app.url("/send"))
            .bearer_auth(crate::helpers::TOKEN)
            .header("Idempotency-Key", "order-1234-receipt")
            .json(&media_message(
                "image",
                &format!("{}/late.png", media.uri()),
            ))
            .send()
    };

    let refused = send().await.expect("the relay answers");
    problem(refused, 422, "media_unreachable").await;
    // The file is uploaded now; the caller retries with the same key, as it should.
    let retried = send().await.expect("the relay answers");

    assert_eq!(retried.status(), 200);
    let body: Value = retried.json().await.expect("json");
    assert_eq!(body["id"], "after-the-fix");
}

#[tokio::test]
async fn a_chain_of_slow_redirects_is_judged_within_one_timeout_for_the_whole_check() {
    let app = spawn_app_with(&[
        ("RELAY_MEDIA_PREFLIGHT", "enforce"),
        ("RELAY_MEDIA_PREFLIGHT_ALLOW_PRIVATE", "true"),
        ("RELAY_MEDIA_PREFLIGHT_TIMEOUT_MS", "2000"),
    ])
    .await;
    app.qikchat_expects_no_call().await;
    let media = MockServer::start().await;
    // Six hops of a second each: every one within the timeout, all of them far beyond it.
    for hop in 0..5 {
        Mock::given(method("HEAD"))
            .and(path(format!("/hop{hop}")))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header("location", format!("/hop{}", hop + 1))
                    .set_delay(Duration::from_secs(1)),
            )
            .mount(&media)
            .await;
    }
    Mock::given(method("HEAD"))
        .and(path("/hop5"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_delay(Duration::from_secs(1)),
        )
        .mount(&media)
        .await;

    let started = std::time::Instant::now();
    let body = problem(
        app.send(&media_message("image", &format!("{}/hop0", media.uri())))
            .await,
        422,
        "media_unreachable",
    )
    .await;

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(body["detail"], "link did not answer in time");
    assert_eq!(body["errors"][0]["field"], "link");
}
