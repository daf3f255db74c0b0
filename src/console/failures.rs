//! Failures: failed deliveries and dead or gone callbacks, grouped by app, error class and
//! destination, with bulk replay by filter: a dry run counts first, the confirmation runs
//! the replay in the background, and the audit log shows its progress.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::otps::moment;
use super::page::{csrf_field, field, fields, page, shown, unavailable};
use super::session::Operator;
use crate::api::AppState;
use crate::ops::replay::{self, CallbackFilter, DeliveryFilter, ReplayError, Summary};

pub async fn page_of(State(state): State<AppState>, operator: Operator) -> Response {
    let deliveries = sqlx::query!(
        r#"select app_id, status, coalesce(last_error->>'class', 'unknown') as "class!", provider,
                  count(*) as "count!", max(created_at) as "latest!"
           from otps
           where status = 'failed' or (status = 'expired' and sent_at is null and delivery in ('queued', 'failed'))
           group by 1, 2, 3, 4 order by 5 desc limit 100"#
    )
    .fetch_all(&state.pool)
    .await;
    let callbacks = sqlx::query!(
        r#"select app_id, state, event_type, destination, count(*) as "count!", max(created_at) as "latest!"
           from outbox where state in ('dead', 'gone')
           group by 1, 2, 3, 4 order by 5 desc limit 100"#
    )
    .fetch_all(&state.pool)
    .await;
    let (deliveries, callbacks) = match (deliveries, callbacks) {
        (Ok(d), Ok(c)) => (d, c),
        (Err(error), _) | (_, Err(error)) => return unavailable(error),
    };
    let body = html! {
        h2 { "Failed deliveries" }
        p.muted { "OTPs whose delivery failed, or that expired before any send succeeded. Replay sends them again: the same code within the TTL, a new code and TTL after it." }
        table {
            thead { tr { th { "app" } th { "status" } th { "error class" } th { "provider" } th { "OTPs" } th { "latest" } th {} } }
            tbody {
                @for g in &deliveries {
                    tr {
                        td { (g.app_id) } td { (g.status) } td { (g.class) } td { (g.provider) }
                        td { (g.count) } td.nowrap { (shown(g.latest)) }
                        td { (dry_run_button(&operator, "deliveries", &[("app", g.app_id.as_str()), ("status", g.status.as_str()),
                              ("error_class", if g.class == "unknown" { "" } else { g.class.as_str() }), ("provider", g.provider.as_str())])) }
                    }
                }
            }
        }
        @if deliveries.is_empty() { p.muted { "No failed delivery." } }
        (delivery_form(&operator))
        h2 { "Dead and gone callbacks" }
        p.muted { "Callbacks that ran out of retries (dead) or whose receiver answered 410 (gone). Replay sends them again with their original event ids." }
        table {
            thead { tr { th { "app" } th { "state" } th { "event" } th { "destination" } th { "events" } th { "latest" } th {} } }
            tbody {
                @for g in &callbacks {
                    tr {
                        td { (g.app_id) } td { (g.state) } td { (g.event_type) } td { (g.destination) }
                        td { (g.count) } td.nowrap { (shown(g.latest)) }
                        td { (dry_run_button(&operator, "callbacks", &[("app", g.app_id.as_str()), ("status", g.state.as_str()), ("event", g.event_type.as_str())])) }
                    }
                }
            }
        }
        @if callbacks.is_empty() { p.muted { "No dead or gone callback." } }
        (callback_form(&operator))
    };
    page("Failures", &operator, body).into_response()
}

fn dry_run_button(operator: &Operator, kind: &str, hidden: &[(&str, &str)]) -> Markup {
    html! {
        form.inline method="post" action={ "/console/failures/" (kind) } {
            (csrf_field(operator))
            @for (name, value) in hidden { @if !value.is_empty() { input type="hidden" name=(name) value=(value); } }
            button type="submit" { "Replay…" }
        }
    }
}

fn delivery_form(operator: &Operator) -> Markup {
    html! {
        form.filters method="post" action="/console/failures/deliveries" {
            (csrf_field(operator))
            strong { "Replay deliveries by filter" }
            input name="app" placeholder="app";
            select name="status" { option value="failed" { "failed" } option value="expired" { "expired, never sent" } }
            input name="error_class" placeholder="error class";
            input name="provider" placeholder="provider";
            label.muted { "from " input type="datetime-local" name="since"; }
            label.muted { "to " input type="datetime-local" name="until"; }
            input name="limit" placeholder="at most" inputmode="numeric";
            button type="submit" { "Count (dry run)" }
        }
    }
}

fn callback_form(operator: &Operator) -> Markup {
    html! {
        form.filters method="post" action="/console/failures/callbacks" {
            (csrf_field(operator))
            strong { "Replay callbacks by filter" }
            input name="app" placeholder="app";
            select name="status" { option value="dead" { "dead" } option value="gone" { "gone" } }
            input name="event" placeholder="event (otp.sent)";
            label.muted { "from " input type="datetime-local" name="since"; }
            label.muted { "to " input type="datetime-local" name="until"; }
            input name="limit" placeholder="at most" inputmode="numeric";
            button type="submit" { "Count (dry run)" }
        }
    }
}

/// The form's `limit`, or the text of its refusal.
fn limit_of(form: &[(String, String)]) -> Result<Option<i64>, String> {
    match field(form, "limit") {
        None => Ok(None),
        Some(n) => n
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("`limit`: `{n}` is not a count")),
    }
}

/// Whether this post confirms a counted replay (else it is the dry run).
fn confirmed(form: &[(String, String)]) -> bool {
    field(form, "confirm").as_deref() == Some("yes")
}

pub async fn deliveries(State(state): State<AppState>, operator: Operator, body: Bytes) -> Response {
    let form = fields(&body);
    if let Some(refused) = operator.csrf_refusal(&field(&form, "csrf").unwrap_or_default()) {
        return refused;
    }
    let limit = match limit_of(&form) {
        Ok(limit) => limit,
        Err(reason) => return (StatusCode::UNPROCESSABLE_ENTITY, reason).into_response(),
    };
    let filter = DeliveryFilter {
        app: field(&form, "app"),
        status: field(&form, "status"),
        since: moment(&field(&form, "since")),
        until: moment(&field(&form, "until")),
        provider: field(&form, "provider"),
        error_class: field(&form, "error_class"),
        otp: None,
        limit,
        dry_run: !confirmed(&form),
    };
    run(
        &state,
        &operator,
        &form,
        filter.dry_run,
        "deliveries",
        "OTPs",
        move |pool, actor| async move { replay::deliveries(&pool, &filter, &actor, &mut |_, _| {}).await },
    )
    .await
}

pub async fn callbacks(State(state): State<AppState>, operator: Operator, body: Bytes) -> Response {
    let form = fields(&body);
    if let Some(refused) = operator.csrf_refusal(&field(&form, "csrf").unwrap_or_default()) {
        return refused;
    }
    let limit = match limit_of(&form) {
        Ok(limit) => limit,
        Err(reason) => return (StatusCode::UNPROCESSABLE_ENTITY, reason).into_response(),
    };
    let filter = CallbackFilter {
        app: field(&form, "app"),
        status: field(&form, "status"),
        since: moment(&field(&form, "since")),
        until: moment(&field(&form, "until")),
        event: field(&form, "event"),
        otp: None,
        limit,
        dry_run: !confirmed(&form),
    };
    run(
        &state,
        &operator,
        &form,
        filter.dry_run,
        "callbacks",
        "callbacks",
        move |pool, actor| async move { replay::callbacks(&pool, &filter, &actor, &mut |_, _| {}).await },
    )
    .await
}

/// A dry run answers with the count and a confirmation form carrying the same filter; a
/// confirmed one starts in the background and leads to the audit log, which shows progress.
async fn run<F, Fut>(
    state: &AppState,
    operator: &Operator,
    form: &[(String, String)],
    dry_run: bool,
    kind: &str,
    noun: &str,
    replay: F,
) -> Response
where
    F: FnOnce(sqlx::PgPool, String) -> Fut,
    Fut: std::future::Future<Output = Result<Summary, ReplayError>> + Send + 'static,
{
    let work = replay(state.pool.clone(), operator.actor());
    if !dry_run {
        tokio::spawn(async move {
            if let Err(error) = work.await {
                tracing::warn!(error = %error, "console: a bulk replay stopped");
            }
        });
        return Redirect::to("/console/audit").into_response();
    }
    let summary = match work.await {
        Ok(summary) => summary,
        Err(ReplayError::Invalid(invalid)) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, invalid.to_string()).into_response()
        }
        Err(ReplayError::Database(error)) => return unavailable(error),
    };
    let body = html! {
        p.count { (summary.matched) " " (noun) " match this filter." }
        ul.muted {
            @for (name, value) in form { @if name != "csrf" && name != "confirm" && !value.trim().is_empty() { li { (name) ": " (value) } } }
        }
        @if summary.matched > 0 {
            form method="post" action={ "/console/failures/" (kind) } {
                (csrf_field(operator))
                @for (name, value) in form { @if name != "csrf" && name != "confirm" { input type="hidden" name=(name) value=(value); } }
                input type="hidden" name="confirm" value="yes";
                button type="submit" { "Replay " (summary.matched) " " (noun) }
            }
        }
        p { a href="/console/failures" { "← Back to failures" } }
    };
    page(&format!("Replay {kind}: dry run"), operator, body).into_response()
}
