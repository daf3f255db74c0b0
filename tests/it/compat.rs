//! The dialects of the APIs our users come from: sms.cx's layer driven by sms.cx's own
//! Python SDK, the Xoxzo layer by the calls its documentation shows, the generic OTP API's
//! paths with its field names; and the app-wide activity log behind `/otp/logs`.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::api::Api;
use crate::harness::wait_until;

fn oracle_python() -> std::path::PathBuf {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oracle-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/oracles.sh` (scripts/test.sh does)",
        python.display()
    );
    python
}

/// The code the fake provider was asked to deliver for OTP `otp_id` (`otp_…`), read from
/// the message text, once it arrives.
async fn code_delivered(api: &Api, otp_id: &str) -> String {
    let find = || async {
        api.harness
            .provider_requests()
            .await
            .into_iter()
            .find(|r| r["otp"] == otp_id)
            .and_then(|r| r["text"].as_str().map(str::to_string))
    };
    wait_until("the provider got the message", Duration::from_secs(10), || async {
        find().await.is_some()
    })
    .await;
    let text = find().await.expect("message text");
    text.rsplit(' ').next().expect("code at the end").to_string()
}

fn our_id(uuid: &str) -> String {
    format!("otp_{}", uuid.replace('-', ""))
}

#[sqlx::test]
async fn sms_cx_s_own_sdk_creates_reads_verifies_and_cancels_and_reads_their_error_codes(pool: PgPool) {
    let python = oracle_python();
    let api = Api::start(pool).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/smscx_sdk.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("{}/smscx", api.base))
        .arg(format!("{}.{}", api.key.0, api.key.1))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = None;
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the script answers within a minute")
    {
        let line: Value = serde_json::from_str(&line).expect("a JSON line");
        if let Some(uuid) = line["pin_for"].as_str() {
            let code = code_delivered(&api, &our_id(uuid)).await;
            stdin.write_all(format!("{code}\n").as_bytes()).await.expect("write");
        } else if line.get("done").is_some() {
            seen = Some(line["done"].clone());
        }
    }
    let output = child.wait_with_output().await.expect("script ends");
    let seen = seen.unwrap_or_else(|| panic!("the script failed:\n{}", String::from_utf8_lossy(&output.stderr)));

    let created = &seen["created"];
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["trackId"], "bf325375-e030-fccb-a009-17317c574773");
    assert_eq!(created["phoneNumber"], "+33612246400");
    assert_eq!(created["countryIso"], "FR");
    assert_eq!(
        (
            created["parts"].as_i64(),
            created["maxAttempts"].as_i64(),
            created["attempts"].as_i64()
        ),
        (Some(1), Some(4), Some(0))
    );
    assert_eq!(
        (created["ttl"].as_i64(), created["lifetime"].as_i64()),
        (Some(180), Some(180))
    );
    assert_eq!(created["otpCallbackUrl"], "https://webhook/receive-otp-status-updates");
    assert_eq!(seen["read"]["otpId"], created["otpId"]);
    assert_eq!(seen["read"]["status"], "PENDING");
    assert_eq!(seen["wrong_pin"], json!([400, 2029, "invalid_pin"]));
    assert_eq!(seen["verified"], "VERIFIED");
    assert_eq!(seen["verified_again"], json!([400, 2023, "otp_verified"]));
    assert_eq!(seen["after_verify"], "VERIFIED");
    assert_eq!(seen["cancelled"], true);
    assert_eq!(seen["after_cancel"], "CANCELLED");
    assert_eq!(seen["cancelled_again"], json!([403, 2030, "access_denied"]));
    assert_eq!(seen["bad_ttl"], json!([400, 2008, "invalid_param"]));
    assert_eq!(seen["unknown"], json!([404, 2021, "not_found"]));
    assert_eq!(seen["bad_key"], json!([401, 401, "invalid_api_key"]));

    // The core holds what the SDK saw: two OTPs (the bad ttl made none), one verified.
    let statuses: Vec<(String, String)> = sqlx::query_as("select request_id, status from otps order by created_at")
        .fetch_all(&api.harness.pool)
        .await
        .expect("otps");
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert_eq!(
        statuses[0],
        (
            "bf325375-e030-fccb-a009-17317c574773".to_string(),
            "verified".to_string()
        )
    );
    assert_eq!(statuses[1].1, "cancelled");
    api.finish().await;
}

#[sqlx::test]
async fn the_generic_api_s_paths_and_field_names_reach_the_same_core(pool: PgPool) {
    let api = Api::start(pool).await;
    let (status, sent) = api
        .post(
            "/otp/send",
            json!({"appid": "shop", "recipient": "+14155550199", "template": "Your code is {{pin}}"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let id = sent["otpId"].as_str().expect("otpId").to_string();
    let code = code_delivered(&api, &id).await;

    let (status, shown) = api.get(&format!("/otp/status?verification_id={id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["phoneNumber"], "+14155550199", "{shown}");
    let (status, wrong) = api
        .post("/otp/verify", json!({"verification_id": id, "otp_code": "000000x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong}");
    let (status, verified) = api
        .post("/otp/verify", json!({"verification_id": id, "otp_code": code}))
        .await;
    assert_eq!(
        (status, verified["status"].as_str()),
        (StatusCode::OK, Some("verified"))
    );
    let (status, _) = api.post("/otp/resend", json!({"verification_id": id})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a verified OTP is not resent");

    let (status, page) = api.get("/otp/list?recipient=%2B14155550199").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (_, attempts) = api.get(&format!("/otp/attempts?verification_id={id}")).await;
    assert_eq!(
        attempts["verifications"].as_array().map(Vec::len),
        Some(2),
        "{attempts}"
    );
    let (_, log) = api.get("/otp/logs?type=verifications").await;
    let kinds: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(kinds, ["otp.verified", "otp.verification_failed"], "newest first");
    let (status, limits) = api.get("/otp/rate-limits").await;
    assert!(
        status == StatusCode::OK && limits.as_array().is_some_and(|l| !l.is_empty()),
        "{limits}"
    );
    let (status, report) = api.get("/otp/reports").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["byStatus"]["verified"], 1, "{report}");
    let (status, _) = api.get("/otp/status?verification_id=otp_nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.finish().await;
}

#[sqlx::test]
async fn the_activity_log_pages_newest_first_and_filters_by_type_phone_and_request(pool: PgPool) {
    let mut api = Api::start(pool).await;
    for (phone, request) in [("+14155550101", "a"), ("+14155550202", "b"), ("+14155550303", "c")] {
        api.send_delivered(json!({"phoneNumber": phone, "requestId": request}))
            .await;
    }
    let other = api.harness.create_app_with_key("other").await;

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api.get(&format!("/v1/logs?limit=1{cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for entry in page["items"].as_array().expect("items") {
            seen.push((
                entry["type"].as_str().map(str::to_string),
                entry["requestId"].as_str().map(str::to_string),
            ));
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let sent = |r: &str| (Some("otp.sent".to_string()), Some(r.to_string()));
    assert_eq!(
        seen,
        [sent("c"), sent("b"), sent("a")],
        "one page at a time, newest first"
    );

    let (_, page) = api.get("/v1/logs?phoneSuffix=0202").await;
    assert_eq!(page["items"][0]["requestId"], "b", "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let (_, page) = api.get("/v1/logs?requestId=a&type=sent").await;
    assert_eq!(page["items"][0]["phoneNumber"], "+14155550101", "{page}");
    assert_eq!(page["items"][0]["callback"], "none", "no callback URL, no callback");
    let (_, page) = api.get("/v1/logs?type=rejections").await;
    assert_eq!(page["items"], json!([]));
    let (status, problem) = api.get("/v1/logs?type=bogus").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    // Another app's log is its own.
    api.key = other;
    let (_, page) = api.get("/v1/logs").await;
    assert_eq!(page["items"], json!([]));
    api.harness.start_dispatcher();
    api.finish().await;
}

#[sqlx::test]
async fn the_xoxzo_calls_from_their_documentation_request_and_verify_a_code(pool: PgPool) {
    let api = Api::start(pool).await;
    let (sid, token) = api.key.clone();
    let call = |path: &str, form: bool, body: Value, auth: (&str, &str)| {
        let request = api
            .http
            .post(format!("{}/xoxzo{path}", api.base))
            .basic_auth(auth.0, Some(auth.1));
        let request = if form {
            let pairs: Vec<(String, String)> = body
                .as_object()
                .expect("object")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
                .collect();
            request.form(&pairs)
        } else {
            request.json(&body)
        };
        async move {
            let response = request.send().await.expect("request");
            (
                response.status(),
                response.json::<Value>().await.expect("a JSON answer"),
            )
        }
    };
    let auth = (sid.as_str(), token.as_str());
    let website = json!({"website": "https://example.com"});
    assert_eq!(
        call("/otp/register-website/", false, website.clone(), auth).await,
        (
            StatusCode::CREATED,
            json!({"message": "Website registered successfully."})
        )
    );
    assert_eq!(
        call("/otp/register-website/", false, website, auth).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"website": ["website info with this website already exists."]})
        )
    );

    // Their request as a form, as Xoxzo's SMS API takes parameters.
    let ask = json!({"website": "https://example.com", "phone_number": "+818012345678"});
    let (status, requested) = call("/otp/request/", true, ask.clone(), auth).await;
    assert_eq!(status, StatusCode::CREATED, "{requested}");
    let msgid = requested["msgid"].as_str().expect("msgid").to_string();
    let (status, again) = call("/otp/request/", true, ask, auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "one active OTP per number and website");
    assert_eq!(again["msgid"], msgid.as_str());
    let (status, other_site) = call(
        "/otp/request/",
        false,
        json!({"website": "https://elsewhere.example", "phone_number": "+818012345679"}),
        auth,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(other_site["website"].is_array(), "{other_site}");
    assert_eq!(
        call("/otp/request/", false, json!({"website": "https://example.com"}), auth).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"phone_number": ["This field is required."]})
        )
    );
    assert_eq!(
        call("/otp/request/", false, json!({}), ("ak_nobody", "wrong")).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"detail": "Invalid username/password."})
        )
    );

    // Two requests at once for one number, written two ways: one OTP, and both answers name it.
    let ask = |number: &str| json!({"website": "https://example.com", "phone_number": number});
    let ((first, a), (second, b)) = tokio::join!(
        call("/otp/request/", false, ask("+81 80 2222 3333"), auth),
        call("/otp/request/", false, ask("+818022223333"), auth)
    );
    let mut statuses = [first.as_u16(), second.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 400], "{a} {b}");
    assert_eq!(a["msgid"], b["msgid"], "both name the one OTP");
    // Once it has expired (the sweeper has not run yet), the number gets a new one.
    let active = a["msgid"].as_str().expect("msgid").to_string();
    sqlx::query("update otps set expires_at = now() - interval '1 second' where id = $1")
        .bind(uuid::Uuid::parse_str(&active[4..]).expect("uuid"))
        .execute(&api.harness.pool)
        .await
        .expect("expire it");
    let (status, renewed) = call("/otp/request/", false, ask("+818022223333"), auth).await;
    assert_eq!(status, StatusCode::CREATED, "{renewed}");
    assert_ne!(renewed["msgid"], active.as_str());

    // Verify as their tutorial does: JSON with otp_id and code.
    let code = code_delivered(&api, &msgid).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, refused) = call("/otp/verify/", false, json!({"otp_id": msgid, "code": wrong}), auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["code"], json!(["The code is not correct."]), "{refused}");
    assert_eq!(
        call("/otp/verify/", false, json!({"otp_id": msgid, "code": code}), auth).await,
        (StatusCode::OK, json!({"msgid": msgid, "status": "verified"}))
    );
    assert_eq!(
        call("/otp/verify/", false, json!({"otp_id": msgid, "code": code}), auth).await,
        (StatusCode::BAD_REQUEST, json!({"otp_id": ["The OTP is verified."]}))
    );
    api.finish().await;
}

#[sqlx::test]
async fn an_app_that_chose_sms_cx_callbacks_gets_signed_otp_updates(pool: PgPool) {
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let mut api = Api::start(pool).await;
    otp_courier::tenancy::apps::create(
        &api.harness.pool,
        &otp_courier::tenancy::apps::NewApp {
            id: "moved".into(),
            name: "moved from sms.cx".into(),
            templates: [(String::new(), "Code {{pin}}".to_string())].into(),
            callback_format: Some("smscx".into()),
            ..Default::default()
        },
    )
    .await
    .expect("app");
    let mut conn = api.harness.pool.acquire().await.expect("conn");
    let app = otp_courier::domain::AppId::parse("moved").expect("id");
    let key = otp_courier::tenancy::keys::issue(&mut conn, Some(&app))
        .await
        .expect("key");
    drop(conn);
    api.key = (key.key_id, key.secret);
    let secret = api.harness.webhook_secret("moved", None).await;
    api.harness.start_dispatcher();

    let url = format!("{}/otp-status", receiver.uri());
    let (status, created) = api
        .post(
            "/smscx/otp",
            json!({"phoneNumber": "+33612246400", "ttl": 120, "otpCallbackUrl": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let otp_id = created["otpId"].as_str().expect("otpId").to_string();
    let code = code_delivered(&api, &our_id(&otp_id)).await;
    let (status, verified) = api.post(&format!("/smscx/otp/{otp_id}"), json!({"pin": code})).await;
    assert_eq!((status, verified), (StatusCode::OK, json!({"status": "VERIFIED"})));

    let statuses = || async {
        let requests = receiver.received_requests().await.unwrap_or_default();
        let mut bodies = Vec::new();
        for request in &requests {
            standardwebhooks::Webhook::new(&secret)
                .expect("secret")
                .verify(&request.body, &request.headers)
                .expect("signed the Standard Webhooks way");
            bodies.push(serde_json::from_slice::<Value>(&request.body).expect("JSON"));
        }
        bodies
    };
    wait_until("the otp.verified callback", Duration::from_secs(20), || async {
        statuses().await.iter().any(|b| b["data"][0]["status"] == "VERIFIED")
    })
    .await;
    for body in statuses().await {
        assert_eq!(body["event"], "otp_update", "{body}");
        let data = &body["data"][0];
        assert_eq!(data["otpId"], otp_id.as_str());
        assert_eq!(
            (data["countryIso"].as_str(), data["ttl"].as_i64()),
            (Some("FR"), Some(120))
        );
        assert_eq!(data["otpCallbackUrl"], url.as_str());
        assert!(
            data["dateCreated"].is_string() && data["dateExpires"].is_string(),
            "{data}"
        );
        assert!(
            ["PENDING", "VERIFIED"].contains(&data["status"].as_str().unwrap_or_default()),
            "{data}"
        );
    }
    api.finish().await;
}
