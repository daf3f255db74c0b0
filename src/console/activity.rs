//! The activity log (`otp::activity`, the same as `GET /v1/logs`): every app's events across
//! its OTPs, newest first, with filters and where each callback stands. Numbers are masked.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::page::{masked, shown, text, unavailable};
use super::session::Operator;
use crate::api::AppState;
use crate::domain::OtpId;
use crate::otp::activity::{self, GROUPS};

const PAGE: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct Params {
    app: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    callback: Option<String>,
    phone: Option<String>,
    request: Option<String>,
    /// Keyset cursor: the sequence number of the last entry of the page before.
    before: Option<i64>,
}

pub async fn list(State(state): State<AppState>, operator: Operator, Query(params): Query<Params>) -> Response {
    let kind = text(&params.kind);
    // An unknown type or a phone filter that is not digits shows nothing rather than all.
    let types = kind.as_deref().map(|k| activity::event_types(k).unwrap_or_default());
    let phone = text(&params.phone).map(|p| p.chars().filter(char::is_ascii_digit).collect::<String>());
    let types = match &phone {
        Some(digits) if digits.is_empty() => Some(Vec::new()),
        _ => types,
    };
    let filter = activity::Filter {
        app: text(&params.app),
        types,
        callback: text(&params.callback),
        phone_suffix: phone.clone().filter(|p| !p.is_empty()),
        request_id: text(&params.request),
        before: params.before,
        limit: PAGE,
        ..Default::default()
    };
    let entries = match activity::page(&state.pool, &filter).await {
        Ok(entries) => entries,
        Err(error) => return unavailable(error),
    };
    let next = entries.last().filter(|_| entries.len() as i64 == PAGE).map(|last| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("app", &filter.app),
            ("type", &kind),
            ("callback", &filter.callback),
            ("phone", &phone),
            ("request", &filter.request_id),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.append_pair("before", &last.seq.to_string());
        query.finish()
    });
    let body = html! {
        form.filters method="get" action="/console/activity" {
            input name="app" placeholder="app" value=[filter.app.as_deref()];
            select name="type" {
                option value="" { "every event" }
                @for (group, _) in GROUPS {
                    option value=(group) selected[kind.as_deref() == Some(*group)] { (group) }
                }
            }
            select name="callback" {
                option value="" { "any callback" }
                @for state in ["pending", "delivered", "gone", "dead", "none"] {
                    option value=(state) selected[filter.callback.as_deref() == Some(state)] { (state) }
                }
            }
            input name="phone" placeholder="last digits" value=[phone.as_deref()];
            input name="request" placeholder="request id" value=[filter.request_id.as_deref()];
            button type="submit" { "Filter" }
        }
        table {
            thead { tr { th { "at" } th { "app" } th { "event" } th { "number" } th { "request id" } th { "callback" } } }
            tbody {
                @for e in &entries {
                    tr {
                        td.nowrap {
                            @match e.otp_id {
                                Some(id) => a href={ "/console/otps/" (OtpId::from_uuid(id)) } { (shown(e.created_at)) },
                                None => (shown(e.created_at)),
                            }
                        }
                        td { (e.app_id) }
                        td { (e.event_type) }
                        td.nowrap { (masked(last4(e.phone_number.as_deref()))) }
                        td { (e.request_id.as_deref().unwrap_or("")) }
                        td class={ "status-" (e.callback) } {
                            (e.callback)
                            @if e.callback_attempts > 0 {
                                span.muted { " · " (e.callback_attempts) @if e.callback_attempts == 1 { " try" } @else { " tries" } @if let Some(status) = e.callback_status { ", last " (status) } }
                            }
                        }
                    }
                }
            }
        }
        @if entries.is_empty() { p.muted { "No event matches." } }
        @if let Some(next) = next { p { a href={ "/console/activity?" (next) } { "Older →" } } }
    };
    super::page::page("Activity", &operator, body).into_response()
}

fn last4(phone: Option<&str>) -> &str {
    let phone = phone.unwrap_or("");
    &phone[phone.len().saturating_sub(4)..]
}
