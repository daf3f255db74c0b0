//! The ops console over HTTP: operator sign-in and its cookie, CSRF on every change, a
//! strict CSP, values rendered inert, masked numbers, the timeline and its cancel.

use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::{redirect, Client, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::api::Api;

/// A browser-like client that follows no redirect, so each answer can be looked at.
fn client() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in with `key`; returns the session cookie (`otp_console=…`), or the status.
async fn sign_in(api: &Api, key: &(String, String)) -> Result<String, StatusCode> {
    let answer = client()
        .post(format!("{}/console/sign-in", api.base))
        .form(&[("key_id", key.0.as_str()), ("secret", key.1.as_str())])
        .send()
        .await
        .expect("sign in");
    if answer.status() != StatusCode::SEE_OTHER {
        return Err(answer.status());
    }
    let cookie = answer
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    Ok(cookie.split(';').next().expect("name=value").to_string())
}

async fn get(api: &Api, path: &str, cookie: &str) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let answer = client()
        .get(format!("{}{path}", api.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    let (status, headers) = (answer.status(), answer.headers().clone());
    (status, answer.text().await.unwrap_or_default(), headers)
}

/// The CSRF token of the first form on a page.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("value").to_string()
}

async fn post(api: &Api, path: &str, cookie: &str, form: &[(&str, &str)]) -> (StatusCode, Option<String>) {
    let answer = client()
        .post(format!("{}{path}", api.base))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("post");
    let location = answer
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (answer.status(), location)
}

#[sqlx::test]
async fn an_operator_signs_in_sees_masked_numbers_and_signs_out_for_good(pool: PgPool) {
    let api = Api::start(pool).await;
    let operator = api.harness.operator_key().await;
    api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;

    // An app's own key cannot sign in; neither can a wrong secret.
    assert_eq!(sign_in(&api, &api.key).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(
        sign_in(&api, &(operator.0.clone(), "sk_wrong".into())).await,
        Err(StatusCode::UNAUTHORIZED)
    );
    let (status, _, _) = get(&api, "/console/otps", "otp_console=made-up").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "no page without a session");

    let cookie = sign_in(&api, &operator).await.expect("an operator signs in");
    let (status, page, headers) = get(&api, "/console/otps", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers
        .get(CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe"), "{csp}");
    assert!(page.contains("•••• 0123"), "the last four digits");
    assert!(!page.contains("4155550123"), "never the whole number");
    assert!(!page.contains("<script"), "no script at all");
    let (status, filtered, _) = get(&api, "/console/otps?phone=9999", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(filtered.contains("No OTP matches") && !filtered.contains("•••• 0123"));

    // Sign-out needs the session's CSRF token; after it the cookie opens nothing.
    let (status, _) = post(&api, "/console/sign-out", &cookie, &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location) = post(&api, "/console/sign-out", &cookie, &[("csrf", &csrf(&page))]).await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/console/sign-in"))
    );
    let (status, _, headers) = get(&api, "/console/otps", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(LOCATION).and_then(|v| v.to_str().ok()),
        Some("/console/sign-in")
    );

    // A session past its time opens nothing either.
    let cookie = sign_in(&api, &operator).await.expect("signed in again");
    assert_eq!(get(&api, "/console/otps", &cookie).await.0, StatusCode::OK);
    sqlx::query("update console_sessions set expires_at = now() - interval '1 second'")
        .execute(&api.harness.pool)
        .await
        .expect("expire the sessions");
    assert_eq!(get(&api, "/console/otps", &cookie).await.0, StatusCode::SEE_OTHER);
    api.finish().await;
}

#[sqlx::test]
async fn a_timeline_renders_hostile_values_inert_and_its_cancel_needs_the_csrf_token(pool: PgPool) {
    let api = Api::start(pool).await;
    let operator = api.harness.operator_key().await;
    let (otp_id, pin) = api
        .send_delivered(json!({
            "phoneNumber": "+14155550123",
            "requestId": "<script>alert(1)</script>",
            "metadata": {"note": "\"><img src=x onerror=alert(1)>"}
        }))
        .await;
    let cookie = sign_in(&api, &operator).await.expect("signed in");
    for path in ["/console/otps".to_string(), format!("/console/otps/{otp_id}")] {
        let (status, page, _) = get(&api, &path, &cookie).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!page.contains("<script>alert"), "{path}: a script tag rendered live");
        assert!(!page.contains("<img src=x"), "{path}: an img tag rendered live");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: shown as text"
        );
    }
    let (_, timeline, _) = get(&api, &format!("/console/otps/{otp_id}"), &cookie).await;
    assert!(timeline.contains("job received") && timeline.contains("provider request: accepted"));
    assert!(timeline.contains("event otp.sent"), "its callback events");
    assert!(!timeline.contains(&pin), "never the code");

    let cancel = format!("/console/otps/{otp_id}/cancel");
    let (status, _) = post(&api, &cancel, &cookie, &[("csrf", "")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(api.get(&format!("/v1/otp/{otp_id}")).await.1["status"], "pending");
    let (status, location) = post(&api, &cancel, &cookie, &[("csrf", &csrf(&timeline))]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, Some(format!("/console/otps/{otp_id}")));
    assert_eq!(api.get(&format!("/v1/otp/{otp_id}")).await.1["status"], "cancelled");
    let actor: String = sqlx::query_scalar("select actor from operator_actions where action = 'cancel'")
        .fetch_one(&api.harness.pool)
        .await
        .expect("the cancel is recorded");
    assert_eq!(actor, format!("console:{}", operator.0));
    api.finish().await;
}

#[sqlx::test]
async fn every_console_change_needs_the_csrf_token_and_a_rotated_secret_shows_once(pool: PgPool) {
    let api = Api::start(pool).await;
    let operator = api.harness.operator_key().await;
    let (otp_id, _) = api.send_delivered(json!({"phoneNumber": "+14155550123"})).await;
    let cookie = sign_in(&api, &operator).await.expect("signed in");
    let changes = [
        format!("/console/otps/{otp_id}/cancel"),
        format!("/console/otps/{otp_id}/replay-delivery"),
        format!("/console/otps/{otp_id}/replay-callback"),
        "/console/failures/deliveries".to_string(),
        "/console/failures/callbacks".to_string(),
        "/console/fraud-blocks/1/lift".to_string(),
        "/console/dlq".to_string(),
        "/console/apps/shop/rotate-key".to_string(),
        "/console/apps/shop/rotate-webhook-secret".to_string(),
        "/console/sign-out".to_string(),
    ];
    for path in &changes {
        for form in [vec![], vec![("csrf", "forged")]] {
            let (status, _) = post(&api, path, &cookie, &form).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {form:?}");
        }
    }
    let actions: i64 = sqlx::query_scalar("select count(*) from operator_actions")
        .fetch_one(&api.harness.pool)
        .await
        .expect("count");
    assert_eq!(actions, 0, "nothing ran without the token");
    assert_eq!(api.get(&format!("/v1/otp/{otp_id}")).await.1["status"], "pending");

    // A rotated API key is shown once, works, and the apps page never shows a secret.
    let (_, apps, _) = get(&api, "/console/apps", &cookie).await;
    assert!(apps.contains(&api.key.0), "the app's key id is listed");
    let answer = client()
        .post(format!("{}/console/apps/shop/rotate-key", api.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf(&apps).as_str()), ("grace_hours", "0")])
        .send()
        .await
        .expect("rotate");
    assert_eq!(answer.status(), StatusCode::OK);
    let shown = answer.text().await.expect("page");
    let secret = shown
        .split("<code class=\"secret\">sk_")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(|rest| format!("sk_{rest}"))
        .expect("the new secret is shown");
    let key_id = shown
        .split("<code>ak_")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(|rest| format!("ak_{rest}"))
        .expect("the new key id is shown");
    let status = client()
        .get(format!("{}/v1/otp/{otp_id}", api.base))
        .header("x-api-key", &key_id)
        .header("x-api-secret", &secret)
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(status, StatusCode::OK, "the new key works");
    let (_, apps, _) = get(&api, "/console/apps", &cookie).await;
    assert!(
        apps.contains(&key_id) && !apps.contains(&secret),
        "key id listed, secret never again"
    );
    assert!(
        !apps.contains(&api.key.0),
        "the old key, revoked without grace, is gone"
    );
    let actor: String = sqlx::query_scalar("select actor from operator_actions where action = 'rotate-app-key'")
        .fetch_one(&api.harness.pool)
        .await
        .expect("the rotation is recorded");
    assert_eq!(actor, format!("console:{}", operator.0));
    api.finish().await;
}

#[sqlx::test]
async fn the_activity_page_lists_every_app_s_events_masked_and_filtered(pool: PgPool) {
    let api = Api::start(pool).await;
    let operator = api.harness.operator_key().await;
    let (first, code) = api
        .send_delivered(json!({"phoneNumber": "+14155550123", "requestId": "signup-1"}))
        .await;
    api.send_delivered(json!({"phoneNumber": "+14155550456", "requestId": "signup-2"}))
        .await;
    let (status, _) = api.post("/v1/otp/verify", json!({"otpId": first, "code": code})).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = sign_in(&api, &operator).await.expect("signed in");

    let (status, page, _) = get(&api, "/console/activity", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let verified = page.find("otp.verified").expect("the verification is listed");
    let sent = page.find("otp.sent").expect("the sends are listed");
    assert!(verified < sent, "newest first");
    assert!(page.contains("•••• 0123") && page.contains("•••• 0456"));
    assert!(
        !page.contains("4155550123") && !page.contains("4155550456"),
        "never a whole number"
    );

    let (_, page, _) = get(&api, "/console/activity?type=verifications&phone=0123", &cookie).await;
    assert!(page.contains("otp.verified") && !page.contains("otp.sent"), "{page}");
    let (_, page, _) = get(&api, "/console/activity?request=signup-2", &cookie).await;
    assert!(page.contains("•••• 0456") && !page.contains("•••• 0123"));
    let (_, page, _) = get(&api, "/console/activity?type=bogus", &cookie).await;
    assert!(
        page.contains("No event matches"),
        "an unknown type shows nothing, not everything"
    );
    api.finish().await;
}

#[sqlx::test]
async fn the_failures_page_lists_fraud_blocks_in_force_and_lifts_one_with_the_csrf_token(pool: PgPool) {
    let api = Api::start(pool).await;
    let operator = api.harness.operator_key().await;
    let id: i64 = sqlx::query_scalar(
        "insert into fraud_blocks (rule, scope, target, sends, verified, ends_at)
         values ('conversion', 'prefix', '+2376500', 31, 1, now() + interval '12 hours') returning id",
    )
    .fetch_one(&api.harness.pool)
    .await
    .expect("block");
    sqlx::query(
        "insert into fraud_blocks (rule, scope, target, sends, verified, starts_at, ends_at)
         values ('conversion', 'country', 'CM', 400, 2, now() - interval '2 days', now() - interval '1 day')",
    )
    .execute(&api.harness.pool)
    .await
    .expect("an ended block");
    let cookie = sign_in(&api, &operator).await.expect("signed in");
    let (status, page, _) = get(&api, "/console/failures", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("+2376500") && page.contains(">31<"),
        "the block in force is listed"
    );
    assert!(!page.contains(">CM<"), "an ended block is not");
    let path = format!("/console/fraud-blocks/{id}/lift");
    let (status, _) = post(&api, &path, &cookie, &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location) = post(&api, &path, &cookie, &[("csrf", csrf(&page).as_str())]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/console/failures"));
    let lifted_by: Option<String> = sqlx::query_scalar("select lifted_by from fraud_blocks where id = $1")
        .bind(id)
        .fetch_one(&api.harness.pool)
        .await
        .expect("block");
    assert_eq!(lifted_by, Some(format!("console:{}", operator.0)));
    let (_, page, _) = get(&api, "/console/failures", &cookie).await;
    assert!(page.contains("No block in force."));
    let (status, _) = post(&api, &path, &cookie, &[("csrf", csrf(&page).as_str())]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a lifted block cannot be lifted again");
    api.finish().await;
}
