//! The fraud guard's blocks on the failures page: each block in force, the counts it was
//! decided on, and a button to lift it (audited).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};

use super::page::{csrf_field, not_found, shown, unavailable};
use super::session::{Csrf, Operator};
use crate::api::AppState;
use crate::otp::fraud;

/// The blocks section, or why it cannot be read.
pub async fn blocks(state: &AppState, operator: &Operator) -> Result<Markup, sqlx::Error> {
    let blocks = fraud::list_blocks(&state.pool, false, None).await?;
    Ok(html! {
        h2 { "Fraud blocks" }
        p.muted { "Prefixes and countries whose codes went unused: every send to them is refused (fraud_suspected, rule conversion) until the block ends. Lift one that is wrong; its traffic is then counted afresh." }
        table {
            thead { tr { th { "scope" } th { "target" } th { "sends" } th { "verified" } th { "since" } th { "until" } th {} } }
            tbody {
                @for b in &blocks {
                    tr {
                        td { (b.scope.as_str()) } td { (b.target) } td { (b.sends) } td { (b.verified) }
                        td.nowrap { (shown(b.starts_at)) } td.nowrap { (shown(b.ends_at)) }
                        td {
                            form.inline method="post" action={ "/console/fraud-blocks/" (b.id.unwrap_or_default()) "/lift" } {
                                (csrf_field(operator))
                                button type="submit" { "Lift" }
                            }
                        }
                    }
                }
            }
        }
        @if blocks.is_empty() { p.muted { "No block in force." } }
    })
}

pub async fn lift(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<Csrf>,
) -> Response {
    if let Some(refused) = operator.csrf_refusal(&form.csrf) {
        return refused;
    }
    let Ok(id) = id.parse::<i64>() else {
        return not_found("block");
    };
    match fraud::lift(&state.pool, id, &operator.actor()).await {
        Ok(Some(_)) => Redirect::to("/console/failures").into_response(),
        Ok(None) => not_found("block in force"),
        Err(error) => unavailable(error),
    }
}
