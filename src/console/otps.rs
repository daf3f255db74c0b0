//! The OTPs page (filters, keyset paging, numbers masked but for their last four digits)
//! and one OTP's timeline: the job, each provider request, each receipt, each
//! verification (its outcome, never a code) and each callback with its attempts.

use std::str::FromStr;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::page::{csrf_field, mask_numbers, masked, not_found, page, rfc3339, shown, text, unavailable};
use super::session::{Csrf, Operator};
use crate::api::AppState;
use crate::domain::OtpId;
use crate::ops::replay::{self, Audit, CallbackFilter, DeliveryFilter, Summary};
use crate::otp::lifecycle::{self, Cancel};

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    app: Option<String>,
    status: Option<String>,
    delivery: Option<String>,
    channel: Option<String>,
    /// ISO 3166-1 code of the number's country.
    country: Option<String>,
    /// The last digits of the number (up to 8).
    phone: Option<String>,
    request: Option<String>,
    /// Created at or after (RFC 3339, or a browser's `datetime-local` read as UTC).
    since: Option<String>,
    /// Created before.
    until: Option<String>,
    /// Keyset cursor: the last row of the page before (`<rfc3339>_<uuid>`).
    before: Option<String>,
}

/// A time from a filter: RFC 3339, or `2026-12-02T17:10` (an `<input type=datetime-local>`) as UTC.
pub fn moment(value: &Option<String>) -> Option<OffsetDateTime> {
    let value = text(value)?;
    OffsetDateTime::parse(&value, &Rfc3339).ok().or_else(|| {
        let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
        time::PrimitiveDateTime::parse(&value, &format)
            .ok()
            .map(|t| t.assume_utc())
    })
}

struct Row {
    id: Uuid,
    app_id: String,
    request_id: String,
    last4: Option<String>,
    country: Option<String>,
    channel: String,
    status: String,
    delivery: String,
    created_at: OffsetDateTime,
}

pub async fn list(State(state): State<AppState>, operator: Operator, Query(filter): Query<Filter>) -> Response {
    // Read backwards, the last digits are a prefix of the reversed number, which an index serves.
    let reversed_suffix = text(&filter.phone)
        .filter(|p| p.len() <= 8 && p.bytes().all(|b| b.is_ascii_digit()))
        .map(|p| p.chars().rev().collect::<String>());
    let cursor = text(&filter.before).and_then(|c| {
        let (at, id) = c.split_once('_')?;
        Some((OffsetDateTime::parse(at, &Rfc3339).ok()?, Uuid::parse_str(id).ok()?))
    });
    // Planned for the filters given: a generic plan cannot use the suffix index for a
    // parameter, and reads every unset filter as selective.
    let mut tx = match state.pool.begin().await {
        Ok(tx) => tx,
        Err(error) => return unavailable(error),
    };
    if let Err(error) = sqlx::query!("set local plan_cache_mode = force_custom_plan")
        .execute(&mut *tx)
        .await
    {
        return unavailable(error);
    }
    let rows = sqlx::query_as!(
        Row,
        r#"select id, app_id, request_id, right(phone_number, 4) as last4, country, channel, status, delivery, created_at
           from otps
           where ($1::text is null or app_id = $1) and ($2::text is null or status = $2)
             and ($3::text is null or delivery = $3) and ($4::text is null or channel = $4)
             and ($5::text is null or (reverse(phone_number) ~>=~ $5 and reverse(phone_number) ~<~ ($5 || '~')))
             and ($6::text is null or request_id = $6)
             and ($7::timestamptz is null or (created_at, id) < ($7, $8))
             and ($10::text is null or country = $10)
             and ($11::timestamptz is null or created_at >= $11) and ($12::timestamptz is null or created_at < $12)
           -- With last digits given, the few numbers that end in them are found through the
           -- suffix index and sorted; ordering by an expression (equal to created_at) keeps the
           -- planner from walking otps_created backwards through the whole table instead,
           -- which its estimate for a common ending (0000) would choose. Planned per request
           -- (see above), the CASE folds to plain created_at when no digits are given.
           order by case when $5::text is null then created_at else created_at + interval '0 seconds' end desc,
                    id desc
           limit $9"#,
        text(&filter.app),
        text(&filter.status),
        text(&filter.delivery),
        text(&filter.channel),
        reversed_suffix,
        text(&filter.request),
        cursor.map(|c| c.0),
        cursor.map(|c| c.1),
        PAGE + 1,
        text(&filter.country).map(|c| c.to_ascii_uppercase()),
        moment(&filter.since),
        moment(&filter.until),
    )
    .fetch_all(&mut *tx)
    .await;
    drop(tx);
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(error) => return unavailable(error),
    };
    let more = rows.len() > PAGE as usize;
    rows.truncate(PAGE as usize);
    let next = rows.last().filter(|_| more).map(|last| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("app", &filter.app),
            ("status", &filter.status),
            ("delivery", &filter.delivery),
            ("channel", &filter.channel),
            ("country", &filter.country),
            ("phone", &filter.phone),
            ("request", &filter.request),
            ("since", &filter.since),
            ("until", &filter.until),
        ] {
            if let Some(value) = text(value) {
                query.append_pair(key, &value);
            }
        }
        query.append_pair("before", &format!("{}_{}", rfc3339(last.created_at), last.id));
        format!("/console/otps?{}", query.finish())
    });
    let field = |name: &str, label: &str, value: &Option<String>| {
        html! { input name=(name) placeholder=(label) value=[text(value)]; }
    };
    let body = html! {
        form.filters method="get" action="/console/otps" {
            (field("app", "app", &filter.app))
            (field("status", "status", &filter.status))
            (field("delivery", "delivery", &filter.delivery))
            (field("channel", "channel", &filter.channel))
            (field("country", "country (FR)", &filter.country))
            (field("phone", "last digits", &filter.phone))
            (field("request", "request id", &filter.request))
            label.muted { "from " input type="datetime-local" name="since" value=[text(&filter.since)]; }
            label.muted { "to " input type="datetime-local" name="until" value=[text(&filter.until)]; }
            button type="submit" { "Filter" }
        }
        table {
            thead { tr { th { "created" } th { "app" } th { "number" } th { "country" } th { "channel" } th { "status" } th { "delivery" } th { "request id" } } }
            tbody {
                @for row in &rows {
                    tr {
                        td.nowrap { a href={ "/console/otps/" (OtpId::from_uuid(row.id)) } { (shown(row.created_at)) } }
                        td { (row.app_id) }
                        td.nowrap { (masked(row.last4.as_deref().unwrap_or(""))) }
                        td { (row.country.as_deref().unwrap_or("")) }
                        td { (row.channel) }
                        td class={ "status-" (row.status) } { (row.status) }
                        td class={ "status-" (row.delivery) } { (row.delivery) }
                        td { (row.request_id) }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No OTP matches." } }
        @if let Some(next) = next { p { a href=(next) { "Older →" } } }
    };
    page("OTPs", &operator, body).into_response()
}

/// One line of a timeline.
struct Entry {
    at: OffsetDateTime,
    what: String,
    detail: Markup,
}

pub async fn timeline(State(state): State<AppState>, operator: Operator, Path(id): Path<String>) -> Response {
    let Ok(otp_id) = OtpId::from_str(&id) else {
        return not_found("OTP");
    };
    match entries(&state, &operator, otp_id).await {
        Ok(Some((header, actions, entries))) => {
            let body = html! {
                (header)
                div.actions { (actions) }
                table.timeline {
                    thead { tr { th { "when" } th { "what" } th { "detail" } } }
                    tbody {
                        @for entry in &entries {
                            tr { td.nowrap { (shown(entry.at)) } td { (entry.what) } td { (entry.detail) } }
                        }
                    }
                }
            };
            page(&format!("OTP {otp_id}"), &operator, body).into_response()
        }
        Ok(None) => not_found("OTP"),
        Err(error) => unavailable(error),
    }
}

/// A button posting to one of this OTP's actions, with hidden fields.
fn action(operator: &Operator, otp_id: OtpId, path: &str, hidden: &[(&str, &str)], label: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/console/otps/" (otp_id) "/" (path) } {
            (csrf_field(operator))
            @for (name, value) in hidden { input type="hidden" name=(name) value=(value); }
            button type="submit" { (label) }
        }
    }
}

async fn entries(
    state: &AppState,
    operator: &Operator,
    otp_id: OtpId,
) -> sqlx::Result<Option<(Markup, Markup, Vec<Entry>)>> {
    let id = otp_id.as_uuid();
    let Some(otp) = sqlx::query!(
        r#"select app_id, request_id, right(phone_number, 4) as last4, country, channel, provider, status, delivery,
                  locale, created_at, expires_at, metadata, sent_at
           from otps where id = $1"#,
        id
    )
    .fetch_optional(&state.pool)
    .await?
    else {
        return Ok(None);
    };
    let header = html! {
        table {
            tr { th { "app" } td { (otp.app_id) } th { "request id" } td { (otp.request_id) } }
            tr { th { "number" } td { (masked(otp.last4.as_deref().unwrap_or(""))) " " (otp.country.as_deref().unwrap_or("")) }
                 th { "channel" } td { (otp.channel) " via " (otp.provider) } }
            tr { th { "status" } td class={ "status-" (otp.status) } { (otp.status) } th { "delivery" } td class={ "status-" (otp.delivery) } { (otp.delivery) } }
            tr { th { "locale" } td { (otp.locale) } th { "expires" } td { (shown(otp.expires_at)) } }
            tr { th { "metadata" } td colspan="3" { code { (mask_numbers(&otp.metadata.map(|m| m.to_string()).unwrap_or_default())) } } }
        }
    };
    // What replay would take: a failed OTP, or one that expired before any send succeeded.
    let replayable = otp.status == "failed"
        || (otp.status == "expired" && otp.sent_at.is_none() && ["queued", "failed"].contains(&otp.delivery.as_str()));
    let actions = html! {
        @if replayable {
            (action(operator, otp_id, "replay-delivery", &[("status", otp.status.as_str())], "Replay delivery"))
        }
        @if otp.status == "pending" { (action(operator, otp_id, "cancel", &[], "Cancel this OTP")) }
    };
    let mut entries = vec![Entry {
        at: otp.created_at,
        what: "job received".into(),
        detail: html! {},
    }];
    for a in sqlx::query!(
        "select started_at, provider, outcome, http_status, latency_ms, error, message_id, provider_code, receipt_status
         from delivery_attempts where otp_id = $1 order by id",
        id
    )
    .fetch_all(&state.pool)
    .await?
    {
        entries.push(Entry {
            at: a.started_at,
            what: format!("provider request: {}", a.outcome),
            detail: html! {
                (a.provider) " · " (a.latency_ms) " ms"
                @if let Some(status) = a.http_status { " · HTTP " (status) }
                @if let Some(code) = a.provider_code { " · code " (code) }
                @if let Some(message) = a.message_id { " · message " code { (message) } }
                @if let Some(receipt) = a.receipt_status { " · receipts: " (receipt) }
                @if let Some(error) = a.error { br; span.muted { (mask_numbers(&error)) } }
            },
        });
    }
    for r in sqlx::query!(
        "select received_at, provider, status, provider_status, provider_code from delivery_receipts
         where otp_id = $1 order by id",
        id
    )
    .fetch_all(&state.pool)
    .await?
    {
        entries.push(Entry {
            at: r.received_at,
            what: format!("receipt: {}", r.status),
            detail: html! { (r.provider) " said " (r.provider_status) @if let Some(code) = r.provider_code { " · code " (code) } },
        });
    }
    for v in sqlx::query!(
        "select at, outcome from verification_attempts where otp_id = $1 order by id",
        id
    )
    .fetch_all(&state.pool)
    .await?
    {
        entries.push(Entry {
            at: v.at,
            what: format!("verification: {}", v.outcome),
            detail: html! {},
        });
    }
    for e in sqlx::query!(
        r#"select o.id, o.event_type, o.created_at, o.state, o.callback_url,
                  coalesce(json_agg(json_build_object('attempt', a.attempt, 'status', a.http_status,
                                                      'latency', a.latency_ms, 'error', a.error) order by a.attempt)
                           filter (where a.id is not null), '[]') as "attempts!"
           from outbox o left join callback_attempts a on a.event_id = o.id
           where o.otp_id = $1 group by o.id order by o.seq"#,
        id
    )
    .fetch_all(&state.pool)
    .await?
    {
        let attempts = e.attempts.as_array().cloned().unwrap_or_default();
        entries.push(Entry {
            at: e.created_at,
            what: format!("event {}", e.event_type),
            detail: html! {
                @if e.callback_url.is_some() { "callback " (e.state) } @else { span.muted { "no callback URL" } }
                @if e.state == "dead" || e.state == "gone" {
                    " " (action(operator, otp_id, "replay-callback", &[("status", e.state.as_str()), ("event", e.event_type.as_str())], "Replay callback"))
                }
                @for a in &attempts {
                    br;
                    "attempt " (a["attempt"]) ": "
                    @if a["status"].is_null() { "no answer" } @else { "HTTP " (a["status"]) }
                    " · " (a["latency"]) " ms"
                    @if let Some(error) = a["error"].as_str() { " · " span.muted { (mask_numbers(error)) } }
                }
            },
        });
    }
    entries.sort_by_key(|e| e.at);
    Ok(Some((header, actions, entries)))
}

pub async fn cancel(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<Csrf>,
) -> Response {
    let otp_id = match acted_on(&operator, &id, &form.csrf) {
        Ok(otp_id) => otp_id,
        Err(refused) => return *refused,
    };
    let audit = match Audit::begin(
        &state.pool,
        "cancel",
        &operator.actor(),
        json!({"otpId": otp_id.to_string()}),
        false,
    )
    .await
    {
        Ok(audit) => audit,
        Err(error) => return unavailable(error),
    };
    let outcome = match lifecycle::cancel(&state.pool, otp_id.as_uuid(), None).await {
        Ok(outcome) => outcome,
        Err(error) => return unavailable(error),
    };
    let changed = u64::from(outcome == Some(Cancel::Cancelled));
    let summary = Summary {
        dry_run: false,
        matched: u64::from(outcome.is_some()),
        replayed: changed,
        new_codes: 0,
    };
    if let Err(error) = audit.finish(&state.pool, &summary).await {
        return unavailable(error);
    }
    Redirect::to(&format!("/console/otps/{otp_id}")).into_response()
}

#[derive(Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
    status: Option<String>,
    event: Option<String>,
}

/// The OTP an action names, once the form's CSRF token is the session's.
fn acted_on(operator: &Operator, id: &str, csrf: &str) -> Result<OtpId, Box<Response>> {
    if let Some(refused) = operator.csrf_refusal(csrf) {
        return Err(Box::new(refused));
    }
    OtpId::from_str(id).map_err(|_| Box::new(not_found("OTP")))
}

/// A replay of one OTP from its timeline: the token and id checked, then back to the
/// timeline, or why the replay could not run.
async fn replay_one<Fut>(operator: &Operator, id: &str, csrf: &str, replay: impl FnOnce(OtpId) -> Fut) -> Response
where
    Fut: std::future::Future<Output = Result<Summary, replay::ReplayError>>,
{
    let otp_id = match acted_on(operator, id, csrf) {
        Ok(otp_id) => otp_id,
        Err(refused) => return *refused,
    };
    match replay(otp_id).await {
        Ok(_) => Redirect::to(&format!("/console/otps/{otp_id}")).into_response(),
        Err(replay::ReplayError::Invalid(invalid)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, invalid.to_string()).into_response()
        }
        Err(replay::ReplayError::Database(error)) => unavailable(error),
    }
}

/// Sends this failed (or never-sent expired) OTP again: same code within its TTL.
pub async fn replay_delivery(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<ReplayForm>,
) -> Response {
    let actor = operator.actor();
    replay_one(&operator, &id, &form.csrf, |otp_id| async move {
        let filter = DeliveryFilter {
            otp: Some(otp_id.to_string()),
            status: text(&form.status),
            ..DeliveryFilter::default()
        };
        replay::deliveries(&state.pool, &filter, &actor, &mut |_, _| {}).await
    })
    .await
}

/// Sends this OTP's dead (or gone) callbacks of one event type again, with their event ids.
pub async fn replay_callback(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<ReplayForm>,
) -> Response {
    let actor = operator.actor();
    replay_one(&operator, &id, &form.csrf, |otp_id| async move {
        let filter = CallbackFilter {
            otp: Some(otp_id.to_string()),
            status: text(&form.status),
            event: text(&form.event),
            ..CallbackFilter::default()
        };
        replay::callbacks(&state.pool, &filter, &actor, &mut |_, _| {}).await
    })
    .await
}
