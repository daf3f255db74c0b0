//! The overview: for a window (1 h, 24 h, 7 d) and optionally one app, what was sent,
//! delivered and verified, why requests were rejected, how far callbacks and the
//! dead-letter queue are behind, and charts drawn as SVG on the server (no script).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use super::page::{page, text, unavailable};
use super::session::Operator;
use crate::api::AppState;
use crate::ops::dlq::Dlq;

#[derive(Debug, Deserialize)]
pub struct Params {
    window: Option<String>,
    app: Option<String>,
}

/// A window and the width of its chart's buckets.
fn window_of(name: Option<&str>) -> (&'static str, Duration, Duration) {
    match name {
        Some("1h") => ("1h", Duration::hours(1), Duration::minutes(1)),
        Some("7d") => ("7d", Duration::days(7), Duration::hours(2)),
        _ => ("24h", Duration::hours(24), Duration::minutes(15)),
    }
}

struct Bucket {
    at: OffsetDateTime,
    sends: i64,
    delivered: i64,
    verified: i64,
}

pub async fn show(State(state): State<AppState>, operator: Operator, Query(params): Query<Params>) -> Response {
    let (window, span, width) = window_of(params.window.as_deref());
    let app = text(&params.app);
    let start = OffsetDateTime::now_utc() - span;
    let pool = &state.pool;
    let totals = sqlx::query!(
        r#"select count(*) filter (where status <> 'rejected') as "sends!",
                  count(*) filter (where sent_at is not null) as "sent!",
                  count(*) filter (where delivery = 'delivered') as "delivered!",
                  count(*) filter (where delivery in ('failed', 'undelivered')) as "failed!",
                  count(verified_at) as "verified!",
                  percentile_cont(0.5) within group (order by extract(epoch from verified_at - created_at))
                      filter (where verified_at is not null) as median_verify_seconds
           from otps where created_at >= $1 and ($2::text is null or app_id = $2)"#,
        start,
        app
    )
    .fetch_one(pool)
    .await;
    let rejections = sqlx::query!(
        r#"select coalesce(rejection_reason, 'unknown') as "reason!", count(*) as "count!"
           from otps where status = 'rejected' and created_at >= $1 and ($2::text is null or app_id = $2)
           group by 1 order by 2 desc"#,
        start,
        app
    )
    .fetch_all(pool)
    .await;
    let backlog = sqlx::query!(
        r#"select count(*) as "pending!", extract(epoch from now() - min(created_at))::float8 as oldest_seconds
           from outbox where state = 'pending' and ($1::text is null or app_id = $1)"#,
        app
    )
    .fetch_one(pool)
    .await;
    // Each event in the bucket of its own time: a send when requested, a delivery when sent,
    // a verification when verified (an OTP lives at most 30 minutes, so rows created up to an
    // hour before the window hold every later event in it).
    let buckets = sqlx::query_as!(
        Bucket,
        r#"with w as (
               select created_at, sent_at, verified_at, status from otps
               where created_at >= $1::timestamptz - interval '1 hour' and ($2::text is null or app_id = $2)
           )
           select b as "at!", sum(s)::int8 as "sends!", sum(d)::int8 as "delivered!", sum(v)::int8 as "verified!" from (
               select date_bin($3, created_at, $1) as b, 1 as s, 0 as d, 0 as v from w
                   where created_at >= $1 and status <> 'rejected'
               union all select date_bin($3, sent_at, $1), 0, 1, 0 from w where sent_at >= $1
               union all select date_bin($3, verified_at, $1), 0, 0, 1 from w where verified_at >= $1
           ) events group by b order by b"#,
        start,
        app,
        sqlx::postgres::types::PgInterval::try_from(width).unwrap_or_default()
    )
    .fetch_all(pool)
    .await;
    let countries = sqlx::query!(
        r#"select coalesce(country, '??') as "country!", count(*) filter (where sent_at is not null) as "sent!",
                  count(verified_at) as "verified!"
           from otps where created_at >= $1 and ($2::text is null or app_id = $2)
           group by 1 having count(*) filter (where sent_at is not null) > 0 order by 2 desc limit 12"#,
        start,
        app
    )
    .fetch_all(pool)
    .await;
    let (totals, rejections, backlog, buckets, countries) = match (totals, rejections, backlog, buckets, countries) {
        (Ok(t), Ok(r), Ok(b), Ok(c), Ok(k)) => (t, r, b, c, k),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => return unavailable(e),
    };
    // A broker that does not answer shows as away rather than holding the page.
    let dlq_depth = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        Dlq::new(state.config.amqp.clone()).depth(),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let percent = |part: i64, whole: i64| {
        if whole == 0 {
            "—".to_string()
        } else {
            format!("{:.1} %", part as f64 * 100.0 / whole as f64)
        }
    };
    let per_minute = width.whole_seconds() as f64 / 60.0;
    let body = html! {
        form.filters method="get" action="/console/overview" {
            select name="window" {
                @for w in ["1h", "24h", "7d"] { option value=(w) selected[w == window] { (w) } }
            }
            input name="app" placeholder="every app" value=[app.as_deref()];
            button type="submit" { "Show" }
        }
        div.tiles {
            div.tile { span.muted { "sends" } b { (totals.sends) } }
            div.tile { span.muted { "sent to a provider" } b { (percent(totals.sent, totals.sends)) } }
            div.tile { span.muted { "delivered (receipts)" } b { (percent(totals.delivered, totals.sent)) } }
            div.tile { span.muted { "failed or undelivered" } b { (totals.failed) } }
            div.tile { span.muted { "verified / sent" } b { (percent(totals.verified, totals.sent)) } }
            div.tile { span.muted { "median time to verify" } b { (totals.median_verify_seconds.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "—".into())) } }
            div.tile { span.muted { "callback backlog" } b { (backlog.pending) }
                span.muted { (backlog.oldest_seconds.map(|s| format!("oldest {s:.0} s")).unwrap_or_else(|| "none waiting".into())) } }
            div.tile { span.muted { "dead letters" } b { (dlq_depth.map(|d| d.to_string()).unwrap_or_else(|| "broker away".into())) } }
        }
        h2 { "Per minute, " (window) }
        p.muted {
            span.legend-sends { "■ sends" } " " span.legend-delivered { "■ sent to a provider" } " " span.legend-verified { "■ verified" }
            " · buckets of " (width.whole_minutes()) " min"
        }
        (line_chart(&buckets, start, span, width, per_minute))
        h2 { "Conversion by country" }
        (country_chart(&countries.iter().map(|c| (c.country.clone(), c.sent, c.verified)).collect::<Vec<_>>()))
        h2 { "Rejections by reason" }
        table {
            thead { tr { th { "reason" } th { "requests" } } }
            tbody { @for r in &rejections { tr { td { (r.reason) } td { (r.count) } } } }
        }
        @if rejections.is_empty() { p.muted { "No rejection in this window." } }
    };
    page("Overview", &operator, body).into_response()
}

const W: f64 = 900.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

fn line_chart(buckets: &[Bucket], start: OffsetDateTime, span: Duration, width: Duration, per_minute: f64) -> Markup {
    let slots = (span.whole_seconds() / width.whole_seconds()).max(1) as usize;
    let mut series = [vec![0f64; slots + 1], vec![0f64; slots + 1], vec![0f64; slots + 1]];
    for b in buckets {
        let slot = ((b.at - start).whole_seconds() / width.whole_seconds()).clamp(0, slots as i64) as usize;
        series[0][slot] += b.sends as f64 / per_minute;
        series[1][slot] += b.delivered as f64 / per_minute;
        series[2][slot] += b.verified as f64 / per_minute;
    }
    let top = series.iter().flatten().copied().fold(0.0, f64::max).max(1.0);
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / slots as f64;
    let y = |v: f64| H - PAD + 10.0 - (H - PAD) * v / top;
    let points = |s: &Vec<f64>| {
        s.iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let label = |at: OffsetDateTime| super::page::shown(at).chars().take(16).collect::<String>();
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img" aria-label="sends, deliveries and verifications per minute" {
            line.axis x1=(PAD) y1=(y(0.0)) x2=(W - PAD) y2=(y(0.0)) {}
            line.axis x1=(PAD) y1=(y(top)) x2=(PAD) y2=(y(0.0)) {}
            text x="4" y=(y(top) + 4.0) { (format!("{top:.1}")) }
            text x="4" y=(y(0.0)) { "0" }
            text x=(PAD) y=(H - 6.0) { (label(start)) }
            text x=(W - PAD - 100.0) y=(H - 6.0) { (label(start + span)) }
            polyline.line-sends points=(points(&series[0])) {}
            polyline.line-delivered points=(points(&series[1])) {}
            polyline.line-verified points=(points(&series[2])) {}
        }
    }
}

/// Horizontal bars: verified / sent per country, the volume beside each.
fn country_chart(countries: &[(String, i64, i64)]) -> Markup {
    if countries.is_empty() {
        return html! { p.muted { "Nothing sent in this window." } };
    }
    let row = 22.0;
    let height = row * countries.len() as f64 + 10.0;
    let bar = W - 260.0;
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (height) } width=(W) height=(height) role="img" aria-label="conversion by country" {
            @for (i, (country, sent, verified)) in countries.iter().enumerate() {
                @let ratio = *verified as f64 / (*sent).max(1) as f64;
                @let top = 5.0 + row * i as f64;
                text x="6" y=(top + 14.0) { (country) }
                rect.bar x="60" y=(top + 3.0) width=(format!("{:.1}", (bar * ratio).max(1.0))) height=(row - 8.0) {}
                text x=(bar + 70.0) y=(top + 14.0) { (format!("{:.1} %", ratio * 100.0)) " of " (sent) }
            }
        }
    }
}
