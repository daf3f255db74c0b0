//! The SMS-pumping guard: number types, prefix velocity, conversion-based blocks, shadow
//! mode, the safe-list, and failing open when its counts cannot be read.

use std::collections::BTreeMap;
use std::time::Duration;

use otp_courier::domain::{NumberKind, PhoneNumber};
use otp_courier::otp::fraud::{Mode, Rule};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::api::Api;
use crate::harness::{wait_until, Harness};

const WAIT: Duration = Duration::from_secs(15);
/// UK premium-rate numbers (09…).
const PREMIUM: &str = "+449098765433";
const PREMIUM_SAFE: &str = "+449098765432";

/// (request id, status, rejection reason) of every OTP.
async fn outcomes(pool: &PgPool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("select request_id, status, rejection_reason from otps order by created_at")
        .fetch_all(pool)
        .await
        .expect("otps")
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect("count")
}

/// The `error` of each `otp.rejected` event.
async fn rejection_errors(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar("select payload->'data'->'error' from outbox where event_type = 'otp.rejected' order by seq")
        .fetch_all(pool)
        .await
        .expect("events")
}

/// Numbers the provider was asked to send to.
async fn provider_numbers(harness: &Harness) -> Vec<String> {
    harness
        .provider_requests()
        .await
        .iter()
        .filter_map(|r| r["to"].as_str().map(str::to_string))
        .collect()
}

async fn publish(harness: &Harness, app: &str, phone: &str, request_id: &str) {
    let job = json!({"appId": app, "phoneNumber": phone, "requestId": request_id});
    harness.publish(job.to_string().as_bytes()).await;
}

/// (rule, mode) of every verdict, counted.
async fn verdicts(pool: &PgPool) -> BTreeMap<(String, String), i64> {
    sqlx::query_as::<_, (String, String, i64)>("select rule, mode, count(*) from fraud_verdicts group by 1, 2")
        .fetch_all(pool)
        .await
        .expect("verdicts")
        .into_iter()
        .map(|(rule, mode, n)| ((rule, mode), n))
        .collect()
}

#[sqlx::test]
async fn a_premium_rate_number_is_refused_before_any_provider_call_and_the_rule_is_named(pool: PgPool) {
    for number in [PREMIUM, PREMIUM_SAFE] {
        assert_eq!(
            PhoneNumber::parse(number).expect("number").kind(),
            NumberKind::PremiumRate
        );
    }
    let api = Api::start_with(pool, |h| h.set("fraud.safe_list", json!([PREMIUM_SAFE]))).await;

    // The API refuses at once, naming the rule.
    let (status, problem) = api.post("/v1/otp/send", json!({"phoneNumber": PREMIUM})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "fraud_suspected");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("number_types") && detail.contains("premium_rate"),
        "{detail}"
    );

    // A job from the broker is refused by the worker, in the transaction that records it.
    publish(&api.harness, "shop", PREMIUM, "bot-1").await;
    // A safe-listed number of the same kind goes out; so does an ordinary one.
    api.send_delivered(json!({"phoneNumber": PREMIUM_SAFE, "requestId": "tester"}))
        .await;
    api.send_delivered(json!({"phoneNumber": "+33612345678", "requestId": "user"}))
        .await;
    wait_until("the broker job is refused", WAIT, || async {
        outcomes(&api.harness.pool).await.iter().any(|o| o.0 == "bot-1")
    })
    .await;
    let refused: Vec<_> = outcomes(&api.harness.pool)
        .await
        .into_iter()
        .filter(|o| o.1 == "rejected")
        .collect();
    assert_eq!(
        refused,
        [(
            "bot-1".to_string(),
            "rejected".to_string(),
            Some("fraud_suspected".to_string())
        )]
    );
    let errors = rejection_errors(&api.harness.pool).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["reason"], "fraud_suspected");
    assert_eq!(errors[0]["rule"], "number_types");
    assert_eq!(
        provider_numbers(&api.harness).await,
        [PREMIUM_SAFE, "+33612345678"],
        "no request for the refused number reached the provider"
    );

    // The worker's refusal is on record, for the app and for operators.
    let (status, listed) = api.get("/v1/fraud/verdicts").await;
    assert_eq!(status, StatusCode::OK);
    let listed = listed.as_array().expect("verdicts").clone();
    assert_eq!(
        listed.len(),
        1,
        "the worker's refusal; the API's is counted, not written: {listed:?}"
    );
    assert!(listed
        .iter()
        .all(|v| v["rule"] == "number_types" && v["mode"] == "enforce" && v["target"] == "premium_rate"));
    let (status, _) = api.get("/v1/fraud/verdicts?mode=sometimes").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.get("/v1/fraud/blocks").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "blocks span apps: operators only");
    api.finish().await;
}

#[sqlx::test]
async fn shadow_mode_sends_everything_and_records_what_it_would_have_refused(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.set(
        "fraud.prefix_velocity",
        json!({"mode": "enforce", "max": 2, "window_seconds": 60}),
    );
    harness.set(
        "fraud.conversion",
        json!({"mode": "enforce", "min_sends": 2, "country_min_sends": 1000, "min_percent": 20, "window_seconds": 60,
               "settle_seconds": 0, "block_seconds": 600, "max_block_seconds": 3600}),
    );
    harness.provider_accepts().await;
    harness.create_app("watch", json!({"": "Code {{pin}}"})).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    let shadow: BTreeMap<Rule, Mode> = Rule::ALL.into_iter().map(|r| (r, Mode::Shadow)).collect();
    let watch = otp_courier::domain::AppId::parse("watch").expect("id");
    assert!(
        otp_courier::tenancy::apps::set_fraud_modes(&harness.pool, &watch, &shadow, "test")
            .await
            .expect("modes")
    );
    harness.start_worker();

    publish(&harness, "watch", PREMIUM, "premium").await;
    for n in 0..4 {
        publish(&harness, "watch", &format!("+3369876010{n}"), &format!("burst-{n}")).await;
    }
    wait_until("all five sent", WAIT, || async {
        harness.provider_requests().await.len() == 5
    })
    .await;
    assert!(outcomes(&harness.pool).await.iter().all(|o| o.1 == "pending"));
    // The third send reached both thresholds; the fourth found the block in force.
    assert_eq!(
        verdicts(&harness.pool).await,
        BTreeMap::from([
            (("conversion".into(), "shadow".into()), 2),
            (("number_types".into(), "shadow".into()), 1),
            (("prefix_velocity".into(), "shadow".into()), 2),
        ])
    );
    // The block is a fact about the prefix: an app that enforces the rule is refused.
    publish(&harness, "shop", "+33698760199", "shop-1").await;
    wait_until("the enforcing app is refused", WAIT, || async {
        outcomes(&harness.pool)
            .await
            .iter()
            .any(|o| o.0 == "shop-1" && o.2.as_deref() == Some("fraud_suspected"))
    })
    .await;
    assert_eq!(rejection_errors(&harness.pool).await[0]["rule"], "conversion");
    assert_eq!(harness.provider_requests().await.len(), 5);
    harness.finish().await;
}

#[sqlx::test]
async fn prefix_velocity_counts_sends_to_a_prefix_across_apps(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        h.set(
            "fraud.prefix_velocity",
            json!({"mode": "enforce", "max": 3, "window_seconds": 60}),
        );
        h.set("fraud.conversion.mode", json!("off"));
    })
    .await;
    api.harness.create_app("other", json!({"": "Code {{pin}}"})).await;
    for n in 0..5 {
        let app = if n % 2 == 0 { "shop" } else { "other" };
        publish(&api.harness, app, &format!("+3369876020{n}"), &format!("p-{n}")).await;
    }
    publish(&api.harness, "shop", "+14155550123", "elsewhere").await;
    wait_until("six jobs taken", WAIT, || async {
        count(
            &api.harness.pool,
            "select count(*) from otps where status = 'rejected' or delivery = 'sent'",
        )
        .await
            == 6
    })
    .await;
    let numbers = provider_numbers(&api.harness).await;
    assert_eq!(numbers.iter().filter(|n| n.starts_with("+3369876")).count(), 3);
    assert!(
        numbers.contains(&"+14155550123".to_string()),
        "another prefix is not held back"
    );
    let errors = rejection_errors(&api.harness.pool).await;
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|e| e["rule"] == "prefix_velocity"), "{errors:?}");
    let counted: i64 = count(
        &api.harness.pool,
        "select sum(n)::int8 from fraud_counts where key = 'sent:prefix:+3369876'",
    )
    .await;
    assert_eq!(counted, 3, "refused sends are not counted");
    api.finish().await;
}

/// Sends one OTP through the API and waits until the worker has settled it: sent, or refused.
async fn send_and_settle(api: &Api, phone: &str, request_id: &str) -> (StatusCode, Value) {
    let (status, body) = api
        .post("/v1/otp/send", json!({"phoneNumber": phone, "requestId": request_id}))
        .await;
    if status == StatusCode::ACCEPTED {
        let id = body["otpId"].as_str().expect("otpId").to_string();
        wait_until("settled", WAIT, || async {
            let otp = api.get(&format!("/v1/otp/{id}")).await.1;
            otp["status"] == "rejected" || otp["delivery"] == "sent"
        })
        .await;
    }
    (status, body)
}

async fn operator(api: &Api, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
    let (id, secret) = api.harness.operator_key().await;
    let response = api
        .http
        .request(method, format!("{}{path}", api.base))
        .header("x-api-key", id)
        .header("x-api-secret", secret)
        .send()
        .await
        .expect("request");
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[sqlx::test]
async fn a_prefix_whose_codes_go_unused_is_blocked_then_blocked_for_twice_as_long_and_can_be_lifted(pool: PgPool) {
    let api = Api::start_with(pool, |h| {
        h.set(
            "fraud.conversion",
            json!({"mode": "enforce", "min_sends": 4, "country_min_sends": 1000, "min_percent": 20,
                   "window_seconds": 60, "settle_seconds": 0, "block_seconds": 2, "max_block_seconds": 3600}),
        );
    })
    .await;
    // Normal traffic to another prefix: every code is used.
    for n in 0..6 {
        let (otp_id, pin) = api
            .send_delivered(json!({"phoneNumber": format!("+33612345{n:03}"), "requestId": format!("user-{n}")}))
            .await;
        let (status, _) = api.post("/v1/otp/verify", json!({"otpId": otp_id, "code": pin})).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A bot's prefix: four codes go out unused, the fifth send finds the prefix blocked.
    for n in 0..5 {
        send_and_settle(&api, &format!("+3369876030{n}"), &format!("bot-{n}")).await;
    }
    let (status, problem) = send_and_settle(&api, "+33698760399", "bot-api").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the API refuses a blocked prefix at once"
    );
    assert_eq!(problem["reason"], "fraud_suspected");
    let (status, problem) = api.post("/v1/otp/resend", json!({"requestId": "bot-0"})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "nor a resend to it: {problem}"
    );
    assert_eq!(problem["reason"], "fraud_suspected");
    let (status, blocks) = operator(&api, reqwest::Method::GET, "/v1/fraud/blocks").await;
    assert_eq!(status, StatusCode::OK);
    let first = blocks[0].clone();
    assert_eq!(blocks.as_array().map(Vec::len), Some(1), "{blocks}");
    assert_eq!(
        (&first["scope"], &first["target"], &first["sends"], &first["verified"]),
        (&json!("prefix"), &json!("+3369876"), &json!(4), &json!(0))
    );
    let length = |block: &Value| {
        let at = |field: &str| {
            time::OffsetDateTime::parse(
                block[field].as_str().expect("time"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("rfc3339")
        };
        (at("endsAt") - at("startsAt")).whole_seconds()
    };
    assert_eq!(length(&first), 2);

    // It runs out; the prefix is judged afresh, and a repeat is blocked for twice as long.
    wait_until("the block ends", WAIT, || async {
        operator(&api, reqwest::Method::GET, "/v1/fraud/blocks").await.1 == json!([])
    })
    .await;
    for n in 0..5 {
        send_and_settle(&api, &format!("+3369876031{n}"), &format!("bot-again-{n}")).await;
    }
    let (_, all) = operator(&api, reqwest::Method::GET, "/v1/fraud/blocks?all=true").await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(length(&all[0]), 4, "a repeat doubles the block");

    // An operator lifts it: sends go out again, and the lifting is in the audit log.
    let id = all[0]["id"].as_i64().expect("id");
    let (status, lifted) = operator(&api, reqwest::Method::POST, &format!("/v1/fraud/blocks/{id}/lift")).await;
    assert_eq!(status, StatusCode::OK, "{lifted}");
    assert_eq!(lifted["inForce"], false);
    let (status, _) = operator(&api, reqwest::Method::POST, &format!("/v1/fraud/blocks/{id}/lift")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a lifted block cannot be lifted again");
    let (status, _) = send_and_settle(&api, "+33698760320", "after-lift").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        count(
            &api.harness.pool,
            "select count(*) from otps where request_id = 'after-lift' and delivery = 'sent'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &api.harness.pool,
            "select count(*) from operator_actions where action = 'lift-fraud-block'"
        )
        .await,
        1
    );

    // The provider saw four plus four of the bot's numbers, and all of the normal traffic.
    let numbers = provider_numbers(&api.harness).await;
    assert_eq!(numbers.iter().filter(|n| n.starts_with("+3369876030")).count(), 4);
    assert_eq!(numbers.iter().filter(|n| n.starts_with("+3369876031")).count(), 4);
    assert_eq!(numbers.iter().filter(|n| n.starts_with("+33612345")).count(), 6);
    let errors = rejection_errors(&api.harness.pool).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e["rule"] == "conversion"));
    api.finish().await;
}

#[sqlx::test]
async fn the_guard_lets_sends_through_when_it_cannot_read_its_counts(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.set("fraud.timeout_ms", json!(100));
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    // Someone holds the counts table; the guard's reads wait at most 100 ms.
    let mut holder = harness.pool.begin().await.expect("transaction");
    sqlx::query("lock table fraud_counts in access exclusive mode")
        .execute(&mut *holder)
        .await
        .expect("lock");
    publish(&harness, "shop", "+33698760401", "ordinary").await;
    publish(&harness, "shop", PREMIUM, "premium").await;
    wait_until("both judged", WAIT, || async {
        let outcomes = outcomes(&harness.pool).await;
        outcomes.len() == 2 && harness.provider_requests().await.len() == 1
    })
    .await;
    // The number's kind needs no counts: it is still refused.
    let outcomes = outcomes(&harness.pool).await;
    let premium = outcomes.iter().find(|o| o.0 == "premium").expect("premium");
    assert_eq!(premium.2.as_deref(), Some("fraud_suspected"));
    assert_eq!(provider_numbers(&harness).await, ["+33698760401"]);
    holder.rollback().await.expect("release");
    assert_eq!(
        count(&harness.pool, "select count(*) from fraud_counts").await,
        0,
        "nothing was counted"
    );
    harness.finish().await;
}

#[sqlx::test]
async fn deliveries_that_failed_for_good_are_not_held_against_their_destination(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.set(
        "fraud.conversion",
        json!({"mode": "enforce", "min_sends": 3, "country_min_sends": 1000, "min_percent": 20,
               "window_seconds": 60, "settle_seconds": 0, "block_seconds": 600, "max_block_seconds": 3600}),
    );
    // The provider refuses every message for good: an outage, not an attack.
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(400).set_body_string("route unavailable"))
        .mount(&harness.provider)
        .await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    for n in 0..5i64 {
        publish(&harness, "shop", &format!("+3369876050{n}"), &format!("down-{n}")).await;
        wait_until("the delivery failed and was counted", WAIT, || async {
            count(
                &harness.pool,
                "select coalesce(sum(n), 0)::int8 from fraud_counts where key = 'failed:prefix:+3369876'",
            )
            .await
                == n + 1
        })
        .await;
    }
    assert!(
        outcomes(&harness.pool).await.iter().all(|o| o.1 == "failed"),
        "none refused"
    );
    assert_eq!(count(&harness.pool, "select count(*) from fraud_blocks").await, 0);
    harness.finish().await;
}
