//! Aggregates: counts by status, channel, locale, provider and day; verification conversion;
//! median time to verify; conversion per workflow step and channel. And the caller's usage against its rate limits.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::{AppState, QueryParams};
use crate::otp::ratelimit;
use crate::platform::config::Limit;
use crate::tenancy::keys::Caller;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ReportFilter {
    /// RFC 3339; default 30 days ago.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    since: Option<OffsetDateTime>,
    /// RFC 3339; default now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    until: Option<OffsetDateTime>,
    /// Operators only: one app.
    #[serde(alias = "appid")]
    app_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
    total: i64,
    by_status: BTreeMap<String, i64>,
    by_channel: BTreeMap<String, i64>,
    by_locale: BTreeMap<String, i64>,
    by_provider: BTreeMap<String, i64>,
    /// `YYYY-MM-DD` (UTC) → count.
    by_day: BTreeMap<String, i64>,
    /// Verified ÷ delivered to the provider; null when nothing was delivered.
    conversion_rate: Option<f64>,
    /// Median seconds from creation to verification; null when nothing was verified.
    median_seconds_to_verify: Option<f64>,
    /// OTPs with a channel workflow, by the step they stand at (or ended on) and its
    /// channel, with how many of them were verified there: conversion per step and channel.
    workflow_steps: Vec<StepReport>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    step: i16,
    channel: String,
    otps: i64,
    verified: i64,
}

/// Counts and conversion for the caller's OTPs (an operator's: all, or one app).
#[utoipa::path(get, path = "/v1/reports", params(ReportFilter),
    responses((status = 200, body = Report), (status = 422, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn reports(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(filter): QueryParams<ReportFilter>,
) -> Result<Json<Report>, ApiError> {
    let until = filter.until.unwrap_or_else(OffsetDateTime::now_utc);
    let since = filter.since.unwrap_or(until - time::Duration::days(30));
    if since > until {
        return Err(ApiError::Invalid {
            field: "since".into(),
            reason: "must not be after until".into(),
        });
    }
    let app = caller.scope(filter.app_id);
    // One scan: grouping sets give each breakdown; grouping() says which a row belongs to.
    let rows = sqlx::query!(
        r#"select grouping(status, channel, locale, provider, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')) as "set!",
                  status as "status?", channel as "channel?", locale as "locale?", provider as "provider?",
                  to_char(created_at at time zone 'UTC', 'YYYY-MM-DD') as day,
                  count(*) as "count!"
           from otps
           where ($1::text is null or app_id = $1) and created_at >= $2 and created_at < $3
           group by grouping sets ((status), (channel), (locale), (provider),
                                   (to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')))"#,
        app,
        since,
        until,
    )
    .fetch_all(&state.pool)
    .await?;
    let mut report = Report {
        since,
        until,
        total: 0,
        by_status: BTreeMap::new(),
        by_channel: BTreeMap::new(),
        by_locale: BTreeMap::new(),
        by_provider: BTreeMap::new(),
        by_day: BTreeMap::new(),
        conversion_rate: None,
        median_seconds_to_verify: None,
        workflow_steps: Vec::new(),
    };
    for row in rows {
        // grouping() sets a bit for every column NOT in the row's set (status is the high bit).
        let (map, key) = match row.set {
            0b01111 => (&mut report.by_status, row.status),
            0b10111 => (&mut report.by_channel, row.channel),
            0b11011 => (&mut report.by_locale, row.locale),
            0b11101 => (&mut report.by_provider, row.provider),
            _ => (&mut report.by_day, row.day),
        };
        map.insert(key.unwrap_or_default(), row.count);
    }
    report.total = report.by_status.values().sum();
    let outcome = sqlx::query!(
        r#"select count(*) filter (where delivery in ('sent', 'delivered') or verified_at is not null) as "delivered!",
                  count(*) filter (where status = 'verified') as "verified!",
                  percentile_cont(0.5) within group (order by extract(epoch from verified_at - created_at)) as median
           from otps
           where ($1::text is null or app_id = $1) and created_at >= $2 and created_at < $3"#,
        app,
        since,
        until,
    )
    .fetch_one(&state.pool)
    .await?;
    if outcome.delivered > 0 {
        report.conversion_rate = Some(outcome.verified as f64 / outcome.delivered as f64);
    }
    report.median_seconds_to_verify = outcome.median;
    report.workflow_steps = sqlx::query_as!(
        StepReport,
        r#"select workflow_step as "step!", channel, count(*) as "otps!",
                  count(*) filter (where status = 'verified') as "verified!"
           from otps
           where ($1::text is null or app_id = $1) and created_at >= $2 and created_at < $3
             and workflow_step is not null
           group by workflow_step, channel order by workflow_step, channel"#,
        app,
        since,
        until,
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(report))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitUsage {
    name: &'static str,
    limit: u32,
    window_seconds: u32,
    /// Hits left in the current window; null for limits counted per phone number or country.
    remaining: Option<u32>,
    #[serde(with = "time::serde::rfc3339::option")]
    reset: Option<OffsetDateTime>,
}

/// The caller's limits and, for the app-wide ones, its usage in the current window.
#[utoipa::path(get, path = "/v1/rate-limits",
    responses((status = 200, body = [LimitUsage]), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn rate_limits(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<LimitUsage>>, ApiError> {
    let limits = &state.config.limits;
    let app = caller.app_filter();
    let mut usage = Vec::new();
    let entries: [(&'static str, Limit, Option<String>); 4] = [
        ("send_per_phone", limits.send_per_phone, None),
        ("send_per_country", limits.send_per_country, None),
        ("send_per_app", limits.send_per_app, app.map(ratelimit::send_app_key)),
        (
            "verify_per_app",
            limits.verify_per_app,
            app.map(ratelimit::verify_app_key),
        ),
    ];
    for (name, limit, key) in entries {
        let now = match key {
            Some(key) => Some(state.counters.peek(&key, limit).await?),
            None => None,
        };
        usage.push(LimitUsage {
            name,
            limit: limit.max,
            window_seconds: limit.window_seconds,
            remaining: now.map(|d| d.remaining),
            reset: now.map(|d| d.reset),
        });
    }
    Ok(Json(usage))
}
