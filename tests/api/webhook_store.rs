//! The webhook store's contract, checked against every backend: each test runs on SQLite (a
//! temporary directory) and on Redis (a redis-server of its own), through the `Store` enum the
//! relay uses. Then what only Redis has: several replicas sharing one stream.

use std::time::Duration;

use qikchat_relay::message::Recipient;
use qikchat_relay::webhooks::{
    Event, Ingested, Kind, NewDelivery, Owner, Store, event, redis_store::RedisStore,
    sqlite_store::SqliteStore,
};
use serde_json::json;

use crate::helpers::{Redis, TempDir};

/// Long enough that nothing expires while a test looks, short enough not to matter.
const LONG: Duration = Duration::from_secs(30);

/// A bound on the stored events no test here reaches (but the one about the bound).
const UNBOUNDED: u64 = 1 << 40;

/// What keeps a store's data alive while the test runs: its redis-server, or its directory.
#[allow(dead_code)]
enum Backing {
    Redis(Redis),
    Dir(TempDir),
}

fn redis_store(redis: &Redis, consumer: &str) -> Store {
    Store::Redis(
        RedisStore::new(
            &redis.url,
            Duration::from_secs(2),
            consumer.to_owned(),
            UNBOUNDED,
        )
        .expect("a Redis store"),
    )
}

/// One fresh, empty store of each backend, named for the assertions.
async fn stores() -> Vec<(&'static str, Store, Backing)> {
    stores_bounded(UNBOUNDED).await
}

/// As [`stores`], the events bounded to `max_bytes`.
async fn stores_bounded(max_bytes: u64) -> Vec<(&'static str, Store, Backing)> {
    let redis = Redis::start().await;
    let redis_one = Store::Redis(
        RedisStore::new(
            &redis.url,
            Duration::from_secs(2),
            "test-replica-1".to_owned(),
            max_bytes,
        )
        .expect("a Redis store"),
    );
    let dir = TempDir::new();
    let sqlite = Store::Sqlite(SqliteStore::open(&dir.0, max_bytes).expect("an SQLite store"));
    vec![
        ("sqlite", sqlite, Backing::Dir(dir)),
        ("redis", redis_one, Backing::Redis(redis)),
    ]
}

fn status_event(message_id: &str, status: &str) -> Event {
    Event {
        key: format!("status:{message_id}:{status}"),
        kind: Kind::Status,
        message_id: message_id.to_owned(),
        status: Some(status.to_owned()),
        account: "main".to_owned(),
        received_at_ms: 1_700_000_000_000,
        event: "whatsapp:message:status".to_owned(),
        payload: json!({"id": message_id, "status": status, "extra": {"kept": true}}),
    }
}

fn inbound_event(message_id: &str) -> Event {
    Event {
        key: format!("inbound:{message_id}"),
        kind: Kind::Inbound,
        message_id: message_id.to_owned(),
        status: None,
        account: "main".to_owned(),
        received_at_ms: 1_700_000_000_000,
        event: "whatsapp:message:inbound".to_owned(),
        payload: json!({"id": message_id, "text": "hello"}),
    }
}

fn delivery(id: &str, order_key: &str) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        caller: "billing".to_owned(),
        url: "https://billing.internal/hooks".to_owned(),
        order_key: order_key.to_owned(),
        // Every delivery carries one here, so that each test shows both stores keep it.
        reference: Some(format!("ref-{id}")),
    }
}

/// Ingests an event, routes it to `deliveries`, and checks it was stored and picked up.
async fn ingest_and_route(name: &str, store: &Store, event: &Event, deliveries: &[NewDelivery]) {
    assert_eq!(
        store.ingest(event).await.expect("ingest"),
        Ingested::Stored,
        "{name}"
    );
    let unrouted = store.unrouted(10, LONG).await.expect("unrouted");
    assert_eq!(unrouted.len(), 1, "{name}: one event to route");
    assert_eq!(&unrouted[0].1, event, "{name}");
    store
        .route(&unrouted[0].0, deliveries)
        .await
        .expect("route");
}

fn ids(deliveries: &[qikchat_relay::webhooks::Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.id.as_str()).collect()
}

#[tokio::test]
async fn the_same_event_twice_is_a_duplicate() {
    for (name, store, _backing) in stores().await {
        let event = status_event("m1", "sent");
        assert_eq!(
            store.ingest(&event).await.unwrap(),
            Ingested::Stored,
            "{name}"
        );
        assert_eq!(
            store.ingest(&event).await.unwrap(),
            Ingested::Duplicate,
            "{name}"
        );
        // Stored once: one event to route.
        let unrouted = store.unrouted(10, LONG).await.unwrap();
        assert_eq!(unrouted.len(), 1, "{name}");
    }
}

#[tokio::test]
async fn an_event_is_unrouted_once_and_routing_removes_it() {
    for (name, store, _backing) in stores().await {
        let event = inbound_event("in-1");
        store.ingest(&event).await.unwrap();
        let first = store.unrouted(10, LONG).await.unwrap();
        assert_eq!(first.len(), 1, "{name}");
        assert_eq!(first[0].1, event, "{name}: the event as stored");
        assert!(
            store.unrouted(10, LONG).await.unwrap().is_empty(),
            "{name}: not handed out twice within the lease"
        );
        store.route(&first[0].0, &[]).await.unwrap();
        // A lease of zero hands out again every event read and not routed: not this one.
        assert!(
            store.unrouted(10, Duration::ZERO).await.unwrap().is_empty(),
            "{name}: routed, so never again, even after the lease"
        );
    }
}

#[tokio::test]
async fn an_event_not_routed_within_its_lease_is_handed_out_again() {
    for (name, store, _backing) in stores().await {
        let lease = Duration::from_millis(50);
        let event = status_event("m1", "delivered");
        store.ingest(&event).await.unwrap();
        assert_eq!(store.unrouted(10, lease).await.unwrap().len(), 1, "{name}");
        // Its router died: nothing routed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = store.unrouted(10, lease).await.unwrap();
        assert_eq!(again.len(), 1, "{name}: handed out again");
        assert_eq!(again[0].1, event, "{name}");
        store
            .route(&again[0].0, &[delivery("d1", "billing:m1")])
            .await
            .unwrap();
        assert_eq!(
            ids(&store.due(10, LONG).await.unwrap()),
            ["d1"],
            "{name}: routed by the second router"
        );
    }
}

#[tokio::test]
async fn unrouted_honours_its_limit_oldest_first() {
    for (name, store, _backing) in stores().await {
        for n in 0..3 {
            store
                .ingest(&inbound_event(&format!("in-{n}")))
                .await
                .unwrap();
        }
        let first = store.unrouted(2, LONG).await.unwrap();
        let keys: Vec<&str> = first.iter().map(|(_, e)| e.key.as_str()).collect();
        assert_eq!(keys, ["inbound:in-0", "inbound:in-1"], "{name}");
        let rest = store.unrouted(2, LONG).await.unwrap();
        assert_eq!(rest.len(), 1, "{name}");
        assert_eq!(rest[0].1.key, "inbound:in-2", "{name}");
        assert!(store.unrouted(0, LONG).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn routing_twice_creates_the_deliveries_once() {
    for (name, store, _backing) in stores().await {
        store.ingest(&status_event("m1", "sent")).await.unwrap();
        let (handle, _) = store.unrouted(10, LONG).await.unwrap().remove(0);
        let deliveries = [delivery("d1", "billing:m1"), delivery("d2", "alerts:m1")];
        store.route(&handle, &deliveries).await.unwrap();
        store.route(&handle, &deliveries).await.unwrap();
        let mut due = store.due(10, LONG).await.unwrap();
        due.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(ids(&due), ["d1", "d2"], "{name}");
        for d in &due {
            store.delivered(&d.id).await.unwrap();
        }
        // A third time, after the deliveries were made: still nothing new.
        store.route(&handle, &deliveries).await.unwrap();
        assert!(
            store.due(10, Duration::ZERO).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn deliveries_of_one_order_key_go_one_at_a_time_in_order() {
    for (name, store, _backing) in stores().await {
        for (n, status) in ["sent", "delivered", "read"].into_iter().enumerate() {
            let d = delivery(&format!("d{n}"), "billing:m1");
            ingest_and_route(name, &store, &status_event("m1", status), &[d]).await;
        }
        ingest_and_route(
            name,
            &store,
            &status_event("m2", "sent"),
            &[delivery("other", "billing:m2")],
        )
        .await;

        let mut due = store.due(10, LONG).await.unwrap();
        due.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(ids(&due), ["d0", "other"], "{name}: only the first of m1");
        let d0 = due.iter().find(|d| d.id == "d0").unwrap();
        let expected = delivery("d0", "billing:m1");
        assert_eq!(
            (&d0.caller, &d0.url, &d0.order_key, &d0.body, d0.attempts),
            (
                &expected.caller,
                &expected.url,
                &expected.order_key,
                &event::body(&status_event("m1", "sent"), expected.reference.as_deref()),
                0
            ),
            "{name}: the delivery as routed, its body built from its event"
        );

        store.delivered("d0").await.unwrap();
        assert_eq!(ids(&store.due(10, LONG).await.unwrap()), ["d1"], "{name}");
        store.delivered("d1").await.unwrap();
        assert_eq!(ids(&store.due(10, LONG).await.unwrap()), ["d2"], "{name}");
        store.delivered("d2").await.unwrap();
        store.delivered("other").await.unwrap();
        assert!(
            store.due(10, Duration::ZERO).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_its_delay_and_counted() {
    for (name, store, _backing) in stores().await {
        ingest_and_route(
            name,
            &store,
            &status_event("m1", "sent"),
            &[delivery("d1", "billing:m1"), delivery("d2", "billing:m1")],
        )
        .await;
        assert_eq!(ids(&store.due(10, LONG).await.unwrap()), ["d1"], "{name}");
        store
            .failed("d1", Some(Duration::from_millis(250)), "HTTP 503")
            .await
            .unwrap();
        assert!(
            store.due(10, LONG).await.unwrap().is_empty(),
            "{name}: not before its retry, and d2 still waits behind it"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let due = store.due(10, LONG).await.unwrap();
        assert_eq!(ids(&due), ["d1"], "{name}");
        assert_eq!(due[0].attempts, 1, "{name}: one attempt made before");
        store
            .failed("d1", Some(Duration::ZERO), "HTTP 503")
            .await
            .unwrap();
        assert_eq!(store.due(10, LONG).await.unwrap()[0].attempts, 2, "{name}");
        assert!(store.dead_letters(10).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn a_delivery_out_of_attempts_is_a_dead_letter_and_the_next_goes_on() {
    for (name, store, _backing) in stores().await {
        ingest_and_route(
            name,
            &store,
            &status_event("m1", "sent"),
            &[delivery("d1", "billing:m1"), delivery("d2", "billing:m1")],
        )
        .await;
        assert_eq!(ids(&store.due(10, LONG).await.unwrap()), ["d1"], "{name}");
        store
            .failed("d1", Some(Duration::ZERO), "HTTP 500")
            .await
            .unwrap();
        assert_eq!(ids(&store.due(10, LONG).await.unwrap()), ["d1"], "{name}");
        store.failed("d1", None, "HTTP 410 Gone").await.unwrap();

        let letters = store.dead_letters(10).await.unwrap();
        assert_eq!(letters.len(), 1, "{name}");
        let letter = &letters[0];
        assert_eq!(letter.id, "d1", "{name}");
        assert_eq!(letter.caller, "billing", "{name}");
        assert_eq!(letter.url, "https://billing.internal/hooks", "{name}");
        assert_eq!(letter.attempts, 2, "{name}");
        assert_eq!(letter.last_error, "HTTP 410 Gone", "{name}");
        assert_eq!(
            letter.body,
            serde_json::from_str::<serde_json::Value>(&event::body(
                &status_event("m1", "sent"),
                Some("ref-d1")
            ))
            .unwrap(),
            "{name}: the event as it would be delivered"
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            letter.dead_at_ms.abs_diff(now_ms) < 60_000,
            "{name}: dead at {} (now {now_ms})",
            letter.dead_at_ms
        );

        let due = store.due(10, LONG).await.unwrap();
        assert_eq!(ids(&due), ["d2"], "{name}: the next in line goes on");
        assert_eq!(due[0].attempts, 0, "{name}");
        // A dead letter takes no more attempts.
        store
            .failed("d1", Some(Duration::ZERO), "late")
            .await
            .unwrap();
        assert_eq!(
            store.dead_letters(10).await.unwrap()[0].attempts,
            2,
            "{name}"
        );
        assert!(store.dead_letters(0).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn dead_letters_come_newest_first_up_to_the_limit() {
    for (name, store, _backing) in stores().await {
        for n in 0..3 {
            let id = format!("d{n}");
            ingest_and_route(
                name,
                &store,
                &inbound_event(&format!("in-{n}")),
                &[delivery(&id, &format!("billing:in-{n}"))],
            )
            .await;
            assert_eq!(ids(&store.due(10, LONG).await.unwrap()), [id.as_str()]);
            store.failed(&id, None, "HTTP 404").await.unwrap();
            // Apart in time, so "newest" is not a tie.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let letters = store.dead_letters(2).await.unwrap();
        let ids: Vec<&str> = letters.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["d2", "d1"], "{name}");
    }
}

#[tokio::test]
async fn a_replayed_dead_letter_is_due_again_with_its_attempts_reset() {
    for (name, store, _backing) in stores().await {
        ingest_and_route(
            name,
            &store,
            &status_event("m1", "sent"),
            &[delivery("d1", "billing:m1")],
        )
        .await;
        store.due(10, LONG).await.unwrap();
        store.failed("d1", None, "HTTP 500").await.unwrap();
        assert!(
            store.due(10, Duration::ZERO).await.unwrap().is_empty(),
            "{name}"
        );

        assert!(
            !store.replay("nope").await.unwrap(),
            "{name}: no such letter"
        );
        assert!(store.replay("d1").await.unwrap(), "{name}");
        assert!(
            !store.replay("d1").await.unwrap(),
            "{name}: not a dead letter any more"
        );
        assert!(store.dead_letters(10).await.unwrap().is_empty(), "{name}");
        let due = store.due(10, LONG).await.unwrap();
        assert_eq!(ids(&due), ["d1"], "{name}");
        assert_eq!(due[0].attempts, 0, "{name}");
        store.delivered("d1").await.unwrap();
        assert!(
            store.due(10, Duration::ZERO).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_replayed_dead_letter_goes_behind_the_pending_ones_of_its_order_key() {
    for (name, store, _backing) in stores().await {
        ingest_and_route(
            name,
            &store,
            &status_event("m1", "sent"),
            &[delivery("d1", "billing:m1"), delivery("d2", "billing:m1")],
        )
        .await;
        store.due(10, LONG).await.unwrap();
        store.failed("d1", None, "HTTP 500").await.unwrap();
        assert_eq!(ids(&store.due(10, LONG).await.unwrap()), ["d2"], "{name}");
        assert!(store.replay("d1").await.unwrap(), "{name}");
        assert!(
            store.due(10, Duration::ZERO).await.unwrap().is_empty(),
            "{name}: d2 is out (leased), d1 waits behind it"
        );
        store.delivered("d2").await.unwrap();
        assert_eq!(ids(&store.due(10, LONG).await.unwrap()), ["d1"], "{name}");
    }
}

#[tokio::test]
async fn a_claimed_delivery_is_not_handed_out_again_until_its_lease_runs_out() {
    for (name, store, _backing) in stores().await {
        ingest_and_route(
            name,
            &store,
            &status_event("m1", "sent"),
            &[delivery("d1", "billing:m1")],
        )
        .await;
        let lease = Duration::from_millis(250);
        assert_eq!(ids(&store.due(10, lease).await.unwrap()), ["d1"], "{name}");
        assert!(
            store.due(10, lease).await.unwrap().is_empty(),
            "{name}: leased"
        );
        // Its worker died.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let due = store.due(10, lease).await.unwrap();
        assert_eq!(ids(&due), ["d1"], "{name}: the lease ran out");
        assert_eq!(due[0].attempts, 0, "{name}: a lost lease is not a failure");
    }
}

#[tokio::test]
async fn due_honours_its_limit() {
    for (name, store, _backing) in stores().await {
        ingest_and_route(
            name,
            &store,
            &inbound_event("in-1"),
            &[
                delivery("a", "billing:in-1"),
                delivery("b", "alerts:in-1"),
                delivery("c", "crm:in-1"),
            ],
        )
        .await;
        assert_eq!(store.due(2, LONG).await.unwrap().len(), 2, "{name}");
        assert_eq!(store.due(2, LONG).await.unwrap().len(), 1, "{name}");
        assert!(
            store.due(0, Duration::ZERO).await.unwrap().is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_latest_status_never_goes_back() {
    for (name, store, _backing) in stores().await {
        assert_eq!(store.latest_status("m1").await.unwrap(), None, "{name}");
        store.ingest(&status_event("m1", "sent")).await.unwrap();
        assert_eq!(
            store.latest_status("m1").await.unwrap().unwrap().status,
            "sent",
            "{name}"
        );
        let read = status_event("m1", "read");
        store.ingest(&read).await.unwrap();
        // Out of order: `delivered` arrives after `read`.
        store
            .ingest(&status_event("m1", "delivered"))
            .await
            .unwrap();
        let latest = store.latest_status("m1").await.unwrap().unwrap();
        assert_eq!(latest.status, "read", "{name}");
        let payload: serde_json::Value = serde_json::from_str(&latest.payload).unwrap();
        assert_eq!(payload, read.payload, "{name}: read's payload");
        // A later status of the same rank or above wins.
        store.ingest(&status_event("m1", "failed")).await.unwrap();
        assert_eq!(
            store.latest_status("m1").await.unwrap().unwrap().status,
            "failed",
            "{name}"
        );
        // Inbound messages have no status.
        store.ingest(&inbound_event("m2")).await.unwrap();
        assert_eq!(store.latest_status("m2").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn owners_and_last_senders_are_remembered_for_their_ttl() {
    let owner = |caller: &str| Owner {
        caller: caller.to_owned(),
        account: "main".to_owned(),
        reference: Some(format!("{caller}'s own id")),
        relay_id: Some(format!("msg_{caller}")),
    };
    let number = |raw: &str| Recipient::parse(raw).expect("a valid number");
    let (asha, ravi) = (number("+918080808080"), number("+14155550100"));
    for (name, store, _backing) in stores().await {
        assert_eq!(store.owner("m1").await.unwrap(), None, "{name}");
        assert_eq!(
            store.last_sender("main", &asha).await.unwrap(),
            None,
            "{name}"
        );
        store
            .remember_owner(
                "m1",
                &owner("billing"),
                Some(&asha),
                Duration::from_millis(250),
            )
            .await
            .unwrap();
        store
            .remember_owner("m2", &owner("billing"), Some(&ravi), LONG)
            .await
            .unwrap();
        store
            .remember_owner("m3", &owner("alerts"), Some(&ravi), LONG)
            .await
            .unwrap();
        assert_eq!(
            store.owner("m1").await.unwrap(),
            Some(owner("billing")),
            "{name}"
        );
        let last = |account: &'static str, customer: &Recipient| {
            let (store, customer) = (store.clone(), customer.clone());
            async move { store.last_sender(account, &customer).await.unwrap() }
        };
        assert_eq!(
            last("main", &asha).await.as_deref(),
            Some("billing"),
            "{name}"
        );
        // The last to send wins; another account's conversation with the same number is apart.
        assert_eq!(
            last("main", &ravi).await.as_deref(),
            Some("alerts"),
            "{name}"
        );
        assert_eq!(last("other", &ravi).await, None, "{name}");
        // Qikchat writes numbers without the +: the same customer.
        let ravi_from_qikchat = Recipient::from_qikchat("14155550100").expect("valid");
        assert_eq!(
            last("main", &ravi_from_qikchat).await.as_deref(),
            Some("alerts"),
            "{name}"
        );

        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.owner("m1").await.unwrap(), None, "{name}: expired");
        assert_eq!(last("main", &asha).await, None, "{name}: expired");
        assert_eq!(
            store.owner("m2").await.unwrap(),
            Some(owner("billing")),
            "{name}"
        );
    }
}

// The embedded store only: what Redis does with key expiry.

#[tokio::test]
async fn the_embedded_store_forgets_a_status_a_week_after_its_last_event() {
    let dir = TempDir::new();
    let store = Store::Sqlite(SqliteStore::open(&dir.0, UNBOUNDED).expect("an SQLite store"));
    let db = rusqlite::Connection::open(dir.0.join("webhooks.sqlite3")).expect("the database");
    let days_pass = |message_id: &str, days: i64| {
        db.execute(
            "UPDATE latest_statuses SET updated_at = updated_at - ?2 WHERE message_id = ?1",
            rusqlite::params![message_id, days * 86_400_000],
        )
        .expect("aged");
    };
    let latest = |message_id: &'static str| {
        let store = store.clone();
        async move {
            store
                .latest_status(message_id)
                .await
                .unwrap()
                .map(|s| s.status)
        }
    };
    store.ingest(&status_event("old", "read")).await.unwrap();
    store.ingest(&status_event("recent", "sent")).await.unwrap();
    days_pass("old", 8);
    days_pass("recent", 6);
    // A late, lesser status does not replace `sent`, but it is news of the message: kept longer.
    store
        .ingest(&status_event("recent", "queued"))
        .await
        .unwrap();
    days_pass("recent", 2);
    // Any event stored clears what is over a week old.
    store.ingest(&inbound_event("in-1")).await.unwrap();
    assert_eq!(latest("old").await, None);
    assert_eq!(latest("recent").await.as_deref(), Some("sent"));
}

// Redis only: what comes of replicas sharing one Redis.

#[tokio::test]
async fn two_redis_replicas_split_the_events_between_them() {
    let redis = Redis::start().await;
    let (one, two) = (
        redis_store(&redis, "replica-1"),
        redis_store(&redis, "replica-2"),
    );
    for n in 0..5 {
        one.ingest(&inbound_event(&format!("in-{n}")))
            .await
            .unwrap();
    }
    // A duplicate is recognised whichever replica received the first copy.
    assert_eq!(
        two.ingest(&inbound_event("in-0")).await.unwrap(),
        Ingested::Duplicate
    );
    let lease = Duration::from_millis(500);
    let (a, b) = (
        one.unrouted(3, lease).await.unwrap(),
        two.unrouted(10, lease).await.unwrap(),
    );
    assert_eq!((a.len(), b.len()), (3, 2));
    assert!(one.unrouted(10, lease).await.unwrap().is_empty());
    assert!(two.unrouted(10, lease).await.unwrap().is_empty());
    let mut keys: Vec<&str> = a.iter().chain(&b).map(|(_, e)| e.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "inbound:in-0",
            "inbound:in-1",
            "inbound:in-2",
            "inbound:in-3",
            "inbound:in-4"
        ]
    );

    // Replica one dies before routing its three; two routes its own and, once the lease has run
    // out, takes over one's.
    for (handle, event) in &b {
        let d = delivery(&format!("d-{}", event.key), &event.key);
        two.route(handle, &[d]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let taken_over = two.unrouted(10, lease).await.unwrap();
    let mut keys: Vec<&str> = taken_over.iter().map(|(_, e)| e.key.as_str()).collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = a.iter().map(|(_, e)| e.key.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert!(one.unrouted(10, lease).await.unwrap().is_empty());

    // Both route them, with deliveries of their own making (other ids, other order keys, as a
    // router that builds them afresh would): each event is routed once, nothing twice.
    for (handle, event) in a.iter().chain(&taken_over) {
        let d = delivery(&format!("d-{}", event.key), &event.key);
        one.route(handle, &[d]).await.unwrap();
        let d = delivery(&format!("again-{}", event.key), &format!("x:{}", event.key));
        two.route(handle, &[d]).await.unwrap();
    }
    let due = one.due(100, LONG).await.unwrap();
    assert_eq!(due.len(), 5);
    assert!(
        two.due(100, LONG).await.unwrap().is_empty(),
        "leased by one"
    );
}

#[tokio::test]
async fn an_unreadable_redis_entry_is_dropped_not_handed_out_forever() {
    let redis = Redis::start().await;
    let store = redis_store(&redis, "replica-1");
    store.ingest(&inbound_event("in-0")).await.unwrap();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg("qikchat-relay:webhooks:events")
        .arg("*")
        .arg("event")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    store.ingest(&inbound_event("in-1")).await.unwrap();

    let lease = Duration::from_millis(20);
    let events = store.unrouted(10, lease).await.unwrap();
    let keys: Vec<&str> = events.iter().map(|(_, e)| e.key.as_str()).collect();
    assert_eq!(keys, ["inbound:in-0", "inbound:in-1"]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = store.unrouted(10, lease).await.unwrap();
    assert_eq!(again.len(), 2, "the two real events, not the poison");
    let length: u64 = redis::cmd("XLEN")
        .arg("qikchat-relay:webhooks:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(length, 2, "the poison is deleted");
}

#[tokio::test]
async fn redis_keeps_the_events_ingested_before_any_replica_read() {
    // The consumer group is created on the first read, from the start of the stream: events
    // stored before then are not skipped.
    let redis = Redis::start().await;
    let writer = redis_store(&redis, "writer");
    writer.ingest(&inbound_event("in-0")).await.unwrap();
    writer.ingest(&inbound_event("in-1")).await.unwrap();
    let reader = redis_store(&redis, "reader");
    assert_eq!(reader.unrouted(10, LONG).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_that_does_not_name_it() {
    let mut redis = Redis::start().await;
    let url = redis.url.clone();
    redis.stop();
    let store = Store::Redis(
        RedisStore::new(
            &url,
            Duration::from_millis(200),
            "replica-1".to_owned(),
            UNBOUNDED,
        )
        .unwrap(),
    );
    let error = store
        .ingest(&inbound_event("in-0"))
        .await
        .expect_err("Redis is down")
        .to_string();
    let port = url.rsplit(':').next().unwrap();
    assert!(
        !error.contains(&url) && !error.contains(port),
        "the error names the server: {error}"
    );
}

/// The bytes of the database's pages in use (its file's pages minus the free ones).
fn used_bytes(dir: &TempDir) -> i64 {
    let db = rusqlite::Connection::open(dir.0.join("webhooks.sqlite3")).expect("open");
    let pragma = |name: &str| -> i64 {
        db.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .expect("pragma")
    };
    (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
}

#[tokio::test]
async fn the_embedded_store_keeps_a_status_events_payload_once() {
    let dir = TempDir::new();
    let store = Store::Sqlite(SqliteStore::open(&dir.0, UNBOUNDED).expect("an SQLite store"));
    let before = used_bytes(&dir);
    let mut event = status_event("m-big", "delivered");
    let payload_bytes = 20_000;
    event.payload["filler"] = json!("x".repeat(payload_bytes));

    assert_eq!(
        store.ingest(&event).await.expect("stored"),
        Ingested::Stored
    );

    let grown = used_bytes(&dir) - before;
    // One copy and its pages' slack; two copies (the event and the latest status) would be 40 KB.
    assert!(
        grown < (payload_bytes as i64) * 3 / 2,
        "the database grew by {grown} bytes for a {payload_bytes}-byte payload"
    );
    let latest = store
        .latest_status("m-big")
        .await
        .expect("readable")
        .expect("the latest status");
    let payload: serde_json::Value = serde_json::from_str(&latest.payload).expect("JSON");
    assert_eq!(
        payload, event.payload,
        "the latest status still reads the payload"
    );
}

#[tokio::test]
async fn an_events_payload_is_kept_once_however_many_deliveries_it_has() {
    let payload_bytes = 20_000;
    let mut event = status_event("m-big", "delivered");
    event.payload["filler"] = json!("x".repeat(payload_bytes));
    let event_bytes = serde_json::to_string(&event).unwrap().len() as u64;
    for (name, store, backing) in stores().await {
        let before = held_bytes(&backing).await;
        let deliveries = [
            delivery("d1", "billing:m-big"),
            delivery("d2", "alerts:m-big"),
            delivery("d3", "ops:m-big"),
        ];
        ingest_and_route(name, &store, &event, &deliveries).await;

        assert_eq!(store.bytes().await.unwrap(), event_bytes, "{name}");
        let grown = held_bytes(&backing).await - before;
        // One copy and its overhead; a copy per delivery and the latest status would be 100 KB.
        assert!(
            grown < (payload_bytes as i64) * 3 / 2,
            "{name}: the store grew by {grown} bytes for a {payload_bytes}-byte payload and 3 deliveries"
        );
        let due = store.due(10, LONG).await.unwrap();
        assert_eq!(due.len(), 3, "{name}");
        for d in &due {
            assert_eq!(
                d.body,
                event::body(&event, Some(&format!("ref-{}", d.id))),
                "{name}: {} gets the whole event",
                d.id
            );
        }
        for d in &due {
            store.delivered(&d.id).await.unwrap();
        }
        let latest = store.latest_status("m-big").await.unwrap().expect("kept");
        let payload: serde_json::Value = serde_json::from_str(&latest.payload).unwrap();
        assert_eq!(
            payload, event.payload,
            "{name}: delivered, still read for status"
        );
    }
}

/// What the backend really holds: the SQLite pages in use, or Redis's memory for the store's keys.
async fn held_bytes(backing: &Backing) -> i64 {
    match backing {
        Backing::Dir(dir) => used_bytes(dir),
        Backing::Redis(redis) => {
            let client = redis::Client::open(redis.url.as_str()).expect("a client");
            let mut connection = client
                .get_multiplexed_async_connection()
                .await
                .expect("a connection");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("qikchat-relay:webhooks:*")
                .query_async(&mut connection)
                .await
                .expect("KEYS");
            let mut total = 0;
            for key in keys {
                let bytes: Option<i64> = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .expect("MEMORY USAGE");
                total += bytes.unwrap_or(0);
            }
            total
        }
    }
}

#[tokio::test]
async fn past_its_bound_the_store_drops_delivered_events_oldest_first_and_refuses_only_for_undelivered_ones()
 {
    let event = |n: usize| status_event(&format!("m{n:02}"), "delivered");
    let size = serde_json::to_string(&event(0)).unwrap().len() as u64;
    for (name, store, _backing) in stores_bounded(10 * size).await {
        let ingest = |n: usize| {
            let store = store.clone();
            async move { store.ingest(&event(n)).await.unwrap() }
        };
        let latest = |n: usize| {
            let store = store.clone();
            async move {
                store
                    .latest_status(&format!("m{n:02}"))
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        // Six events delivered, four routed but not delivered yet: the store is full.
        for n in 0..10 {
            let d = delivery(&format!("d{n:02}"), &format!("billing:m{n:02}"));
            ingest_and_route(name, &store, &event(n), &[d]).await;
        }
        for n in 0..6 {
            store.delivered(&format!("d{n:02}")).await.unwrap();
        }
        assert_eq!(store.bytes().await.unwrap(), 10 * size, "{name}");

        // One more: the two oldest delivered events go (a tenth of the bound freed at once).
        assert_eq!(ingest(10).await, Ingested::Stored, "{name}");
        assert!(
            !latest(0).await && !latest(1).await,
            "{name}: m00 and m01 dropped"
        );
        assert!(latest(2).await, "{name}: m02 kept");
        assert!(latest(6).await, "{name}: undelivered m06 kept");
        assert_eq!(store.bytes().await.unwrap(), 9 * size, "{name}");
        // Qikchat delivering a dropped event again is still a duplicate.
        assert_eq!(ingest(0).await, Ingested::Duplicate, "{name}");

        // Until only events still to deliver are left: then new events are refused.
        for n in 11..16 {
            assert_eq!(ingest(n).await, Ingested::Stored, "{name}: m{n}");
        }
        assert_eq!(ingest(16).await, Ingested::Full, "{name}");
        assert_eq!(
            store.bytes().await.unwrap(),
            10 * size,
            "{name}: never past the bound"
        );
        for n in 2..6 {
            assert!(!latest(n).await, "{name}: delivered m{n:02} dropped");
        }
        // Refused, the event is not remembered: Qikchat's retry is stored once there is room.
        store.delivered("d06").await.unwrap();
        assert_eq!(ingest(16).await, Ingested::Stored, "{name}");
        assert!(latest(16).await, "{name}");
    }
}

#[tokio::test]
async fn an_embedded_store_made_by_an_older_relay_opens_and_delivers_what_it_held() {
    let dir = TempDir::new();
    {
        // The tables as the previous release made them: no `bytes`, no `event_seq`.
        let db = rusqlite::Connection::open(dir.0.join("webhooks.sqlite3")).unwrap();
        db.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
                 json TEXT NOT NULL, received_at INTEGER NOT NULL,
                 routed INTEGER NOT NULL DEFAULT 0, lease_until INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                 caller TEXT NOT NULL, url TEXT NOT NULL, order_key TEXT NOT NULL,
                 body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, due_at INTEGER NOT NULL,
                 dead_at INTEGER, last_error TEXT NOT NULL DEFAULT '');
             INSERT INTO deliveries (id, caller, url, order_key, body, due_at)
                 VALUES ('old', 'billing', 'https://billing.internal/hooks', 'billing:m0',
                         '{\"kept\":true}', 0);",
        )
        .unwrap();
        let json = serde_json::to_string(&inbound_event("in-old")).unwrap();
        db.execute(
            "INSERT INTO events (key, json, received_at, routed) VALUES ('inbound:in-old', ?1, 0, 0)",
            rusqlite::params![json],
        )
        .unwrap();
    }
    let store = Store::Sqlite(SqliteStore::open(&dir.0, UNBOUNDED).expect("opens"));
    let due = store.due(10, LONG).await.unwrap();
    assert_eq!(ids(&due), ["old"]);
    assert_eq!(due[0].body, r#"{"kept":true}"#, "the body it kept");
    let unrouted = store.unrouted(10, LONG).await.unwrap();
    assert_eq!(unrouted.len(), 1, "the event it held");
    let json = serde_json::to_string(&inbound_event("in-old")).unwrap();
    assert_eq!(store.bytes().await.unwrap(), json.len() as u64, "counted");
}

#[tokio::test]
async fn senders_recorded_by_an_older_relay_are_still_read_without_a_reference() {
    let dir = TempDir::new();
    {
        // `owners` and `deliveries` as the release before references made them.
        let db = rusqlite::Connection::open(dir.0.join("webhooks.sqlite3")).unwrap();
        db.execute_batch(
            "CREATE TABLE owners (message_id TEXT PRIMARY KEY, caller TEXT NOT NULL,
                 account TEXT NOT NULL, expires_at INTEGER NOT NULL);
             INSERT INTO owners VALUES ('m-old', 'billing', 'main', 9223372036854775807);
             CREATE TABLE deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                 caller TEXT NOT NULL, url TEXT NOT NULL, order_key TEXT NOT NULL,
                 body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, due_at INTEGER NOT NULL,
                 dead_at INTEGER, last_error TEXT NOT NULL DEFAULT '', event_seq INTEGER);
             INSERT INTO deliveries (id, caller, url, order_key, body, due_at)
                 VALUES ('old', 'billing', 'https://billing.internal/hooks', 'billing:m0',
                         '{\"kept\":true}', 0);",
        )
        .unwrap();
    }
    let store = Store::Sqlite(SqliteStore::open(&dir.0, UNBOUNDED).expect("opens"));
    let expected = Owner {
        caller: "billing".to_owned(),
        account: "main".to_owned(),
        reference: None,
        relay_id: None,
    };
    assert_eq!(store.owner("m-old").await.unwrap(), Some(expected));
    let due = store.due(10, LONG).await.unwrap();
    assert_eq!(due[0].body, r#"{"kept":true}"#, "the body it kept");

    // Redis keeps an owner as JSON: one written before references reads as one without.
    let old: Owner = serde_json::from_str(r#"{"caller":"billing","account":"main"}"#).unwrap();
    assert_eq!(old.reference, None);
}
