//! Media preflight: before a message with a media link goes to Qikchat, check that the link answers,
//! serves a type Qikchat accepts for that message type, and is not too large. Qikchat itself
//! accepts any link and fails only later, where the caller never sees it.
//!
//! The check must not turn the relay into a probe of the internal network: only http(s), no
//! credentials, and every address connected to (after DNS, after each redirect) must be public,
//! unless the operator allows private ones. Bodies are never read.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

use reqwest::{
    StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE},
};
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use crate::message::{Content, MediaKind, Message, TemplateHeader, TemplateParameters};

/// Redirects followed at most, each one checked like the first link.
const MAX_REDIRECTS: usize = 5;
/// Cached results at most; beyond it the oldest half goes.
const MAX_CACHED: usize = 10_000;

/// `RELAY_MEDIA_PREFLIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// Check, and tell the caller in the answer, but send anyway.
    Warn,
    /// Check, and refuse the message (422) when the check fails.
    Enforce,
}

impl FromStr for Mode {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "off" => Ok(Self::Off),
            "warn" => Ok(Self::Warn),
            "enforce" => Ok(Self::Enforce),
            _ => Err("must be off, warn or enforce"),
        }
    }
}

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

/// What Qikchat accepts for a media type (shared/qikchat-api.md).
struct Accepts {
    /// MIME types; empty means any.
    types: &'static [&'static str],
    max_bytes: u64,
}

fn accepts(kind: MediaKind) -> Accepts {
    const MB: u64 = 1024 * 1024;
    match kind {
        MediaKind::Image => Accepts {
            types: &["image/jpeg", "image/png"],
            max_bytes: 5 * MB,
        },
        MediaKind::Video => Accepts {
            types: &["video/mp4", "video/3gpp"],
            max_bytes: 16 * MB,
        },
        MediaKind::Audio => Accepts {
            types: &[
                "audio/aac",
                "audio/mp4",
                "audio/amr",
                "audio/mpeg",
                "audio/ogg",
                "audio/opus",
            ],
            max_bytes: 16 * MB,
        },
        MediaKind::Document => Accepts {
            types: &[],
            max_bytes: 100 * MB,
        },
        // 100 KB static, 500 KB animated: the larger, since the relay cannot tell them apart.
        MediaKind::Sticker => Accepts {
            types: &["image/webp"],
            max_bytes: 500 * 1024,
        },
    }
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
                metrics::counter!("relay_media_preflight_total", "outcome" => "cached")
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
        metrics::counter!("relay_media_preflight_total", "outcome" => outcome).increment(1);
        metrics::histogram!("relay_media_preflight_duration_seconds")
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
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Refuses what must not be fetched at all, before any connection.
    fn check_url(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err("link must be http or https".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("link must not carry credentials".to_owned());
        }
        // A literal address is never resolved, so it is checked here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if !self.allow_private && !is_public(ip) {
                return Err(format!("{REFUSED_PRIVATE} ({ip})"));
            }
        }
        Ok(())
    }
}

const TIMED_OUT: &str = "link did not answer in time";

const REFUSED_PRIVATE: &str =
    "link points to a private or reserved address, which the relay does not fetch";

/// The verdict on a 2xx answer's headers.
fn judge(kind: MediaKind, headers: &reqwest::header::HeaderMap) -> Verdict {
    let accepted = accepts(kind);
    let type_name = kind.message_type().as_str();
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if !accepted.types.is_empty() {
        let found = content_type.as_deref().unwrap_or("no Content-Type");
        if !accepted.types.contains(&found) {
            let hint = if found == "text/html" {
                " (a web page?)"
            } else {
                ""
            };
            return Err((
                MediaCode::MediaTypeNotSupported,
                format!(
                    "link answers {found}{hint}; {type_name} accepts {}",
                    accepted.types.join(", ")
                ),
            ));
        }
    }
    // A ranged GET reports the full size after the slash of Content-Range; HEAD in Content-Length.
    let size = headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once('/'))
        .and_then(|(_, total)| total.parse::<u64>().ok())
        .or_else(|| {
            headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|_| headers.get(CONTENT_RANGE).is_none())
        });
    match size {
        Some(size) if size > accepted.max_bytes => Err((
            MediaCode::MediaTooLarge,
            format!(
                "link is {} bytes; {type_name} accepts at most {} bytes",
                size, accepted.max_bytes
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local (cloud
/// metadata lives there), shared, multicast, documentation, unspecified or otherwise reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_unspecified()
                || ip.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && ip.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = ip.segments()[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && ip.segments()[1] == 0x0db8
                || first == 0x0064 && ip.segments()[1] == 0xff9b)
        }
    }
}

/// Resolves names like the system does, then keeps only public addresses (unless allowed): the
/// addresses checked are the ones connected to, so a DNS answer that changes cannot get around it.
struct PublicOnly {
    allow_private: bool,
}

#[derive(Debug)]
struct PrivateAddress(String);

impl std::fmt::Display for PrivateAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{REFUSED_PRIVATE} ({} resolves to a private address)",
            self.0
        )
    }
}

impl std::error::Error for PrivateAddress {}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(
                    Box::new(PrivateAddress(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

fn find_refusal(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(private) = cause.downcast_ref::<PrivateAddress>() {
            return Some(private.to_string());
        }
        source = cause.source();
    }
    None
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> reqwest::header::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_static(k),
                    v.parse().expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn types_and_sizes_are_judged_per_message_type() {
        assert!(
            judge(
                MediaKind::Image,
                &headers(&[("content-type", "image/png"), ("content-length", "1000")])
            )
            .is_ok()
        );
        let (code, detail) = judge(
            MediaKind::Video,
            &headers(&[("content-type", "text/html; charset=utf-8")]),
        )
        .expect_err("html");
        assert_eq!(code, MediaCode::MediaTypeNotSupported);
        assert_eq!(
            detail,
            "link answers text/html (a web page?); video accepts video/mp4, video/3gpp"
        );
        let (code, _) = judge(
            MediaKind::Video,
            &headers(&[
                ("content-type", "video/mp4"),
                ("content-length", "31457280"),
            ]),
        )
        .expect_err("large");
        assert_eq!(code, MediaCode::MediaTooLarge);
        let (code, _) = judge(
            MediaKind::Sticker,
            &headers(&[("content-type", "image/png")]),
        )
        .expect_err("png sticker");
        assert_eq!(code, MediaCode::MediaTypeNotSupported);
        assert!(
            judge(
                MediaKind::Document,
                &headers(&[("content-type", "application/zip")])
            )
            .is_ok()
        );
        let (code, _) = judge(
            MediaKind::Image,
            &headers(&[
                ("content-type", "image/jpeg"),
                ("content-range", "bytes 0-0/9000000"),
            ]),
        )
        .expect_err("range total");
        assert_eq!(code, MediaCode::MediaTooLarge);
    }
}
