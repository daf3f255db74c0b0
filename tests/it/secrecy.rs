use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::harness::{wait_until, Harness, RoleProcess};

/// A provider that puts the whole request, PIN included, into its error answer.
struct EchoError(u16);

impl Respond for EchoError {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        ResponseTemplate::new(self.0).set_body_bytes(request.body.clone())
    }
}

/// Every row of every table, as text.
async fn database_dump(pool: &PgPool) -> String {
    let tables: Vec<String> =
        sqlx::query_scalar("select table_name::text from information_schema.tables where table_schema = 'public'")
            .fetch_all(pool)
            .await
            .expect("tables");
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!(r#"select t::text from "{table}" t"#))
            .fetch_all(pool)
            .await
            .expect("rows");
        dump.push_str(&rows.join("\n"));
    }
    dump
}

#[sqlx::test]
async fn no_pin_appears_in_the_database_the_logs_or_error_texts(pool: PgPool) {
    let harness = Harness::new(pool).await;
    Mock::given(method("POST"))
        .and(body_string_contains("+14155550101"))
        .respond_with(EchoError(400))
        .mount(&harness.provider)
        .await;
    harness.provider_answers_then_accepts(EchoError(503), 1).await;
    harness.create_app("shop", json!({"": "Code {{pin}}"})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("worker.log");
    let mut worker = RoleProcess::spawn("worker", &harness.config_file(dir.path()), &log);

    for phone in ["+14155550101", "+14155550102"] {
        let job = json!({"appId": "shop", "phoneNumber": phone, "pinType": "alphanumeric", "pinLength": 10});
        harness.publish(job.to_string().as_bytes()).await;
    }
    wait_until("both OTPs settled", Duration::from_secs(20), || async {
        let rows = harness.otp_rows().await;
        rows.len() == 2 && rows.iter().all(|r| r.delivery == "sent" || r.delivery == "failed")
    })
    .await;
    worker.kill().await;

    let rows = harness.otp_rows().await;
    let mut deliveries: Vec<&str> = rows.iter().map(|r| r.delivery.as_str()).collect();
    deliveries.sort();
    assert_eq!(deliveries, ["failed", "sent"]);
    let logs = std::fs::read_to_string(&log).expect("logs");
    let dump = database_dump(&harness.pool).await;
    let provider_saw: String = harness
        .provider_requests()
        .await
        .iter()
        .map(|r| r.to_string())
        .collect();
    for otp in &rows {
        let pin = otp.pin();
        assert!(
            provider_saw.contains(&pin),
            "the provider did get the PIN (the test sees real traffic)"
        );
        assert!(!logs.contains(&pin), "PIN found in the logs");
        assert!(!dump.contains(&pin), "PIN found in the database");
        assert!(
            logs.contains(&otp_courier::domain::OtpId::from_uuid(otp.id).to_string()),
            "logs cover this OTP"
        );
    }
    assert!(
        dump.contains(otp_courier::provider::WITHHELD),
        "the echoed provider errors were replaced by a fixed text"
    );
    harness.finish().await;
}
