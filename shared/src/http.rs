//! Reading requests and writing responses with API Gateway HTTP API (payload 2.0) semantics.

use std::collections::HashMap;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// The largest request body any handler reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An outside answer's body, read up to `limit` bytes; a longer one is an error before it is
/// all in memory.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// The caller's address for rate limits (`unknown` when the gateway gave none).
pub fn client_ip(req: &Request) -> String {
    source_ip(req).unwrap_or_else(|| "unknown".to_owned())
}

/// The request id API Gateway gave this request (the local gateway sets one too).
pub fn request_id(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The caller's address as API Gateway saw it.
pub fn source_ip(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The claims the JWT authorizer verified, as API Gateway passes them (strings).
pub fn jwt_claims(req: &Request) -> Option<&HashMap<String, String>> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref()?.jwt.as_ref().map(|jwt| &jwt.claims)
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The authenticated caller: the `sub` and `role` of the verified access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub role: String,
}

impl Caller {
    /// The caller of a route behind the JWT authorizer; 401 when the authorizer passed no subject.
    pub fn from_request(req: &Request) -> Result<Self, ApiError> {
        let sub = jwt_claims(req)
            .and_then(|claims| claims.get("sub"))
            .filter(|s| !s.is_empty());
        match sub {
            Some(sub) => Ok(Self {
                user_id: sub.clone(),
                role: jwt_claims(req)
                    .and_then(|claims| claims.get("role"))
                    .cloned()
                    .unwrap_or_else(|| "user".to_owned()),
            }),
            None => Err(ApiError::Unauthorized {
                code: "unauthenticated",
                detail: "a valid bearer access token is required",
            }),
        }
    }

    /// The caller of an admin's route; 403 for anyone else.
    pub fn admin(req: &Request) -> Result<Self, ApiError> {
        let caller = Self::from_request(req)?;
        if caller.role != "admin" {
            return Err(ApiError::Forbidden { role: "admin" });
        }
        Ok(caller)
    }
}

fn media_type(req: &Request) -> Option<String> {
    let value = req.headers().get("content-type")?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

pub fn body_bytes(req: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(bytes)
}

/// Parses a JSON body strictly: 415 for another media type, 413 over [`MAX_BODY_BYTES`], 400 for
/// malformed JSON, 422 for a well-formed body of the wrong shape (missing or unknown fields).
pub fn json_body<T: DeserializeOwned>(
    req: &Request,
    media_types: &[&'static str],
) -> Result<T, ApiError> {
    let expected = media_types.first().copied().unwrap_or("application/json");
    match media_type(req) {
        Some(media) if media_types.contains(&media.as_str()) => {}
        _ => return Err(ApiError::UnsupportedMediaType { expected }),
    }
    let bytes = body_bytes(req)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        match err.inner().classify() {
            serde_json::error::Category::Data => {
                ApiError::Validation(vec![field_error(&err.path().to_string(), err.inner())])
            }
            _ => ApiError::MalformedBody(err.inner().to_string()),
        }
    })?;
    // Trailing characters are a syntax error, with no field to name.
    deserializer
        .end()
        .map_err(|err| ApiError::MalformedBody(err.to_string()))?;
    Ok(value)
}

/// Deserializes a JSON value that sits at `at` in the request (`""` for the body itself, `input`
/// for a job's input), naming the field that failed by its whole path.
pub fn from_value_at<T: DeserializeOwned>(value: &Value, at: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = match (at, path.as_str()) {
            (at, ".") => at.to_owned(),
            ("", path) => path.to_owned(),
            (at, path) => format!("{at}.{path}"),
        };
        field_error(&path, err.inner())
    })
}

/// Parses an `application/x-www-form-urlencoded` body (OAuth2's token endpoint).
pub fn form_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    if media_type(req).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/x-www-form-urlencoded",
        });
    }
    let bytes = body_bytes(req)?;
    serde_urlencoded::from_bytes(bytes).map_err(|err| ApiError::invalid("body", err.to_string()))
}

/// Names the field serde complained about: the path where it failed (`.` at the root; an unknown
/// field's path ends with it), and for `missing field `x`` the missing field below that path.
fn field_error(path: &str, err: &serde_json::Error) -> FieldError {
    let message = err.to_string();
    let quoted = message.split('`').nth(1);
    // A body that is an array where an object belongs fails inside it (`[0]`): the body is wrong.
    let parent = if path == "." || path.starts_with('[') {
        ""
    } else {
        path
    };
    let field = match (parent, quoted) {
        ("", Some(name))
            if message.starts_with("missing field") || message.starts_with("unknown field") =>
        {
            name.to_owned()
        }
        (parent, Some(name)) if message.starts_with("missing field") => format!("{parent}.{name}"),
        ("", _) => "body".to_owned(),
        (parent, _) => parent.to_owned(),
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    FieldError::new(field, message)
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>, ApiError> {
    let text = serde_json::to_string(value).map_err(|e| ApiError::Internal(e.into()))?;
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Body::Text(text))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// A response with a fixed content type and a cache lifetime, for public documents.
pub fn document(
    content_type: &str,
    max_age_secs: u32,
    text: String,
) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("cache-control", format!("public, max-age={max_age_secs}"))
        .body(Body::Text(text))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// A path parameter API Gateway bound (`{id}` in the route).
pub fn path_param(req: &Request, name: &str) -> Option<String> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_owned)
}

/// A query string parameter.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .map(str::to_owned)
}

/// `?limit=`: 1 to 100, default 20.
pub fn page_limit(req: &Request) -> Result<usize, ApiError> {
    match query_param(req, "limit") {
        None => Ok(20),
        Some(raw) => match raw.parse::<usize>() {
            Ok(limit) if (1..=100).contains(&limit) => Ok(limit),
            _ => Err(ApiError::invalid(
                "limit",
                "must be an integer from 1 to 100",
            )),
        },
    }
}

/// A response body written as it goes: each chunk sent on the channel is a frame; the body ends
/// when every sender is dropped (a streamed reply's Server-Sent Events).
pub struct ChannelBody(pub tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(http_body::Frame::data(data))))
    }
}

/// One Server-Sent Event: `event: <name>` and its JSON data on one line.
pub fn sse_event(name: &str, data: &serde_json::Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
    }

    fn request(content_type: &str, body: &str) -> Request {
        let mut req = Request::new(Body::Text(body.to_owned()));
        req.headers_mut()
            .insert("content-type", content_type.parse().expect("header"));
        req
    }

    #[test]
    fn the_field_in_a_shape_error_is_named() {
        let req = request("application/json", r#"{"email":"a@b.c","extra":1}"#);
        let Err(ApiError::Validation(errors)) = json_body::<Login>(&req, &["application/json"])
        else {
            panic!("expected a validation error");
        };
        assert_eq!(errors[0].field, "extra");
        let req = request("application/json; charset=utf-8", "{}");
        let Err(ApiError::Validation(errors)) = json_body::<Login>(&req, &["application/json"])
        else {
            panic!("expected a validation error");
        };
        assert_eq!(errors[0].field, "email");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        settings: Settings,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        scale: u8,
    }

    #[test]
    fn nested_fields_are_named_by_their_path() {
        let req = request("application/json", r#"{"settings":{"scale":"x"}}"#);
        let Err(ApiError::Validation(errors)) = json_body::<Outer>(&req, &["application/json"])
        else {
            panic!("expected a validation error");
        };
        assert_eq!(errors[0].field, "settings.scale");
        let value = serde_json::json!({"settings": {}});
        let error = from_value_at::<Outer>(&value, "input").expect_err("missing");
        assert_eq!(error.field, "input.settings.scale");
        let value = serde_json::json!({"settings": {"scale": 2, "extra": 1}});
        let error = from_value_at::<Outer>(&value, "").expect_err("unknown");
        assert_eq!(error.field, "settings.extra");
    }

    #[test]
    fn syntax_errors_and_media_types_are_told_apart() {
        let req = request("application/json", "{\"email\":");
        assert!(matches!(
            json_body::<Login>(&req, &["application/json"]),
            Err(ApiError::MalformedBody(_))
        ));
        let req = request("text/plain", "{}");
        assert!(matches!(
            json_body::<Login>(&req, &["application/json"]),
            Err(ApiError::UnsupportedMediaType { .. })
        ));
    }
}
