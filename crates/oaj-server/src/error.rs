//! The API's error shape, `{"code", "message", "path"}`, and its mapping from library errors.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oaj_core::validate::Report;
use oaj_engine::SubmitError;
use oaj_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error returned by the API, with a stable machine-readable code.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiError {
    /// HTTP status, not part of the body.
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable code, such as `job_not_found` or `body_invalid`.
    pub code: &'static str,
    /// The human-readable message: what went wrong and what to do.
    pub message: String,
    /// JSON pointer into the request to the value at fault, when one is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Every validation problem, for invalid workflows and inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub report: Option<Report>,
}

impl ApiError {
    /// Builds an error with no path.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            path: None,
            report: None,
        }
    }

    /// Sets the JSON pointer of the value at fault.
    pub fn at(mut self, path: impl Into<String>) -> ApiError {
        self.path = Some(path.into());
        self
    }

    /// A 400 for a query parameter that does not parse.
    pub fn query(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "query_invalid", message).at(format!("/{name}"))
    }

    /// A 404 for a job id that is not stored.
    pub fn job_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "job_not_found",
            format!("job {id} not found"),
        )
    }

    /// A generic 500 that reveals nothing; the cause is logged in the request span.
    pub fn internal(error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %error, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error: see the server log",
        )
    }

    fn report(status: StatusCode, code: &'static str, what: &str, report: Report) -> ApiError {
        let first = report.errors().next();
        let path = first.map(|problem| problem.path.clone());
        let message = match first {
            Some(problem) => format!("{what}: {} at {}", problem.message, problem.path),
            None => what.to_owned(),
        };
        ApiError {
            status,
            code,
            message,
            path,
            report: Some(report),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        use StatusCode as S;
        let (status, code) = match &error {
            StoreError::JobNotFound(_) => (S::NOT_FOUND, "job_not_found"),
            StoreError::WorkflowNotFound { .. } => (S::NOT_FOUND, "workflow_not_found"),
            StoreError::WorkflowExistsWithDifferentDocument { .. } => {
                (S::CONFLICT, "workflow_version_exists")
            }
            StoreError::WorkflowInUse { .. } => (S::CONFLICT, "workflow_in_use"),
            StoreError::WorkflowVersionInvalid { .. } => {
                (S::UNPROCESSABLE_ENTITY, "workflow_version_invalid")
            }
            StoreError::IdempotencyKeyReused { .. } => (S::CONFLICT, "idempotency_key_reused"),
            StoreError::JobStateConflict { .. } => (S::CONFLICT, "job_state_conflict"),
            StoreError::DependencyInvalid(_) => (S::UNPROCESSABLE_ENTITY, "dependency_invalid"),
            StoreError::DependencyCycle { .. } => (S::CONFLICT, "dependency_cycle"),
            StoreError::DependencyNotFound { .. } => (S::NOT_FOUND, "dependency_not_found"),
            StoreError::ApprovalNotWaiting { .. } => (S::CONFLICT, "approval_not_waiting"),
            StoreError::ApprovalStepAmbiguous { .. } => {
                (S::UNPROCESSABLE_ENTITY, "approval_step_ambiguous")
            }
            StoreError::Busy(_) => (S::SERVICE_UNAVAILABLE, "store_busy"),
            StoreError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "store_unavailable"),
            StoreError::Full(_) => (S::SERVICE_UNAVAILABLE, "store_full"),
            StoreError::TextInvalid(_) => (S::BAD_REQUEST, "text_invalid"),
            _ => return ApiError::internal(&error),
        };
        if status == S::SERVICE_UNAVAILABLE {
            // The request log records only the status, so this is the line with the cause.
            tracing::warn!(error = %error, "request failed: the store cannot serve it now");
        }
        ApiError::new(status, code, error.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> ApiError {
        use StatusCode as S;
        match error {
            SubmitError::WorkflowInvalid(report) => ApiError::report(
                S::UNPROCESSABLE_ENTITY,
                "workflow_invalid",
                "invalid workflow",
                report,
            ),
            SubmitError::InputInvalid(report) => ApiError::report(
                S::UNPROCESSABLE_ENTITY,
                "input_invalid",
                "invalid input",
                report,
            ),
            SubmitError::WorkflowNotFound { .. } => {
                ApiError::new(S::NOT_FOUND, "workflow_not_found", error.to_string())
            }
            SubmitError::Store(error) => error.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "content_type_invalid",
            _ => "body_invalid",
        };
        // Both syntax and shape errors are the caller's, so they share 400. Axum returns 422 for
        // a shape error, but this API keeps 422 for well-formed documents that fail validation.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "query_invalid",
            rejection.body_text(),
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use oaj_store::StoreError;

    use super::ApiError;

    #[test]
    fn store_errors_map_to_status() {
        let cases = [
            (
                StoreError::Unavailable("refused".into()),
                503,
                "store_unavailable",
            ),
            (StoreError::Busy("locked".into()), 503, "store_busy"),
            (StoreError::Full("disk full".into()), 503, "store_full"),
            (StoreError::TextInvalid("NUL".into()), 400, "text_invalid"),
            (StoreError::Database("broken".into()), 500, "internal"),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);

            assert_eq!(api.status, StatusCode::from_u16(status).unwrap(), "{code}");
            assert_eq!(api.code, code);
        }
    }
}
