//! The rules of docs/SECURITY.md, each shown by the attack it stops: forged rejection
//! callbacks, producer-chosen OTP ids, a PIN coming back after retention, uncounted
//! resends, brute force across OTPs, and send limits that one phone escapes across apps.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use otp_courier::domain::OtpId;
use otp_courier::otp::sweeper::Sweeper;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::api::Api;
use crate::harness::{wait_until, Harness};

const LONG: Duration = Duration::from_secs(15);

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect("count")
}

/// A callback receiver that answers 204 to everything and remembers what it got.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

/// The texts the fake provider was asked to send.
async fn sent_texts(harness: &Harness) -> Vec<String> {
    harness
        .provider_requests()
        .await
        .iter()
        .filter_map(|r| r["text"].as_str().map(str::to_string))
        .collect()
}

#[sqlx::test]
async fn a_job_from_a_broker_user_not_bound_to_the_app_gets_no_callback_at_all(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    let canary = receiver().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    sqlx::query("update apps set broker_user = 'shop-producer', callback_url = $1 where id = 'shop'")
        .bind(format!("{}/configured", canary.uri()))
        .execute(&harness.pool)
        .await
        .expect("bind the app");
    harness.webhook_secret("shop", None).await;
    harness.start_worker();
    harness.start_dispatcher();
    // Published as `guest`, not as the app's broker user, asking for a callback to the canary.
    let body = json!({"appId": "shop", "phoneNumber": "+14155550123", "requestId": "forged-1",
                      "otpCallbackUrl": format!("{}/attacker", canary.uri()),
                      "metadata": {"forged": true}});
    harness.publish(body.to_string().as_bytes()).await;
    // The same producer's invalid job is refused before the binding is looked at, and still
    // may not make the app's callback happen.
    let invalid = json!({"appId": "shop", "phoneNumber": "+1415", "requestId": "forged-2",
                         "metadata": {"forged": true}});
    harness.publish(invalid.to_string().as_bytes()).await;
    let dlq = harness.dlq.clone();
    wait_until("both jobs are dead-lettered", LONG, || async {
        harness.ready(&dlq).await == 2
    })
    .await;
    let mut reasons: Vec<Option<String>> = harness
        .drain_dlq()
        .await
        .iter()
        .map(|(_, properties)| crate::harness::text_header(properties, "x-otp-rejection-reason"))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            Some("broker_user_mismatch".to_string()),
            Some("invalid_phone_number".to_string())
        ]
    );
    assert_eq!(
        count(&harness.pool, "select count(*) from outbox").await,
        0,
        "no event, so nothing to sign"
    );
    assert_eq!(
        count(&harness.pool, "select count(*) from otp_rejections").await,
        2,
        "the refusals are still on record"
    );
    assert_eq!(
        count(
            &harness.pool,
            "select count(*) from rate_limit_windows where key = 'reject:app:shop'"
        )
        .await,
        0,
        "nor do they use up the app's allowance"
    );
    // A control event for the same app goes out through the running dispatcher: once it has
    // arrived, the canary has heard everything it ever will from this test.
    let control = harness.record_event("shop", &format!("{}/control", canary.uri())).await;
    wait_until("the control callback", LONG, || async {
        !canary.received_requests().await.unwrap_or_default().is_empty()
    })
    .await;
    let heard: Vec<String> = canary
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(heard, ["/control"], "the canary heard only the control event {control}");
    harness.finish().await;
}

#[sqlx::test]
async fn a_rejection_is_called_back_only_to_the_apps_configured_url(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    // No configured URL: the job's URL is not used, so there is no event.
    let invalid = |request: &str| {
        json!({"appId": "shop", "phoneNumber": "+1415", "requestId": request,
               "otpCallbackUrl": "http://127.0.0.1:9/from-the-job"})
        .to_string()
    };
    harness.publish(invalid("bad-1").as_bytes()).await;
    let dlq = harness.dlq.clone();
    wait_until("the first job is dead-lettered", LONG, || async {
        harness.ready(&dlq).await == 1
    })
    .await;
    assert_eq!(count(&harness.pool, "select count(*) from outbox").await, 0);

    sqlx::query("update apps set callback_url = 'http://127.0.0.1:9/configured' where id = 'shop'")
        .execute(&harness.pool)
        .await
        .expect("configure");
    harness.stop_worker().await; // the worker keeps apps for a while; a new one loads it afresh
    harness.start_worker();
    harness.publish(invalid("bad-2").as_bytes()).await;
    wait_until("the rejection event", LONG, || async {
        harness.events().await == ["otp.rejected"]
    })
    .await;
    let url: Option<String> = sqlx::query_scalar("select callback_url from outbox")
        .fetch_one(&harness.pool)
        .await
        .expect("event");
    assert_eq!(url.as_deref(), Some("http://127.0.0.1:9/configured"));
    harness.finish().await;
}

#[sqlx::test]
async fn rejections_beyond_the_apps_limit_are_dead_lettered_without_record_or_callback(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.set("limits.rejections_per_app", json!({"max": 2, "window_seconds": 3600}));
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    sqlx::query("update apps set callback_url = 'http://127.0.0.1:9/configured' where id = 'shop'")
        .execute(&harness.pool)
        .await
        .expect("configure");
    harness.start_worker();
    for i in 0..5 {
        let body = json!({"appId": "shop", "phoneNumber": "+1415", "requestId": format!("bad-{i}")});
        harness.publish(body.to_string().as_bytes()).await;
    }
    let dlq = harness.dlq.clone();
    wait_until("five dead letters", LONG, || async { harness.ready(&dlq).await == 5 }).await;
    assert_eq!(count(&harness.pool, "select count(*) from otp_rejections").await, 2);
    assert_eq!(count(&harness.pool, "select count(*) from outbox").await, 2);
    harness.finish().await;
}

#[sqlx::test]
async fn no_producer_can_choose_the_id_another_apps_request_will_get(pool: PgPool) {
    let api = Api::start(pool).await;
    let (other_key, other_secret) = api.harness.create_app_with_key("bank").await;
    let victim_id = OtpId::for_request("bank", "login-7");
    // App `shop`'s producer publishes a job carrying the id bank's request will get.
    let mut headers = FieldTable::default();
    headers.insert(
        "x-otp-id".into(),
        AMQPValue::LongString(LongString::from(victim_id.to_string())),
    );
    api.harness
        .publish_with(
            json!({"appId": "shop", "phoneNumber": "+14155550100", "requestId": "squat",
                   "template": "Code {{pin}}"})
            .to_string()
            .as_bytes(),
            BasicProperties::default().with_headers(headers),
        )
        .await;
    wait_until("shop's job is taken", LONG, || async {
        api.harness.otp_rows().await.len() == 1
    })
    .await;

    let bank = |request: reqwest::RequestBuilder| {
        request
            .header("x-api-key", &other_key)
            .header("x-api-secret", &other_secret)
    };
    let accepted: Value = bank(api.http.post(format!("{}/v1/otp/send", api.base)))
        .json(&json!({"phoneNumber": "+14155550199", "requestId": "login-7"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(accepted["duplicate"], false, "{accepted}");
    let otp_id = accepted["otpId"].as_str().expect("otpId").to_string();
    assert_eq!(otp_id, victim_id.to_string());
    wait_until("bank's provider request", LONG, || async {
        api.harness
            .provider_requests()
            .await
            .iter()
            .any(|r| r["to"] == "+14155550199")
    })
    .await;
    let status = bank(api.http.get(format!("{}/v1/otp/{otp_id}", api.base)))
        .send()
        .await
        .expect("status")
        .status();
    assert_eq!(status, StatusCode::OK, "bank reads its own OTP");
    let row = api
        .harness
        .otp_rows()
        .await
        .into_iter()
        .find(|r| otp_id.ends_with(&r.id.simple().to_string()))
        .expect("bank's row");
    let verified: Value = bank(api.http.post(format!("{}/v1/otp/verify", api.base)))
        .json(&json!({"otpId": otp_id, "code": row.pin()}))
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("json");
    assert_eq!(verified["status"], "verified", "{verified}");
    api.finish().await;
}

#[sqlx::test]
async fn a_request_id_reused_after_retention_gets_a_different_code(pool: PgPool) {
    let api = Api::start(pool).await;
    let body = json!({"phoneNumber": "+14155550123", "requestId": "signup-1"});
    let (first_id, first_pin) = api.send_delivered(body.clone()).await;
    let (status, _) = api
        .post("/v1/otp/verify", json!({"otpId": first_id, "code": first_pin}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for table in ["otps", "outbox"] {
        sqlx::query(&format!("update {table} set created_at = now() - interval '40 days'"))
            .execute(&api.harness.pool)
            .await
            .expect("age");
    }
    let sweeper = Sweeper::new(api.harness.pool.clone(), api.harness.config().sweeper);
    assert_eq!(sweeper.prune().await.expect("prune").otps, 1);

    let (second_id, second_pin) = api.send_delivered(body).await;
    assert_eq!(second_id, first_id, "the request id names the same OTP id again");
    let texts = sent_texts(&api.harness).await;
    assert_eq!(texts.len(), 2);
    assert_ne!(texts[0], texts[1], "the second OTP's code differs from the first's");
    assert_ne!(first_pin, second_pin);
    let (status, _) = api
        .post("/v1/otp/verify", json!({"otpId": second_id, "code": first_pin}))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the old code does not verify the new OTP"
    );
    let (status, _) = api
        .post("/v1/otp/verify", json!({"otpId": second_id, "code": second_pin}))
        .await;
    assert_eq!(status, StatusCode::OK);
    api.finish().await;
}

#[sqlx::test]
async fn an_otp_from_before_the_salt_still_verifies(pool: PgPool) {
    let api = Api::start(pool).await;
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "requestId": "old-1"}))
        .await;
    // An OTP written before salts existed: empty salt, code derived from id and generation.
    sqlx::query("update otps set pin_salt = ''::bytea")
        .execute(&api.harness.pool)
        .await
        .expect("unsalt");
    let row = api.harness.otp_rows().await.remove(0);
    let key = otp_courier::message::pin::PinKey::parse(crate::harness::PIN_KEY).expect("key");
    let legacy = otp_courier::message::pin::derive(
        &key,
        &otp_courier::message::pin::PinInput {
            app_id: "shop",
            salt: &[],
            otp: OtpId::from_uuid(row.id),
            generation: row.generation as u32,
        },
        otp_courier::message::pin::PinType::Numbers,
        otp_courier::message::pin::PinLength::DEFAULT,
    );
    let (status, body) = api
        .post("/v1/otp/verify", json!({"otpId": otp_id, "code": legacy.expose()}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.finish().await;
}

#[sqlx::test]
async fn a_resend_counts_against_the_send_limits(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        h.set("limits.send_per_phone", json!({"max": 1, "window_seconds": 600}))
    })
    .await;
    let (otp_id, _) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "requestId": "r-1"}))
        .await;
    let (status, problem) = api.post("/v1/otp/resend", json!({"otpId": otp_id})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["limit"], "send_per_phone");
    assert_eq!(api.harness.provider_requests().await.len(), 1, "one provider request");
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(view["resends"], 0, "a refused resend is not a resend: {view}");
    api.finish().await;
}

/// A wrong code (too long to be anyone's).
const WRONG: &str = "000000x";

/// The API with `limits.verify_failures_per_phone` at `max` a day.
async fn with_failure_limit(pool: PgPool, max: u32) -> Api {
    Api::start_with(pool, |h| {
        h.set(
            "limits.verify_failures_per_phone",
            json!({"max": max, "window_seconds": 86400}),
        )
    })
    .await
}

/// Checks `code` against OTP `otp`; the answer's status and body.
async fn check(api: &Api, otp: &str, code: &str) -> (StatusCode, Value) {
    api.post("/v1/otp/verify", json!({"otpId": otp, "code": code})).await
}

/// Sends an OTP to `phone` and waits for its delivery; (otpId, PIN).
async fn otp_for(api: &Api, phone: &str, request: &str) -> (String, String) {
    api.send_delivered(json!({"phoneNumber": phone, "requestId": request}))
        .await
}

#[sqlx::test]
async fn failed_verifications_are_limited_per_phone_across_otps(pool: PgPool) {
    let api = with_failure_limit(pool, 3).await;
    let target = "+14155550123";
    let (first, _) = otp_for(&api, target, "a").await;
    for _ in 0..2 {
        assert_eq!(check(&api, &first, WRONG).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // A new OTP for the same number does not start the count again.
    let (second, second_pin) = otp_for(&api, target, "b").await;
    assert_eq!(check(&api, &second, WRONG).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, problem) = check(&api, &second, &second_pin).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["type"], "urn:otp-courier:problem:too-many-failed-verifications");
    assert!(problem["retryAfter"].as_u64().is_some_and(|s| s > 0), "{problem}");
    let (_, view) = api.get(&format!("/v1/otp/{second}")).await;
    assert_eq!(view["attempts"], 1, "a refused check uses no attempt: {view}");

    // Another number is unaffected.
    let (other, other_pin) = otp_for(&api, "+14155550124", "c").await;
    assert_eq!(check(&api, &other, &other_pin).await.0, StatusCode::OK);
    api.finish().await;
}

#[sqlx::test]
async fn concurrent_wrong_codes_for_one_number_are_counted_one_after_another(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        h.set(
            "limits.verify_failures_per_phone",
            json!({"max": 3, "window_seconds": 86400}),
        );
        h.set("limits.send_per_phone", json!({"max": 100, "window_seconds": 600}));
        h.set(
            "limits.send_per_phone_all_apps",
            json!({"max": 100, "window_seconds": 600}),
        );
    })
    .await;
    let mut otps = Vec::new();
    for i in 0..8 {
        otps.push(otp_for(&api, "+14155550123", &format!("r-{i}")).await.0);
    }
    // One wrong code against each OTP, all at once: only the first three may be judged.
    let statuses = futures_util::future::join_all(otps.iter().map(|otp| check(&api, otp, WRONG))).await;
    let judged = statuses
        .iter()
        .filter(|(status, _)| *status == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    let refused = statuses
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((judged, refused), (3, 5), "{statuses:?}");
    api.finish().await;
}

#[sqlx::test]
async fn a_successful_verification_starts_the_failure_count_again(pool: PgPool) {
    let api = with_failure_limit(pool, 2).await;
    let target = "+14155550123";
    let (first, first_pin) = otp_for(&api, target, "a").await;
    assert_eq!(check(&api, &first, WRONG).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(check(&api, &first, &first_pin).await.0, StatusCode::OK);
    // Without the reset, this failure would be the second and use up the limit.
    let (second, second_pin) = otp_for(&api, target, "b").await;
    assert_eq!(check(&api, &second, WRONG).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(check(&api, &second, &second_pin).await.0, StatusCode::OK);
    api.finish().await;
}

#[sqlx::test]
async fn a_pin_shorter_than_the_configured_minimum_is_refused(pool: PgPool) {
    let api = Api::start_with(pool, |h| h.set("pin.min_length", json!(6))).await;
    let (status, problem) = api
        .post("/v1/otp/send", json!({"phoneNumber": "+14155550123", "pinLength": 4}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "invalid_field");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("pinLength")),
        "{problem}"
    );
    let (status, _) = api
        .post("/v1/otp/send", json!({"phoneNumber": "+14155550123", "pinLength": 6}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    api.finish().await;
}

#[sqlx::test]
async fn one_phone_number_is_limited_across_apps(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        h.set(
            "limits.send_per_phone_all_apps",
            json!({"max": 1, "window_seconds": 600}),
        )
    })
    .await;
    let (other_key, other_secret) = api.harness.create_app_with_key("bank").await;
    api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let response = api
        .http
        .post(format!("{}/v1/otp/send", api.base))
        .header("x-api-key", &other_key)
        .header("x-api-secret", &other_secret)
        .json(&json!({"phoneNumber": "+14155550123"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem: Value = response.json().await.expect("json");
    assert_eq!(problem["limit"], "send_per_phone_all_apps");
    api.finish().await;
}

#[sqlx::test]
async fn a_field_and_its_alias_with_different_values_are_refused_naming_both(pool: PgPool) {
    let api = Api::start(pool).await;
    let (status, problem) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "recipient": "+14155550199"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "invalid_field");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("phoneNumber") && detail.contains("recipient"),
        "{problem}"
    );
    // The same value under both names is one field.
    let (status, _) = api
        .post(
            "/v1/otp/send",
            json!({"phoneNumber": "+14155550123", "recipient": "+14155550123"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (otp_id, pin) = api.send_delivered(json!({"phoneNumber": "+14155550124"})).await;
    let (status, problem) = api
        .post(
            "/v1/otp/verify",
            json!({"otpId": otp_id, "code": "000000", "otp_code": pin}),
        )
        .await;
    assert!(
        status.is_client_error() && status != StatusCode::OK,
        "{status} {problem}"
    );
    let (_, view) = api.get(&format!("/v1/otp/{otp_id}")).await;
    assert_eq!(view["status"], "pending", "neither code was picked silently: {view}");
    api.finish().await;
}

#[sqlx::test]
async fn operator_keys_are_listed_revoked_and_rotated_with_a_grace(pool: PgPool) {
    use otp_courier::tenancy::keys::{self, Caller};
    let harness = Harness::new(pool).await;
    let pool = &harness.pool;
    let (first, first_secret) = harness.operator_key().await;
    let (second, second_secret) = harness.operator_key().await;
    let listed: Vec<String> = keys::operator_keys(pool)
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(listed, [second.clone(), first.clone()], "newest first, ids only");

    assert!(keys::revoke_operator_key(pool, &first).await.expect("revoke"));
    assert_eq!(
        keys::authenticate(pool, &first, &first_secret).await.expect("auth"),
        None
    );
    assert!(
        !keys::revoke_operator_key(pool, &first).await.expect("again"),
        "already revoked"
    );

    let rotated = keys::rotate_operator_key(pool, &second, Some(time::Duration::hours(1)))
        .await
        .expect("rotate")
        .expect("a working key");
    for (id, secret) in [(&second, &second_secret), (&rotated.key_id, &rotated.secret)] {
        assert_eq!(
            keys::authenticate(pool, id, secret).await.expect("auth"),
            Some(Caller::Operator(id.clone())),
            "{id} works during the grace"
        );
    }
    let listed = keys::operator_keys(pool).await.expect("list");
    let old = listed.iter().find(|k| k.key_id == second).expect("listed");
    assert!(old.revoked_at.is_some_and(|at| at > time::OffsetDateTime::now_utc()));

    // An app's API key rotated with a grace keeps working until it ends, then stops.
    let (app_key, app_secret) = harness.create_app_with_key("shop").await;
    let app = otp_courier::domain::AppId::parse("shop").expect("app");
    let fresh = keys::rotate(pool, &app, Some(time::Duration::hours(1)))
        .await
        .expect("rotate");
    assert!(keys::authenticate(pool, &app_key, &app_secret)
        .await
        .expect("auth")
        .is_some());
    assert!(keys::authenticate(pool, &fresh.key_id, &fresh.secret)
        .await
        .expect("auth")
        .is_some());
    sqlx::query("update api_keys set revoked_at = now() - interval '1 second' where id = $1")
        .bind(&app_key)
        .execute(pool)
        .await
        .expect("the grace ends");
    assert!(keys::authenticate(pool, &app_key, &app_secret)
        .await
        .expect("auth")
        .is_none());
    harness.finish().await;
}

#[sqlx::test]
async fn webhook_secrets_are_sealed_at_rest_and_still_sign(pool: PgPool) {
    let key = |byte: u8| hex::encode([byte; 32]);
    let mut harness = Harness::new(pool).await;
    harness.set("secrets", json!({"active_key": "k1", "keys": {"k1": key(1)}}));
    let receiver = receiver().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    // A secret from before sealing, stored in clear, and one sealed now.
    sqlx::query("insert into webhook_secrets (app_id, secret, expires_at) values ('shop', 'whsec_b2xkLXNlY3JldC1pbi1jbGVhcg==', now() + interval '1 hour')")
        .execute(&harness.pool)
        .await
        .expect("a secret in clear");
    let secret = harness.webhook_secret("shop", Some(time::Duration::hours(1))).await;
    let stored: Vec<String> = sqlx::query_scalar("select secret from webhook_secrets order by id")
        .fetch_all(&harness.pool)
        .await
        .expect("stored");
    assert!(stored[1].starts_with("enc:v1:k1:"), "{stored:?}");
    assert!(
        !stored.iter().any(|s| s.contains(&secret)),
        "the new secret is not in the database in clear"
    );

    harness.start_dispatcher();
    harness.record_event("shop", &receiver.uri()).await;
    wait_until("the callback", LONG, || async {
        !receiver.received_requests().await.unwrap_or_default().is_empty()
    })
    .await;
    let request = receiver.received_requests().await.unwrap_or_default().remove(0);
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut map = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        map.insert(name, header(name).parse().expect("header"));
    }
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(&request.body, &map)
        .expect("signed with the sealed secret, opened to sign");
    assert_eq!(
        header("webhook-signature").split(' ').count(),
        2,
        "the secret in clear still signs"
    );

    // Resealing seals the one in clear; a sealed value moved to another app does not open.
    let sealer = harness.sealer();
    assert_eq!(
        otp_courier::tenancy::keys::reseal_webhook_secrets(&harness.pool, &sealer)
            .await
            .expect("reseal"),
        1
    );
    let stored: Vec<String> = sqlx::query_scalar("select secret from webhook_secrets order by id")
        .fetch_all(&harness.pool)
        .await
        .expect("stored");
    assert!(stored.iter().all(|s| s.starts_with("enc:v1:k1:")), "{stored:?}");
    assert!(sealer.open("bank", &stored[1]).is_err(), "bound to its app");
    assert_eq!(sealer.open("shop", &stored[1]).as_deref(), Ok(secret.as_str()));
    harness.finish().await;
}
