//! Operations: replays of deliveries and callbacks, the dead-letter tools, the sweeper, on
//! the command line and the operator API.

use std::collections::HashMap;
use std::time::Duration;

use otp_courier::ops::replay::{self, CallbackFilter, DeliveryFilter};
use otp_courier::otp::sweeper::Sweeper;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{wait_until, Harness, RoleProcess};

const LONG: Duration = Duration::from_secs(60);
/// Ten thousand OTPs through a worker, twice, while other tests share the cores.
const VERY_LONG: Duration = Duration::from_secs(240);

fn job(phone_suffix: usize) -> Vec<u8> {
    json!({"appId": "shop", "phoneNumber": format!("+1415555{:04}", phone_suffix % 10_000),
           "requestId": format!("r-{}", Uuid::now_v7().simple()), "ttl": 1800})
    .to_string()
    .into_bytes()
}

async fn count(harness: &Harness, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&harness.pool).await.expect(sql)
}

/// Accepted provider requests per OTP id.
async fn accepted_per_otp(harness: &Harness) -> HashMap<String, usize> {
    let mut per_otp = HashMap::new();
    for request in harness.provider_requests().await {
        *per_otp
            .entry(request["otp"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    per_otp
}

/// Runs the `otp-courier` binary with this harness's configuration; returns stdout.
async fn cli(harness: &Harness, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_otp-courier"))
        .arg("--config")
        .arg(harness.config_file(dir.path()))
        .args(args)
        .output()
        .await
        .expect("otp-courier runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "otp-courier {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A harness whose provider fails every request for good (400), with app `shop`.
async fn failing_provider(pool: PgPool) -> Harness {
    let mut harness = Harness::new(pool).await;
    harness.set("delivery.quick_retries", json!(0));
    harness.set("amqp.prefetch", json!(256));
    harness.set("worker.scheduler_concurrency", json!(64));
    harness.set("limits.send_per_app", json!({"max": 1_000_000, "window_seconds": 1}));
    harness.set(
        "limits.send_per_country",
        json!({"max": 1_000_000, "window_seconds": 3600}),
    );
    // Thousands of numbers of one prefix, never verified: a volume test, not an attack. The
    // guard still counts them, with thresholds they cannot reach.
    harness.set("fraud.prefix_velocity.max", json!(1_000_000));
    harness.set("fraud.conversion.min_sends", json!(1_000_000));
    harness.set("fraud.conversion.country_min_sends", json!(1_000_000));
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("number blocked"))
        .mount(&harness.provider)
        .await;
    harness
}

/// The provider recovers: from now on it accepts, and only accepted requests are counted.
async fn provider_recovers(harness: &Harness) {
    harness.provider.reset().await;
    harness.provider_accepts().await;
}

#[sqlx::test]
async fn after_an_outage_one_replay_delivers_ten_thousand_failed_otps_once_and_a_second_sends_nothing(pool: PgPool) {
    let mut harness = failing_provider(pool).await;
    harness.start_worker();
    for i in 0..10_000 {
        harness.publish(&job(i)).await;
    }
    wait_until("10,000 OTPs failed", VERY_LONG, || async {
        count(&harness, "select count(*) from otps where status = 'failed'").await == 10_000
    })
    .await;
    provider_recovers(&harness).await;

    let filter = DeliveryFilter::default();
    let summary = replay::deliveries(&harness.pool, &filter, "test", &mut |_, _| {})
        .await
        .expect("replay");
    assert_eq!(
        (summary.matched, summary.replayed, summary.new_codes),
        (10_000, 10_000, 0)
    );
    wait_until("all 10,000 sent", VERY_LONG, || async {
        count(&harness, "select count(*) from otps where delivery = 'sent'").await == 10_000
    })
    .await;
    let again = replay::deliveries(&harness.pool, &filter, "test", &mut |_, _| {})
        .await
        .expect("replay");
    assert_eq!((again.matched, again.replayed), (0, 0), "nothing left to replay");

    let per_otp = accepted_per_otp(&harness).await;
    assert_eq!(per_otp.len(), 10_000, "every OTP reached the recovered provider");
    assert!(per_otp.values().all(|n| *n == 1), "each exactly once");
    assert_eq!(
        count(
            &harness,
            "select count(*) from outbox where event_type = 'otp.replayed'"
        )
        .await,
        10_000
    );
    assert_eq!(
        count(
            &harness,
            "select count(*) from operator_actions where action = 'replay-deliveries' and actor = 'test'"
        )
        .await,
        2
    );
    harness.finish().await;
}

#[sqlx::test]
async fn a_replay_while_jobs_keep_arriving_loses_nothing_and_duplicates_nothing(pool: PgPool) {
    let mut harness = failing_provider(pool).await;
    harness.start_worker();
    let failed: Vec<Vec<u8>> = (0..300).map(job).collect();
    for body in &failed {
        harness.publish(body).await;
    }
    wait_until("300 failed", LONG, || async {
        count(&harness, "select count(*) from otps where status = 'failed'").await == 300
    })
    .await;
    provider_recovers(&harness).await;

    let (filter, mut quiet) = (DeliveryFilter::default(), |_, _| {});
    let (replayed, ()) = tokio::join!(replay::deliveries(&harness.pool, &filter, "test", &mut quiet), async {
        // New jobs, and producers retrying the failed ones (same request ids) meanwhile.
        for (i, again) in (300..600).zip(&failed) {
            harness.publish(&job(i)).await;
            harness.publish(again).await;
        }
    });
    assert_eq!(replayed.expect("replay").replayed, 300);
    wait_until("all 600 sent", LONG, || async {
        count(&harness, "select count(*) from otps where delivery = 'sent'").await == 600
    })
    .await;
    let per_otp = accepted_per_otp(&harness).await;
    assert_eq!(per_otp.len(), 600);
    assert!(per_otp.values().all(|n| *n == 1), "no OTP sent twice");
    assert_eq!(
        count(&harness, "select count(*) from otps").await,
        600,
        "no job lost or doubled"
    );
    harness.finish().await;
}

#[sqlx::test]
async fn an_otp_replayed_after_its_ttl_gets_a_new_code_and_keeps_its_failed_attempts(pool: PgPool) {
    let mut harness = failing_provider(pool).await;
    harness.start_worker();
    harness.publish(&job(1)).await;
    harness.publish(&job(2)).await;
    wait_until("both failed", LONG, || async {
        count(&harness, "select count(*) from otps where status = 'failed'").await == 2
    })
    .await;
    let before = harness.otp_rows().await;
    let expired = before[0].id;
    sqlx::query("update otps set expires_at = now() - interval '1 minute', attempts = 2 where id = $1")
        .bind(expired)
        .execute(&harness.pool)
        .await
        .expect("age");
    provider_recovers(&harness).await;
    let dry = cli(&harness, &["replay", "deliveries", "--app", "shop", "--dry-run"]).await;
    assert!(dry.contains("| | 2 | 0 | 0 | true |"), "{dry}");
    let out = cli(
        &harness,
        &[
            "replay",
            "deliveries",
            "--status",
            "failed",
            "--error-class",
            "provider_rejected",
        ],
    )
    .await;
    assert!(out.contains("| | 2 | 2 | 1 | false |"), "{out}");
    wait_until("both sent", LONG, || async {
        count(&harness, "select count(*) from otps where delivery = 'sent'").await == 2
    })
    .await;

    let after = harness.otp_rows().await;
    // Matched by id: rows inserted in one transaction share `created_at`, so the order of
    // two reads of them can differ.
    for new in &after {
        let old = before.iter().find(|o| o.id == new.id).expect("the same OTP before");
        let sent: Vec<String> = harness
            .provider_requests()
            .await
            .iter()
            .filter(|r| {
                r["otp"]
                    .as_str()
                    .is_some_and(|id| id.ends_with(&new.id.simple().to_string()))
            })
            .map(|r| r["text"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(sent, [format!("Code {}", new.pin())]);
        if new.id == expired {
            assert_eq!(new.generation, old.generation + 1, "a new code after the TTL");
            assert_ne!(new.pin(), old.pin());
        } else {
            assert_eq!(new.pin(), old.pin(), "the same code within the TTL");
        }
    }
    let attempts: i32 = sqlx::query_scalar("select attempts from otps where id = $1")
        .bind(expired)
        .fetch_one(&harness.pool)
        .await
        .expect("row");
    assert_eq!(attempts, 2, "failed verification attempts are kept");
    harness.finish().await;
}

#[sqlx::test]
async fn a_dead_callback_replayed_goes_out_again_with_its_event_id(pool: PgPool) {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&receiver)
        .await;
    let mut harness = Harness::new(pool).await;
    harness.set("callbacks.retry_schedule_seconds", json!([1]));
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.webhook_secret("shop", None).await;
    harness.start_worker();
    harness.start_dispatcher();
    let mut body: Value = serde_json::from_slice(&job(1)).expect("json");
    body["otpCallbackUrl"] = json!(receiver.uri());
    harness.publish(body.to_string().as_bytes()).await;
    wait_until("the callback is dead", LONG, || async {
        harness.callbacks().await.iter().any(|(_, state, _)| state == "dead")
    })
    .await;
    assert_eq!(harness.callbacks().await[0].2, 2, "the first attempt and one retry");
    // After the replay the receiver fails once more: the schedule must have restarted.
    receiver.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;

    let dry = CallbackFilter {
        dry_run: true,
        ..CallbackFilter::default()
    };
    let counted = replay::callbacks(&harness.pool, &dry, "test", &mut |_, _| {})
        .await
        .expect("dry run");
    assert_eq!((counted.matched, counted.replayed), (1, 0));
    assert_eq!(harness.callbacks().await[0].1, "dead", "a dry run changes nothing");
    let out = cli(&harness, &["replay", "callbacks", "--status", "dead"]).await;
    assert!(out.contains("| | 1 | 1 |"), "{out}");
    wait_until("delivered", LONG, || async {
        harness.callbacks().await[0].1 == "delivered"
    })
    .await;

    let requests = receiver.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 2, "one failure, retried on the restarted schedule");
    assert_eq!(harness.callbacks().await[0].2, 4);
    let id: Uuid = sqlx::query_scalar("select id from outbox")
        .fetch_one(&harness.pool)
        .await
        .expect("id");
    assert_eq!(
        requests[0].headers.get("webhook-id").and_then(|v| v.to_str().ok()),
        Some(otp_courier::domain::EventId::from_uuid(id).to_string().as_str())
    );
    let actor: String =
        sqlx::query_scalar("select actor from operator_actions where action = 'replay-callbacks' and not dry_run")
            .fetch_one(&harness.pool)
            .await
            .expect("audit");
    assert!(actor.starts_with("cli:"), "{actor}");
    harness.finish().await;
}

#[sqlx::test]
async fn jobs_of_an_app_created_later_are_requeued_from_the_dead_letter_queue(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    let later = json!({"appId": "later", "phoneNumber": "+14155550100", "requestId": "l-1"}).to_string();
    harness.publish(later.as_bytes()).await;
    wait_until("dead-lettered", LONG, || async {
        harness.ready(&harness.dlq).await == 1
    })
    .await;
    harness.publish(b"{not json").await;
    wait_until("both dead-lettered", LONG, || async {
        harness.ready(&harness.dlq).await == 2
    })
    .await;

    let listed = cli(&harness, &["dlq", "list"]).await;
    assert!(listed.contains("| 1 | unknown_app | later |"), "{listed}");
    assert!(listed.contains("| 2 | malformed_json |"), "{listed}");
    assert_eq!(harness.ready(&harness.dlq).await, 2, "listing leaves them in place");
    let shown = cli(&harness, &["dlq", "show", "1"]).await;
    assert!(
        shown.contains(r#""reason": "unknown_app""#) && shown.contains("l-1"),
        "{shown}"
    );

    harness.create_app("later", json!({"": "Later {{pin}}"})).await;
    let dry = cli(&harness, &["dlq", "requeue", "--reason", "unknown_app", "--dry-run"]).await;
    assert!(dry.contains("| | 1 | 0 |"), "{dry}");
    let requeued = cli(&harness, &["dlq", "requeue", "--app", "later"]).await;
    assert!(requeued.contains("| | 1 | 1 |"), "{requeued}");
    wait_until("the requeued job is delivered", LONG, || async {
        harness.provider_requests().await.len() == 1
    })
    .await;
    assert_eq!(harness.provider_requests().await[0]["to"], "+14155550100");
    assert_eq!(harness.ready(&harness.dlq).await, 1, "the malformed job stayed");

    let purged = cli(&harness, &["dlq", "purge", "--reason", "malformed_json"]).await;
    assert!(purged.contains("| | 1 | 1 |"), "{purged}");
    assert_eq!(harness.ready(&harness.dlq).await, 0);
    assert_eq!(
        count(
            &harness,
            "select count(*) from operator_actions where action in ('dlq-requeue', 'dlq-purge')"
        )
        .await,
        3
    );
    harness.finish().await;
}

#[sqlx::test]
async fn the_sweeper_expires_pending_otps_and_prunes_only_what_is_settled(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    for i in 0..3 {
        harness.publish(&job(i)).await;
    }
    wait_until("three sent", LONG, || async {
        count(&harness, "select count(*) from otps where delivery = 'sent'").await == 3
    })
    .await;
    harness.stop_worker().await;
    let ids: Vec<Uuid> = harness.otp_rows().await.iter().map(|r| r.id).collect();
    sqlx::query("update otps set expires_at = now() - interval '1 second' where id = any($1)")
        .bind(&ids[..2])
        .execute(&harness.pool)
        .await
        .expect("expire two");
    let sweeper = Sweeper::new(harness.pool.clone(), harness.config().sweeper);
    assert_eq!(sweeper.expire_due().await.expect("sweep"), 2);
    assert_eq!(sweeper.expire_due().await.expect("sweep"), 0, "once only");
    assert_eq!(
        count(&harness, "select count(*) from otps where status = 'expired'").await,
        2
    );
    assert_eq!(
        count(&harness, "select count(*) from outbox where event_type = 'otp.expired'").await,
        2
    );

    // Age everything past retention; one OTP still has a callback waiting.
    sqlx::query("update otps set created_at = now() - interval '40 days'")
        .execute(&harness.pool)
        .await
        .expect("age");
    sqlx::query("update outbox set created_at = now() - interval '40 days'")
        .execute(&harness.pool)
        .await
        .expect("age");
    sqlx::query("update outbox set state = 'pending', callback_url = 'https://hooks.example.com/' where otp_id = $1")
        .bind(ids[0])
        .execute(&harness.pool)
        .await
        .expect("a pending callback");
    sqlx::query(
        "insert into callback_attempts (event_id, attempt, started_at, http_status, latency_ms)
         select id, 1, now() - interval '40 days', 500, 3 from outbox where otp_id = any($1)",
    )
    .bind(&ids[..2])
    .execute(&harness.pool)
    .await
    .expect("attempt records");
    // Receipts of the settled OTPs' messages, one still polled, and one that never found
    // its message: all old.
    sqlx::query(
        "insert into delivery_receipts (provider, message_id, status, provider_status, raw, received_at, attempt_id, otp_id, applied_at)
         select provider, 'm-' || id, 'delivered', 'DELIVRD', '{}', now() - interval '40 days', id, otp_id, now() - interval '40 days'
         from delivery_attempts where otp_id = any($1)",
    )
    .bind(&ids[..2])
    .execute(&harness.pool)
    .await
    .expect("receipts");
    sqlx::query(
        "insert into receipt_polls (attempt_id, provider, message_id, next_at, deadline)
         select id, provider, 'm-' || id, now(), now() from delivery_attempts where otp_id = $1",
    )
    .bind(ids[1])
    .execute(&harness.pool)
    .await
    .expect("a poll");
    sqlx::query(
        "insert into delivery_receipts (provider, message_id, status, provider_status, raw, received_at)
         values ('fake', 'nobody-sent-this', 'delivered', 'DELIVRD', '{}', now() - interval '40 days')",
    )
    .execute(&harness.pool)
    .await
    .expect("an unmatched receipt");
    let pruned = sweeper.prune().await.expect("prune");
    assert_eq!(
        count(
            &harness,
            &format!(
                "select count(*) from delivery_receipts where otp_id is distinct from '{}'",
                ids[0]
            )
        )
        .await,
        0,
        "receipts of pruned OTPs and old unmatched receipts go: {pruned:?}"
    );
    assert!(
        pruned.callback_attempts >= 1,
        "attempts of settled events go: {pruned:?}"
    );
    let kept: i64 = sqlx::query_scalar(
        "select count(*) from callback_attempts a join outbox o on o.id = a.event_id where o.otp_id = $1",
    )
    .bind(ids[0])
    .fetch_one(&harness.pool)
    .await
    .expect("count");
    assert!(kept >= 1, "the pending event keeps its attempt history");
    assert_eq!(
        pruned.otps, 1,
        "the pending OTP and the one with a waiting callback stay: {pruned:?}"
    );
    let left: Vec<Uuid> = sqlx::query_scalar("select id from otps order by id")
        .fetch_all(&harness.pool)
        .await
        .expect("rows");
    assert!(
        left.contains(&ids[0]) && left.contains(&ids[2]) && !left.contains(&ids[1]),
        "{left:?}"
    );
    assert!(count(&harness, "select count(*) from outbox where state = 'pending'").await >= 1);
    harness.finish().await;
}

#[sqlx::test]
async fn the_operator_api_replays_and_lists_dead_letters_and_refuses_apps(pool: PgPool) {
    let mut harness = failing_provider(pool).await;
    let app_key = {
        let app = otp_courier::domain::AppId::parse("shop").expect("app");
        let mut conn = harness.pool.acquire().await.expect("conn");
        otp_courier::tenancy::keys::issue(&mut conn, Some(&app))
            .await
            .expect("key")
    };
    let (operator, secret) = harness.operator_key().await;
    harness.start_worker();
    harness.publish(&job(1)).await;
    harness.publish(b"{not json").await;
    wait_until("failed and dead-lettered", LONG, || async {
        count(&harness, "select count(*) from otps where status = 'failed'").await == 1
            && harness.ready(&harness.dlq).await == 1
    })
    .await;
    let base = harness.start_api().await;
    let http = reqwest::Client::new();
    let call = |path: &str, body: Option<Value>, key: (&str, &str)| {
        let url = format!("{base}{path}");
        let request = match body {
            Some(body) => http.post(url).json(&body),
            None => http.get(url),
        };
        request.basic_auth(key.0, Some(key.1)).send()
    };

    let app = (app_key.key_id.as_str(), app_key.secret.as_str());
    for (path, body) in [
        ("/v1/ops/replay/deliveries", Some(json!({"not": "a filter"}))),
        ("/v1/ops/replay/callbacks", Some(json!({}))),
        ("/v1/ops/dlq", None),
        ("/v1/ops/dlq/requeue", Some(json!({}))),
        ("/v1/ops/dlq/purge", Some(json!({}))),
    ] {
        let refused = call(path, body, app).await.expect("request");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path} with an app key");
    }
    assert_eq!(harness.ready(&harness.dlq).await, 1, "an app key purged nothing");
    let dry = call(
        "/v1/ops/replay/deliveries",
        Some(json!({"dryRun": true})),
        (&operator, &secret),
    )
    .await
    .expect("request");
    assert_eq!(dry.status(), StatusCode::OK);
    assert_eq!(
        dry.json::<Value>().await.expect("json"),
        json!({"dryRun": true, "matched": 1, "replayed": 0, "newCodes": 0})
    );
    let bad = call(
        "/v1/ops/replay/deliveries",
        Some(json!({"status": "verified"})),
        (&operator, &secret),
    )
    .await
    .expect("request");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    provider_recovers(&harness).await;
    let done = call(
        "/v1/ops/replay/deliveries",
        Some(json!({"app": "shop"})),
        (&operator, &secret),
    )
    .await
    .expect("request");
    assert_eq!(done.json::<Value>().await.expect("json")["replayed"], 1);
    wait_until("sent", LONG, || async { harness.provider_requests().await.len() == 1 }).await;

    let listed: Value = call("/v1/ops/dlq?limit=5", None, (&operator, &secret))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["reason"], "malformed_json", "{listed}");
    let purged: Value = call(
        "/v1/ops/dlq/purge",
        Some(json!({"dryRun": false})),
        (&operator, &secret),
    )
    .await
    .expect("request")
    .json()
    .await
    .expect("json");
    assert_eq!(purged["replayed"], 1, "{purged}");
    assert_eq!(harness.ready(&harness.dlq).await, 0);
    let requeued = call("/v1/ops/dlq/requeue", Some(json!({})), (&operator, &secret))
        .await
        .expect("request");
    assert_eq!(requeued.status(), StatusCode::OK);
    let callbacks = call(
        "/v1/ops/replay/callbacks",
        Some(json!({"status": "dead"})),
        (&operator, &secret),
    )
    .await
    .expect("request");
    assert_eq!(callbacks.status(), StatusCode::OK);
    let actor: String = sqlx::query_scalar("select actor from operator_actions order by id limit 1")
        .fetch_one(&harness.pool)
        .await
        .expect("audit");
    assert_eq!(actor, format!("api:{operator}"));
    harness.finish().await;
}

#[sqlx::test]
async fn the_sweeper_role_runs_as_its_own_process(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.set("sweeper.interval_ms", json!(100));
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();
    harness.publish(&job(7)).await;
    wait_until("sent", LONG, || async {
        count(&harness, "select count(*) from otps where delivery = 'sent'").await == 1
    })
    .await;
    sqlx::query("update otps set expires_at = now() - interval '1 second'")
        .execute(&harness.pool)
        .await
        .expect("expire");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sweeper = RoleProcess::spawn(
        "sweeper",
        &harness.config_file(dir.path()),
        &dir.path().join("sweeper.log"),
    );
    wait_until("expired by the sweeper process", LONG, || async {
        count(&harness, "select count(*) from outbox where event_type = 'otp.expired'").await == 1
    })
    .await;
    sweeper.kill().await;
    assert_eq!(
        count(&harness, "select count(*) from otps where status = 'expired'").await,
        1
    );
    harness.finish().await;
}

#[sqlx::test]
async fn of_two_failed_otps_of_one_body_derived_request_a_replay_revives_the_newest(pool: PgPool) {
    let mut harness = failing_provider(pool).await;
    harness.start_worker();
    // No requestId: the key is derived from the body, and names one pending OTP at a time.
    let body = json!({"appId": "shop", "phoneNumber": "+14155550188", "ttl": 1800}).to_string();
    for n in 1..=2 {
        harness.publish(body.as_bytes()).await;
        wait_until("failed", LONG, || async {
            count(&harness, "select count(*) from otps where status = 'failed'").await == n
        })
        .await;
    }
    provider_recovers(&harness).await;
    let summary = replay::deliveries(&harness.pool, &DeliveryFilter::default(), "test", &mut |_, _| {})
        .await
        .expect("no unique violation");
    assert_eq!(summary.replayed, 1, "only one of them may be pending");
    let newest: Uuid = sqlx::query_scalar("select id from otps order by created_at desc limit 1")
        .fetch_one(&harness.pool)
        .await
        .expect("newest");
    let pending: Vec<Uuid> = sqlx::query_scalar("select id from otps where status = 'pending'")
        .fetch_all(&harness.pool)
        .await
        .expect("pending");
    assert_eq!(pending, [newest]);
    harness.finish().await;
}
