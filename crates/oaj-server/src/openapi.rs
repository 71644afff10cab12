//! The OpenAPI document, generated from the handlers' annotations and the types they use.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "oaj",
        description = "Durable job manager for JSON-defined AI-agent workflows. Errors are JSON \
            {code, message, path}. Bodies are limited to 16 MiB (413 body_too_large) and pages \
            to 1000 items (422 limit_invalid). With a token configured, every route except \
            /v1/health requires Authorization: Bearer."
    ),
    paths(
        crate::health::health,
        crate::health::ready,
        crate::workflows::register,
        crate::workflows::list,
        crate::workflows::fetch,
        crate::workflows::versions,
        crate::workflows::fetch_version,
        crate::workflows::remove,
        crate::workflows::validate,
        crate::jobs::create,
        crate::jobs::list,
        crate::jobs::fetch,
        crate::jobs::remove,
        crate::jobs::result,
        crate::jobs::events,
        crate::jobs::steps,
        crate::jobs::attempts,
        crate::jobs_actions::cancel,
        crate::jobs_actions::pause,
        crate::jobs_actions::resume,
        crate::jobs_actions::retry,
        crate::jobs_actions::approve,
        crate::jobs_actions::reject,
        crate::batches::create,
        crate::batches::fetch,
        crate::batches::cancel,
        crate::workers::list,
        crate::events::stream,
        crate::metrics::serve,
        serve,
    ),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Returns the API's OpenAPI document.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Serves this document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
