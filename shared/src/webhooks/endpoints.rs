//! Account webhook endpoints (`/v1/webhook-endpoints`): a URL, the events it wants and its signing
//! secret (shown once, at creation), and the record of every delivery attempt to it.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{Db, Item, get_s, n, s, unless_condition_failed};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, page_limit, path_param};
use crate::jobs::events::{TYPES, new_secret};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// The most endpoints one account may have.
pub const MAX_ENDPOINTS: usize = 10;
/// How long delivery attempts are kept.
const DELIVERY_RETENTION_SECS: i64 = 30 * 86_400;

/// `POST /v1/webhook-endpoints`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// https; no internal addresses.
    #[schema(format = "uri", pattern = "^https://")]
    pub url: String,
    /// Event types to send (default: all of `job.started`, `job.progress`, `job.completed`,
    /// `job.failed`, `job.canceled`).
    #[schema(min_items = 1)]
    pub events: Option<Vec<String>>,
    #[schema(max_length = 200)]
    pub description: Option<String>,
}

/// An endpoint. `secret` appears once, in the answer that created it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// Set when a delivery got `410 Gone`: nothing more is sent.
    pub disabled_at: Option<String>,
    pub created_at: String,
    /// `whsec_…`: verify deliveries with it (Standard Webhooks). Shown only at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A page of endpoints.
#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<Endpoint>,
}

/// One delivery attempt.
#[derive(Serialize, Deserialize, Default, ToSchema)]
#[serde(default)]
pub struct Delivery {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub job_id: String,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// The endpoint's answer; absent when it could not be reached.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub succeeded: bool,
    pub at: String,
}

/// Recent delivery attempts, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<Delivery>,
}

/// An endpoint's item as stored (`events` a string set), with its secret.
#[derive(Deserialize)]
struct StoredEndpoint {
    id: String,
    url: String,
    #[serde(default)]
    events: Vec<String>,
    description: Option<String>,
    disabled_at: Option<String>,
    created_at: String,
    secret: String,
}

fn from_item(item: &Item) -> Option<(Endpoint, String)> {
    let stored: StoredEndpoint = serde_dynamo::from_item(item.clone()).ok()?;
    let endpoint = Endpoint {
        id: stored.id,
        url: stored.url,
        events: stored.events,
        description: stored.description,
        disabled_at: stored.disabled_at,
        created_at: stored.created_at,
        secret: None,
    };
    Some((endpoint, stored.secret))
}

/// The owner's endpoints with their secrets.
pub async fn of_user(db: &Db, user_id: &str) -> anyhow::Result<Vec<(Endpoint, String)>> {
    let items = db
        .query_prefix(&keys::user(user_id), keys::ENDPOINT_PREFIX)
        .await?;
    Ok(items.iter().filter_map(from_item).collect())
}

/// One of the owner's endpoints with its secret.
pub async fn get(db: &Db, user_id: &str, id: &str) -> anyhow::Result<Option<(Endpoint, String)>> {
    Ok(db
        .get(&keys::user(user_id), &keys::endpoint(id))
        .await?
        .as_ref()
        .and_then(from_item))
}

/// Stops deliveries to an endpoint (it answered 410).
pub async fn disable(db: &Db, user_id: &str, id: &str) -> anyhow::Result<()> {
    let result = db
        .client
        .update_item()
        .table_name(&db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::endpoint(id)))
        .update_expression("SET disabled_at = :now")
        .condition_expression("attribute_exists(pk) AND attribute_not_exists(disabled_at)")
        .expression_attribute_values(":now", s(timestamp(Utc::now())))
        .send()
        .await;
    unless_condition_failed(result).context("disabling an endpoint")?;
    Ok(())
}

/// Records one delivery attempt under `target` (an endpoint id, or `job-{id}`).
pub async fn record(db: &Db, target: &str, delivery: &Delivery) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut put = db
        .client
        .put_item()
        .table_name(&db.table)
        .item("pk", s(keys::deliveries(target)))
        .item(
            "sk",
            s(format!(
                "{:013}#{}#{}",
                now.timestamp_millis(),
                delivery.event_id,
                delivery.attempt
            )),
        )
        .item("event_id", s(&delivery.event_id))
        .item("type", s(&delivery.kind))
        .item("job_id", s(&delivery.job_id))
        .item("attempt", n(delivery.attempt))
        .item("duration_ms", n(delivery.duration_ms))
        .item("succeeded", AttributeValue::Bool(delivery.succeeded))
        .item("at", s(&delivery.at))
        .item("expires_at", n(now.timestamp() + DELIVERY_RETENTION_SECS));
    if let Some(code) = delivery.status_code {
        put = put.item("status_code", n(code));
    }
    if let Some(error) = &delivery.error {
        put = put.item("error", s(error.chars().take(300).collect::<String>()));
    }
    put.send().await.context("recording a delivery")?;
    Ok(())
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such webhook endpoint")
}

fn endpoint_id(req: &Request) -> Result<String, ApiError> {
    path_param(req, "id")
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .ok_or_else(not_found)
}

/// Creates an endpoint; the answer carries its secret, this once.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])), request_body = CreateEndpoint,
    responses((status = 201, body = Endpoint), (status = 409, description = "too_many_endpoints", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn create_webhook_endpoint(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: CreateEndpoint = json_body(&req, &["application/json"])?;
    let mut errors = Vec::new();
    let url = crate::net::validate_url(&body.url, "url", state.config.allow_private_webhooks)
        .map_err(|e| errors.push(e))
        .ok();
    let events = body
        .events
        .unwrap_or_else(|| TYPES.iter().map(|t| (*t).to_owned()).collect());
    if events.is_empty() || events.iter().any(|e| !TYPES.contains(&e.as_str())) {
        errors.push(FieldError::new(
            "events",
            format!("must be a non-empty list of: {}", TYPES.join(", ")),
        ));
    }
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 200)
    {
        errors.push(FieldError::new(
            "description",
            "must be at most 200 characters",
        ));
    }
    let Some(url) = url.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    // A bound, not a quota: two racing creations may both pass it.
    if of_user(&state.db, &caller.user_id).await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::Conflict {
            code: "too_many_endpoints",
            detail: format!("an account may have at most {MAX_ENDPOINTS} webhook endpoints"),
        });
    }
    let mut events = events;
    events.sort();
    events.dedup();
    let secret = new_secret()?;
    let endpoint = Endpoint {
        id: uuid::Uuid::now_v7().to_string(),
        url,
        events,
        description: body.description,
        disabled_at: None,
        created_at: timestamp(Utc::now()),
        secret: Some(secret.clone()),
    };
    let mut item = vec![
        ("pk", s(keys::user(&caller.user_id))),
        ("sk", s(keys::endpoint(&endpoint.id))),
        ("id", s(&endpoint.id)),
        ("url", s(&endpoint.url)),
        ("events", AttributeValue::Ss(endpoint.events.clone())),
        ("secret", s(&secret)),
        ("created_at", s(&endpoint.created_at)),
    ];
    if let Some(description) = &endpoint.description {
        item.push(("description", s(description)));
    }
    // Once: a PutItem answered late would be sent again and meet itself (the id is new, so
    // nothing else is there).
    let created = crate::db::once(&state.db, crate::db::put_new(&state.db, item)?)
        .await
        .context("creating a webhook endpoint")?;
    if !created {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a new endpoint's id was taken"
        )));
    }
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    json(StatusCode::CREATED, &endpoint)
}

/// The caller's endpoints (without their secrets).
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = EndpointList)))]
pub async fn list_webhook_endpoints(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let items = of_user(&state.db, &caller.user_id)
        .await?
        .into_iter()
        .map(|(endpoint, _)| endpoint)
        .collect();
    json(StatusCode::OK, &EndpointList { items })
}

/// Deletes one of the caller's endpoints; deliveries to it stop.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete_webhook_endpoint(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = endpoint_id(&req)?;
    // Once: a DeleteItem answered late would be sent again, find nothing, and answer 404.
    let delete = crate::db::tx::delete(
        &state.db,
        (&keys::user(&caller.user_id), &keys::endpoint(&id)),
        Some("attribute_exists(pk)"),
        &[],
        vec![],
    )?;
    let deleted = crate::db::once(&state.db, delete)
        .await
        .context("deleting a webhook endpoint")?;
    if !deleted {
        return Err(not_found());
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Recent delivery attempts to one of the caller's endpoints, newest first (`limit`, default 20).
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100)),
    responses((status = 200, body = DeliveryList), (status = 404, body = crate::error::Problem)))]
pub async fn list_webhook_deliveries(
    state: &State,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = endpoint_id(&req)?;
    let limit = page_limit(&req)?;
    get(&state.db, &caller.user_id, &id)
        .await?
        .ok_or_else(not_found)?;
    let out = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s(keys::deliveries(&id)))
        .scan_index_forward(false)
        .limit(i32::try_from(limit).unwrap_or(20))
        .send()
        .await
        .context("listing deliveries")?;
    let items = out
        .items()
        .iter()
        // Stored with the names the API shows (`type`, `status_code`, …) beside the keys.
        .filter_map(|item| serde_dynamo::from_item(item.clone()).ok())
        .collect();
    json(StatusCode::OK, &DeliveryList { items })
}

/// A job's delivery target: its `webhook_url` and the secret made for it at submission.
pub fn job_target(job_item: &Item) -> Option<(String, String)> {
    Some((
        get_s(job_item, "webhook_url")?.to_owned(),
        get_s(job_item, "webhook_secret")?.to_owned(),
    ))
}
