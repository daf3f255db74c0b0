//! The audit log: every operator action (`operator_actions`), newest first, with the
//! counts of one still running; the page reloads itself while one runs.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::page::{refreshing, shown, unavailable};
use super::session::Operator;
use crate::api::AppState;

const PAGE: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct Params {
    /// Keyset cursor: the id of the last row of the page before.
    before: Option<i64>,
    actor: Option<String>,
}

pub async fn list(State(state): State<AppState>, operator: Operator, Query(params): Query<Params>) -> Response {
    let actor = super::page::text(&params.actor);
    let rows = sqlx::query!(
        r#"select id, action, actor, filters, dry_run, matched, changed, at, finished_at,
                  finished_at is null and at > now() - interval '1 hour' as "running!"
           from operator_actions
           where ($1::bigint is null or id < $1) and ($2::text is null or actor = $2)
           order by id desc limit $3"#,
        params.before,
        actor,
        PAGE
    )
    .fetch_all(&state.pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => return unavailable(error),
    };
    let running = rows.iter().any(|r| r.running);
    let body = html! {
        form.filters method="get" action="/console/audit" {
            input name="actor" placeholder="actor (console:ak_…)" value=[actor.as_deref()];
            button type="submit" { "Filter" }
        }
        table {
            thead { tr { th { "started" } th { "actor" } th { "action" } th { "filter" } th { "matched" } th { "changed" } th { "state" } } }
            tbody {
                @for r in &rows {
                    tr {
                        td.nowrap { (shown(r.at)) }
                        td { (r.actor) }
                        td { (r.action) @if r.dry_run { " " span.muted { "(dry run)" } } }
                        td.filters { (filters(&r.filters)) }
                        td { (r.matched) }
                        td { (r.changed) }
                        td.nowrap {
                            @match r.finished_at {
                                Some(at) => { "done " span.muted { (shown(at)) } }
                                None if r.running => { progress max=(r.matched.max(1)) value=(r.changed) {} " running" }
                                None => span.error { "cut short" },
                            }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No operator action yet." } }
        @if let Some(last) = rows.last().filter(|_| rows.len() as i64 == PAGE) {
            p { a href={ "/console/audit?before=" (last.id) @if let Some(actor) = &actor { "&actor=" (url::form_urlencoded::byte_serialize(actor.as_bytes()).collect::<String>()) } } { "Older →" } }
        }
    };
    refreshing("Audit log", &operator, running.then_some(2), body).into_response()
}

/// A filter as `name: value` pairs, the unset ones left out.
fn filters(value: &serde_json::Value) -> maud::Markup {
    let set: Vec<(String, String)> = value
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(name, v)| !v.is_null() && *name != "dryRun")
                .map(|(name, v)| {
                    (
                        name.clone(),
                        v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    html! {
        @for (name, v) in &set { span.muted { (name) ": " } code { (v) } " " }
        @if set.is_empty() { span.muted { "everything" } }
    }
}
