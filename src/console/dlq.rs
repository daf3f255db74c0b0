//! The dead-letter queue: the messages at its head with their rejection reason and detail;
//! requeue or purge the selected ones, or all matching a filter, after a dry-run count.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::page::{csrf_field, field, fields, mask_numbers, page, text, unavailable};
use super::session::Operator;
use crate::api::AppState;
use crate::ops::dlq::{Action, Dlq, DlqFilter};

/// Messages listed from the head of the queue.
const LISTED: usize = 200;

/// The most messages one console action takes (as over the HTTP API by default).
const ACTION_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct Params {
    app: Option<String>,
    reason: Option<String>,
}

pub async fn list(State(state): State<AppState>, operator: Operator, Query(params): Query<Params>) -> Response {
    let filter = DlqFilter {
        app: text(&params.app),
        reason: text(&params.reason),
        ..DlqFilter::default()
    };
    let letters = match Dlq::new(state.config.amqp.clone()).list(LISTED).await {
        Ok(letters) => letters,
        Err(error) => return unavailable(error),
    };
    let listed = letters.len();
    let shown: Vec<_> = letters.into_iter().filter(|l| filter.matches(l)).collect();
    let body = html! {
        form.filters method="get" action="/console/dlq" {
            input name="app" placeholder="app" value=[filter.app.as_deref()];
            input name="reason" placeholder="reason (unknown_app)" value=[filter.reason.as_deref()];
            button type="submit" { "Filter" }
        }
        p.muted { "The first " (listed) " messages of the queue, " (shown.len()) " matching. Listing leaves them in place." }
        form method="post" action="/console/dlq" {
            (csrf_field(&operator))
            @if let Some(app) = &filter.app { input type="hidden" name="app" value=(app); }
            @if let Some(reason) = &filter.reason { input type="hidden" name="reason" value=(reason); }
            table {
                thead { tr { th {} th { "#" } th { "reason" } th { "detail" } th { "app" } th { "rejected" } th { "body" } } }
                tbody {
                    @for l in &shown {
                        tr {
                            td { @if let Some(id) = &l.message_id { input type="checkbox" name="message_id" value=(id) aria-label="select"; } }
                            td { (l.position) }
                            td.error { (l.reason.as_deref().unwrap_or("")) }
                            td { (l.detail.as_deref().unwrap_or("")) }
                            td { (l.app_id.as_deref().unwrap_or("")) }
                            td.nowrap { (l.rejected_at.as_deref().unwrap_or("")) }
                            td { code.body { (mask_numbers(&l.body.chars().take(300).collect::<String>())) } }
                        }
                    }
                }
            }
            @if shown.is_empty() { p.muted { "No dead letter matches." } }
            div.actions {
                select name="action" { option value="requeue" { "Requeue" } option value="purge" { "Purge" } }
                select name="scope" { option value="selected" { "the selected messages" } option value="matching" { "every message matching the filter" } }
                button type="submit" { "Count (dry run)" }
            }
        }
    };
    page("Dead letters", &operator, body).into_response()
}

/// A dry run counts what the action would take; the confirmation carries the same choice.
pub async fn act(State(state): State<AppState>, operator: Operator, body: Bytes) -> Response {
    let form = fields(&body);
    if let Some(refused) = operator.csrf_refusal(&field(&form, "csrf").unwrap_or_default()) {
        return refused;
    }
    let selected: Vec<String> = form
        .iter()
        .filter(|(k, v)| k == "message_id" && !v.is_empty() && v.len() <= 255)
        .map(|(_, v)| v.clone())
        .collect();
    let purge = field(&form, "action").as_deref() == Some("purge");
    let scope_selected = field(&form, "scope").as_deref() != Some("matching");
    if scope_selected && selected.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "no message selected; tick some, or choose every message matching the filter",
        )
            .into_response();
    }
    let confirmed = field(&form, "confirm").as_deref() == Some("yes");
    // A pass runs within the request (the dry run) or beside it: at most ACTION_LIMIT
    // messages, and a confirmation takes no more than its dry run counted.
    let limit = match field(&form, "limit").map(|n| n.parse::<usize>()) {
        Some(Ok(n)) if (1..=ACTION_LIMIT).contains(&n) => n,
        Some(_) => return (StatusCode::UNPROCESSABLE_ENTITY, "`limit` is not a count of 1 to 1000").into_response(),
        None => ACTION_LIMIT,
    };
    let filter = DlqFilter {
        app: field(&form, "app"),
        reason: field(&form, "reason"),
        message_ids: if scope_selected { selected } else { Vec::new() },
        limit: Some(limit),
        dry_run: !confirmed,
    };
    let dlq = Dlq::new(state.config.amqp.clone());
    let (pool, actor) = (state.pool.clone(), operator.actor());
    let action = if purge { Action::Purge } else { Action::Requeue };
    let work = async move { dlq.act(&pool, &filter, &actor, action, &mut |_, _| {}).await };
    if confirmed {
        tokio::spawn(async move {
            if let Err(error) = work.await {
                tracing::warn!(error = %error, "console: a dead-letter action stopped");
            }
        });
        return Redirect::to("/console/audit").into_response();
    }
    let summary = match work.await {
        Ok(summary) => summary,
        Err(error) => return unavailable(error),
    };
    let verb = if purge { "Purge" } else { "Requeue" };
    let body = html! {
        p.count { (summary.matched) " dead letters match." }
        @if summary.matched as usize == ACTION_LIMIT { p.muted { "An action takes at most " (ACTION_LIMIT) " messages; run it again for the rest." } }
        @if summary.matched > 0 {
            form method="post" action="/console/dlq" {
                (csrf_field(&operator))
                @for (name, value) in &form { @if name != "csrf" && name != "limit" { input type="hidden" name=(name) value=(value); } }
                input type="hidden" name="limit" value=(summary.matched);
                input type="hidden" name="confirm" value="yes";
                button type="submit" { (verb) " " (summary.matched) " messages" }
            }
        }
        p { a href="/console/dlq" { "← Back to dead letters" } }
    };
    page(&format!("{verb} dead letters: dry run"), &operator, body).into_response()
}
