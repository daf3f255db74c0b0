//! Failures: failed deliveries and dead or gone callbacks, grouped by app, error class and
//! destination, with bulk replay by filter: a dry run counts first, the confirmation runs
//! the replay in the background, and the audit log shows its progress. The fraud guard's
//! blocks in force are listed last, each with a button to lift it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::otps::moment;
use super::page::{csrf_field, field, fields, page, rfc3339, shown, unavailable};
use super::session::Operator;
use crate::api::AppState;
use crate::ops::replay::{self, CallbackFilter, DeliveryFilter, ReplayError, Summary};

pub async fn page_of(State(state): State<AppState>, operator: Operator) -> Response {
    let deliveries = sqlx::query!(
        r#"select app_id, status, coalesce(last_error->>'class', 'none') as "class!", provider,
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
    let blocks = super::fraud::blocks(&state, &operator).await;
    let (deliveries, callbacks, blocks) = match (deliveries, callbacks, blocks) {
        (Ok(d), Ok(c), Ok(b)) => (d, c, b),
        (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => return unavailable(error),
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
                              ("error_class", g.class.as_str()), ("provider", g.provider.as_str())])) }
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
                        td { (dry_run_button(&operator, "callbacks", &[("app", g.app_id.as_str()), ("status", g.state.as_str()), ("event", g.event_type.as_str()),
                              ("destination", g.destination.as_str())])) }
                    }
                }
            }
        }
        @if callbacks.is_empty() { p.muted { "No dead or gone callback." } }
        (callback_form(&operator))
        (blocks)
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

/// A bulk-replay form: `kind`'s own fields between the app and the time range.
fn filter_form(operator: &Operator, kind: &str, statuses: &[(&str, &str)], own: &[(&str, &str)]) -> Markup {
    html! {
        form.filters method="post" action={ "/console/failures/" (kind) } {
            (csrf_field(operator))
            strong { "Replay " (kind) " by filter" }
            input name="app" placeholder="app";
            select name="status" { @for (value, label) in statuses { option value=(value) { (label) } } }
            @for (name, placeholder) in own { input name=(name) placeholder=(placeholder); }
            label.muted { "from " input type="datetime-local" name="since"; }
            label.muted { "to " input type="datetime-local" name="until"; }
            input name="limit" placeholder="at most" inputmode="numeric";
            button type="submit" { "Count (dry run)" }
        }
    }
}

fn delivery_form(operator: &Operator) -> Markup {
    filter_form(
        operator,
        "deliveries",
        &[("failed", "failed"), ("expired", "expired, never sent")],
        &[("error_class", "error class (none)"), ("provider", "provider")],
    )
}

fn callback_form(operator: &Operator) -> Markup {
    filter_form(
        operator,
        "callbacks",
        &[("dead", "dead"), ("gone", "gone")],
        &[("event", "event (otp.sent)"), ("destination", "destination host")],
    )
}

/// A form's filter, read strictly: a value too long, a time or a count that does not parse
/// is refused rather than dropped (a dropped condition would widen a bulk replay).
struct Strict<'a>(&'a [(String, String)]);

impl Strict<'_> {
    fn raw(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn text(&self, name: &str) -> Result<Option<String>, String> {
        match self.raw(name) {
            Some(v) if v.len() > 128 => Err(format!("`{name}` is longer than 128 characters")),
            v => Ok(v.map(str::to_string)),
        }
    }

    fn time(&self, name: &str) -> Result<Option<time::OffsetDateTime>, String> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => moment(&Some(v.to_string()))
                .map(Some)
                .ok_or_else(|| format!("`{name}`: `{v}` is not a time (2026-12-02T17:10 or RFC 3339)")),
        }
    }

    fn limit(&self) -> Result<Option<i64>, String> {
        match self.raw("limit") {
            None => Ok(None),
            Some(n) => n
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("`limit`: `{n}` is not a count")),
        }
    }
}

/// Whether this post confirms a counted replay (else it is the dry run).
fn confirmed(form: &[(String, String)]) -> bool {
    field(form, "confirm").as_deref() == Some("yes")
}

pub async fn deliveries(State(state): State<AppState>, operator: Operator, body: Bytes) -> Response {
    let build = |read: &Strict, dry_run| {
        Ok(DeliveryFilter {
            app: read.text("app")?,
            status: read.text("status")?,
            since: read.time("since")?,
            until: read.time("until")?,
            provider: read.text("provider")?,
            error_class: read.text("error_class")?,
            otp: None,
            limit: read.limit()?,
            dry_run,
        })
    };
    bulk(
        &state,
        &operator,
        &body,
        "deliveries",
        "OTPs",
        build,
        |pool, actor, filter| async move { replay::deliveries(&pool, &filter, &actor, &mut |_, _| {}).await },
    )
    .await
}

pub async fn callbacks(State(state): State<AppState>, operator: Operator, body: Bytes) -> Response {
    let build = |read: &Strict, dry_run| {
        Ok(CallbackFilter {
            app: read.text("app")?,
            status: read.text("status")?,
            since: read.time("since")?,
            until: read.time("until")?,
            event: read.text("event")?,
            otp: None,
            destination: read.text("destination")?,
            limit: read.limit()?,
            dry_run,
        })
    };
    bulk(
        &state,
        &operator,
        &body,
        "callbacks",
        "callbacks",
        build,
        |pool, actor, filter| async move { replay::callbacks(&pool, &filter, &actor, &mut |_, _| {}).await },
    )
    .await
}

/// A bulk replay's post: the CSRF token, then the filter `build` reads strictly, then [`run`].
async fn bulk<F, B, R, Fut>(
    state: &AppState,
    operator: &Operator,
    body: &[u8],
    kind: &str,
    noun: &str,
    build: B,
    replay: R,
) -> Response
where
    B: FnOnce(&Strict, bool) -> Result<F, String>,
    R: FnOnce(sqlx::PgPool, String, F) -> Fut,
    Fut: std::future::Future<Output = Result<Summary, ReplayError>> + Send + 'static,
{
    let form = fields(body);
    if let Some(refused) = operator.csrf_refusal(&field(&form, "csrf").unwrap_or_default()) {
        return refused;
    }
    let dry_run = !confirmed(&form);
    let filter = match build(&Strict(&form), dry_run) {
        Ok(filter) => filter,
        Err(reason) => return (StatusCode::UNPROCESSABLE_ENTITY, reason).into_response(),
    };
    run(state, operator, &form, dry_run, kind, noun, move |pool, actor| {
        replay(pool, actor, filter)
    })
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
    let until = field(form, "until");
    let work = replay(state.pool.clone(), operator.actor());
    if !dry_run {
        tokio::spawn(async move {
            if let Err(error) = work.await {
                tracing::warn!(error = %error, "console: a bulk replay stopped");
            }
        });
        return Redirect::to("/console/audit").into_response();
    }
    let counted_at = OffsetDateTime::now_utc();
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
                // The same filter, pinned to what was counted: nothing newer, no more than that.
                @for (name, value) in form {
                    @if !["csrf", "confirm", "limit", "until"].contains(&name.as_str()) { input type="hidden" name=(name) value=(value); }
                }
                input type="hidden" name="until" value=(until.unwrap_or_else(|| rfc3339(counted_at)));
                input type="hidden" name="limit" value=(summary.matched);
                input type="hidden" name="confirm" value="yes";
                button type="submit" { "Replay " (summary.matched) " " (noun) }
            }
        }
        p { a href="/console/failures" { "← Back to failures" } }
    };
    page(&format!("Replay {kind}: dry run"), operator, body).into_response()
}
