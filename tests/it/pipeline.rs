use std::time::Duration;

use lapin::BasicProperties;
use serde_json::json;
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::{wait_until, Harness, PROVIDER_PATH};

async fn harness_with_app(pool: PgPool) -> Harness {
    let harness = Harness::new(pool).await;
    Mock::given(method("POST"))
        .and(path(PROVIDER_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "m-1"})))
        .mount(&harness.provider)
        .await;
    harness
        .create_app("shop", json!({"": "Your Shop code is {{pin}}"}))
        .await;
    harness
}

async fn wait_for_requests(harness: &Harness, n: usize) {
    wait_until("provider requests", Duration::from_secs(10), || async {
        harness.provider_requests().await.len() >= n
    })
    .await;
}

#[sqlx::test]
async fn a_plain_amqp_job_with_language_fr_sends_one_french_message(pool: PgPool) {
    let mut harness = harness_with_app(pool).await;
    harness.start_worker();
    let job = json!({
        "appId": "shop", "phoneNumber": "+14155550123", "language": "fr", "requestId": "signup-1",
        "template": "Your code is {{pin}}", "template_fr": "Votre code est {{pin}}", "template_de": "Ihr Code ist {{pin}}"
    });
    harness.publish(job.to_string().as_bytes()).await;
    wait_for_requests(&harness, 1).await;
    wait_until("sent recorded", Duration::from_secs(5), || async {
        harness.events().await == ["otp.sent"]
    })
    .await;

    let rows = harness.otp_rows().await;
    assert_eq!(rows.len(), 1);
    let otp = &rows[0];
    let requests = harness.provider_requests().await;
    assert_eq!(requests.len(), 1, "exactly one provider request");
    assert_eq!(requests[0]["to"], "+14155550123");
    assert_eq!(requests[0]["text"], format!("Votre code est {}", otp.pin()));
    assert_eq!(
        (otp.status.as_str(), otp.delivery.as_str(), otp.locale.as_str()),
        ("pending", "sent", "fr")
    );
    assert_eq!(otp.parts, 1);
    harness.finish().await;
}

#[sqlx::test]
async fn a_french_number_gets_the_french_template_without_a_language(pool: PgPool) {
    let mut harness = harness_with_app(pool).await;
    harness.start_worker();
    let job = json!({
        "appId": "shop", "phoneNumber": "+33 6 12 34 56 78",
        "template": "Your code is {{pin}}", "template_fr": "Votre code : {{pin}}"
    });
    harness.publish(job.to_string().as_bytes()).await;
    wait_for_requests(&harness, 1).await;
    wait_until("sent recorded", Duration::from_secs(5), || async {
        harness.events().await == ["otp.sent"]
    })
    .await;

    let otp = &harness.otp_rows().await[0];
    let requests = harness.provider_requests().await;
    assert_eq!(requests[0]["to"], "+33612345678");
    assert_eq!(requests[0]["text"], format!("Votre code : {}", otp.pin()));
    assert_eq!(otp.locale, "fr");
    harness.finish().await;
}

#[sqlx::test]
async fn without_job_templates_the_apps_template_is_used(pool: PgPool) {
    let mut harness = harness_with_app(pool).await;
    harness.start_worker();
    harness
        .publish(br#"{"appId": "shop", "phoneNumber": "+14155550123"}"#)
        .await;
    wait_for_requests(&harness, 1).await;
    let otp = &harness.otp_rows().await[0];
    assert_eq!(
        harness.provider_requests().await[0]["text"],
        format!("Your Shop code is {}", otp.pin())
    );
    assert_eq!(otp.locale, "en");
    harness.finish().await;
}

const SENTINEL_PHONE: &str = "+14155550199";

/// Waits until every job published so far has been settled: with prefetch 1 the broker
/// hands out the next message only after the previous one is acked, so once a sentinel job
/// published last is sent, everything before it was acked.
async fn settle(harness: &Harness, sentinel: &str) {
    let job = json!({"appId": "shop", "phoneNumber": SENTINEL_PHONE, "requestId": sentinel});
    harness.publish(job.to_string().as_bytes()).await;
    wait_until("the sentinel is sent", Duration::from_secs(10), || async {
        harness
            .provider_requests()
            .await
            .iter()
            .filter(|r| r["to"] == SENTINEL_PHONE)
            .count()
            == 1
    })
    .await;
}

async fn requests_to(harness: &Harness, phone: &str) -> usize {
    harness
        .provider_requests()
        .await
        .iter()
        .filter(|r| r["to"] == phone)
        .count()
}

/// The sends counted against `phone`'s limit.
async fn sends_counted(harness: &Harness, phone: &str) -> i64 {
    sqlx::query_scalar("select coalesce(sum(hits), 0)::int8 from rate_limit_windows where key = $1")
        .bind(format!("send:phone:shop:{phone}"))
        .fetch_one(&harness.pool)
        .await
        .expect("counter")
}

async fn in_order_harness(pool: PgPool) -> Harness {
    let mut harness = harness_with_app(pool).await;
    harness.set("amqp.prefetch", json!(1));
    harness.start_worker();
    harness
}

#[sqlx::test]
async fn a_second_publish_with_the_same_request_id_sends_no_second_message(pool: PgPool) {
    let harness = in_order_harness(pool).await;
    let job = json!({"appId": "shop", "phoneNumber": "+14155550123", "requestId": "login-7"}).to_string();
    harness.publish(job.as_bytes()).await;
    harness.publish(job.as_bytes()).await;
    settle(&harness, "sentinel-1").await;

    assert_eq!(requests_to(&harness, "+14155550123").await, 1);
    assert_eq!(
        harness.otp_rows().await.len(),
        2,
        "one OTP for the job, one for the sentinel"
    );
    assert_eq!(
        sends_counted(&harness, "+14155550123").await,
        1,
        "the duplicate is not counted"
    );
    harness.finish().await;
}

#[sqlx::test]
async fn the_amqp_message_id_and_an_identical_body_also_deduplicate(pool: PgPool) {
    let harness = in_order_harness(pool).await;
    let with_id = BasicProperties::default().with_message_id("msg-42".into());
    let body = br#"{"appId": "shop", "phoneNumber": "+14155550123"}"#;
    harness.publish_with(body, with_id.clone()).await;
    harness.publish(body).await;
    harness.publish_with(body, with_id).await;
    harness.publish(body).await;
    settle(&harness, "sentinel-2").await;

    assert_eq!(
        requests_to(&harness, "+14155550123").await,
        2,
        "one per distinct request, none for the duplicates"
    );
    assert_eq!(harness.otp_rows().await.len(), 3);
    assert_eq!(
        sends_counted(&harness, "+14155550123").await,
        2,
        "duplicates are not counted"
    );
    harness.finish().await;
}

#[sqlx::test]
async fn an_identical_body_after_its_otp_expired_makes_a_new_otp(pool: PgPool) {
    let harness = in_order_harness(pool).await;
    let body = br#"{"appId": "shop", "phoneNumber": "+14155550123"}"#;
    harness.publish(body).await;
    settle(&harness, "sentinel-3").await;
    sqlx::query("update otps set expires_at = now() - interval '1 second' where request_id like 'sha256:%'")
        .execute(&harness.pool)
        .await
        .expect("expire");
    harness.publish(body).await;
    wait_until("a second OTP for the same body", Duration::from_secs(10), || async {
        requests_to(&harness, "+14155550123").await == 2
    })
    .await;
    let statuses: Vec<String> =
        sqlx::query_scalar("select status from otps where request_id like 'sha256:%' order by created_at")
            .fetch_all(&harness.pool)
            .await
            .expect("rows");
    assert_eq!(statuses, ["expired", "pending"]);
    assert!(harness.events().await.contains(&"otp.expired".to_string()));
    harness.finish().await;
}

/// With `amqp.queue_type = "quorum"` the worker declares both queues as quorum queues (a
/// classic redeclaration is refused as inequivalent) and jobs flow through them.
#[sqlx::test]
async fn quorum_queues_are_declared_and_carry_jobs(pool: PgPool) {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let mut harness = Harness::new(pool).await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let (queue, dlq) = (format!("test.quorum.{suffix}"), format!("test.quorum.dlq.{suffix}"));
    harness.set("amqp.queue_type", json!("quorum"));
    harness.set("amqp.send_queue", json!(queue));
    harness.set("amqp.dead_letter_queue", json!(dlq));
    harness.provider_accepts().await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    harness.start_worker();

    let connection = lapin::Connection::connect(&crate::harness::amqp_url(), Default::default())
        .await
        .expect("connect");
    // Redeclares `name` with `arguments` on a channel of its own (a refusal closes it).
    let declare = |name: String, arguments: FieldTable| {
        let connection = &connection;
        async move {
            let channel = connection.create_channel().await.expect("channel");
            channel
                .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), arguments)
                .await
                .map(|_| ())
        }
    };
    let of_type = |kind: &str| {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        arguments
    };
    wait_until("the worker declared its queues", Duration::from_secs(20), || async {
        declare(queue.clone(), of_type("quorum")).await.is_ok() && declare(dlq.clone(), of_type("quorum")).await.is_ok()
    })
    .await;
    for name in [&queue, &dlq] {
        let refused = declare(name.clone(), of_type("classic")).await;
        assert!(refused.is_err(), "{name} is not a quorum queue");
    }

    let channel = connection.create_channel().await.expect("channel");
    let job = json!({"appId": "shop", "phoneNumber": "+14155550141"}).to_string();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            Default::default(),
            job.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            Default::default(),
            b"{not json",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    wait_until("one sent, one dead-lettered", Duration::from_secs(20), || async {
        let rows = harness.otp_rows().await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let dead = connection
            .create_channel()
            .await
            .expect("channel")
            .queue_declare(dlq.as_str().into(), passive, FieldTable::default())
            .await
            .is_ok_and(|q| q.message_count() == 1);
        rows.len() == 1 && rows[0].delivery == "sent" && dead
    })
    .await;
    harness.stop_worker().await;
    for name in [&queue, &dlq] {
        channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete");
    }
    harness.finish().await;
}

/// Messages of `queue` the broker has delivered and holds unsettled, as `rabbitmqctl` lists them.
async fn unacked(queue: &str) -> Option<u64> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|line| {
        let (name, count) = line.split_once(char::is_whitespace)?;
        (name == queue).then(|| count.trim().parse().ok()).flatten()
    })
}

/// The worker coalesces its acks (`worker::acks`): after a burst of jobs, refused ones
/// among them, the broker holds none of them unsettled while the worker is still connected.
#[sqlx::test]
async fn every_message_of_a_burst_is_settled_with_the_broker(pool: PgPool) {
    let mut harness = harness_with_app(pool).await;
    harness.start_worker();
    let (mut valid, mut refused) = (0usize, 0u32);
    for n in 0..60 {
        if n % 10 == 7 {
            harness.publish(b"{not json").await;
            refused += 1;
        } else {
            let job =
                json!({"appId": "shop", "phoneNumber": format!("+1415555{n:04}"), "requestId": format!("burst-{n}")});
            harness.publish(job.to_string().as_bytes()).await;
            valid += 1;
        }
    }
    wait_until("every job sent or dead-lettered", Duration::from_secs(30), || async {
        let sent = harness.otp_rows().await.iter().filter(|o| o.delivery == "sent").count();
        sent == valid && harness.ready(&harness.dlq).await == refused
    })
    .await;
    wait_until("nothing left unsettled", Duration::from_secs(20), || async {
        unacked(&harness.queue).await == Some(0) && harness.ready(&harness.queue).await == 0
    })
    .await;
    harness.stop_worker().await;
    assert_eq!(
        harness.ready(&harness.queue).await,
        0,
        "no message came back to the queue"
    );
    harness.finish().await;
}
