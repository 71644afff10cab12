//! The oaj HTTP API: workflows, jobs, batches and workers under `/v1`, a Server-Sent Events
//! stream of job events, Prometheus metrics, and bearer-token access control.
//!
//! The server runs next to an [`Engine`] in the same process and shares its store, so events
//! committed by the engine reach the event stream without polling. Events written by other
//! processes on a shared database reach it only through replay from the store.
#![warn(missing_docs)]

mod auth;
mod batches;
pub mod error;
mod events;
mod extract;
mod health;
mod jobs;
mod jobs_actions;
mod jobs_dependencies;
mod metrics;
mod openapi;
mod workers;
mod workflows;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use oaj_engine::Engine;
use oaj_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

pub use openapi::openapi_document;

/// Largest request body accepted, in bytes; a larger one gets 413 `body_too_large`. It matches
/// the largest workflow document that validation accepts.
pub const BODY_BYTES_MAX: usize = oaj_core::validate::DOCUMENT_BYTES_MAX;

/// Largest page a list returns; a larger `limit` gets 422 `limit_invalid`.
pub const PAGE_LIMIT_MAX: u32 = 1000;

/// Settings of the API server.
#[derive(Clone, Default)]
pub struct ServerConfig {
    /// Bearer token every route except `/v1/health` requires; `None` leaves the API open.
    pub token: Option<String>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret, so only its presence is printed.
        f.debug_struct("ServerConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) shutdown: CancellationToken,
}

impl AppState {
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.engine.clock().now_ms()
    }
}

/// Builds the API's router over `engine`. `shutdown` ends open event streams when it fires,
/// so that a graceful shutdown does not wait for clients to hang up.
pub fn router(engine: Engine, config: ServerConfig, shutdown: CancellationToken) -> Router {
    let metrics = metrics::Metrics::start(engine.store().clone(), shutdown.clone());
    let state = AppState {
        engine,
        metrics,
        shutdown,
    };
    let protected = Router::new()
        .merge(workflows::routes())
        .merge(jobs::routes())
        .merge(jobs_actions::routes())
        .merge(jobs_dependencies::routes())
        .merge(batches::routes())
        .merge(workers::routes())
        .route("/v1/events", get(events::stream))
        .route("/v1/ready", get(health::ready))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics::serve))
        .route_layer(axum::middleware::from_fn_with_state(
            auth::Token::new(config.token),
            auth::require,
        ));
    Router::new()
        .route("/v1/health", get(health::health))
        .merge(protected)
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(RequestBodyLimitLayer::new(BODY_BYTES_MAX))
        // Outside the body limit, so that its 413 gets the JSON shape too.
        .layer(axum::middleware::map_response(error_shape_for_plain))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` fires, then stops accepting connections and
/// waits for requests in flight.
///
/// Errors when accepting connections fails for good.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(engine, config, shutdown.clone());
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Gives responses that middleware built without a body (such as the 413 of the body limit)
/// the API's JSON error shape.
async fn error_shape_for_plain(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        let message = format!("request body is larger than {BODY_BYTES_MAX} bytes");
        return error::ApiError::new(status, "body_too_large", message).into_response();
    }
    response
}
