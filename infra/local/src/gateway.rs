//! The local gateway: API Gateway HTTP API (payload 2.0) in front of the library's handlers.
//!
//! Each request becomes the event API Gateway would send (route key, raw path and query, path
//! parameters, base64 bodies for binary content, the JWT authorizer's claims) and goes through the
//! same conversion the Lambda runtime applies, then to the same handler the function's binary runs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use lambent::State;
use lambent::error::ApiError;
use lambent::routes::{Match, NOT_FOUND, Route, handle, match_route};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// API Gateway's payload limit for HTTP APIs.
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// What the gateway needs besides the handlers' state: the JWT authorizer's settings, and each
/// function's timeout (a handler runs to its end or its timeout, as in Lambda, whatever the client
/// does meanwhile).
pub struct Gateway {
    pub state: Arc<State>,
    pub issuer: String,
    pub audience: String,
    pub timeouts: HashMap<String, std::time::Duration>,
}

/// What API Gateway answers when the function failed or timed out.
fn function_failed(request_id: &str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(
        br#"{"message":"Internal Server Error"}"#,
    )));
    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = request_id.parse() {
        headers.insert("apigw-requestid", value);
    }
    response
}

/// Accepts connections until the listener fails; each connection is served on its own task.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.dispatch(req, peer).await) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "connection closed");
            }
        });
    }
}

/// A refusal by the gateway itself (payload size, authorizer), with the request id as handlers send it.
fn problem(err: ApiError, request_id: &str) -> hyper::Response<Full<Bytes>> {
    let mut response = err.into_response(request_id);
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    into_hyper(response)
}

fn into_hyper(response: lambda_http::Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(data) => Bytes::from(data),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type.map(str::to_ascii_lowercase) else {
        return true;
    };
    ct.starts_with("text/")
        || ct.contains("json")
        || ct.contains("xml")
        || ct.contains("javascript")
        || ct.starts_with("application/x-www-form-urlencoded")
}

impl Gateway {
    async fn dispatch(
        &self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_PAYLOAD_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return problem(
                    ApiError::PayloadTooLarge {
                        limit: MAX_PAYLOAD_BYTES,
                    },
                    &request_id,
                );
            }
        };
        // API Gateway routes by Host and refuses what is not a host; lambda_http would panic
        // building the request's URI from it.
        if let Some(host) = parts.headers.get("host")
            && !valid_host(host.as_bytes())
        {
            return problem(
                ApiError::BadRequest {
                    code: "invalid_host",
                    detail: "the Host header is not a valid host".into(),
                },
                &request_id,
            );
        }
        let path = parts.uri.path().to_owned();
        let (spec, params): (&Route, HashMap<String, String>) =
            match match_route(parts.method.as_str(), &path) {
                Match::Found(spec, params) => (spec, params),
                _ => (&NOT_FOUND, HashMap::new()),
            };
        let claims = if spec.authorized {
            match self.authorize(&parts.headers).await {
                Ok(claims) => Some(claims),
                Err(err) => return problem(err, &request_id),
            }
        } else {
            None
        };
        let event = self.event(&parts, &body, spec, params, claims, peer, &request_id);
        let request = match lambda_http::request::from_str(&event.to_string()) {
            Ok(request) => request,
            Err(err) => return problem(ApiError::MalformedBody(err.to_string()), &request_id),
        };
        // As Lambda: the handler runs on its own task to its end or its function's timeout; a
        // client that hangs up does not stop it half-way (between a commit and a send).
        let timeout = self
            .timeouts
            .get(spec.function)
            .copied()
            .unwrap_or(std::time::Duration::from_secs(10));
        let state = self.state.clone();
        let run = tokio::spawn(async move {
            tokio::time::timeout(timeout, handle(&state, spec, request)).await
        });
        match run.await {
            Ok(Ok(response)) => into_hyper(response),
            Ok(Err(_)) => {
                tracing::error!(function = spec.function, ?timeout, "the function timed out");
                function_failed(&request_id)
            }
            Err(err) => {
                tracing::error!(function = spec.function, error = %err, "the function failed");
                function_failed(&request_id)
            }
        }
    }

    /// What API Gateway's JWT authorizer checks, with the same keys the JWKS publishes.
    async fn authorize(
        &self,
        headers: &hyper::HeaderMap,
    ) -> Result<HashMap<String, Value>, ApiError> {
        let header = headers.get("authorization").and_then(|v| v.to_str().ok());
        let claims = self
            .state
            .bearer_claims(header, &self.issuer, &self.audience)
            .await?;
        let value = serde_json::to_value(claims).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(value
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        parts: &hyper::http::request::Parts,
        body: &Bytes,
        spec: &Route,
        params: HashMap<String, String>,
        claims: Option<HashMap<String, Value>>,
        peer: SocketAddr,
        request_id: &str,
    ) -> Value {
        let mut headers: HashMap<String, String> = HashMap::new();
        let mut cookies = Vec::new();
        for (name, value) in &parts.headers {
            // API Gateway passes values that are not visible ASCII through (as UTF-8 text);
            // dropping them would lose e.g. an Idempotency-Key the handler must refuse.
            let value = String::from_utf8_lossy(value.as_bytes());
            let value = value.as_ref();
            if name == "cookie" {
                cookies.extend(value.split("; ").map(str::to_owned));
                continue;
            }
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        }
        headers.insert("x-forwarded-proto".into(), "http".into());
        headers.insert("x-forwarded-for".into(), peer.ip().to_string());
        let raw_query = parts.uri.query().unwrap_or("").to_owned();
        let mut query: HashMap<String, String> = HashMap::new();
        for (k, v) in url_pairs(&raw_query) {
            query
                .entry(k)
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let route_key = if spec.path == "$default" {
            "$default".to_owned()
        } else {
            format!("{} {}", spec.method, spec.path)
        };
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        let (body_text, base64) = match std::str::from_utf8(body) {
            _ if body.is_empty() => (None, false),
            Ok(text) if is_text(content_type) => (Some(text.to_owned()), false),
            _ => (
                Some(base64::engine::general_purpose::STANDARD.encode(body)),
                true,
            ),
        };
        let now = chrono::Utc::now();
        let authorizer = claims.map(|claims| {
            // API Gateway passes every claim as a string.
            let strings: HashMap<String, String> = claims
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            let scopes: Vec<String> = strings
                .get("scope")
                .map(|s| s.split(' ').map(str::to_owned).collect())
                .unwrap_or_default();
            json!({ "jwt": { "claims": strings, "scopes": scopes } })
        });
        let mut context = json!({
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host").cloned().unwrap_or_else(|| "127.0.0.1".into()),
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": headers.get("user-agent").cloned().unwrap_or_default(),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        });
        if let Some(authorizer) = authorizer {
            context["authorizer"] = authorizer;
        }
        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": parts.uri.path(),
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": context,
            "isBase64Encoded": base64,
        });
        if !cookies.is_empty() {
            event["cookies"] = json!(cookies);
        }
        if !query.is_empty() {
            event["queryStringParameters"] = json!(query);
        }
        if !params.is_empty() {
            event["pathParameters"] = json!(params);
        }
        if let Some(body) = body_text {
            event["body"] = json!(body);
        }
        event
    }
}

/// Whether a Host header is `host[:port]` as a URI authority allows (a name, IPv4 or [IPv6]).
fn valid_host(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    !text.is_empty()
        && !text.contains(['@', '/', '?', '#'])
        && text
            .parse::<hyper::http::uri::Authority>()
            .is_ok_and(|authority| !authority.host().is_empty())
}

/// Decodes `a=1&b=x%20y` pairs as API Gateway does for `queryStringParameters`.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

/// The most bytes of a function URL request's body.
const MAX_FUNCTION_URL_PAYLOAD: usize = 6 * 1024 * 1024;

/// Serves the streaming function URL (the `stream-replies` function): each request goes to the
/// function's handler as Lambda hands it over, and its body streams back as it is written.
pub async fn serve_streaming(listener: TcpListener, state: &'static State) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| async move {
                    Ok::<_, Infallible>(stream_one(state, req).await)
                });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "streaming connection closed");
            }
        });
    }
}

async fn stream_one(
    state: &'static State,
    req: hyper::Request<Incoming>,
) -> lambent::conversations::stream::Streamed {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_FUNCTION_URL_PAYLOAD).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let _ = tx.send(Bytes::from_static(br#"{"Message":"Request must be smaller than 6291456 bytes for the InvokeFunction operation"}"#));
            let mut response = hyper::Response::new(lambent::http::ChannelBody(rx));
            *response.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
            return response;
        }
    };
    let mut builder = lambda_http::http::Request::builder()
        .method(parts.method)
        .uri(parts.uri);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let body = if body.is_empty() {
        Body::Empty
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(_) => Body::Binary(body.to_vec()),
        }
    };
    match builder.body(body) {
        Ok(request) => lambent::conversations::stream::handle(state, request).await,
        Err(_) => {
            let (_, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut response = hyper::Response::new(lambent::http::ChannelBody(rx));
            *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
            response
        }
    }
}
