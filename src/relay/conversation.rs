//! What the conversation holds a send to, before anything else is done for it: the customer's
//! opt-out (403, rule `opted_out`) and their customer-service window (a warning, or a 422 in
//! enforce mode). Both are read in one step from the store the webhooks fill.

use tracing::warn;

use super::{Error, Relay, Warning};
use crate::{
    Enforcement,
    message::{Content, Message},
    policy::{Caller, Refusal, Rule},
};

impl Relay {
    /// Refuses a send to a customer who opted out (unless the caller has `ignore_opt_out`) and a
    /// free-form send outside a known-closed window in enforce mode; in warn mode, answers the
    /// warning the send goes out with.
    pub(super) async fn hold_by_conversation(
        &self,
        caller: &Caller,
        message: &Message,
    ) -> Result<Option<Warning>, Error> {
        let opt_out_holds = !caller.rules.ignore_opt_out;
        // Templates open a conversation: the window never holds them.
        let window_holds = self.conversation.mode != Enforcement::Off
            && !matches!(message.content, Content::Template(_));
        if !opt_out_holds && !window_holds {
            return Ok(None);
        }
        let account = &caller.rules.account;
        let facts = match self.store.customer_facts(account, &message.to).await {
            Ok(facts) => facts,
            Err(e) if opt_out_holds => {
                warn!(error = %e, "the opt-out list cannot be read; the send is refused");
                return Err(Error::OptOutsUnavailable);
            }
            // The window unread is a window unknown, which refuses nothing.
            Err(e) => {
                warn!(error = %e, "the customer-service window cannot be read; the send goes out unchecked");
                return Ok(None);
            }
        };
        if let (true, Some(opt_out)) = (opt_out_holds, &facts.opt_out) {
            return Err(Error::Refused(Refusal::Forbidden {
                rule: Rule::OptedOut,
                detail: format!(
                    "{} is on the opt-out list of account {account} since {} (how: {}); nothing was sent (rule: {})",
                    message.to.masked(),
                    opt_out.since,
                    opt_out.how.as_str(),
                    Rule::OptedOut
                ),
            }));
        }
        if !window_holds {
            return Ok(None);
        }
        let Some(detail) = self
            .conversation
            .window(&facts, crate::unix_ms())
            .closed_detail()
        else {
            return Ok(None);
        };
        match self.conversation.mode {
            Enforcement::Enforce => Err(Error::OutsideCustomerWindow(format!(
                "{detail}; nothing was sent"
            ))),
            _ => {
                metrics::counter!(crate::metric::CONVERSATION_WARNINGS_TOTAL, "rule" => "outside_customer_window")
                    .increment(1);
                Ok(Some(Warning {
                    field: "type".to_owned(),
                    code: "outside_customer_window".to_owned(),
                    detail: format!("{detail}; the message was sent, and will probably fail"),
                }))
            }
        }
    }
}
