//! `/metrics` of a real `otp-courier serve` process counts what the run did, and is served
//! to operators only on the API port, to anyone on the internal `metrics.listen`.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{wait_until, Harness};

/// The value of the sample `name{labels...}` in a Prometheus text page.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        if !(rest.is_empty() || rest.starts_with('{')) {
            return None;
        }
        let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

#[sqlx::test]
async fn metrics_count_what_a_run_did(pool: PgPool) {
    let mut harness = Harness::new(pool).await;
    harness.provider_accepts().await;
    let (key, secret) = harness.create_app_with_key("shop").await;
    let (operator, operator_secret) = harness.operator_key().await;
    let internal = format!("127.0.0.1:{}", crate::harness::free_port());
    harness.set("metrics.listen", json!(internal));
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut serve, base) = harness.spawn_serve(dir.path(), &dir.path().join("serve.log")).await;
    let http = reqwest::Client::new();

    let jobs: Vec<String> = (0..3)
        .map(|i| {
            json!({"appId": "shop", "phoneNumber": format!("+1415555012{i}"), "requestId": Uuid::now_v7().to_string()})
                .to_string()
        })
        .collect();
    for job in &jobs {
        harness.publish(job.as_bytes()).await;
    }
    harness.publish(jobs[0].as_bytes()).await;
    harness.publish(b"{not json").await;
    harness.publish(b"{not json either").await;
    wait_until("three sent, two dead-lettered", Duration::from_secs(30), || async {
        harness.provider_requests().await.len() == 3 && harness.ready(&harness.dlq).await == 2
    })
    .await;
    let row = harness.otp_rows().await.remove(0);
    let otp = row.id;
    // A six-digit code that is not the one sent.
    let code: String = row.pin().chars().map(|c| if c == '9' { '0' } else { '9' }).collect();
    let wrong = http
        .post(format!("{base}/v1/otp/verify"))
        .basic_auth(&key, Some(&secret))
        .json(&json!({"otpId": otp_courier::domain::OtpId::from_uuid(otp).to_string(), "code": code}))
        .send()
        .await
        .expect("verify");
    assert_eq!(wrong.status(), 422);

    let scrape = || async {
        let response = http
            .get(format!("{base}/metrics"))
            .basic_auth(&operator, Some(&operator_secret))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        response.text().await.expect("text")
    };
    // The page names every tenant's apps: not for tenants, nor for anyone without credentials.
    let anonymous = http.get(format!("{base}/metrics")).send().await.expect("scrape");
    assert_eq!(anonymous.status(), 401);
    let tenant = http
        .get(format!("{base}/metrics"))
        .basic_auth(&key, Some(&secret))
        .send()
        .await
        .expect("scrape");
    assert_eq!(tenant.status(), 403);
    let internal_page = http
        .get(format!("http://{internal}/metrics"))
        .send()
        .await
        .expect("scrape the internal port");
    assert_eq!(internal_page.status(), 200);
    assert!(internal_page
        .text()
        .await
        .expect("text")
        .contains("otp_courier_jobs_total"));
    let sent = [("provider", "fake"), ("channel", "sms"), ("outcome", "sent")];
    // A round is counted once its outcome is recorded, which the provider's request
    // precedes; the duplicate, once its insert finds the first.
    let duplicate = [("outcome", "duplicate"), ("reason", "")];
    wait_until(
        "the sends and the duplicate are counted",
        Duration::from_secs(10),
        || async {
            let page = scrape().await;
            sample(&page, "otp_courier_deliveries_total", &sent) == Some(3.0)
                && sample(&page, "otp_courier_jobs_total", &duplicate).is_some()
        },
    )
    .await;
    let page = scrape().await;
    let jobs_total = |outcome, reason| {
        sample(
            &page,
            "otp_courier_jobs_total",
            &[("outcome", outcome), ("reason", reason)],
        )
    };
    assert_eq!(jobs_total("accepted", ""), Some(3.0), "{page}");
    assert_eq!(jobs_total("duplicate", ""), Some(1.0), "{page}");
    assert_eq!(jobs_total("rejected", "malformed_json"), Some(2.0), "{page}");
    assert_eq!(
        sample(&page, "otp_courier_deliveries_total", &sent),
        Some(3.0),
        "{page}"
    );
    let requests = [("provider", "fake"), ("outcome", "accepted")];
    assert_eq!(
        sample(&page, "otp_courier_provider_request_duration_seconds_count", &requests),
        Some(3.0),
        "{page}"
    );
    let invalid = [("app", "shop"), ("outcome", "invalid_code")];
    assert_eq!(
        sample(&page, "otp_courier_verifications_total", &invalid),
        Some(1.0),
        "{page}"
    );
    // Sampled once at start, so anywhere from before to after the dead-lettering; the DLQ
    // through the same broker probe as /readyz.
    let depth = sample(&page, "otp_courier_dlq_depth", &[]);
    assert!(depth.is_some_and(|d| (0.0..=2.0).contains(&d)), "{page}");
    assert!(sample(&page, "otp_courier_outbox_pending", &[]).is_some(), "{page}");
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("+1415555"), "no phone number in a label: {line}");
        assert!(
            !line.contains(&otp.simple().to_string()),
            "no OTP id in a label: {line}"
        );
    }
    serve.kill().await;
    harness.finish().await;
}
