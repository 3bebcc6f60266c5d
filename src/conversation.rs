//! What the relay knows of each customer's conversation with an account, from Qikchat's webhooks
//! (the contract's "The conversation"): the 24-hour customer-service window and the opt-out list.
//!
//! The facts are recorded by the webhook router (`webhooks::fanout`, [`Store::observe`]) and kept
//! where the relay's state lives (`RELAY_DATA_DIR`, or Redis for every replica); this module says
//! what they mean. The pipeline (`relay`) refuses or warns by them before anything is sent, and
//! `GET /customers/{number}/window` shows them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Enforcement, rfc3339_ms};

/// What the store knows of one customer's conversation with an account: when they last wrote,
/// since when the account's webhooks have been received, and whether they opted out. [`Settings::window`]
/// says what it means for a send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerFacts {
    /// When the customer last wrote to the account (ms since the Unix epoch).
    pub last_inbound_ms: Option<u64>,
    /// When the first event of the account reached the relay: from then on, a customer who
    /// wrote would have been seen.
    pub watched_since_ms: Option<u64>,
    /// Set while the customer is on the account's opt-out list.
    pub opt_out: Option<OptOut>,
}

/// A customer on an account's opt-out list, as operators see it: the number masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OptOut {
    /// The customer's number, masked (`+91******8080`): the relay keeps no number.
    #[schema(examples("+91******8080"))]
    pub customer: String,
    /// When they were put on the list, RFC 3339.
    #[schema(examples("2026-12-04T10:15:02.123Z"))]
    pub since: String,
    pub how: OptOutHow,
}

/// How a customer came on the opt-out list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptOutHow {
    /// They wrote one of the account's `opt_out_keywords`.
    Keyword,
    /// An operator put them on it (`PUT /opt-outs/{number}`).
    Admin,
}

impl OptOutHow {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyword => "keyword",
            Self::Admin => "admin",
        }
    }

    /// The stored form back; anything else reads as `admin`, the cautious answer.
    pub fn parse(stored: &str) -> Self {
        if stored == "keyword" {
            Self::Keyword
        } else {
            Self::Admin
        }
    }
}

/// A change of a customer's place on the opt-out list, made at `at_ms`. The latest change wins,
/// whatever order they reach the store in (events are routed at least once, replicas race): a
/// change older than the one in force is dropped, and so is one that changes nothing (a second
/// STOP keeps the first one's date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptChange {
    pub opted_out: bool,
    pub how: OptOutHow,
    pub at_ms: u64,
}

/// `RELAY_CUSTOMER_WINDOW` and `RELAY_CUSTOMER_WINDOW_S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// What a non-template send outside a known-closed window gets: nothing (`off`), a warning in
    /// its answer (`warn`, the default) or a 422 (`enforce`).
    pub mode: Enforcement,
    /// How long after the customer's last message the window stays open: WhatsApp's is 24 hours.
    pub window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Enforcement::Warn,
            window: Duration::from_secs(86_400),
        }
    }
}

/// The customer-service window of one customer on one account, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The customer wrote within the window: a free-form message will be delivered until
    /// `closes_at_ms`.
    Open {
        last_inbound_ms: u64,
        closes_at_ms: u64,
    },
    /// Known closed: the customer's last message is older than the window, or the account's
    /// webhooks have reached the relay for longer than the window and the customer never wrote.
    Closed { last_inbound_ms: Option<u64> },
    /// The relay cannot tell (its webhooks have not run for a whole window yet, or are off):
    /// nothing is refused.
    Unknown,
}

impl Settings {
    /// The window `facts` show at `now_ms`.
    pub fn window(&self, facts: &CustomerFacts, now_ms: u64) -> Window {
        let length = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        match (facts.last_inbound_ms, facts.watched_since_ms) {
            (Some(last), _) => {
                let closes_at_ms = last.saturating_add(length);
                if now_ms < closes_at_ms {
                    Window::Open {
                        last_inbound_ms: last,
                        closes_at_ms,
                    }
                } else {
                    Window::Closed {
                        last_inbound_ms: Some(last),
                    }
                }
            }
            (None, Some(since)) if now_ms.saturating_sub(since) >= length => Window::Closed {
                last_inbound_ms: None,
            },
            (None, _) => Window::Unknown,
        }
    }
}

impl Window {
    /// Why a free-form message is refused (or warned about), for its caller: when the customer
    /// last wrote, and what to send instead.
    pub fn closed_detail(&self) -> Option<String> {
        match self {
            Window::Closed {
                last_inbound_ms: Some(last),
            } => Some(format!(
                "the customer last wrote at {}, longer ago than the customer-service window; WhatsApp delivers only a template message now",
                rfc3339_ms(*last)
            )),
            Window::Closed {
                last_inbound_ms: None,
            } => Some(
                "the customer has not written to this account within the customer-service window; WhatsApp delivers only a template message now"
                    .to_owned(),
            ),
            Window::Open { .. } | Window::Unknown => None,
        }
    }
}

/// `GET /customers/{number}/window`: whether a free-form message to the customer would be
/// delivered now.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowState {
    /// `true`: the customer wrote within the window; `false`: known closed (send a template);
    /// `null`: the relay cannot tell yet (its webhooks have not run for a whole window). Always
    /// present: required and nullable, the one shape generators read as a plain optional value.
    #[schema(value_type = Option<bool>, required = true, examples(true))]
    pub open: Option<bool>,
    /// When the customer last wrote to the account, RFC 3339, when the relay knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("2026-12-04T09:12:44.120Z"))]
    pub last_inbound_at: Option<String>,
    /// When the window closes (or closed): the last message plus `RELAY_CUSTOMER_WINDOW_S`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("2026-12-05T09:12:44.120Z"))]
    pub closes_at: Option<String>,
}

impl WindowState {
    pub fn of(window: Window, settings: &Settings) -> Self {
        let length = u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX);
        let (open, last) = match window {
            Window::Open {
                last_inbound_ms, ..
            } => (Some(true), Some(last_inbound_ms)),
            Window::Closed { last_inbound_ms } => (Some(false), last_inbound_ms),
            Window::Unknown => (None, None),
        };
        Self {
            open,
            last_inbound_at: last.map(rfc3339_ms),
            closes_at: last.map(|last| rfc3339_ms(last.saturating_add(length))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn facts(last: Option<u64>, since: Option<u64>) -> CustomerFacts {
        CustomerFacts {
            last_inbound_ms: last,
            watched_since_ms: since,
            opt_out: None,
        }
    }

    #[test]
    fn the_window_is_open_for_its_length_after_the_last_message_then_closed() {
        let settings = Settings::default();
        let at = 1_000 * HOUR;
        let open = settings.window(&facts(Some(at), Some(0)), at + 23 * HOUR);
        assert_eq!(
            open,
            Window::Open {
                last_inbound_ms: at,
                closes_at_ms: at + 24 * HOUR
            }
        );
        assert_eq!(open.closed_detail(), None);
        let closed = settings.window(&facts(Some(at), Some(0)), at + 24 * HOUR);
        assert_eq!(
            closed,
            Window::Closed {
                last_inbound_ms: Some(at)
            }
        );
        assert!(
            closed
                .closed_detail()
                .is_some_and(|d| d.contains("1970-02-11T16:00:00.000Z"))
        );
    }

    #[test]
    fn a_customer_never_seen_is_unknown_until_the_account_has_been_watched_for_a_window() {
        let settings = Settings::default();
        assert_eq!(
            settings.window(&facts(None, None), 99 * HOUR),
            Window::Unknown
        );
        assert_eq!(
            settings.window(&facts(None, Some(10 * HOUR)), 33 * HOUR),
            Window::Unknown
        );
        assert_eq!(
            settings.window(&facts(None, Some(10 * HOUR)), 34 * HOUR),
            Window::Closed {
                last_inbound_ms: None
            }
        );
    }

    #[test]
    fn the_answer_shows_each_state() {
        let settings = Settings {
            mode: Enforcement::Enforce,
            window: Duration::from_secs(60),
        };
        let open = WindowState::of(
            Window::Open {
                last_inbound_ms: 0,
                closes_at_ms: 60_000,
            },
            &settings,
        );
        assert_eq!(open.open, Some(true));
        assert_eq!(open.closes_at.as_deref(), Some("1970-01-01T00:01:00.000Z"));
        let unknown = WindowState::of(Window::Unknown, &settings);
        assert_eq!(
            serde_json::to_value(&unknown).ok(),
            Some(serde_json::json!({"open": null}))
        );
    }
}
