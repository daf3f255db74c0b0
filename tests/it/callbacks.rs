//! Status callbacks: the dispatcher turns outbox rows into Standard Webhooks–signed POSTs.
//! Receivers are wiremock servers on loopback (allowlisted in the test configuration).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use standardwebhooks::Webhook;
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::api::Api;
use crate::harness::{wait_until, Harness, RoleProcess};

const LONG: Duration = Duration::from_secs(15);

/// A receiver that answers `first` `times` times, then 204.
async fn receiver_failing(first: ResponseTemplate, times: u64) -> MockServer {
    let server = MockServer::start().await;
    if times > 0 {
        Mock::given(method("POST"))
            .respond_with(first)
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

/// A receiver that answers every POST 204 after `delay`.
async fn slow_receiver(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204).set_delay(delay))
        .mount(&server)
        .await;
    server
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON callback body")
}

async fn states(harness: &Harness) -> Vec<String> {
    harness
        .callbacks()
        .await
        .into_iter()
        .map(|(_, state, _)| state)
        .collect()
}

#[sqlx::test]
async fn an_otp_sent_callback_is_signed_so_the_standard_webhooks_library_accepts_it(pool: PgPool) {
    let receiver = receiver_failing(ResponseTemplate::new(204), 0).await;
    let mut api = Api::start(pool).await;
    let secret = api.harness.webhook_secret("shop", None).await;
    api.harness.start_dispatcher();
    let url = format!("{}/hooks/otp", receiver.uri());
    let (otp_id, pin) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "otpCallbackUrl": url, "metadata": {"cart": "c-9"}}))
        .await;
    wait_until("the otp.sent callback", LONG, || async {
        !received(&receiver).await.is_empty()
    })
    .await;

    let requests = received(&receiver).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    Webhook::new(&secret)
        .expect("secret")
        .verify(&request.body, &request.headers)
        .expect("standardwebhooks verifies the signature");
    // Byte-identical to what the library itself would produce for this id, time and body.
    let timestamp: i64 = header(request, "webhook-timestamp").parse().expect("unix seconds");
    let id = header(request, "webhook-id");
    let expected = Webhook::new(&secret)
        .expect("secret")
        .sign(id, timestamp, &request.body)
        .expect("sign");
    assert_eq!(header(request, "webhook-signature"), expected);
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(request.url.path(), "/hooks/otp");
    assert!(id.starts_with("evt_"), "{id}");
    assert!(
        !String::from_utf8_lossy(&request.body).contains(&pin),
        "no PIN in a callback"
    );

    let event = body(request);
    assert_eq!(event["type"], "otp.sent");
    let data = &event["data"];
    assert_eq!(data["otpId"], otp_id.as_str());
    assert_eq!(data["appId"], "shop");
    assert_eq!(data["phoneNumber"], "+14155550123");
    assert_eq!(
        (data["status"].as_str(), data["delivery"].as_str()),
        (Some("pending"), Some("sent"))
    );
    assert_eq!(data["metadata"], json!({"cart": "c-9"}));
    for field in [
        "requestId",
        "channel",
        "locale",
        "parts",
        "attempts",
        "maxAttempts",
        "expiresAt",
    ] {
        assert!(!data[field].is_null(), "{field} is in the callback");
    }

    // The outcome is written after the receiver answers: wait for it.
    wait_until("the callback recorded as delivered", LONG, || async {
        api.harness
            .callbacks()
            .await
            .first()
            .is_some_and(|(_, state, _)| state == "delivered")
    })
    .await;
    let (status, events) = api.get(&format!("/v1/otp/{otp_id}/events")).await;
    assert_eq!(status, StatusCode::OK);
    let callback = &events[0]["callback"];
    assert_eq!(events[0]["id"], id);
    assert_eq!(callback["state"], "delivered");
    assert_eq!(callback["attempts"][0]["httpStatus"], 204);
    api.finish().await;
}

#[sqlx::test]
async fn during_a_rotation_both_secrets_sign_and_either_one_verifies(pool: PgPool) {
    let receiver = receiver_failing(ResponseTemplate::new(204), 0).await;
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    let old = harness.webhook_secret("shop", None).await;
    let new = harness.webhook_secret("shop", Some(time::Duration::hours(1))).await;
    harness.start_dispatcher();
    harness.record_event("shop", &receiver.uri()).await;
    wait_until("the callback", LONG, || async { !received(&receiver).await.is_empty() }).await;

    let request = &received(&receiver).await[0];
    assert_eq!(header(request, "webhook-signature").split(' ').count(), 2);
    for secret in [&old, &new] {
        Webhook::new(secret)
            .expect("secret")
            .verify(&request.body, &request.headers)
            .expect("each valid secret verifies");
    }
    let stranger = "whsec_c3RyYW5nZXIgc2VjcmV0IG9mIDMyIGJ5dGVzISE=";
    assert!(Webhook::new(stranger)
        .expect("secret")
        .verify(&request.body, &request.headers)
        .is_err());
    harness.finish().await;
}

#[sqlx::test]
async fn a_receiver_failing_three_times_then_succeeding_gets_the_same_webhook_id_each_time(pool: PgPool) {
    let receiver = receiver_failing(ResponseTemplate::new(500).set_body_string("try later"), 3).await;
    let mut api = Api::start(pool).await;
    api.harness.webhook_secret("shop", None).await;
    api.harness.start_dispatcher();
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "otpCallbackUrl": receiver.uri()}))
        .await;
    wait_until("delivered on the fourth attempt", LONG, || async {
        states(&api.harness).await == ["delivered"]
    })
    .await;

    let requests = received(&receiver).await;
    assert_eq!(requests.len(), 4);
    let ids: HashSet<&str> = requests.iter().map(|r| header(r, "webhook-id")).collect();
    assert_eq!(ids.len(), 1, "one webhook-id across retries: {ids:?}");
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "the same body every time"
    );

    let (_, events) = api.get(&format!("/v1/otp/{otp_id}/events")).await;
    let attempts = events[0]["callback"]["attempts"].as_array().expect("attempts").clone();
    let statuses: Vec<i64> = attempts.iter().filter_map(|a| a["httpStatus"].as_i64()).collect();
    assert_eq!(statuses, [500, 500, 500, 204]);
    assert_eq!(attempts[0]["error"], "HTTP 500 Internal Server Error: try later");
    assert_eq!(events[0]["callback"]["state"], "delivered");
    assert!(events[0]["callback"]["deliveredAt"].is_string());
    api.finish().await;
}

#[sqlx::test]
async fn a_receiver_down_past_the_schedule_leaves_the_event_dead(pool: PgPool) {
    let receiver = receiver_failing(ResponseTemplate::new(503), u64::MAX).await;
    let mut harness = Harness::new(pool).await;
    harness.set("callbacks.retry_schedule_seconds", json!([1, 1]));
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    harness.start_dispatcher();
    harness.record_event("shop", &receiver.uri()).await;
    wait_until("the event is dead", LONG, || async {
        states(&harness).await == ["dead"]
    })
    .await;

    assert_eq!(
        received(&receiver).await.len(),
        3,
        "the first attempt and one per schedule step"
    );
    let recorded: i64 = sqlx::query_scalar("select count(*) from callback_attempts where http_status = 503")
        .fetch_one(&harness.pool)
        .await
        .expect("attempts");
    assert_eq!(recorded, 3);
    harness.finish().await;
}

#[sqlx::test]
async fn a_410_stops_callbacks_to_that_url(pool: PgPool) {
    let receiver = receiver_failing(ResponseTemplate::new(410), u64::MAX).await;
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    let later = harness.record_event("shop", &receiver.uri()).await;
    // This one is not due yet when the first is answered 410.
    sqlx::query("update outbox set next_attempt_at = now() + interval '1 hour'")
        .execute(&harness.pool)
        .await
        .expect("postpone");
    harness.record_event("shop", &receiver.uri()).await;
    harness.start_dispatcher();
    wait_until("both are gone", LONG, || async {
        states(&harness).await == ["gone", "gone"]
    })
    .await;

    assert_eq!(received(&receiver).await.len(), 1, "one request, no retry");
    let untried: i32 = sqlx::query_scalar("select attempts from outbox where id = $1")
        .bind(Uuid::parse_str(later.trim_start_matches("evt_")).expect("uuid"))
        .fetch_one(&harness.pool)
        .await
        .expect("row");
    assert_eq!(untried, 0, "the postponed event was stopped without a request");
    harness.finish().await;
}

#[sqlx::test]
async fn retry_after_postpones_the_next_attempt(pool: PgPool) {
    let receiver = receiver_failing(ResponseTemplate::new(429).insert_header("retry-after", "30"), 1).await;
    let mut harness = Harness::new(pool).await;
    harness.set("callbacks.retry_schedule_seconds", json!([1, 60]));
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    harness.start_dispatcher();
    harness.record_event("shop", &receiver.uri()).await;
    wait_until("the 429 is recorded", LONG, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from callback_attempts")
            .fetch_one(&harness.pool)
            .await
            .expect("count")
            == 1
    })
    .await;

    let wait: f64 = sqlx::query_scalar(
        "select extract(epoch from o.next_attempt_at - a.started_at)::float8
         from outbox o join callback_attempts a on a.event_id = o.id",
    )
    .fetch_one(&harness.pool)
    .await
    .expect("times");
    assert!(wait >= 30.0, "Retry-After: 30 wins over the 1 s step, waited {wait}");
    assert!(wait < 40.0, "and no longer than asked plus the request, waited {wait}");
    harness.finish().await;
}

#[sqlx::test]
async fn an_otps_events_reach_the_receiver_in_the_order_they_happened(pool: PgPool) {
    let receiver = receiver_failing(ResponseTemplate::new(503), 2).await;
    let mut api = Api::start(pool).await;
    api.harness.webhook_secret("shop", None).await;
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "otpCallbackUrl": receiver.uri()}))
        .await;
    let cancelled = api
        .as_app(api.http.delete(format!("{}/v1/otp/{otp_id}", api.base)))
        .send()
        .await
        .expect("cancel");
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    // Both events are waiting before any dispatcher runs; the later one must wait its turn.
    api.harness.start_dispatcher();
    wait_until("both delivered", LONG, || async {
        states(&api.harness).await == ["delivered", "delivered"]
    })
    .await;

    let types: Vec<String> = received(&receiver)
        .await
        .iter()
        .map(|r| body(r)["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(types, ["otp.sent", "otp.sent", "otp.sent", "otp.cancelled"]);
    api.finish().await;
}

#[sqlx::test]
async fn one_slow_receiver_does_not_hold_up_the_others(pool: PgPool) {
    let slow = slow_receiver(Duration::from_secs(10)).await;
    let fast = receiver_failing(ResponseTemplate::new(204), 0).await;
    let mut harness = Harness::new(pool).await;
    harness.set("callbacks.concurrency", json!(4));
    harness.set("callbacks.per_destination", json!(2));
    harness.set("callbacks.timeout_seconds", json!(15));
    harness.set("callbacks.lease_seconds", json!(30));
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    // The slow receiver's events are older, so they come first in due order.
    for _ in 0..10 {
        harness.record_event("shop", &slow.uri()).await;
    }
    for _ in 0..5 {
        harness.record_event("shop", &fast.uri()).await;
    }
    harness.start_dispatcher();
    wait_until("the fast receiver has all five", LONG, || async {
        received(&fast).await.len() == 5
    })
    .await;

    // Each slow answer takes 10 s, so by now the slow receiver can only have the requests
    // its share of the slots allowed: two.
    assert_eq!(
        received(&slow).await.len(),
        2,
        "the slow receiver holds at most its share"
    );
    harness.finish().await;
}

#[sqlx::test]
async fn one_app_with_slow_receivers_does_not_hold_up_another_apps_callbacks(pool: PgPool) {
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(slow_receiver(Duration::from_secs(10)).await);
    }
    let fast = receiver_failing(ResponseTemplate::new(204), 0).await;
    let mut harness = Harness::new(pool).await;
    harness.set("callbacks.concurrency", json!(8));
    harness.set("callbacks.per_destination", json!(2));
    harness.set("callbacks.per_app", json!(4));
    harness.set("callbacks.timeout_seconds", json!(15));
    harness.set("callbacks.lease_seconds", json!(30));
    for app in ["shop", "bank"] {
        harness.create_app(app, json!({"": "Code {{pin}}"})).await;
        harness.webhook_secret(app, None).await;
    }
    // App shop's backlog: five events to each of four receivers that take 10 s to answer.
    for receiver in &slow {
        for _ in 0..5 {
            harness.record_event("shop", &receiver.uri()).await;
        }
    }
    harness.start_dispatcher();
    let slow_requests = || async {
        let mut n = 0;
        for receiver in &slow {
            n += received(receiver).await.len();
        }
        n
    };
    wait_until("shop's receivers are busy", LONG, || async {
        slow_requests().await >= 4
    })
    .await;

    harness.record_event("bank", &fast.uri()).await;
    // Without a per-app share, shop's eight requests would hold every slot for 10 s.
    wait_until(
        "bank's callback, well before shop's receivers answer",
        Duration::from_secs(5),
        || async { received(&fast).await.len() == 1 },
    )
    .await;
    assert_eq!(slow_requests().await, 4, "shop holds at most its share of the slots");
    harness.finish().await;
}

#[sqlx::test]
async fn an_event_in_flight_is_not_claimed_again_while_its_lease_holds(pool: PgPool) {
    let receiver = slow_receiver(Duration::from_secs(1)).await;
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    let mut ids = HashSet::new();
    for _ in 0..6 {
        ids.insert(harness.record_event("shop", &receiver.uri()).await);
    }
    harness.start_dispatcher();
    // A second dispatcher polls the same outbox every 100 ms while the answers take 1 s.
    let sender = otp_courier::callbacks::webhook::Sender::new(&harness.config().callbacks).expect("callback client");
    let (shutdown, task) = harness.spawn_dispatcher(sender);
    wait_until("every event delivered", LONG, || async {
        states(&harness).await.iter().all(|s| s == "delivered")
    })
    .await;

    let requests = received(&receiver).await;
    let sent: Vec<&str> = requests.iter().map(|r| header(r, "webhook-id")).collect();
    assert_eq!(sent.len(), 6, "one request per event: {sent:?}");
    assert_eq!(
        sent.iter().copied().collect::<HashSet<_>>(),
        ids.iter().map(String::as_str).collect()
    );
    shutdown.cancel();
    task.await.expect("second dispatcher");
    harness.finish().await;
}

#[sqlx::test]
async fn a_dispatcher_killed_mid_batch_loses_no_callback(pool: PgPool) {
    let receiver = slow_receiver(Duration::from_millis(300)).await;
    let mut harness = Harness::new(pool).await;
    harness.set("callbacks.per_destination", json!(4));
    harness.set("callbacks.concurrency", json!(4));
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    let mut ids = HashSet::new();
    for _ in 0..20 {
        ids.insert(harness.record_event("shop", &receiver.uri()).await);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("dispatcher.log");
    let mut dispatcher = RoleProcess::spawn("dispatcher", &harness.config_file(dir.path()), &log);
    wait_until("the first callbacks arrive", LONG, || async {
        !received(&receiver).await.is_empty()
    })
    .await;
    dispatcher.kill().await;
    let delivered_before: i64 = sqlx::query_scalar("select count(*) from outbox where state = 'delivered'")
        .fetch_one(&harness.pool)
        .await
        .expect("count");
    assert!(
        delivered_before < 20,
        "killed mid-batch ({delivered_before} of 20 done)"
    );

    harness.start_dispatcher();
    wait_until("every event delivered", Duration::from_secs(30), || async {
        states(&harness).await.iter().all(|s| s == "delivered")
    })
    .await;
    let requests = received(&receiver).await;
    let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
    for request in &requests {
        let id = header(request, "webhook-id");
        assert!(ids.contains(id), "an event we recorded: {id}");
        let first = *bodies.entry(id).or_insert(&request.body);
        assert_eq!(first, request.body.as_slice(), "a duplicate is the same message");
    }
    assert_eq!(bodies.len(), 20, "every event arrived");
    harness.finish().await;
}

#[sqlx::test]
async fn a_verification_wakes_the_dispatchers_after_its_commit_not_from_inside_it(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, pin) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "otpCallbackUrl": "http://127.0.0.1:9/hook"}))
        .await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&api.harness.pool)
        .await
        .expect("listener");
    listener
        .listen(otp_courier::callbacks::dispatcher::CHANNEL)
        .await
        .expect("listen");

    let (status, _) = api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": pin})).await;
    assert_eq!(status, StatusCode::OK);
    // Notifications arrive in commit order: had the verification's own transaction notified
    // (holding PostgreSQL's notification lock through its commit), its notification would
    // come first.
    let first = tokio::time::timeout(LONG, listener.recv())
        .await
        .expect("a notification after the verification")
        .expect("notification");
    assert_eq!(first.payload(), otp_courier::callbacks::outbox::AFTER_COMMIT);
    let pending: i64 =
        sqlx::query_scalar("select count(*) from outbox where event_type = 'otp.verified' and state = 'pending'")
            .fetch_one(&api.harness.pool)
            .await
            .expect("events");
    assert_eq!(pending, 1, "the event the notification announces");
    api.finish().await;
}
