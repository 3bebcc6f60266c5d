//! The limiter in Redis: replicas share one limit, decided atomically on Redis's clock, and a
//! Redis that is down is an error, never a free pass.

use std::time::{Duration, Instant};

use qikchat_relay::ratelimit::{Decision, Limiter, Rate};

use crate::helpers::Redis;

const TIMEOUT: Duration = Duration::from_millis(500);

/// Two relays' limiters, as two replicas would hold them.
fn replicas(redis: &Redis) -> (Limiter, Limiter) {
    let one = Limiter::redis(&redis.url, TIMEOUT).expect("a Redis client");
    let two = Limiter::redis(&redis.url, TIMEOUT).expect("a Redis client");
    (one, two)
}

/// A plain connection, to look at what the limiter leaves in Redis.
async fn raw(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connected")
}

async fn keys(redis: &Redis, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut raw(redis).await)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn two_replicas_share_one_rate_limit() {
    let redis = Redis::start().await;
    let (one, two) = replicas(&redis);
    assert!(one.is_shared());
    let rate = Rate::every(Duration::from_secs(60), 3);

    let mut decisions: Vec<Decision> = Vec::new();
    for limiter in [&one, &two, &one] {
        decisions.push(limiter.take("caller:billing", rate).await.expect("Redis"));
    }
    let remaining: Vec<(bool, u64)> = decisions.iter().map(|d| (d.allowed, d.remaining)).collect();
    assert_eq!(remaining, [(true, 2), (true, 1), (true, 0)]);
    assert!(decisions.iter().all(|d| d.limit == 3));
    assert!(
        decisions[2].reset > Duration::from_secs(170)
            && decisions[2].reset <= Duration::from_secs(180)
    );

    let refused = two.take("caller:billing", rate).await.expect("Redis");
    assert!(!refused.allowed, "{refused:?}");
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(60),
        "{refused:?}"
    );
    // The refusal took nothing: the next one is refused for about as long, not a minute more.
    let again = one.take("caller:billing", rate).await.expect("Redis");
    assert!(
        !again.allowed && again.retry_after <= refused.retry_after,
        "{again:?}"
    );

    let other = two.take("caller:alerts", rate).await.expect("Redis");
    assert_eq!(
        (other.allowed, other.remaining),
        (true, 2),
        "keys are independent"
    );
    assert_eq!(
        keys(&redis, "qikchat-relay:limit:*").await.len(),
        2,
        "one key per limit"
    );
}

#[tokio::test]
async fn a_rate_refills_after_its_interval_and_leaves_nothing_behind() {
    let redis = Redis::start().await;
    let (one, two) = replicas(&redis);
    let rate = Rate::every(Duration::from_millis(200), 1);

    assert!(
        one.take("recipient:default:abc", rate)
            .await
            .expect("Redis")
            .allowed
    );
    let refused = two
        .take("recipient:default:abc", rate)
        .await
        .expect("Redis");
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(200),
        "{refused:?}"
    );

    tokio::time::sleep(refused.retry_after + Duration::from_millis(50)).await;
    let refilled = two
        .take("recipient:default:abc", rate)
        .await
        .expect("Redis");
    assert!(refilled.allowed, "{refilled:?}");

    // The key expires when its TAT is reached: a limit at rest costs Redis nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(keys(&redis, "qikchat-relay:limit:*").await.is_empty());
}

#[tokio::test]
async fn a_daily_quota_is_shared_and_a_unit_can_be_given_back() {
    let redis = Redis::start().await;
    let (one, two) = replicas(&redis);

    let first = one.take_daily("caller:billing", 2).await.expect("Redis");
    assert_eq!((first.allowed, first.limit, first.remaining), (true, 2, 1));
    assert!(first.reset > Duration::ZERO && first.reset <= Duration::from_secs(86_400));
    let second = two.take_daily("caller:billing", 2).await.expect("Redis");
    assert_eq!((second.allowed, second.remaining), (true, 0));
    let refused = one.take_daily("caller:billing", 2).await.expect("Redis");
    assert!(!refused.allowed, "{refused:?}");
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(86_400)
    );
    assert!(
        !two.take_daily("caller:billing", 2)
            .await
            .expect("Redis")
            .allowed
    );

    two.give_back_daily("caller:billing").await.expect("Redis");
    let after_give_back = one.take_daily("caller:billing", 2).await.expect("Redis");
    assert_eq!(
        (after_give_back.allowed, after_give_back.remaining),
        (true, 0)
    );
    assert!(
        !two.take_daily("caller:billing", 2)
            .await
            .expect("Redis")
            .allowed
    );

    assert!(
        one.take_daily("caller:alerts", 2)
            .await
            .expect("Redis")
            .allowed,
        "keys are independent"
    );

    // One key per caller and day (the day number on Redis's clock), expiring by itself.
    let quota_keys = keys(&redis, "qikchat-relay:quota:*:caller:billing").await;
    assert_eq!(quota_keys.len(), 1, "{quota_keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&quota_keys[0])
        .query_async(&mut raw(&redis).await)
        .await
        .expect("TTL");
    assert!(ttl > 86_400 && ttl <= 2 * 86_400, "ttl {ttl}");
    let count: i64 = redis::cmd("GET")
        .arg(&quota_keys[0])
        .query_async(&mut raw(&redis).await)
        .await
        .expect("GET");
    assert_eq!(count, 2, "refusals counted nothing");
}

#[tokio::test]
async fn giving_back_more_than_was_taken_never_goes_below_zero() {
    let redis = Redis::start().await;
    let (one, _) = replicas(&redis);
    one.give_back_daily("caller:billing").await.expect("Redis");
    assert!(keys(&redis, "qikchat-relay:quota:*").await.is_empty());
    assert!(
        one.take_daily("caller:billing", 1)
            .await
            .expect("Redis")
            .allowed
    );
    for _ in 0..3 {
        one.give_back_daily("caller:billing").await.expect("Redis");
    }
    let again = one.take_daily("caller:billing", 1).await.expect("Redis");
    assert_eq!((again.allowed, again.remaining), (true, 0));
    assert!(
        !one.take_daily("caller:billing", 1)
            .await
            .expect("Redis")
            .allowed
    );
}

#[tokio::test]
async fn a_stopped_redis_is_an_error_within_the_timeout_never_a_pass() {
    let mut redis = Redis::start().await;
    let (one, _) = replicas(&redis);
    let rate = Rate::every(Duration::from_secs(1), 10);
    assert!(
        one.take("caller:billing", rate)
            .await
            .expect("Redis")
            .allowed
    );
    assert!(one.is_ready().await);

    redis.stop();

    let started = Instant::now();
    let taken = one.take("caller:billing", rate).await;
    let daily = one.take_daily("caller:billing", 10).await;
    let given_back = one.give_back_daily("caller:billing").await;
    assert!(!one.is_ready().await);
    let elapsed = started.elapsed();

    let taken = taken.expect_err("no decision without Redis");
    assert!(daily.is_err(), "{daily:?}");
    assert!(given_back.is_err());
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let message = taken.to_string();
    let port = redis.url.rsplit(':').next().expect("a port");
    assert!(
        !message.contains(&redis.url) && !message.contains(port),
        "the URL stays out of errors: {message}"
    );

    // Never connected at all: the same, not a hang.
    let nowhere = Limiter::redis(&redis.url, TIMEOUT).expect("a lazy client");
    let started = Instant::now();
    assert!(nowhere.take("caller:billing", rate).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn several_limits_are_taken_together_or_not_at_all() {
    let redis = Redis::start().await;
    let (one, two) = replicas(&redis);
    let roomy = Rate::every(Duration::from_secs(60), 5);
    let tight = Rate::every(Duration::from_secs(60), 1);

    let both = one
        .take_all(&[("caller:billing", roomy), ("recipient:x", tight)])
        .await
        .expect("Redis");
    assert!(both.iter().all(|d| d.allowed), "{both:?}");
    // The recipient is used up: the caller's limit, judged alone, would allow, but nothing is taken.
    let refused = two
        .take_all(&[("caller:billing", roomy), ("recipient:x", tight)])
        .await
        .expect("Redis");
    assert!(refused[0].allowed && !refused[1].allowed, "{refused:?}");
    assert_eq!(refused[0].remaining, 3, "as if taken: 5 - 2");
    let alone = one.take("caller:billing", roomy).await.expect("Redis");
    assert_eq!(
        alone.remaining, 3,
        "the refused request took nothing: {alone:?}"
    );
}

#[tokio::test]
async fn peeking_takes_nothing() {
    let redis = Redis::start().await;
    let (one, _) = replicas(&redis);
    let rate = Rate::every(Duration::from_secs(60), 2);
    for _ in 0..3 {
        let peeked = one
            .peek_all(&[("caller:billing", rate)])
            .await
            .expect("Redis");
        assert!(peeked[0].allowed && peeked[0].remaining == 1, "{peeked:?}");
        let quota = one.peek_daily("caller:billing", 1).await.expect("Redis");
        assert!(quota.allowed, "{quota:?}");
    }
    assert!(keys(&redis, "qikchat-relay:*").await.is_empty());
    assert!(
        one.take_daily("caller:billing", 1)
            .await
            .expect("Redis")
            .allowed
    );
    assert!(
        !one.peek_daily("caller:billing", 1)
            .await
            .expect("Redis")
            .allowed
    );
}
