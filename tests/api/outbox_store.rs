//! The outbox store's contract, through the `Store` enum the relay uses. Each test is a function
//! of a fresh, empty store, so every backend runs the same ones (`on_both!` at the end runs
//! them on a redis-server of their own and on SQLite); then what only Redis shows (what its hashes keep).
//!
//! Times are real: leases of a few hundred ms run out while a test sleeps, and "now" is the
//! test's clock, which the store's (Redis's `TIME`) matches on one machine.

// The contract's tests are functions of a store called by the `#[tokio::test]`s `on_both!`
// writes, so clippy's `allow-unwrap-in-tests` does not reach them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use qikchat_relay::outbox::{
    Accepted, Cancel, Finish, NewMessage, Record, Shares, State, Store, new_id,
    redis_store::RedisStore,
};

use crate::helpers::Redis;

/// A bound on the waiting messages no test here reaches (but the ones about the bound).
const UNBOUNDED: u64 = 1 << 40;

/// Long enough that no lease runs out while a test looks.
const LONG_MS: u64 = 30_000;

/// A lease that runs out while a test sleeps [`PAST_SHORT`].
const SHORT_MS: u64 = 150;
const PAST_SHORT: Duration = Duration::from_millis(300);

fn now_ms() -> u64 {
    qikchat_relay::unix_ms()
}

/// A message of `caller` due now (or `due_in_ms` later, then `scheduled`), with a body that holds
/// the customer's number as a real one does.
fn message(caller: &str, due_in_ms: u64) -> NewMessage {
    let now = now_ms();
    let id = new_id();
    NewMessage {
        body: format!(r#"{{"to":"+15550001111","text":"hello from {id}"}}"#),
        id,
        caller: caller.to_owned(),
        account: "main".to_owned(),
        reference: Some(format!("ref-{caller}")),
        key: None,
        state: if due_in_ms > 0 {
            State::Scheduled
        } else {
            State::Accepted
        },
        send_at_ms: (due_in_ms > 0).then_some(now + due_in_ms),
        due_at_ms: now + due_in_ms,
        valid_until_ms: now + 3_600_000,
        accepted_at_ms: now,
    }
}

/// A message due `ago_ms` ago: for the order of what is due.
fn due_ago(caller: &str, ago_ms: u64) -> NewMessage {
    let mut m = message(caller, 0);
    m.due_at_ms -= ago_ms;
    m
}

fn keyed(caller: &str, key: &str, fingerprint: &str) -> NewMessage {
    let mut m = message(caller, 0);
    m.key = Some((sha256(key), fingerprint.to_owned()));
    m
}

fn sha256(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Stores `messages` (the outbox unbounded) and returns their ids.
async fn accept(store: &Store, messages: Vec<NewMessage>) -> Vec<String> {
    let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    let answers = store
        .accept(messages, UNBOUNDED)
        .await
        .unwrap()
        .expect("room in the outbox");
    for (answer, id) in answers.iter().zip(&ids) {
        assert!(
            matches!(answer, Accepted::Stored { id: stored, .. } if stored == id),
            "{answer:?}"
        );
    }
    ids
}

async fn get(store: &Store, id: &str) -> Record {
    store.get(id).await.unwrap().expect("a stored message")
}

fn ended(state: State) -> Finish {
    Finish {
        state,
        qikchat_id: (state == State::Queued).then(|| "wamid.1".to_owned()),
        error: (state != State::Queued).then(|| ("code".to_owned(), "detail".to_owned())),
    }
}

/// Claims the one message due, for `token`, and returns its id.
async fn claim_one(store: &Store, token: &str, lease_ms: u64) -> String {
    let claimed = store
        .claim(10, lease_ms, token, &Shares::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    claimed[0].id.clone()
}

async fn accept_and_get(store: Store) {
    let first = message("billing", 0);
    let mut second = message("alerts", 60_000);
    second.reference = None;
    let answers = store
        .accept(vec![first.clone(), second.clone()], UNBOUNDED)
        .await
        .unwrap();
    assert_eq!(
        answers,
        Some(vec![
            Accepted::Stored {
                id: first.id.clone(),
                state: State::Accepted
            },
            Accepted::Stored {
                id: second.id.clone(),
                state: State::Scheduled
            },
        ])
    );
    for m in [&first, &second] {
        let r = get(&store, &m.id).await;
        assert_eq!(
            (
                &r.id,
                &r.caller,
                &r.account,
                r.state,
                &r.qikchat_id,
                &r.reference
            ),
            (&m.id, &m.caller, &m.account, m.state, &None, &m.reference)
        );
        assert_eq!(
            (
                r.send_at_ms,
                r.due_at_ms,
                r.valid_until_ms,
                r.attempts,
                &r.error,
                r.accepted_at_ms
            ),
            (
                m.send_at_ms,
                m.due_at_ms,
                m.valid_until_ms,
                0,
                &None,
                m.accepted_at_ms
            )
        );
        assert!(r.updated_at_ms.abs_diff(now_ms()) < 60_000, "{r:?}");
    }
    assert_eq!(store.get(&new_id()).await.unwrap(), None);
    assert_eq!(store.stats().await.unwrap().waiting, 2);
    assert_eq!(store.accept(Vec::new(), 0).await.unwrap(), Some(Vec::new()));
}

async fn a_full_outbox_stores_nothing(store: Store) {
    let two = vec![message("billing", 0), message("billing", 0)];
    assert!(store.accept(two, 3).await.unwrap().is_some());
    let refused = vec![message("billing", 0), message("alerts", 0)];
    let refused_ids: Vec<String> = refused.iter().map(|m| m.id.clone()).collect();
    assert_eq!(store.accept(refused, 3).await.unwrap(), None);
    for id in &refused_ids {
        assert_eq!(store.get(id).await.unwrap(), None, "none of the batch");
    }
    assert_eq!(store.stats().await.unwrap().waiting, 2);
    assert!(
        store
            .accept(vec![message("alerts", 0)], 3)
            .await
            .unwrap()
            .is_some(),
        "exactly full is fine"
    );
    assert_eq!(
        store.accept(vec![message("alerts", 0)], 3).await.unwrap(),
        None
    );
    // Room again once one ends.
    let id = claim_one_of(&store, "w").await;
    assert!(store.finish(&id, "w", ended(State::Queued)).await.unwrap());
    assert!(
        store
            .accept(vec![message("alerts", 0)], 3)
            .await
            .unwrap()
            .is_some()
    );
}

/// Claims one message (any), for `token`.
async fn claim_one_of(store: &Store, token: &str) -> String {
    let claimed = store
        .claim(1, LONG_MS, token, &Shares::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    claimed[0].id.clone()
}

async fn a_used_key_gives_the_stored_message_or_reused(store: Store) {
    let first = keyed("billing", "k1", "fp1");
    let first_id = accept(&store, vec![first.clone()]).await.remove(0);
    let answers = store
        .accept(
            vec![
                keyed("billing", "k1", "fp1"),
                keyed("billing", "k1", "other"),
                // Keys are the caller's: another's same key is another message.
                keyed("alerts", "k1", "fp1"),
            ],
            UNBOUNDED,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answers[..2],
        [
            Accepted::Existing {
                id: first_id.clone(),
                state: State::Accepted
            },
            Accepted::Reused
        ]
    );
    assert!(
        matches!(
            &answers[2],
            Accepted::Stored {
                state: State::Accepted,
                ..
            }
        ),
        "{answers:?}"
    );
    assert_eq!(store.stats().await.unwrap().waiting, 2);

    let (record, fingerprint) = store
        .by_key("billing", &sha256("k1"))
        .await
        .unwrap()
        .expect("the key's message");
    assert_eq!(
        (record.id.as_str(), fingerprint.as_str()),
        (first_id.as_str(), "fp1")
    );
    assert_eq!(store.by_key("billing", &sha256("k2")).await.unwrap(), None);
    assert_eq!(store.by_key("nobody", &sha256("k1")).await.unwrap(), None);

    // The state as it is now.
    let claimed = store
        .claim(10, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    for c in &claimed {
        assert!(store.start(&c.id, "w", LONG_MS).await.unwrap());
    }
    assert_eq!(
        store
            .accept(vec![keyed("billing", "k1", "fp1")], UNBOUNDED)
            .await
            .unwrap(),
        Some(vec![Accepted::Existing {
            id: first_id.clone(),
            state: State::Sending
        }])
    );
    assert!(
        store
            .finish(&first_id, "w", ended(State::Queued))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .accept(vec![keyed("billing", "k1", "fp1")], UNBOUNDED)
            .await
            .unwrap(),
        Some(vec![Accepted::Existing {
            id: first_id.clone(),
            state: State::Queued
        }]),
        "kept with its message, after it ended"
    );
    assert!(
        store
            .by_key("billing", &sha256("k1"))
            .await
            .unwrap()
            .is_some()
    );
}

async fn a_key_twice_in_one_batch_is_stored_once(store: Store) {
    let first = keyed("billing", "k2", "fp");
    let answers = store
        .accept(
            vec![
                first.clone(),
                keyed("billing", "k2", "fp"),
                keyed("billing", "k2", "not the same"),
            ],
            UNBOUNDED,
        )
        .await
        .unwrap();
    assert_eq!(
        answers,
        Some(vec![
            Accepted::Stored {
                id: first.id.clone(),
                state: State::Accepted
            },
            Accepted::Existing {
                id: first.id.clone(),
                state: State::Accepted
            },
            Accepted::Reused,
        ])
    );
    assert_eq!(store.stats().await.unwrap().waiting, 1);
    // Counted once against the bound: one new, the outbox holding one, two allowed.
    let batch = vec![keyed("alerts", "k3", "fp"), keyed("alerts", "k3", "fp")];
    assert!(store.accept(batch, 2).await.unwrap().is_some());
    assert_eq!(store.stats().await.unwrap().waiting, 2);
}

async fn only_due_messages_are_claimed(store: Store) {
    let now_due = message("billing", 0);
    let later = message("billing", 60_000);
    // Scheduled, and its time came: claimed like any other, then simply claimed.
    let mut came = message("alerts", 0);
    came.state = State::Scheduled;
    came.send_at_ms = Some(came.due_at_ms);
    accept(&store, vec![now_due.clone(), later.clone(), came.clone()]).await;

    let mut claimed: Vec<String> = store
        .claim(10, LONG_MS, "w", &Shares::default())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    claimed.sort();
    let mut expected = vec![now_due.id.clone(), came.id.clone()];
    expected.sort();
    assert_eq!(claimed, expected, "not the one due in a minute");
    assert!(
        store
            .claim(10, LONG_MS, "w2", &Shares::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(get(&store, &came.id).await.state, State::Claimed);
    assert_eq!(get(&store, &now_due.id).await.state, State::Claimed);
    assert_eq!(get(&store, &later.id).await.state, State::Scheduled);
    assert_eq!(
        store
            .claim(0, LONG_MS, "w2", &Shares::default())
            .await
            .unwrap(),
        Vec::new()
    );

    let c = store
        .claim(10, LONG_MS, "w3", &Shares::default())
        .await
        .unwrap();
    assert!(c.is_empty());
    // What a worker is handed.
    let mut other = message("ops", 0);
    other.reference = None;
    accept(&store, vec![other.clone()]).await;
    let claimed = store
        .claim(10, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(
        (
            &c.id,
            &c.caller,
            &c.account,
            &c.body,
            &c.reference,
            c.attempts,
            c.valid_until_ms,
            c.accepted_at_ms
        ),
        (
            &other.id,
            &other.caller,
            &other.account,
            &other.body,
            &None,
            0,
            other.valid_until_ms,
            other.accepted_at_ms
        )
    );
}

async fn claims_are_fair_between_callers(store: Store) {
    // A has 50 due, long due, oldest first; B's 2 came later.
    let many: Vec<NewMessage> = (0..50).map(|n| due_ago("a", 100_000 - n)).collect();
    let many_ids = accept(&store, many).await;
    let few_ids = accept(&store, vec![due_ago("b", 10), due_ago("b", 5)]).await;

    let claimed = store
        .claim(10, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);
    let of = |caller: &str| -> Vec<String> {
        claimed
            .iter()
            .filter(|c| c.caller == caller)
            .map(|c| c.id.clone())
            .collect()
    };
    assert_eq!(of("b"), few_ids, "both of B's, oldest first");
    assert_eq!(of("a"), many_ids[..8], "A's oldest eight, in order");

    // Then A's next, in order, and nothing of B's left.
    let next = store
        .claim(5, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    let ids: Vec<&str> = next.iter().map(|c| c.id.as_str()).collect();
    let expected: Vec<&str> = many_ids[8..13].iter().map(String::as_str).collect();
    assert_eq!(ids, expected);

    // With more callers than the limit, the longest waiting go first, one each.
    let store_c = accept(&store, vec![due_ago("c", 200_000)]).await;
    let one = store
        .claim(1, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    assert_eq!(one[0].id, store_c[0], "C waited longest");
}

async fn shares_skip_callers_and_cap_the_others(store: Store) {
    let a = accept(&store, (0..5).map(|n| due_ago("a", 1_000 - n)).collect()).await;
    let b = accept(&store, (0..5).map(|n| due_ago("b", 500 - n)).collect()).await;
    let c = accept(&store, vec![due_ago("c", 100)]).await;
    let shares = Shares {
        per_caller: Some(2),
        skip: vec!["b".to_owned()],
    };
    let claimed = store.claim(10, LONG_MS, "w", &shares).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "two of A's, C's one, none of B's: {ids:?}");
    assert!(ids.contains(&a[0].as_str()) && ids.contains(&a[1].as_str()));
    assert!(ids.contains(&c[0].as_str()));
    assert!(b.iter().all(|id| !ids.contains(&id.as_str())));
}

async fn a_lease_that_ran_out_is_claimed_again(store: Store) {
    accept(&store, vec![message("billing", 0)]).await;
    let id = claim_one(&store, "w1", SHORT_MS).await;
    assert!(
        store
            .claim(10, LONG_MS, "w2", &Shares::default())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert!(!store.renew(&id, "w1", LONG_MS).await.unwrap(), "too late");
    assert_eq!(claim_one(&store, "w2", LONG_MS).await, id, "due again");
    assert!(
        !store.start(&id, "w1", LONG_MS).await.unwrap(),
        "w1 lost it"
    );
    assert!(!store.renew(&id, "w1", LONG_MS).await.unwrap());
    assert!(!store.finish(&id, "w1", ended(State::Queued)).await.unwrap());
    assert!(store.start(&id, "w2", LONG_MS).await.unwrap());
    assert_eq!(get(&store, &id).await.state, State::Sending);
}

async fn a_renewed_lease_holds(store: Store) {
    accept(&store, vec![message("billing", 0)]).await;
    let id = claim_one(&store, "w1", SHORT_MS).await;
    assert!(!store.renew(&id, "w2", LONG_MS).await.unwrap(), "not w2's");
    assert!(store.renew(&id, "w1", LONG_MS).await.unwrap());
    tokio::time::sleep(PAST_SHORT).await;
    assert!(
        store
            .claim(10, LONG_MS, "w2", &Shares::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.start(&id, "w1", SHORT_MS).await.unwrap());
    assert!(store.renew(&id, "w1", LONG_MS).await.unwrap(), "a send too");
    tokio::time::sleep(PAST_SHORT).await;
    assert!(store.sweep(LONG_MS).await.unwrap().is_empty(), "renewed");
    assert!(!store.renew(&new_id(), "w1", LONG_MS).await.unwrap());
}

async fn exactly_one_start_wins(store: Store) {
    accept(&store, vec![message("billing", 0)]).await;
    let id = claim_one(&store, "w", LONG_MS).await;
    let (one, two) = tokio::join!(
        store.start(&id, "w", LONG_MS),
        store.start(&id, "w", LONG_MS)
    );
    assert_eq!(
        [one.unwrap(), two.unwrap()]
            .into_iter()
            .filter(|won| *won)
            .count(),
        1
    );
    assert!(
        !store.start(&id, "w", LONG_MS).await.unwrap(),
        "started once"
    );
    assert!(!store.start(&id, "other", LONG_MS).await.unwrap());
}

async fn a_retry_is_due_again_later(store: Store) {
    accept(&store, vec![message("billing", 0)]).await;
    let id = claim_one(&store, "w", LONG_MS).await;
    let error = ("qikchat_unavailable".to_owned(), "HTTP 503".to_owned());
    assert!(
        !store
            .retry(&id, "other", now_ms(), error.clone())
            .await
            .unwrap()
    );
    assert!(
        store
            .retry(&id, "w", now_ms() + 250, error.clone())
            .await
            .unwrap()
    );
    let r = get(&store, &id).await;
    assert_eq!(
        (r.state, r.attempts, r.error.clone()),
        (State::Accepted, 1, Some(error.clone()))
    );
    assert!(!store.start(&id, "w", LONG_MS).await.unwrap(), "let go");
    assert!(
        store
            .claim(10, LONG_MS, "w", &Shares::default())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let claimed = store
        .claim(10, LONG_MS, "w2", &Shares::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].id.as_str(), claimed[0].attempts),
        (id.as_str(), 1)
    );
    // From sending too.
    assert!(store.start(&id, "w2", LONG_MS).await.unwrap());
    assert!(store.retry(&id, "w2", now_ms(), error).await.unwrap());
    assert_eq!(get(&store, &id).await.attempts, 2);
    assert_eq!(claim_one(&store, "w3", LONG_MS).await, id);
    assert_eq!(store.stats().await.unwrap().waiting, 1);
}

async fn a_finished_message_ends_and_stops_waiting(store: Store) {
    accept(&store, vec![message("billing", 0), message("alerts", 0)]).await;
    assert_eq!(store.stats().await.unwrap().waiting, 2);
    let claimed = store
        .claim(10, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    let (sent, dropped) = (&claimed[0].id, &claimed[1].id);
    assert!(store.start(sent, "w", LONG_MS).await.unwrap());
    assert!(
        !store
            .finish(sent, "other", ended(State::Queued))
            .await
            .unwrap()
    );
    assert!(store.finish(sent, "w", ended(State::Queued)).await.unwrap());
    // Straight from claimed: its validity ran out before it was sent.
    assert!(
        store
            .finish(dropped, "w", ended(State::Expired))
            .await
            .unwrap()
    );

    let r = get(&store, sent).await;
    assert_eq!(
        (r.state, r.qikchat_id.as_deref(), r.error),
        (State::Queued, Some("wamid.1"), None)
    );
    assert!(r.updated_at_ms.abs_diff(now_ms()) < 60_000);
    let r = get(&store, dropped).await;
    assert_eq!(
        (r.state, r.error),
        (
            State::Expired,
            Some(("code".to_owned(), "detail".to_owned()))
        )
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.oldest_due_ms), (0, None));
    assert!(
        store
            .claim(10, 0, "w", &Shares::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store.finish(sent, "w", ended(State::Failed)).await.unwrap(),
        "ended once"
    );
    assert!(
        !store
            .retry(sent, "w", now_ms(), ("a".into(), "b".into()))
            .await
            .unwrap()
    );
    assert!(!store.renew(sent, "w", LONG_MS).await.unwrap());
    assert_eq!(get(&store, sent).await.state, State::Queued);
}

async fn cancel_in_each_state(store: Store) {
    let [scheduled, accepted, claimed, sending, queued] =
        [60_000, 0, 0, 0, 0].map(|due_in| message("billing", due_in));
    let ids = accept(&store, vec![scheduled.clone(), accepted.clone()]).await;
    for id in &ids {
        match store.cancel("billing", id).await.unwrap() {
            Cancel::Canceled(r) => assert_eq!((&r.id, r.state), (id, State::Canceled)),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        store
            .claim(10, LONG_MS, "w", &Shares::default())
            .await
            .unwrap()
            .is_empty()
    );

    accept(&store, vec![claimed.clone()]).await;
    claim_one(&store, "w", LONG_MS).await;
    assert_eq!(
        store.cancel("alerts", &claimed.id).await.unwrap(),
        Cancel::NotFound,
        "another caller's"
    );
    assert!(matches!(
        store.cancel("billing", &claimed.id).await.unwrap(),
        Cancel::Canceled(r) if r.state == State::Canceled
    ));
    assert!(
        !store.start(&claimed.id, "w", LONG_MS).await.unwrap(),
        "canceled: not sent"
    );

    accept(&store, vec![sending.clone()]).await;
    claim_one(&store, "w", LONG_MS).await;
    assert!(store.start(&sending.id, "w", LONG_MS).await.unwrap());
    assert!(matches!(
        store.cancel("billing", &sending.id).await.unwrap(),
        Cancel::NotCancelable(r) if r.state == State::Sending
    ));
    accept(&store, vec![queued.clone()]).await;
    claim_one(&store, "w", LONG_MS).await;
    assert!(
        store
            .finish(&queued.id, "w", ended(State::Queued))
            .await
            .unwrap()
    );
    assert!(matches!(
        store.cancel("billing", &queued.id).await.unwrap(),
        Cancel::NotCancelable(r) if r.state == State::Queued
    ));
    assert!(
        matches!(
            store.cancel("billing", &scheduled.id).await.unwrap(),
            Cancel::NotCancelable(r) if r.state == State::Canceled
        ),
        "canceled once"
    );
    assert_eq!(
        store.cancel("billing", &new_id()).await.unwrap(),
        Cancel::NotFound
    );
    assert_eq!(store.stats().await.unwrap().waiting, 1, "the one sending");
}

async fn a_send_whose_worker_died_ends_unknown(store: Store) {
    accept(&store, vec![message("billing", 0), message("billing", 0)]).await;
    let claimed = store
        .claim(10, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    let (died, alive) = (&claimed[0].id, &claimed[1].id);
    assert!(store.start(died, "w", SHORT_MS).await.unwrap());
    assert!(store.start(alive, "w", LONG_MS).await.unwrap());
    assert!(
        store.sweep(LONG_MS).await.unwrap().is_empty(),
        "within its lease"
    );
    tokio::time::sleep(PAST_SHORT).await;

    let swept = store.sweep(LONG_MS).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!((&swept[0].id, swept[0].state), (died, State::Unknown));
    let error = swept[0].error.clone().expect("why");
    assert_eq!(error.0, "interrupted");
    assert!(error.1.contains("never sent again"), "{error:?}");
    assert_eq!(get(&store, died).await, swept[0]);
    assert!(store.sweep(LONG_MS).await.unwrap().is_empty(), "once");
    assert!(!store.finish(died, "w", ended(State::Queued)).await.unwrap());
    assert_eq!(store.stats().await.unwrap().waiting, 1);
    let dead: Vec<String> = store
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(dead, [died.as_str()]);
    // A send within its lease still takes Qikchat's answer.
    assert!(
        store
            .finish(alive, "w", ended(State::Queued))
            .await
            .unwrap()
    );
}

async fn ended_messages_are_forgotten_after_the_retention(store: Store) {
    let ids = accept(
        &store,
        vec![keyed("billing", "k", "fp"), message("billing", 0)],
    )
    .await;
    let (done, waiting) = (&ids[0], &ids[1]);
    assert_eq!(
        store
            .claim(10, LONG_MS, "w", &Shares::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(store.finish(done, "w", ended(State::Failed)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store.sweep(LONG_MS).await.unwrap().is_empty());
    assert!(store.get(done).await.unwrap().is_some(), "kept");
    store.sweep(10).await.unwrap();
    assert_eq!(store.get(done).await.unwrap(), None, "forgotten");
    assert_eq!(store.by_key("billing", &sha256("k")).await.unwrap(), None);
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    assert!(
        store.get(waiting).await.unwrap().is_some(),
        "still waiting: kept"
    );
    // The key is free again.
    let again = keyed("billing", "k", "other");
    accept(&store, vec![again]).await;
}

async fn dead_letters_are_failed_or_unknown_newest_first(store: Store) {
    let ids = accept(&store, (0..4).map(|_| message("billing", 0)).collect()).await;
    let claimed = store
        .claim(10, LONG_MS, "w", &Shares::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4);
    for (id, state) in
        ids.iter()
            .zip([State::Failed, State::Queued, State::Unknown, State::Expired])
    {
        assert!(store.finish(id, "w", ended(state)).await.unwrap());
        // Apart in time, so "newest" is not a tie.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dead = store.dead_letters(10).await.unwrap();
    let got: Vec<(&str, State)> = dead.iter().map(|r| (r.id.as_str(), r.state)).collect();
    assert_eq!(
        got,
        [
            (ids[2].as_str(), State::Unknown),
            (ids[0].as_str(), State::Failed)
        ]
    );
    assert_eq!(
        dead[1].error,
        Some(("code".to_owned(), "detail".to_owned()))
    );
    assert_eq!(store.dead_letters(1).await.unwrap().len(), 1);
    assert!(store.dead_letters(0).await.unwrap().is_empty());
}

async fn stats_count_waiting_and_the_oldest_due(store: Store) {
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.oldest_due_ms), (0, None));
    let oldest = due_ago("billing", 5_000);
    let newer = due_ago("alerts", 1_000);
    accept(
        &store,
        vec![newer.clone(), oldest.clone(), message("ops", 60_000)],
    )
    .await;
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.waiting, stats.oldest_due_ms),
        (3, Some(oldest.due_at_ms))
    );
    // Claimed is not due any more (a worker has it).
    assert_eq!(
        store
            .claim(1, LONG_MS, "w", &Shares::default())
            .await
            .unwrap()[0]
            .id,
        oldest.id
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.waiting, stats.oldest_due_ms),
        (3, Some(newer.due_at_ms))
    );
    assert!(
        store
            .finish(&oldest.id, "w", ended(State::Queued))
            .await
            .unwrap()
    );
    assert_eq!(store.stats().await.unwrap().waiting, 2);
}

fn redis_store(redis: &Redis) -> Store {
    Store::Redis(RedisStore::new(&redis.url, Duration::from_secs(2)).expect("a Redis store"))
}

/// Runs each of the contract's tests above on a redis-server of its own, and on SQLite in a
/// directory of its own: the two stores keep one contract.
macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod on_redis {
            $(
                #[tokio::test]
                async fn $test() {
                    let redis = crate::helpers::Redis::start().await;
                    super::$test(super::redis_store(&redis)).await;
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = crate::helpers::TempDir::new();
                    let store = qikchat_relay::outbox::sqlite_store::SqliteStore::open(&dir.0)
                        .expect("an SQLite outbox");
                    super::$test(qikchat_relay::outbox::Store::Sqlite(store)).await;
                }
            )*
        }
    };
}

on_both!(
    accept_and_get,
    a_full_outbox_stores_nothing,
    a_used_key_gives_the_stored_message_or_reused,
    a_key_twice_in_one_batch_is_stored_once,
    only_due_messages_are_claimed,
    claims_are_fair_between_callers,
    shares_skip_callers_and_cap_the_others,
    a_lease_that_ran_out_is_claimed_again,
    a_renewed_lease_holds,
    exactly_one_start_wins,
    a_retry_is_due_again_later,
    a_finished_message_ends_and_stops_waiting,
    cancel_in_each_state,
    a_send_whose_worker_died_ends_unknown,
    ended_messages_are_forgotten_after_the_retention,
    dead_letters_are_failed_or_unknown_newest_first,
    stats_count_waiting_and_the_oldest_due,
);

/// Redis's own view: what a message's hash keeps once it ended, and that a hash changed by
/// something else is an error, not a panic.
mod redis_only {
    use super::*;
    use qikchat_relay::outbox::redis_store::PREFIX;

    async fn hash(redis: &Redis, id: &str) -> Vec<(String, String)> {
        let client =
            redis::Client::open(redis.url.as_str()).expect("the test's redis-server answers");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("the test's redis-server answers");
        redis::cmd("HGETALL")
            .arg(format!("{PREFIX}msg:{id}"))
            .query_async(&mut con)
            .await
            .expect("the test's redis-server answers")
    }

    #[tokio::test]
    async fn an_ended_message_forgets_its_body_and_lease() {
        let redis = Redis::start().await;
        let store = redis_store(&redis);
        let ids = accept(
            &store,
            vec![message("billing", 0), message("billing", 60_000)],
        )
        .await;
        let id = claim_one(&store, "w", LONG_MS).await;
        assert!(hash(&redis, &id).await.iter().any(|(f, _)| f == "body"));
        assert!(store.start(&id, "w", LONG_MS).await.unwrap());
        assert!(store.finish(&id, "w", ended(State::Queued)).await.unwrap());
        assert!(store.cancel("billing", &ids[1]).await.unwrap() != Cancel::NotFound);
        for id in &ids {
            let fields = hash(&redis, id).await;
            assert!(!fields.is_empty());
            for (field, value) in &fields {
                assert!(
                    !["body", "token", "lease_until_ms"].contains(&field.as_str()),
                    "{field} kept"
                );
                assert!(!value.contains("+15550001111"), "{field}: {value}");
            }
        }
    }

    #[tokio::test]
    async fn a_malformed_field_is_an_error() {
        let redis = Redis::start().await;
        let store = redis_store(&redis);
        let id = accept(&store, vec![message("billing", 0)]).await.remove(0);
        let client = redis::Client::open(redis.url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let key = format!("{PREFIX}msg:{id}");
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("attempts")
            .arg("many")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(store.get(&id).await.is_err());
        assert!(
            store
                .claim(10, LONG_MS, "w", &Shares::default())
                .await
                .is_err()
        );
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("attempts")
            .arg("0")
            .arg("state")
            .arg("lost")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(store.get(&id).await.is_err());
    }

    #[tokio::test]
    async fn a_dead_redis_is_an_error_without_its_address() {
        let store = Store::Redis(
            RedisStore::new("redis://127.0.0.1:1", Duration::from_millis(200)).unwrap(),
        );
        let error = store.stats().await.unwrap_err().to_string();
        assert!(!error.contains("127.0.0.1:1"), "{error}");
    }
}
