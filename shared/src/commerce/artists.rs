//! Artists and their payouts (Style License): `POST /v1/users/me/artist` makes an account an
//! artist (a display name, payout details kept sealed under KMS), `GET /v1/users/me/artist`
//! shows its earnings, `POST /v1/payouts` asks for earned credits to be paid out (they leave the
//! balance at once, with a `payout` line), and an admin marks each request paid or rejected
//! (`POST /v1/admin/payouts/{id}/resolve`; a rejection gives the credits back).
//!
//! Earnings arrive with the releases of the jobs that used the artist's styles (the jobs core's
//! share): `earned_credits` and `payable_credits` on the profile count them; only payable credits
//! can be paid out, and never more than the balance.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::credits::{Links, Movement, kinds};
use crate::db::{Item, get_i64, get_s, n, s};
use crate::error::{ApiError, FieldError};
use crate::http::{Caller, json, json_body, path_param, query_param};
use crate::keys;
use crate::sealed::{Names, Sealed};
use crate::state::State;
use crate::users::timestamp;

const PAYOUT_DETAILS: Names = Names {
    ciphertext: "payout_details",
    key: "payout_details_key",
    nonce: "payout_details_nonce",
};

fn context(user_id: &str) -> [(&'static str, &str); 2] {
    [("purpose", "payout-details"), ("user", user_id)]
}

/// `POST /v1/users/me/artist`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BecomeArtist {
    /// 1 to 50 characters, shown on your styles.
    pub display_name: String,
    /// Where your earnings go (a bank account, say): any JSON object up to 2 KB, kept encrypted,
    /// shown only to admins resolving your payouts.
    #[schema(value_type = Object)]
    pub payout_details: serde_json::Value,
}

/// An artist's profile and earnings.
#[derive(Serialize, ToSchema)]
pub struct Artist {
    pub user_id: String,
    pub display_name: String,
    pub payout_details_on_file: bool,
    /// Credits earned from others' generations with your styles, in all.
    pub earned_credits: i64,
    /// Earned credits not yet paid out nor asked for.
    pub payable_credits: i64,
    /// Payable now: payable credits, as far as the balance goes.
    pub available_for_payout: i64,
    pub created_at: String,
}

async fn read(state: &State, user_id: &str) -> Result<(Item, Option<Item>), ApiError> {
    let items = state
        .db
        .batch_get(&[
            (keys::user(user_id), keys::PROFILE.to_owned()),
            (keys::user(user_id), keys::ARTIST.to_owned()),
        ])
        .await?;
    let profile = items
        .iter()
        .find(|i| get_s(i, "sk") == Some(keys::PROFILE))
        .filter(|p| !p.contains_key("deleted_at"))
        .cloned()
        .ok_or(ApiError::NotFound("the account no longer exists"))?;
    let artist = items
        .into_iter()
        .find(|i| get_s(i, "sk") == Some(keys::ARTIST));
    Ok((profile, artist))
}

fn view(user_id: &str, profile: &Item, artist: &Item) -> Artist {
    let payable = get_i64(profile, "payable_credits").unwrap_or(0);
    let balance = get_i64(profile, "credits").unwrap_or(0);
    Artist {
        user_id: user_id.to_owned(),
        display_name: get_s(artist, "display_name").unwrap_or_default().to_owned(),
        payout_details_on_file: Sealed::from_item(artist, PAYOUT_DETAILS).is_some(),
        earned_credits: get_i64(profile, "earned_credits").unwrap_or(0),
        payable_credits: payable,
        available_for_payout: payable.min(balance).max(0),
        created_at: get_s(artist, "created_at").unwrap_or_default().to_owned(),
    }
}

/// Makes your account an artist, or changes your artist name and payout details.
#[utoipa::path(post, path = "/v1/users/me/artist", tag = "payments", security(("bearer" = [])), request_body = BecomeArtist,
    responses((status = 201, description = "now an artist", body = Artist), (status = 200, description = "changed", body = Artist),
        (status = 404, description = "the account no longer exists", body = crate::error::Problem)))]
pub async fn become_artist(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: BecomeArtist = json_body(&req, &["application/json"])?;
    let mut errors = Vec::new();
    let display_name = body.display_name.trim().to_owned();
    if !(1..=50).contains(&display_name.chars().count()) {
        errors.push(FieldError::new(
            "display_name",
            "must be 1 to 50 characters",
        ));
    }
    let details = body.payout_details.to_string();
    if !body.payout_details.is_object() || details.len() > 2048 {
        errors.push(FieldError::new(
            "payout_details",
            "must be a JSON object of at most 2 KB",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (_, before) = read(state, &caller.user_id).await?;
    let sealed = crate::sealed::seal(state, &context(&caller.user_id), &details).await?;
    let now = timestamp(Utc::now());
    let created_at = before
        .as_ref()
        .and_then(|a| get_s(a, "created_at"))
        .unwrap_or(&now)
        .to_owned();
    let mut item: Vec<(&str, AttributeValue)> = vec![
        ("pk", s(keys::user(&caller.user_id))),
        ("sk", s(keys::ARTIST)),
        ("display_name", s(&display_name)),
        ("created_at", s(&created_at)),
        ("updated_at", s(&now)),
    ];
    item.extend(sealed.attributes(PAYOUT_DETAILS));
    state.db.put(item, "saving an artist profile").await?;
    tracing::info!(user_id = %caller.user_id, "artist profile saved");
    let (profile, artist) = read(state, &caller.user_id).await?;
    let artist = artist.context("the artist profile went")?;
    let status = if before.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json(status, &view(&caller.user_id, &profile, &artist))
}

/// Your artist profile and earnings.
#[utoipa::path(get, path = "/v1/users/me/artist", tag = "payments", security(("bearer" = [])),
    responses((status = 200, body = Artist), (status = 404, description = "not an artist", body = crate::error::Problem)))]
pub async fn get_artist(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let (profile, artist) = read(state, &caller.user_id).await?;
    let artist = artist.ok_or(ApiError::NotFound("not an artist"))?;
    json(StatusCode::OK, &view(&caller.user_id, &profile, &artist))
}

/// `POST /v1/payouts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestPayout {
    /// Credits to pay out, at least 1 and at most what is available.
    pub amount: i64,
}

/// A payout request.
#[derive(Serialize, ToSchema)]
pub struct Payout {
    pub id: String,
    pub user_id: String,
    pub amount: i64,
    /// `requested`, `paid` or `rejected`.
    pub status: String,
    pub note: Option<String>,
    pub created_at: String,
    pub resolved_at: Option<String>,
    /// The artist's payout details, for admins only.
    #[schema(value_type = Option<Object>)]
    pub payout_details: Option<serde_json::Value>,
}

/// A page of payout requests.
#[derive(Serialize, ToSchema)]
pub struct PayoutPage {
    pub items: Vec<Payout>,
    pub next_cursor: Option<String>,
}

fn payout_view(item: &Item) -> Payout {
    Payout {
        id: get_s(item, "id").unwrap_or_default().to_owned(),
        user_id: get_s(item, "user_id").unwrap_or_default().to_owned(),
        amount: get_i64(item, "amount").unwrap_or(0),
        status: get_s(item, "status").unwrap_or_default().to_owned(),
        note: get_s(item, "note").map(str::to_owned),
        created_at: get_s(item, "created_at").unwrap_or_default().to_owned(),
        resolved_at: get_s(item, "resolved_at").map(str::to_owned),
        payout_details: None,
    }
}

/// Asks for earned credits to be paid out: they leave your balance now (a `payout` line); an
/// admin pays them to your payout details, or rejects the request and they come back.
#[utoipa::path(post, path = "/v1/payouts", tag = "payments", security(("bearer" = [])), request_body = RequestPayout,
    responses((status = 201, body = Payout), (status = 404, description = "not an artist", body = crate::error::Problem),
        (status = 409, description = "not_enough_earnings", body = crate::error::Problem)))]
pub async fn request_payout(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let body: RequestPayout = json_body(&req, &["application/json"])?;
    if !(1..=10_000_000).contains(&body.amount) {
        return Err(ApiError::invalid("amount", "must be from 1 to 10000000"));
    }
    let (_, artist) = read(state, &caller.user_id).await?;
    if artist.is_none() {
        return Err(ApiError::NotFound("not an artist"));
    }
    let now = Utc::now();
    let now_text = timestamp(now);
    let id = uuid::Uuid::now_v7().to_string();
    let debit = crate::db::tx::update(
        &state.db,
        (&keys::user(&caller.user_id), keys::PROFILE),
        "SET credits = credits - :amount, payable_credits = payable_credits - :amount",
        Some("attribute_exists(pk) AND credits >= :amount AND payable_credits >= :amount"),
        &[],
        vec![(":amount", n(body.amount))],
    )?;
    let line = Movement {
        user_id: &caller.user_id,
        amount: -body.amount,
        kind: kinds::PAYOUT,
        entry: &id,
        links: Links {
            payout_id: Some(&id),
            ..Links::default()
        },
        note: Some("payout requested"),
        by: None,
    }
    .line(&state.db, now)?;
    let request = crate::db::tx::put(
        &state.db,
        vec![
            ("pk", s(keys::payout(&id))),
            ("sk", s(keys::PAYOUT)),
            ("id", s(&id)),
            ("user_id", s(&caller.user_id)),
            ("amount", n(body.amount)),
            ("status", s("requested")),
            ("created_at", s(&now_text)),
            ("gsi1pk", s(keys::payouts_in("requested"))),
            ("gsi1sk", s(&id)),
        ],
        Some("attribute_not_exists(pk)"),
    )?;
    if let Err(err) = crate::db::transact(&state.db, vec![debit, line, request]).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => ApiError::Conflict {
                code: "not_enough_earnings",
                detail: "the amount is more than your payable earnings or your balance".into(),
            },
            _ => ApiError::Internal(anyhow::Error::new(err).context("requesting a payout")),
        });
    }
    tracing::info!(payout_id = %id, user_id = %caller.user_id, amount = body.amount, "payout requested");
    let item = state
        .db
        .get(&keys::payout(&id), keys::PAYOUT)
        .await?
        .context("the payout went")?;
    json(StatusCode::CREATED, &payout_view(&item))
}

/// One of your payout requests.
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Payout), (status = 404, body = crate::error::Problem)))]
pub async fn get_payout(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let item = load(state, &id)
        .await?
        .filter(|p| get_s(p, "user_id") == Some(caller.user_id.as_str()))
        .ok_or(ApiError::NotFound("no such payout"))?;
    json(StatusCode::OK, &payout_view(&item))
}

async fn load(state: &State, id: &str) -> anyhow::Result<Option<Item>> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    state.db.get(&keys::payout(id), keys::PAYOUT).await
}

/// Payout requests by status (`requested` by default), oldest first, with each artist's payout
/// details. Admins only.
#[utoipa::path(get, path = "/v1/admin/payouts", tag = "payments", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "requested (default), paid or rejected"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = PayoutPage), (status = 403, body = crate::error::Problem)))]
pub async fn list_payouts(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::admin(&req)?;
    let status = query_param(&req, "status").unwrap_or_else(|| "requested".to_owned());
    if !matches!(status.as_str(), "requested" | "paid" | "rejected") {
        return Err(ApiError::invalid(
            "status",
            "must be requested, paid or rejected",
        ));
    }
    let page = crate::cursor::Paging::from_request(
        &req,
        state.cursor_key().await?,
        format!("payouts|{status}"),
    )?;
    let pk = keys::payouts_in(&status);
    let start = page
        .after
        .as_ref()
        .map(|id| crate::db::index_key("gsi1", &pk, s(id), (&keys::payout(id), keys::PAYOUT)));
    let out = state
        .db
        .index_page("gsi1", &pk, start, page.limit, false)
        .await?;
    let mut items = Vec::new();
    for item in out.items() {
        let mut payout = payout_view(item);
        payout.payout_details = details(state, &payout.user_id).await?;
        items.push(payout);
    }
    tracing::info!(admin = %caller.user_id, status = %status, count = items.len(), "payouts listed");
    let next = page.next_cursor(
        out.last_evaluated_key()
            .and_then(|k| get_s(k, "gsi1sk"))
            .map(str::to_owned),
    );
    json(
        StatusCode::OK,
        &PayoutPage {
            items,
            next_cursor: next,
        },
    )
}

/// An artist's payout details, opened.
async fn details(state: &State, user_id: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(artist) = state.db.get(&keys::user(user_id), keys::ARTIST).await? else {
        return Ok(None);
    };
    let Some(sealed) = Sealed::from_item(&artist, PAYOUT_DETAILS) else {
        return Ok(None);
    };
    let text = crate::sealed::unseal(state, &context(user_id), &sealed).await?;
    Ok(Some(serde_json::from_str(&text)?))
}

/// `POST /v1/admin/payouts/{id}/resolve`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolvePayout {
    /// `paid` (the money was sent) or `rejected` (the credits go back to the artist).
    pub status: String,
    /// Up to 200 characters (a transfer reference, a reason).
    pub note: Option<String>,
}

/// Marks a payout request paid, or rejects it and gives the credits back. Admins only; once.
#[utoipa::path(post, path = "/v1/admin/payouts/{id}/resolve", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = ResolvePayout,
    responses((status = 200, body = Payout), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 409, description = "payout_resolved: it was, before", body = crate::error::Problem)))]
pub async fn resolve_payout(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::admin(&req)?;
    let id = path_param(&req, "id").unwrap_or_default();
    let body: ResolvePayout = json_body(&req, &["application/json"])?;
    if !matches!(body.status.as_str(), "paid" | "rejected") {
        return Err(ApiError::invalid("status", "must be paid or rejected"));
    }
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::invalid("note", "must be at most 200 characters"));
    }
    let payout = load(state, &id)
        .await?
        .ok_or(ApiError::NotFound("no such payout"))?;
    let user_id = get_s(&payout, "user_id").unwrap_or_default().to_owned();
    let amount = get_i64(&payout, "amount").unwrap_or(0);
    let now = Utc::now();
    let mut values = vec![
        (":status", s(&body.status)),
        (":requested", s("requested")),
        (":now", s(timestamp(now))),
        (":by", s(&caller.user_id)),
        (":index", s(keys::payouts_in(&body.status))),
    ];
    let mut expression =
        "SET #status = :status, resolved_at = :now, resolved_by = :by, gsi1pk = :index".to_owned();
    if let Some(note) = &body.note {
        expression.push_str(", note = :note");
        values.push((":note", s(note)));
    }
    let mut actions = vec![crate::db::tx::update(
        &state.db,
        (&keys::payout(&id), keys::PAYOUT),
        &expression,
        Some("#status = :requested"),
        &[("#status", "status")],
        values,
    )?];
    let entry = format!("{id}-returned");
    if body.status == "rejected" {
        actions.push(crate::db::tx::update(
            &state.db,
            (&keys::user(&user_id), keys::PROFILE),
            "SET credits = credits + :amount, payable_credits = payable_credits + :amount",
            Some("attribute_exists(pk)"),
            &[],
            vec![(":amount", n(amount))],
        )?);
        actions.push(
            Movement {
                user_id: &user_id,
                amount,
                kind: kinds::PAYOUT,
                entry: &entry,
                links: Links {
                    payout_id: Some(&id),
                    ..Links::default()
                },
                note: Some("payout rejected: the credits are back"),
                by: Some(&caller.user_id),
            }
            .line(&state.db, now)?,
        );
    }
    if let Err(err) = crate::db::transact(&state.db, actions).await {
        return Err(match crate::db::failed_conditions(&err) {
            Some(failed) if failed.first() == Some(&true) => ApiError::Conflict {
                code: "payout_resolved",
                detail: "this payout was resolved before".into(),
            },
            Some(_) => ApiError::NotFound("the artist's account no longer exists"),
            None => ApiError::Internal(anyhow::Error::new(err).context("resolving a payout")),
        });
    }
    tracing::info!(payout_id = %id, admin = %caller.user_id, status = %body.status, "payout resolved");
    let item = load(state, &id).await?.context("the payout went")?;
    json(StatusCode::OK, &payout_view(&item))
}
