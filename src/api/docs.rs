//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::compat::generic;
use super::{error, health, logs, ops, otp, query, reports};

#[derive(OpenApi)]
#[openapi(
    info(title = "otp-courier", description = "One-time passwords by SMS and WhatsApp."),
    paths(
        otp::send, otp::verify, otp::resend, otp::cancel,
        query::status, query::list, query::events, query::attempts,
        reports::reports, reports::rate_limits, logs::logs, health::healthz, health::readyz,
        generic::send, generic::verify, generic::resend, generic::status, generic::attempts,
        generic::list, generic::activity, generic::rate_limits, generic::report,
        ops::replay_deliveries, ops::replay_callbacks, ops::dlq_list, ops::dlq_requeue, ops::dlq_purge,
    ),
    components(schemas(error::Problem)),
    modifiers(&Security),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
