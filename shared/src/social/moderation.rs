//! Moderation (the app stores require it for user content): anyone may report a post, a comment
//! or an account they can see, once each; the reports of one target make one case, which an admin
//! lists (by status, the latest reported first), reads and resolves: `dismiss` (the content stays,
//! or comes back) or `takedown` (a post or comment deleted, with what hangs on it). A post or
//! comment reported by `REPORT_HIDE_THRESHOLD` distinct accounts is hidden until an admin decides
//! (a post from everyone but its author; a comment from everyone), unless an admin dismissed its
//! case before. A report is one transaction: the reporter's item (`attribute_not_exists`: a
//! second report by the same account changes nothing) and the case's counts.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::{Item, failed_conditions, get_i64, get_s, n, s, tx};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, path_param, query_param};
use crate::keys;
use crate::social::posts::{self, MODERATION_HIDDEN};
use crate::state::State;

/// The longest a report's details may be.
pub const MAX_DETAILS: usize = 1_000;

/// What is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    Post,
    Comment,
    User,
}

impl TargetType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Comment => "comment",
            Self::User => "user",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "post" => Some(Self::Post),
            "comment" => Some(Self::Comment),
            "user" => Some(Self::User),
            _ => None,
        }
    }
}

/// Why it is reported.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Spam,
    Harassment,
    Hate,
    Nudity,
    Violence,
    SelfHarm,
    Copyright,
    Impersonation,
    Other,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Spam => "spam",
            Self::Harassment => "harassment",
            Self::Hate => "hate",
            Self::Nudity => "nudity",
            Self::Violence => "violence",
            Self::SelfHarm => "self_harm",
            Self::Copyright => "copyright",
            Self::Impersonation => "impersonation",
            Self::Other => "other",
        }
    }
}

/// `POST /v1/reports`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    pub target_type: TargetType,
    /// The post's, comment's or account's id.
    pub target_id: String,
    /// For a comment: the post it is on.
    #[serde(default)]
    pub post_id: Option<String>,
    pub reason: Reason,
    /// Up to 1,000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub details: Option<String>,
}

/// A report as its reporter is told of it.
#[derive(Serialize, ToSchema)]
pub struct ReportReceipt {
    /// The case the report joined (`<target_type>.<target_id>`).
    pub case_id: String,
    pub target_type: TargetType,
    pub target_id: String,
    pub reason: Reason,
    /// `false` when this account had reported the target already (nothing changed).
    pub new: bool,
}

/// The case of one reported target, as admins see it.
#[derive(Serialize, ToSchema)]
pub struct Case {
    pub id: String,
    pub target_type: TargetType,
    pub target_id: String,
    pub post_id: Option<String>,
    /// `open`, `hidden` (past the threshold, waiting for an admin), `dismissed`, `taken_down`.
    pub status: String,
    /// Distinct reporters.
    pub reports_count: i64,
    /// Reports per reason.
    pub reasons: BTreeMap<String, i64>,
    pub first_reported_at: String,
    pub last_reported_at: String,
    pub resolved_by: Option<String>,
    pub resolution_note: Option<String>,
}

/// A case with its reports (the latest 100).
#[derive(Serialize, ToSchema)]
pub struct CaseDetail {
    #[serde(flatten)]
    pub case: Case,
    pub reports: Vec<ReportView>,
}

/// One report of a case.
#[derive(Serialize, ToSchema)]
pub struct ReportView {
    pub reporter_id: String,
    pub reason: String,
    pub details: Option<String>,
    pub created_at: String,
}

/// A page of cases.
#[derive(Serialize, ToSchema)]
pub struct CasePage {
    pub items: Vec<Case>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/admin/reports/{id}/resolve`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// `dismiss` (the content stays, or comes back) or `takedown` (a post or comment deleted).
    pub action: Action,
    /// Up to 500 characters, kept with the case.
    #[serde(default)]
    pub note: Option<String>,
}

/// What an admin decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Dismiss,
    Takedown,
}

fn case_id(target_type: TargetType, target_id: &str) -> String {
    format!("{}.{target_id}", target_type.as_str())
}

fn parse_case_id(id: &str) -> Option<(TargetType, String)> {
    let (kind, target) = id.split_once('.')?;
    let kind = TargetType::parse(kind)?;
    uuid::Uuid::parse_str(target).ok()?;
    Some((kind, target.to_owned()))
}

fn case_view(item: &Item) -> Option<Case> {
    let target_type = get_s(item, "target_type").and_then(TargetType::parse)?;
    let target_id = get_s(item, "target_id")?.to_owned();
    let reasons = item
        .iter()
        .filter_map(|(name, value)| {
            let reason = name.strip_prefix("reason_")?;
            Some((reason.to_owned(), value.as_n().ok()?.parse().ok()?))
        })
        .collect();
    let text = |name| get_s(item, name).map(str::to_owned);
    Some(Case {
        id: case_id(target_type, &target_id),
        target_type,
        target_id,
        post_id: text("post_id"),
        status: text("status").unwrap_or_else(|| "open".to_owned()),
        reports_count: get_i64(item, "reports_count").unwrap_or(0),
        reasons,
        first_reported_at: text("first_reported_at").unwrap_or_default(),
        last_reported_at: text("last_reported_at").unwrap_or_default(),
        resolved_by: text("resolved_by"),
        resolution_note: text("resolution_note"),
    })
}

/// The item a hidden target carries its mark on: the post, or the comment's.
async fn target_item(
    state: &State,
    target_type: TargetType,
    target_id: &str,
    post_id: Option<&str>,
) -> Result<Option<(String, String)>, ApiError> {
    Ok(match target_type {
        TargetType::Post => Some((keys::post(target_id), keys::POST.to_owned())),
        TargetType::Comment => {
            let Some(post_id) = post_id else {
                return Ok(None);
            };
            crate::social::comments::find(state, post_id, target_id)
                .await?
                .and_then(|c| get_s(&c, "sk").map(|sk| (keys::comments(post_id), sk.to_owned())))
        }
        TargetType::User => None,
    })
}

/// Reports a post, a comment or an account you can see (201; 200 when you had reported it
/// already). Reported by enough accounts, a post or comment is hidden until an admin decides.
#[utoipa::path(post, path = "/v1/reports", tag = "social", security(("bearer" = [])), request_body = CreateReport,
    responses((status = 201, body = ReportReceipt), (status = 200, description = "reported already", body = ReportReceipt),
        (status = 401, body = crate::error::Problem),
        (status = 404, description = "no such post, comment or account the caller can see", body = crate::error::Problem),
        (status = 422, description = "bad fields; `own_content`: one's own", body = crate::error::Problem)))]
pub async fn create_report(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let me = caller.user_id.as_str();
    let body: CreateReport = json_body(&req, &["application/json"])?;
    let mut errors = Vec::new();
    if uuid::Uuid::parse_str(&body.target_id).is_err() {
        errors.push(FieldError::new("target_id", "must be an id"));
    }
    let details = body
        .details
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if details.is_some_and(|d| d.chars().count() > MAX_DETAILS) {
        errors.push(FieldError::new(
            "details",
            format!("must be at most {MAX_DETAILS} characters"),
        ));
    }
    let post_id = match (body.target_type, &body.post_id) {
        (TargetType::Comment, Some(post_id)) if uuid::Uuid::parse_str(post_id).is_ok() => {
            Some(post_id.clone())
        }
        (TargetType::Comment, _) => {
            errors.push(FieldError::new("post_id", "the post the comment is on"));
            None
        }
        (_, Some(_)) => {
            errors.push(FieldError::new("post_id", "only for a comment"));
            None
        }
        (_, None) => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // The target as the reporter sees it: one they cannot see is a 404, their own a 422.
    let owner = match body.target_type {
        TargetType::Post => {
            posts::visible(state, Some(me), &body.target_id)
                .await?
                .author_id
        }
        TargetType::Comment => {
            let post_id = post_id.as_deref().unwrap_or_default();
            posts::visible(state, Some(me), post_id).await?;
            let comment = crate::social::comments::find(state, post_id, &body.target_id)
                .await?
                .filter(|c| !c.contains_key("deleted_at"))
                .ok_or(ApiError::NotFound("no such comment"))?;
            get_s(&comment, "author_id").unwrap_or_default().to_owned()
        }
        TargetType::User => {
            let profile = state
                .db
                .get(&keys::user(&body.target_id), keys::PROFILE)
                .await?
                .and_then(|p| crate::social::profiles::public(&p))
                .ok_or(ApiError::NotFound("no such account"))?;
            if crate::social::blocked_between(state, me, &profile.id).await? {
                return Err(ApiError::NotFound("no such account"));
            }
            profile.id
        }
    };
    if owner == me {
        return Err(ApiError::Unprocessable {
            code: "own_content",
            detail: "you cannot report your own content".into(),
        });
    }
    let new = record(state, me, &body, details, post_id.as_deref()).await?;
    if new {
        hide_past_threshold(state, body.target_type, &body.target_id).await?;
    }
    json(
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &ReportReceipt {
            case_id: case_id(body.target_type, &body.target_id),
            target_type: body.target_type,
            target_id: body.target_id.clone(),
            reason: body.reason,
            new,
        },
    )
}

/// The report and the case's counts, in one transaction; `false` when this account had
/// reported the target already.
async fn record(
    state: &State,
    me: &str,
    body: &CreateReport,
    details: Option<&str>,
    post_id: Option<&str>,
) -> Result<bool, ApiError> {
    let kind = body.target_type.as_str();
    let pk = keys::moderation(kind, &body.target_id);
    let now = Utc::now();
    let stamp = crate::users::timestamp(now);
    let id = case_id(body.target_type, &body.target_id);
    let mut report = vec![
        ("pk", s(&pk)),
        ("sk", s(keys::report(me))),
        ("reporter_id", s(me)),
        ("reason", s(body.reason.as_str())),
        ("created_at", s(&stamp)),
    ];
    if let Some(details) = details {
        report.push(("details", s(details)));
    }
    let reason_count = format!("reason_{}", body.reason.as_str());
    let mut values: Vec<(&str, AttributeValue)> = vec![
        (":type", s(kind)),
        (":target", s(&body.target_id)),
        (":at", s(&stamp)),
        (":one", n(1)),
        (
            ":position",
            s(format!("{:013}#{id}", now.timestamp_millis())),
        ),
        (":open", s("open")),
        (":open_pk", s(keys::cases("open"))),
    ];
    let mut set = vec![
        "target_type = :type",
        "target_id = :target",
        "last_reported_at = :at",
        "first_reported_at = if_not_exists(first_reported_at, :at)",
        "gsi1sk = :position",
        // A hidden case stays hidden (and listed so); any other is open again for review.
        "#status = if_not_exists(hidden_since, :open)",
    ];
    if let Some(post_id) = post_id {
        set.push("post_id = :post");
        values.push((":post", s(post_id)));
    }
    // `hidden_since` holds "hidden" while the case is hidden: one expression then keeps both the
    // status and its index partition.
    let expression = format!(
        "SET {}, gsi1pk = if_not_exists(hidden_pk, :open_pk) ADD reports_count :one, #reason :one",
        set.join(", ")
    );
    let actions = vec![
        tx::put(&state.db, report, Some("attribute_not_exists(pk)"))?,
        tx::update(
            &state.db,
            (&pk, keys::CASE),
            &expression,
            None,
            &[("#status", "status"), ("#reason", &reason_count)],
            values,
        )?,
    ];
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => Ok(true),
        Err(err) if failed_conditions(&err).is_some() => Ok(false),
        Err(err) => Err(ApiError::Internal(
            anyhow::Error::new(err).context("recording a report"),
        )),
    }
}

/// Hides a post or comment whose open case has reached the threshold (never one an admin
/// dismissed: their decision stands until they change it).
async fn hide_past_threshold(
    state: &State,
    target_type: TargetType,
    target_id: &str,
) -> Result<(), ApiError> {
    if target_type == TargetType::User {
        return Ok(());
    }
    let pk = keys::moderation(target_type.as_str(), target_id);
    let Some(case) = state.db.get(&pk, keys::CASE).await? else {
        return Ok(());
    };
    let count = get_i64(&case, "reports_count").unwrap_or(0);
    let threshold = i64::try_from(state.config.report_hide_threshold).unwrap_or(i64::MAX);
    if count < threshold || case.contains_key("hidden_since") || case.contains_key("dismissed_at") {
        return Ok(());
    }
    let Some((item_pk, item_sk)) =
        target_item(state, target_type, target_id, get_s(&case, "post_id")).await?
    else {
        return Ok(());
    };
    let mut actions = vec![
        tx::update(
            &state.db,
            (&pk, keys::CASE),
            "SET #status = :hidden, hidden_since = :hidden, hidden_pk = :hidden_pk, gsi1pk = :hidden_pk",
            Some("attribute_not_exists(hidden_since) AND attribute_not_exists(dismissed_at)"),
            &[("#status", "status")],
            vec![
                (":hidden", s("hidden")),
                (":hidden_pk", s(keys::cases("hidden"))),
            ],
        )?,
        tx::update(
            &state.db,
            (&item_pk, &item_sk),
            &format!("SET {MODERATION_HIDDEN} = :at"),
            Some("attribute_exists(pk)"),
            &[],
            vec![(":at", s(crate::users::timestamp(Utc::now())))],
        )?,
    ];
    let post = target_type == TargetType::Post;
    if post {
        actions.push(crate::search::dirty(
            &state.db,
            &keys::search_post(target_id),
            Utc::now().timestamp_millis(),
        )?);
    }
    match crate::db::transact(&state.db, actions).await {
        Ok(()) => {
            if post {
                crate::search::index::poke(state).await;
            }
            tracing::info!(
                target_type = target_type.as_str(),
                target_id,
                count,
                "reported content hidden"
            );
            Ok(())
        }
        // Hidden meanwhile, dismissed, or gone.
        Err(err) if failed_conditions(&err).is_some() => Ok(()),
        Err(err) => Err(ApiError::Internal(
            anyhow::Error::new(err).context("hiding reported content"),
        )),
    }
}

/// The cases in one status (`open` by default; `hidden`, `dismissed`, `taken_down`), the latest
/// reported first (cursor pages). Admins only.
#[utoipa::path(get, path = "/v1/admin/reports", tag = "social", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "open (default), hidden, dismissed or taken_down"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = CasePage, headers(("link" = String, description = "rel=\"next\""))),
        (status = 400, description = "invalid_cursor", body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn list_reports(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    Caller::admin(&req)?;
    let status = query_param(&req, "status").unwrap_or_else(|| "open".to_owned());
    if !matches!(
        status.as_str(),
        "open" | "hidden" | "dismissed" | "taken_down"
    ) {
        return Err(ApiError::invalid(
            "status",
            "open, hidden, dismissed or taken_down",
        ));
    }
    let paging = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("reports|{status}"),
    )?;
    let partition = keys::cases(&status);
    let mut query = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .index_name("gsi1")
        .key_condition_expression("gsi1pk = :pk")
        .expression_attribute_values(":pk", s(&partition))
        .scan_index_forward(false)
        .limit(i32::try_from(paging.limit).unwrap_or(20));
    if let Some(after) = &paging.after {
        // The position names its case: `<at>#<type>.<id>`.
        let Some((kind, target)) = after.split_once('#').and_then(|(_, id)| parse_case_id(id))
        else {
            return Err(ApiError::BadRequest {
                code: "invalid_cursor",
                detail: "the cursor does not name a case".into(),
            });
        };
        query = query
            .exclusive_start_key("gsi1pk", s(&partition))
            .exclusive_start_key("gsi1sk", s(after))
            .exclusive_start_key("pk", s(keys::moderation(kind.as_str(), &target)))
            .exclusive_start_key("sk", s(keys::CASE));
    }
    let out = query
        .send()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("listing reports")))?;
    let next = out
        .last_evaluated_key()
        .and_then(|k| get_s(k, "gsi1sk"))
        .map(str::to_owned);
    let items: Vec<Case> = out.items().iter().filter_map(case_view).collect();
    let next_cursor = paging.next_cursor(next);
    let link = next_cursor.clone();
    crate::social::page_response(&req, &CasePage { items, next_cursor }, link.as_deref())
}

async fn load_case(state: &State, id: &str) -> Result<(TargetType, String, Item), ApiError> {
    let (kind, target) = parse_case_id(id).ok_or(ApiError::NotFound("no such case"))?;
    let item = state
        .db
        .get(&keys::moderation(kind.as_str(), &target), keys::CASE)
        .await?
        .ok_or(ApiError::NotFound("no such case"))?;
    Ok((kind, target, item))
}

/// A case with its latest 100 reports. Admins only.
#[utoipa::path(get, path = "/v1/admin/reports/{id}", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path, description = "`<target_type>.<target_id>`")),
    responses((status = 200, body = CaseDetail), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
pub async fn get_report(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    Caller::admin(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let (kind, target, item) = load_case(state, &id).await?;
    let case = case_view(&item).ok_or(ApiError::NotFound("no such case"))?;
    let out = state
        .db
        .client
        .query()
        .table_name(&state.db.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", s(keys::moderation(kind.as_str(), &target)))
        .expression_attribute_values(":prefix", s(keys::REPORT_PREFIX))
        .limit(100)
        .send()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("reading reports")))?;
    let mut reports: Vec<ReportView> = out
        .items()
        .iter()
        .map(|r| ReportView {
            reporter_id: get_s(r, "reporter_id").unwrap_or_default().to_owned(),
            reason: get_s(r, "reason").unwrap_or_default().to_owned(),
            details: get_s(r, "details").map(str::to_owned),
            created_at: get_s(r, "created_at").unwrap_or_default().to_owned(),
        })
        .collect();
    reports.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    json(StatusCode::OK, &CaseDetail { case, reports })
}

/// Resolves a case: `dismiss` (the content stays; hidden content comes back, and is not hidden
/// again by more reports) or `takedown` (the post or comment deleted, with what hangs on it; an
/// account cannot be taken down here). Admins only.
#[utoipa::path(post, path = "/v1/admin/reports/{id}/resolve", tag = "social", security(("bearer" = [])),
    params(("id" = String, Path, description = "`<target_type>.<target_id>`")), request_body = Resolve,
    responses((status = 200, body = Case), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, description = "bad fields; `takedown_unsupported` for an account", body = crate::error::Problem)))]
pub async fn resolve_report(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::admin(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let body: Resolve = json_body(&req, &["application/json"])?;
    let note = body
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 500) {
        return Err(ApiError::invalid("note", "must be at most 500 characters"));
    }
    let (kind, target, item) = load_case(state, &id).await?;
    let post_id = get_s(&item, "post_id").map(str::to_owned);
    let status = match body.action {
        Action::Dismiss => {
            // The content comes back (if it is still there).
            if let Some((pk, sk)) = target_item(state, kind, &target, post_id.as_deref()).await? {
                unhide(state, &pk, &sk).await?;
            }
            "dismissed"
        }
        Action::Takedown => {
            match kind {
                TargetType::Post => {
                    if let Some(post) = posts::load(state, &target).await?
                        && crate::post::remove(&state.db, &post.author_id, &post.id).await?
                    {
                        crate::social::events::deleted(state, &post.author_id, &post.id).await?;
                        crate::search::index::poke(state).await;
                    }
                }
                TargetType::Comment => {
                    let post_id = post_id.as_deref().unwrap_or_default();
                    match crate::social::comments::remove(state, post_id, &target, None).await {
                        Ok(()) | Err(ApiError::NotFound(_)) => {}
                        Err(err) => return Err(err),
                    }
                }
                TargetType::User => {
                    return Err(ApiError::Unprocessable {
                        code: "takedown_unsupported",
                        detail: "an account is not taken down here: dismiss the case, or block or delete the account".into(),
                    });
                }
            }
            "taken_down"
        }
    };
    let mut values = vec![
        (":status", s(status)),
        (":pk", s(keys::cases(status))),
        (":by", s(&caller.user_id)),
        (":at", s(crate::users::timestamp(Utc::now()))),
    ];
    let mut set = vec![
        "#status = :status",
        "gsi1pk = :pk",
        "resolved_by = :by",
        "resolved_at = :at",
    ];
    let mut remove = vec!["hidden_since", "hidden_pk"];
    if status == "dismissed" {
        set.push("dismissed_at = :at");
    }
    match note {
        Some(note) => {
            set.push("resolution_note = :note");
            values.push((":note", s(note)));
        }
        None => remove.push("resolution_note"),
    }
    let expression = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
    let mut update = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(keys::moderation(kind.as_str(), &target)))
        .key("sk", s(keys::CASE))
        .update_expression(expression)
        .expression_attribute_names("#status", "status")
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
    for (name, value) in values {
        update = update.expression_attribute_values(name, value);
    }
    let out = update
        .send()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("resolving a case")))?;
    tracing::info!(case = %id, status, admin = %caller.user_id, "case resolved");
    let case = out
        .attributes
        .as_ref()
        .and_then(case_view)
        .ok_or(ApiError::NotFound("no such case"))?;
    json(StatusCode::OK, &case)
}

async fn unhide(state: &State, pk: &str, sk: &str) -> Result<(), ApiError> {
    // A post back in view is searchable again (listed first: the writer reads what is there).
    let post_id = (sk == keys::POST)
        .then(|| pk.strip_prefix("POST#"))
        .flatten();
    if let Some(post_id) = post_id {
        crate::search::mark(&state.db, &keys::search_post(post_id)).await?;
    }
    let result = state
        .db
        .client
        .update_item()
        .table_name(&state.db.table)
        .key("pk", s(pk))
        .key("sk", s(sk))
        .update_expression(format!("REMOVE {MODERATION_HIDDEN}"))
        .condition_expression("attribute_exists(pk)")
        .send()
        .await;
    crate::db::unless_condition_failed(result)?;
    if post_id.is_some() {
        crate::search::index::poke(state).await;
    }
    Ok(())
}
