//! Media preflight: before a message with a media link goes to Qikchat, check that the link answers,
//! serves a type Qikchat accepts for that message type, and is not too large. Qikchat itself
//! accepts any link and fails only later, where the caller never sees it.
//!
//! The check must not turn the relay into a probe of the internal network: only http(s), no
//! credentials, and every address connected to (after DNS, after each redirect) must be public,
//! unless the operator allows private ones. Bodies are never read.
//!
//! The parts: `judge` holds what Qikchat accepts per media kind and judges an answer's headers by
//! it; `address` decides which links and addresses may be fetched at all.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use reqwest::{
    StatusCode,
    header::{LOCATION, RANGE},
};
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use crate::message::{Content, MediaKind, Message, TemplateHeader, TemplateParameters};
use crate::metric;

mod address;
mod judge;

pub use address::is_public;
use address::{PublicOnly, find_refusal};
use judge::judge;

/// Redirects followed at most, each one checked like the first link.
const MAX_REDIRECTS: usize = 5;
/// Cached results at most; beyond it the oldest half goes.
const MAX_CACHED: usize = 10_000;

/// `RELAY_MEDIA_PREFLIGHT`: off, warn (check, tell the caller in the answer, send anyway) or
/// enforce (refuse the message, 422, when the check fails).
pub use crate::Enforcement as Mode;

/// Why a link failed its check: the `code` of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaCode {
    MediaUnreachable,
    MediaTypeNotSupported,
    MediaTooLarge,
}

impl MediaCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MediaUnreachable => "media_unreachable",
            Self::MediaTypeNotSupported => "media_type_not_supported",
            Self::MediaTooLarge => "media_too_large",
        }
    }
}

type Verdict = Result<(), (MediaCode, String)>;
/// Results by (link, message type), with when they were found.
type Cache = HashMap<(String, &'static str), (Verdict, Instant)>;

/// A link that failed its check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MediaProblem {
    /// The field that holds the link: `link` or `template.header.link`.
    #[schema(examples("link"))]
    pub field: String,
    pub code: MediaCode,
    /// What was found and what is accepted.
    #[schema(examples(
        "link answers text/html (a web page?); video accepts video/mp4, video/3gpp"
    ))]
    pub detail: String,
}

/// The media links of a message, with the field that holds each.
pub fn media_links(message: &Message) -> Vec<(&'static str, MediaKind, &Url)> {
    match &message.content {
        Content::Media { kind, link, .. } => vec![("link", *kind, link)],
        Content::Template(template) => match &template.parameters {
            TemplateParameters::Simple {
                header: Some(TemplateHeader::Media { kind, link, .. }),
                ..
            } => vec![("template.header.link", *kind, link)],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The checker: its own HTTP client (private addresses filtered at DNS), and a short-lived cache.
pub struct Preflight {
    pub mode: Mode,
    http: reqwest::Client,
    allow_private: bool,
    /// `RELAY_MEDIA_PREFLIGHT_TIMEOUT_MS`: the whole check of a message, every redirect and the
    /// fallback GET included, not each request.
    timeout: Duration,
    cache_for: Duration,
    cache: Mutex<Cache>,
}

impl Preflight {
    pub fn new(
        mode: Mode,
        timeout: Duration,
        allow_private: bool,
        cache_for: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .dns_resolver(PublicOnly { allow_private })
            // Redirects are followed by hand, so each hop is checked; no proxy may route around
            // the address checks.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!(
                "qikchat-relay/",
                env!("CARGO_PKG_VERSION"),
                " (media preflight)"
            ))
            .build()?;
        Ok(Self {
            mode,
            http,
            allow_private,
            timeout,
            cache_for,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Checks every media link of the message, all within the timeout; the problems found, if any.
    pub async fn check(&self, message: &Message) -> Vec<MediaProblem> {
        if self.mode == Mode::Off {
            return Vec::new();
        }
        // One deadline for the whole check: a host that redirects slowly, or answers HEAD slowly
        // and then the ranged GET slowly, gets no more time than one that never answers.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut problems = Vec::new();
        for (field, kind, link) in media_links(message) {
            if let Err((code, detail)) = self.check_link(kind, link, deadline).await {
                problems.push(MediaProblem {
                    field: field.to_owned(),
                    code,
                    detail,
                });
            }
        }
        problems
    }

    async fn check_link(
        &self,
        kind: MediaKind,
        link: &Url,
        deadline: tokio::time::Instant,
    ) -> Verdict {
        let type_name = kind.message_type().as_str();
        let cache_key = (link.as_str().to_owned(), type_name);
        if let Some((result, at)) = self.lock().get(&cache_key) {
            if at.elapsed() < self.cache_for {
                metrics::counter!(metric::MEDIA_PREFLIGHT_TOTAL, "outcome" => "cached")
                    .increment(1);
                return result.clone();
            }
        }
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = tokio::time::timeout(remaining, self.fetch_head(kind, link))
            .await
            .unwrap_or_else(|_| Err((MediaCode::MediaUnreachable, TIMED_OUT.to_owned())));
        let outcome = result
            .as_ref()
            .map_or_else(|(code, _)| code.as_str(), |()| "ok");
        metrics::counter!(metric::MEDIA_PREFLIGHT_TOTAL, "outcome" => outcome).increment(1);
        metrics::histogram!(metric::MEDIA_PREFLIGHT_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            r#type = type_name,
            outcome,
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            "media preflight"
        );
        // An unreachable link may answer a moment later (a timeout, a restart, a fixed URL):
        // only verdicts about the file itself are kept.
        if matches!(result, Err((MediaCode::MediaUnreachable, _))) {
            return result;
        }
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (_, at)| now.duration_since(*at) < self.cache_for);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(cache_key, (result.clone(), Instant::now()));
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        crate::lock(&self.cache)
    }

    /// HEAD (or a one-byte ranged GET where HEAD is refused), following redirects by hand.
    async fn fetch_head(&self, kind: MediaKind, link: &Url) -> Verdict {
        let unreachable = |detail: String| (MediaCode::MediaUnreachable, detail);
        let mut url = link.clone();
        for _ in 0..=MAX_REDIRECTS {
            self.check_url(&url).map_err(unreachable)?;
            let mut response = self
                .send(reqwest::Method::HEAD, &url)
                .await
                .map_err(unreachable)?;
            if matches!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED
                    | StatusCode::NOT_IMPLEMENTED
                    | StatusCode::FORBIDDEN
            ) {
                response = self
                    .send(reqwest::Method::GET, &url)
                    .await
                    .map_err(unreachable)?;
            }
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| url.join(location).ok())
                    .ok_or_else(|| {
                        unreachable(format!("link answers {status} without a usable Location"))
                    })?;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(unreachable(format!(
                    "link answers HTTP {}",
                    status.as_u16()
                )));
            }
            return judge(kind, response.headers());
        }
        Err(unreachable(format!(
            "link redirects more than {MAX_REDIRECTS} times"
        )))
    }

    async fn send(&self, method: reqwest::Method, url: &Url) -> Result<reqwest::Response, String> {
        let request = self.http.request(method.clone(), url.clone());
        // A ranged GET asks for one byte; the body is dropped unread either way.
        let request = if method == reqwest::Method::GET {
            request.header(RANGE, "bytes=0-0")
        } else {
            request
        };
        request.send().await.map_err(|e| {
            if e.is_timeout() {
                TIMED_OUT.to_owned()
            } else if let Some(refused) = find_refusal(&e) {
                refused
            } else {
                format!("link could not be fetched: {}", short_error(&e))
            }
        })
    }
}

const TIMED_OUT: &str = "link did not answer in time";

/// The innermost cause, which says what happened (refused, reset, ...) without reqwest's wrapping.
fn short_error(e: &reqwest::Error) -> String {
    let mut last = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        last = cause.to_string();
        source = cause.source();
    }
    last
}
