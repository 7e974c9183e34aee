//! What the API can say when a request does not succeed, mapped in one place to RFC 9457 problem+json.

use lambda_http::{Body, Response, http::StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// One invalid field of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (`body` when the body as a whole is wrong).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every error a handler returns. The `code` of each variant is stable: clients branch on it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedBody(String),
    #[error("the body must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("{detail}")]
    Unauthorized {
        code: &'static str,
        detail: &'static str,
    },
    #[error("{0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<&'static str> },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("this needs the {role} role")]
    Forbidden { role: &'static str },
    #[error("the balance of {balance} credits does not cover the cost of {cost}")]
    InsufficientCredits { balance: i64, cost: i64 },
    #[error("at most {max_concurrent} jobs may run at once; wait for one to finish")]
    TooManyJobs { max_concurrent: u32 },
    /// 412: the `If-Match` names a version that is not the current one.
    #[error("{0}")]
    PreconditionFailed(&'static str),
    /// 428: the change needs an `If-Match`.
    #[error("{0}")]
    PreconditionRequired(&'static str),
    #[error("{0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Whether an internal error is a service we call that did not answer in time, could not be
/// reached, or throttled us (the AWS SDK's timeout, dispatch failure and throttling errors, and a
/// transaction still in progress under the same token after every retry): the
/// request may well succeed when retried, so it is a 503 with `Retry-After`, not a 500.
fn dependency_busy(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let text = cause.to_string();
        text == "request has timed out"
            || text == "dispatch failure"
            || [
                "ThrottlingException",
                "ProvisionedThroughputExceeded",
                "RequestLimitExceeded",
                "TransactionInProgressException",
            ]
            .iter()
            .any(|code| text.contains(code))
    })
}

impl ApiError {
    /// A single-field validation error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } | Self::TooManyJobs { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(err) if dependency_busy(err) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedBody(_) => "malformed_body",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Validation(_) => "validation_failed",
            Self::Unauthorized { code, .. }
            | Self::Conflict { code, .. }
            | Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. } => code,
            Self::Forbidden { .. } => "forbidden",
            Self::InsufficientCredits { .. } => "insufficient_credits",
            Self::TooManyJobs { .. } => "max_concurrent_jobs",
            Self::PreconditionFailed(_) => "stale_version",
            Self::PreconditionRequired(_) => "precondition_required",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(err) if dependency_busy(err) => "unavailable",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The problem+json response. Internal errors are logged here, once, with their cause chain;
    /// their body names no internal detail.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let code = self.code();
        let detail = match &self {
            Self::Internal(err) if dependency_busy(err) => {
                tracing::warn!(error = format!("{err:#}"), "a dependency is busy");
                "a service this request needs did not answer in time; retry shortly".to_owned()
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                "the server could not complete the request".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("urn:lambent:problem:{code}")));
        body.insert(
            "title".into(),
            json!(status.canonical_reason().unwrap_or("Error")),
        );
        body.insert("status".into(), json!(status.as_u16()));
        body.insert("detail".into(), json!(detail));
        body.insert("code".into(), json!(code));
        body.insert("request_id".into(), json!(request_id));
        let mut builder = Response::builder()
            .status(status)
            .header("content-type", "application/problem+json");
        match &self {
            Self::Internal(err) if dependency_busy(err) => {
                builder = builder.header("retry-after", "1");
            }
            Self::Validation(errors) => {
                body.insert("errors".into(), json!(errors));
            }
            Self::PayloadTooLarge { limit } => {
                body.insert("limit".into(), json!(limit));
            }
            Self::MethodNotAllowed { allow } => {
                builder = builder.header("allow", allow.join(", "));
            }
            Self::RateLimited { retry_after_secs } => {
                body.insert("retry_after".into(), json!(retry_after_secs));
                builder = builder.header("retry-after", retry_after_secs.to_string());
            }
            Self::TooManyJobs { max_concurrent } => {
                body.insert("max_concurrent".into(), json!(max_concurrent));
                // A slot frees when a job ends; a few seconds is a sensible first wait.
                builder = builder.header("retry-after", "5");
            }
            Self::InsufficientCredits { balance, cost } => {
                body.insert("balance".into(), json!(balance));
                body.insert("cost".into(), json!(cost));
            }
            Self::Unauthorized { .. } => {
                builder = builder.header("www-authenticate", "Bearer");
            }
            _ => {}
        }
        let text = Value::Object(body).to_string();
        builder.body(Body::Text(text)).unwrap_or_else(|_| {
            // Only reachable with an invalid header value, which the arms above never build.
            let mut fallback = Response::new(Body::Empty);
            *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
    }
}

/// The problem+json schema, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `email_taken`, `rate_limited`.
    pub code: String,
    pub request_id: String,
    /// Present on `validation_failed`.
    pub errors: Option<Vec<FieldError>>,
    /// Present on `rate_limited`: seconds to wait, as in the `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Present on `max_concurrent_jobs`: how many jobs may run at once.
    pub max_concurrent: Option<u32>,
    /// Present on `insufficient_credits`.
    pub balance: Option<i64>,
    /// Present on `insufficient_credits`: the job's cost.
    pub cost: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &Response<Body>) -> Value {
        serde_json::from_slice(response.body().as_ref()).expect("json body")
    }

    #[test]
    fn validation_lists_the_fields() {
        let response = ApiError::invalid("email", "not an email").into_response("req-1");
        assert_eq!(response.status(), 422);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body = body_of(&response);
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["errors"][0]["field"], "email");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let response =
            ApiError::Internal(anyhow::anyhow!("table secret-table exploded")).into_response("r");
        assert_eq!(response.status(), 500);
        let text = String::from_utf8_lossy(response.body().as_ref()).to_string();
        assert!(!text.contains("exploded"), "{text}");
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let response = ApiError::RateLimited {
            retry_after_secs: 17,
        }
        .into_response("r");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "17");
        assert_eq!(body_of(&response)["retry_after"], 17);
    }
}
