//! Workflow routes: register, list, get, list versions, validate, delete a version.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use oaj_core::validate::{workflow_parse_validate, Report};
use oaj_store::{WorkflowInserted, WorkflowRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", post(register).get(list))
        .route("/v1/workflows/validate", post(validate))
        .route("/v1/workflows/{id}", get(fetch))
        .route("/v1/workflows/{id}/versions", get(versions))
        .route(
            "/v1/workflows/{id}/versions/{version}",
            get(fetch_version).delete(remove),
        )
}

/// A stored workflow version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkflowOut {
    /// Workflow id.
    id: String,
    /// Semantic version.
    version: String,
    /// When this version was stored, in milliseconds since the Unix epoch.
    created_at: i64,
    /// The document as registered.
    document: Value,
}

impl WorkflowOut {
    fn from_record(record: WorkflowRecord) -> Result<WorkflowOut, ApiError> {
        let document = serde_json::from_str(&record.document).map_err(|error| {
            ApiError::internal(&format!(
                "stored workflow {} is not JSON: {error}",
                record.id
            ))
        })?;
        Ok(WorkflowOut {
            id: record.id,
            version: record.version,
            created_at: record.created_at,
            document,
        })
    }
}

/// The outcome of validating a document without storing it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidationOut {
    /// Whether the document has no error (warnings allowed).
    valid: bool,
    /// Every problem, each with a stable code and a JSON path.
    #[schema(value_type = Object)]
    report: Report,
}

/// Filters of the workflow list.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ListQuery {
    /// Only workflows whose `metadata.tags` contain this tag.
    tag: Option<String>,
    /// Only workflows whose `metadata.category` is this.
    category: Option<String>,
}

/// The version to fetch.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct VersionQuery {
    /// Exact version; the highest stored version when absent.
    version: Option<String>,
}

/// Validates a workflow document and stores it as a new version. Registering the same document
/// again returns 200; a different document under a stored id and version is 409.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body(content = Object, description = "A workflow document"),
    responses((status = 201, description = "New version stored", body = WorkflowOut),
        (status = 200, description = "The same document was stored already", body = WorkflowOut),
        (status = 409, description = "Same id and version, different document", body = ApiError),
        (status = 422, description = "Invalid document", body = ApiError)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<WorkflowOut>), ApiError> {
    let text = body_text(&body)?;
    let (workflow, inserted) = state.engine.workflow_register(text).await?;
    let record = state
        .store()
        .workflow_get(&workflow.id, Some(&workflow.version))
        .await?
        .ok_or_else(|| ApiError::internal(&"a registered workflow version is not stored"))?;
    let status = match inserted {
        WorkflowInserted::Inserted => StatusCode::CREATED,
        WorkflowInserted::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(WorkflowOut::from_record(record)?)))
}

/// Lists the highest version of every workflow, by id.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(ListQuery),
    responses((status = 200, description = "Highest versions", body = [WorkflowOut])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<WorkflowOut>>, ApiError> {
    let mut out = Vec::new();
    for record in state.store().workflow_list().await? {
        let workflow = WorkflowOut::from_record(record)?;
        if is_match(&workflow.document, &query) {
            out.push(workflow);
        }
    }
    Ok(Json(out))
}

fn is_match(document: &Value, query: &ListQuery) -> bool {
    let metadata = &document["metadata"];
    let tag_ok = query.tag.as_ref().is_none_or(|tag| {
        metadata["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|item| item.as_str() == Some(tag)))
    });
    let category_ok = query
        .category
        .as_ref()
        .is_none_or(|category| metadata["category"].as_str() == Some(category));
    tag_ok && category_ok
}

/// Fetches a workflow's highest version, or the version in `?version=`.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), VersionQuery),
    responses((status = 200, description = "The version", body = WorkflowOut),
        (status = 404, description = "No such workflow or version", body = ApiError)))]
pub(crate) async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<VersionQuery>,
) -> Result<Json<WorkflowOut>, ApiError> {
    workflow_fetch(&state, &id, query.version.as_deref()).await
}

/// Fetches one version of a workflow.
#[utoipa::path(get, path = "/v1/workflows/{id}/versions/{version}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"),
        ("version" = String, Path, description = "Semantic version")),
    responses((status = 200, description = "The version", body = WorkflowOut),
        (status = 404, description = "No such workflow or version", body = ApiError)))]
pub(crate) async fn fetch_version(
    State(state): State<AppState>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<WorkflowOut>, ApiError> {
    workflow_fetch(&state, &id, Some(&version)).await
}

async fn workflow_fetch(
    state: &AppState,
    id: &str,
    version: Option<&str>,
) -> Result<Json<WorkflowOut>, ApiError> {
    let record = state.store().workflow_get(id, version).await?;
    let record = record.ok_or_else(|| {
        let version = version.unwrap_or("latest");
        ApiError::new(
            StatusCode::NOT_FOUND,
            "workflow_not_found",
            format!("workflow {id} version {version} not found"),
        )
    })?;
    Ok(Json(WorkflowOut::from_record(record)?))
}

/// Lists every stored version of a workflow, highest first.
#[utoipa::path(get, path = "/v1/workflows/{id}/versions", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, description = "Versions, highest first", body = [WorkflowOut]),
        (status = 404, description = "No such workflow", body = ApiError)))]
pub(crate) async fn versions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<WorkflowOut>>, ApiError> {
    let records = state.store().workflow_versions(&id).await?;
    if records.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "workflow_not_found",
            format!("workflow {id} not found"),
        ));
    }
    let out = records.into_iter().map(WorkflowOut::from_record);
    Ok(Json(out.collect::<Result<_, _>>()?))
}

/// Deletes a workflow version that no stored job uses.
#[utoipa::path(delete, path = "/v1/workflows/{id}/versions/{version}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"),
        ("version" = String, Path, description = "Semantic version")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such version", body = ApiError),
        (status = 409, description = "A job uses the version", body = ApiError)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path((id, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store().workflow_delete(&id, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Validates a workflow document without storing it. An invalid document is still a 200: the
/// report is the answer.
#[utoipa::path(post, path = "/v1/workflows/validate", tag = "workflows",
    request_body(content = Object, description = "A workflow document"),
    responses((status = 200, description = "The validation report", body = ValidationOut)))]
pub(crate) async fn validate(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<ValidationOut>, ApiError> {
    let text = body_text(&body)?;
    let registry = state.engine.registry();
    let validation = workflow_parse_validate(text, &|name| registry.get(name).is_some());
    Ok(Json(ValidationOut {
        valid: validation.workflow.is_some(),
        report: validation.report,
    }))
}

fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "body_invalid",
            format!("request body is not UTF-8 text: {error}"),
        )
    })
}
