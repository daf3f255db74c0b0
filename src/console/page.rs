//! The console's page frame: one stylesheet, no script, no inline style.

use maud::{html, Markup, DOCTYPE};

use super::session::Operator;

/// A page without the signed-in header (the sign-in page).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · otp-courier" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body { (body) }
        }
    }
}

/// A page for a signed-in operator: the header with the sections and sign-out.
pub fn page(title: &str, operator: &Operator, body: Markup) -> Markup {
    bare(
        title,
        html! {
            header {
                strong { "otp-courier" }
                a href="/console/otps" { "OTPs" }
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
