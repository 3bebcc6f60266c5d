//! One exchange with Qikchat: the request sent with the key, connection failures (nothing was sent)
//! retried within the timeout, and the answer read in full, bounded, into a [`Reply`].

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::{
    StatusCode,
    header::{ACCEPT, HeaderMap, USER_AGENT},
};
use tracing::warn;

use super::{Error, Qikchat};

/// The header Qikchat authenticates with.
const KEY_HEADER: &str = "QIKCHAT-API-KEY";
/// Qikchat's answers are small; anything larger is not an answer we understand.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

impl Qikchat {
    /// Makes one call, retrying only connection failures (nothing was sent) within the timeout.
    pub(super) async fn call(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, Error> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = request()
                .header(ACCEPT, "application/json")
                .header(
                    USER_AGENT,
                    concat!("qikchat-relay/", env!("CARGO_PKG_VERSION")),
                )
                .header(KEY_HEADER, self.key.clone())
                .timeout(remaining)
                .send()
                .await;
            let response = match attempt {
                Ok(response) => response,
                Err(e) if e.is_connect() => {
                    let jittered = pause.mul_f64(0.5 + fastrand::f64());
                    if Instant::now() + jittered >= deadline {
                        return Err(Error::Unreachable(error_chain(&e)));
                    }
                    warn!(error = %error_chain(&e), retry_in_ms = jittered.as_millis() as u64, "Qikchat unreachable; nothing was sent, retrying");
                    tokio::time::sleep(jittered).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    continue;
                }
                Err(e) if e.is_timeout() => return Err(Error::Timeout(self.timeout)),
                // The connection broke after the request was written: it may have arrived.
                Err(e) => {
                    return Err(Error::Failed {
                        status: None,
                        reason: error_chain(&e),
                    });
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_bounded(response).await.map_err(|e| match e {
                ReadError::Timeout => Error::Timeout(self.timeout),
                ReadError::Other(reason) => Error::Failed {
                    status: Some(status.as_u16()),
                    reason,
                },
            })?;
            return Ok(Reply {
                status,
                headers,
                body,
            });
        }
    }
}

/// One answer from Qikchat, body read in full (bounded).
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

enum ReadError {
    Timeout,
    Other(String),
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Bytes, ReadError> {
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(ReadError::Other(format!(
                        "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) if e.is_timeout() => return Err(ReadError::Timeout),
            Err(e) => return Err(ReadError::Other(error_chain(&e))),
        }
    }
}

/// An error with its causes, for logs (reqwest's own `Display` hides the useful part).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
