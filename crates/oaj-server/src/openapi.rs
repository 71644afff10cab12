//! The OpenAPI document, generated from the handlers' annotations and the types they use.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
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
        crate::jobs_dependencies::add,
        crate::jobs_dependencies::remove,
        crate::jobs_dependencies::dependents,
        crate::batches::create,
        crate::batches::fetch,
        crate::batches::cancel,
        crate::workers::list,
        crate::events::stream,
        crate::metrics::serve,
        serve,
    ),
    modifiers(&BearerToken, &CommonErrors),
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

/// Adds the error responses that middleware and extractors give on every route, so that each
/// operation lists every status it can return: 401 from the token check on every route but
/// `/v1/health`, and 400 and 413 on every route that reads a body.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if path != "/v1/health" {
                    error_add(operation, "401", "Missing or wrong bearer token");
                }
                if operation.request_body.is_some() {
                    error_add(
                        operation,
                        "400",
                        "The body is not valid JSON or has the wrong shape",
                    );
                    error_add(operation, "413", "The body is larger than 16 MiB");
                }
            }
        }
    }
}

fn error_add(operation: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
    let content = Content::new(Some(Ref::from_schema_name("ApiError")));
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    let responses = &mut operation.responses.responses;
    responses
        .entry(status.to_owned())
        .or_insert_with(|| response.into());
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
