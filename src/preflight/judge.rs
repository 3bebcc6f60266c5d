//! What Qikchat accepts per media kind (types and sizes, shared/qikchat-api.md), and the verdict on
//! a link's answer by its headers alone.

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};

use super::{MediaCode, Verdict};
use crate::message::MediaKind;

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

/// The verdict on a 2xx answer's headers.
pub(super) fn judge(kind: MediaKind, headers: &reqwest::header::HeaderMap) -> Verdict {
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

#[cfg(test)]
mod tests {
    use super::*;

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
