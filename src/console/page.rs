//! The console's page frame (one stylesheet, no script, no inline style) and what every
//! page shares: how times and numbers are shown, forms read, failures answered.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::session::Operator;

/// The sections, in the header's order.
const SECTIONS: [(&str, &str); 7] = [
    ("/console/overview", "Overview"),
    ("/console/otps", "OTPs"),
    ("/console/activity", "Activity"),
    ("/console/failures", "Failures"),
    ("/console/dlq", "Dead letters"),
    ("/console/apps", "Apps"),
    ("/console/audit", "Audit log"),
];

/// A page without the signed-in header (the sign-in page).
pub fn bare(title: &str, body: Markup) -> Markup {
    frame(title, None, body)
}

fn frame(title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh { meta http-equiv="refresh" content=(seconds); }
                title { (title) " · otp-courier" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body { (body) }
        }
    }
}

/// A page for a signed-in operator: the header with the sections and sign-out.
pub fn page(title: &str, operator: &Operator, body: Markup) -> Markup {
    refreshing(title, operator, None, body)
}

/// A page that reloads itself every `refresh` seconds (while an action runs), scriptless.
pub fn refreshing(title: &str, operator: &Operator, refresh: Option<u32>, body: Markup) -> Markup {
    frame(
        title,
        refresh,
        html! {
            header {
                strong { "otp-courier" }
                nav { @for (href, name) in SECTIONS { a href=(href) { (name) } } }
                form method="post" action="/console/sign-out" {
                    input type="hidden" name="csrf" value=(operator.csrf());
                    span.muted { (operator.key_id) " " }
                    button type="submit" { "Sign out" }
                }
            }
            main { h1 { (title) } (body) }
        },
    )
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(operator: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf()); }
}

pub fn unavailable<E: std::fmt::Display>(error: E) -> Response {
    tracing::warn!(error = %error, "console: a page could not be served");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database or the broker is unavailable; try again shortly",
    )
        .into_response()
}

pub fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("no such {what}")).into_response()
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A time as an operator reads it: UTC, to the millisecond (a timeline's steps are close).
pub fn shown(at: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] UTC");
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// A phone number as the console shows it: its last four digits.
pub fn masked(last4: &str) -> String {
    format!("•••• {last4}")
}

/// A form or query value: trimmed, `None` when empty or longer than 128 bytes.
pub fn text(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
}

/// The fields of a url-encoded form body, repeated names kept (checkboxes).
pub fn fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().take(2000).collect()
}

/// The first value of `name` among `fields`, as [`text`] reads it.
pub fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    text(&fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

/// Free text as the console shows it (a dead letter's body, a provider's error, metadata):
/// every run of 7 or more digits, a phone number whatever its field and however it is
/// written (`+33 6 12 34 56 78`, `(415) 555-0123`), cut to its last four.
pub fn mask_numbers(text: &str) -> String {
    const SEPARATORS: [char; 5] = [' ', '-', '.', '(', ')'];
    let mut out = String::with_capacity(text.len());
    // The current run: its text (digits and the separators between them) and its digits.
    let (mut run, mut digits) = (String::new(), String::new());
    let flush = |run: &mut String, digits: &mut String, out: &mut String| {
        if digits.len() >= 7 {
            let kept = run.trim_end_matches(SEPARATORS);
            out.push_str("••••");
            out.push_str(&digits[digits.len() - 4..]);
            out.push_str(&run[kept.len()..]);
        } else {
            out.push_str(run);
        }
        run.clear();
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
            digits.push(c);
        } else if !run.is_empty() && SEPARATORS.contains(&c) {
            run.push(c);
        } else {
            flush(&mut run, &mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::mask_numbers;

    #[test]
    fn long_digit_runs_keep_their_last_four_and_short_ones_stay() {
        assert_eq!(
            mask_numbers(r#"{"phoneNumber":"+14155550123","ttl":300,"to":"0612345678"}"#),
            r#"{"phoneNumber":"+••••0123","ttl":300,"to":"••••5678"}"#
        );
        assert_eq!(mask_numbers("123456"), "123456");
        assert_eq!(mask_numbers("to +33 6 12 34 56 78, ok"), "to +••••5678, ok");
        assert_eq!(mask_numbers("call (415) 555-0123."), "call (••••0123.");
        assert_eq!(mask_numbers("ttl 300, 2 tries"), "ttl 300, 2 tries");
    }
}
