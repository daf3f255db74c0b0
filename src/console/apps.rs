//! Apps: each app's routing, limits and key ids (never a secret), and the rotation of its
//! API key and webhook secret; a new secret is shown once, on the answer to the rotation.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::json;

use super::page::{csrf_field, field, fields, page, shown, unavailable};
use super::session::Operator;
use crate::api::AppState;
use crate::domain::AppId;
use crate::ops::replay::{Audit, Summary};
use crate::tenancy::keys;
use crate::tenancy::sealing::Sealer;

pub async fn list(State(state): State<AppState>, operator: Operator) -> Response {
    let apps = sqlx::query!(
        r#"select a.id, a.name, a.routing, a.default_ttl_seconds, a.default_locale, a.country_allowlist,
                  a.voice_country_allowlist, a.workflow, a.callback_url, a.broker_user, a.created_at,
                  coalesce((select array_agg(k.id order by k.created_at) from api_keys k
                            where k.app_id = a.id and (k.revoked_at is null or k.revoked_at > now())), '{}') as "keys!",
                  (select count(*) from webhook_secrets w
                   where w.app_id = a.id and (w.expires_at is null or w.expires_at > now())) as "secrets!"
           from apps a order by a.id"#
    )
    .fetch_all(&state.pool)
    .await;
    let apps = match apps {
        Ok(apps) => apps,
        Err(error) => return unavailable(error),
    };
    let limits = &state.config.limits;
    let body = html! {
        p.muted {
            "Limits (each app): sends " (rate(limits.send_per_app)) ", per number " (rate(limits.send_per_phone))
            ", per country " (rate(limits.send_per_country)) "; verifications " (rate(limits.verify_per_app))
            ". Secrets are never shown here; a rotation shows the new one once."
        }
        @for a in &apps {
            section.card {
                h2 { (a.id) " " span.muted { (a.name) } }
                table {
                    tr { th { "routing" } td { code { (a.routing.to_string()) } } }
                    tr { th { "workflow" } td { code { (a.workflow.as_ref().map(|w| w.to_string()).unwrap_or_else(|| "—".into())) } } }
                    tr { th { "default TTL, locale" } td { (a.default_ttl_seconds.map(|t| format!("{t} s")).unwrap_or_else(|| "service default".into())) ", " (a.default_locale) } }
                    tr { th { "countries" } td { (a.country_allowlist.as_ref().map(|c| c.join(" ")).unwrap_or_else(|| "any".into()))
                         " · voice: " (a.voice_country_allowlist.as_ref().map(|c| c.join(" ")).unwrap_or_else(|| "any".into())) } }
                    tr { th { "callback URL" } td { (a.callback_url.as_deref().unwrap_or("—")) } }
                    tr { th { "broker user" } td { (a.broker_user.as_deref().unwrap_or("—")) } }
                    tr { th { "API key ids" } td { @for k in &a.keys { code { (k) } " " } @if a.keys.is_empty() { span.muted { "none active" } } } }
                    tr { th { "webhook secrets" } td { (a.secrets) " signing" } }
                    tr { th { "created" } td { (shown(a.created_at)) } }
                }
                div.actions {
                    (rotate_form(&operator, &a.id, "key", "Rotate API key"))
                    (rotate_form(&operator, &a.id, "webhook-secret", "Rotate webhook secret"))
                }
            }
        }
        @if apps.is_empty() { p.muted { "No app yet: `otp-courier apps create`." } }
    };
    page("Apps", &operator, body).into_response()
}

fn rate(limit: crate::platform::config::Limit) -> String {
    format!("{} per {} s", limit.max, limit.window_seconds)
}

fn rotate_form(operator: &Operator, app: &str, what: &str, label: &str) -> maud::Markup {
    html! {
        form.inline method="post" action={ "/console/apps/" (app) "/rotate-" (what) } {
            (csrf_field(operator))
            label.muted { "old one works for " input.narrow name="grace_hours" value="24" inputmode="numeric"; " h " }
            button type="submit" { (label) }
        }
    }
}

/// Which secret a rotation renews.
#[derive(Debug, Clone, Copy)]
pub enum Rotated {
    Key,
    WebhookSecret,
}

pub async fn rotate_key(state: State<AppState>, operator: Operator, path: Path<String>, body: Bytes) -> Response {
    rotate(state, operator, path, body, Rotated::Key).await
}

pub async fn rotate_webhook_secret(
    state: State<AppState>,
    operator: Operator,
    path: Path<String>,
    body: Bytes,
) -> Response {
    rotate(state, operator, path, body, Rotated::WebhookSecret).await
}

async fn rotate(
    State(state): State<AppState>,
    operator: Operator,
    Path(app): Path<String>,
    body: Bytes,
    what: Rotated,
) -> Response {
    let form = fields(&body);
    if let Some(refused) = operator.csrf_refusal(&field(&form, "csrf").unwrap_or_default()) {
        return refused;
    }
    let Ok(app) = AppId::parse(&app) else {
        return super::page::not_found("app");
    };
    // Without a stated grace period the old secret keeps working for a day, as the form offers.
    let hours = match field(&form, "grace_hours")
        .unwrap_or_else(|| "24".into())
        .parse::<i64>()
    {
        Ok(hours) if (0..=720).contains(&hours) => hours,
        _ => return (StatusCode::UNPROCESSABLE_ENTITY, "the grace period is 0 to 720 hours").into_response(),
    };
    match sqlx::query_scalar!("select 1 as \"one!\" from apps where id = $1", app.as_str())
        .fetch_optional(&state.pool)
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => return super::page::not_found("app"),
        Err(error) => return unavailable(error),
    }
    let action = match what {
        Rotated::Key => "rotate-app-key",
        Rotated::WebhookSecret => "rotate-webhook-secret",
    };
    let audit = match Audit::begin(
        &state.pool,
        action,
        &operator.actor(),
        json!({"app": app.as_str(), "graceHours": hours}),
        false,
    )
    .await
    {
        Ok(audit) => audit,
        Err(error) => return unavailable(error),
    };
    let grace = Some(time::Duration::hours(hours));
    let issued = match what {
        Rotated::Key => keys::rotate(&state.pool, &app, grace)
            .await
            .map(|key| (Some(key.key_id), key.secret)),
        Rotated::WebhookSecret => {
            async {
                let mut tx = state.pool.begin().await?;
                let secret =
                    keys::rotate_webhook_secret(&mut tx, &Sealer::from_config(&state.config.secrets), &app, grace)
                        .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>((None, secret))
            }
            .await
        }
    };
    let (key_id, secret) = match issued {
        Ok(issued) => issued,
        Err(error) => return unavailable(error),
    };
    let done = Summary {
        dry_run: false,
        matched: 1,
        replayed: 1,
        new_codes: 0,
    };
    if let Err(error) = audit.finish(&state.pool, &done).await {
        return unavailable(error);
    }
    let body = html! {
        p { "Copy it now: it is shown once, and stored only "
            @match what { Rotated::Key => "as a digest.", Rotated::WebhookSecret => "sealed." } }
        table {
            @if let Some(key_id) = &key_id { tr { th { "key id" } td { code { (key_id) } } } }
            tr { th { "secret" } td { code.secret { (secret) } } }
        }
        p.muted { "The previous one works for " (hours) " h more." }
        p { a href="/console/apps" { "← Back to apps" } }
    };
    let title = match what {
        Rotated::Key => format!("New API key for {app}"),
        Rotated::WebhookSecret => format!("New webhook secret for {app}"),
    };
    page(&title, &operator, body).into_response()
}
