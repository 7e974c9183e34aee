//! The daily reward (LOKIZ): `GET /v1/credits/daily` and `POST /v1/credits/daily/claim`, once a
//! day in the user's time zone, exactly once under concurrency.
//!
//! The day is the client's local day: the claim carries the device's UTC offset (clients know
//! it, with its daylight saving; Lambda has no time zone database). A claim sets the next one's
//! earliest moment (`daily_next_at`: the next local midnight) on the profile, and the claim is
//! the profile's conditional update (`daily_next_at <= now`) with the credits and the ledger
//! line, one transaction: of any number of concurrent claims one wins. A claim from another
//! offset than the last one's waits a full 24 hours for the next, so changing the offset
//! cannot bring the next day forward.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::credits::{Links, Movement, kinds};
use crate::db::{get_i64, n, s};
use crate::error::ApiError;
use crate::http::{Caller, json};
use crate::keys;
use crate::state::State;
use crate::users::timestamp;

/// `GET /v1/credits/daily`.
#[derive(Serialize, ToSchema)]
pub struct DailyReward {
    /// Credits a claim gives.
    pub credits: i64,
    /// Whether a claim now would give them.
    pub available: bool,
    /// The earliest next claim, when one was made.
    pub next_at: Option<String>,
    /// The UTC offset of the last claim.
    pub utc_offset_minutes: Option<i32>,
}

/// `POST /v1/credits/daily/claim`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The device's offset from UTC now, −720 to 840 (Seoul: 540); default the last claim's, or 0.
    pub utc_offset_minutes: Option<i32>,
}

/// A claim's answer.
#[derive(Serialize, ToSchema)]
pub struct Claimed {
    pub credits: i64,
    pub balance: i64,
    /// The local day claimed (`YYYY-MM-DD`).
    pub day: String,
    pub next_at: String,
}

fn reward(state: &State) -> Result<i64, ApiError> {
    match state.config.payments.daily_reward {
        0 => Err(ApiError::NotFound("this deployment gives no daily reward")),
        credits => Ok(credits),
    }
}

/// The next local midnight after `now` at `offset` minutes from UTC, and the local day.
fn next_midnight(now: DateTime<Utc>, offset: i32) -> (DateTime<Utc>, String) {
    let shift = Duration::minutes(i64::from(offset));
    let local = (now + shift).naive_utc();
    let day = local.date();
    let next = day
        .succ_opt()
        .unwrap_or(day)
        .and_time(NaiveTime::MIN)
        .and_utc()
        - shift;
    (next, day.format("%Y-%m-%d").to_string())
}

async fn read_profile(
    state: &State,
    user_id: &str,
) -> Result<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, ApiError> {
    state
        .db
        .get(&keys::user(user_id), keys::PROFILE)
        .await?
        .filter(|p| !p.contains_key("deleted_at"))
        .ok_or(ApiError::NotFound("the account no longer exists"))
}

/// Whether today's reward is yours to claim, and how much it is.
#[utoipa::path(get, path = "/v1/credits/daily", tag = "credits", security(("bearer" = [])),
    responses((status = 200, body = DailyReward), (status = 404, description = "no daily reward here, or the account is gone", body = crate::error::Problem)))]
pub async fn get_daily_reward(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let credits = reward(state)?;
    let profile = read_profile(state, &caller.user_id).await?;
    let next = get_i64(&profile, "daily_next_at").and_then(|t| DateTime::from_timestamp(t, 0));
    json(
        StatusCode::OK,
        &DailyReward {
            credits,
            available: next.is_none_or(|t| t <= Utc::now()),
            next_at: next.map(timestamp),
            utc_offset_minutes: get_i64(&profile, "daily_offset")
                .and_then(|o| i32::try_from(o).ok()),
        },
    )
}

/// Claims today's reward: once per local day, whatever arrives at once.
#[utoipa::path(post, path = "/v1/credits/daily/claim", tag = "credits", security(("bearer" = [])), request_body = Option<Claim>,
    responses((status = 201, body = Claimed), (status = 404, body = crate::error::Problem),
        (status = 409, description = "already_claimed: the problem's next_at says when", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn claim_daily_reward(state: &State, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let credits = reward(state)?;
    let body: Claim = if req.body().is_empty() {
        Claim::default()
    } else {
        crate::http::json_body(&req, &["application/json"])?
    };
    if body
        .utc_offset_minutes
        .is_some_and(|o| !(-720..=840).contains(&o))
    {
        return Err(ApiError::invalid(
            "utc_offset_minutes",
            "must be from -720 to 840",
        ));
    }
    let profile = read_profile(state, &caller.user_id).await?;
    let last_offset = get_i64(&profile, "daily_offset").and_then(|o| i32::try_from(o).ok());
    let offset = body.utc_offset_minutes.or(last_offset).unwrap_or(0);
    let now = Utc::now();
    let (midnight, day) = next_midnight(now, offset);
    let next = match last_offset {
        Some(last) if last != offset => midnight.max(now + Duration::hours(24)),
        _ => midnight,
    };
    let entry = uuid::Uuid::now_v7().to_string();
    let line = Movement {
        user_id: &caller.user_id,
        amount: credits,
        kind: kinds::DAILY_REWARD,
        entry: &entry,
        links: Links::default(),
        note: Some(&day),
        by: None,
    }
    .line(&state.db, now)?;
    let claim = crate::db::tx::update(
        &state.db,
        (&keys::user(&caller.user_id), keys::PROFILE),
        "SET credits = credits + :credits, daily_next_at = :next, daily_offset = :offset, daily_day = :day",
        Some(
            "attribute_exists(pk) AND attribute_not_exists(deleted_at) AND (attribute_not_exists(daily_next_at) OR daily_next_at <= :now)",
        ),
        &[],
        vec![
            (":credits", n(credits)),
            (":next", n(next.timestamp())),
            (":offset", n(offset)),
            (":day", s(&day)),
            (":now", n(now.timestamp())),
        ],
    )?;
    match crate::db::transact(&state.db, vec![claim, line]).await {
        Ok(()) => {}
        Err(err) if crate::db::failed_conditions(&err).is_some() => {
            let profile = read_profile(state, &caller.user_id).await?;
            let next_at = get_i64(&profile, "daily_next_at")
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .map(timestamp)
                .unwrap_or_default();
            return Err(ApiError::Conflict {
                code: "already_claimed",
                detail: format!("today's reward is claimed; the next from {next_at}"),
            });
        }
        Err(err) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(err).context("claiming the daily reward"),
            ));
        }
    }
    let balance = get_i64(&read_profile(state, &caller.user_id).await?, "credits").unwrap_or(0);
    tracing::info!(user_id = %caller.user_id, credits, day = %day, "daily reward claimed");
    json(
        StatusCode::CREATED,
        &Claimed {
            credits,
            balance,
            day,
            next_at: timestamp(next),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_claim_is_at_the_next_local_midnight() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("time")
                .with_timezone(&Utc)
        };
        // 23:30 in Seoul (UTC+9) is 14:30 UTC: the next is Seoul's midnight, 15:00 UTC.
        let (next, day) = next_midnight(at("2026-12-05T14:30:00Z"), 540);
        assert_eq!(
            (next, day.as_str()),
            (at("2026-12-05T15:00:00Z"), "2026-12-05")
        );
        // Just past it: a new day.
        let (next, day) = next_midnight(at("2026-12-05T15:00:01Z"), 540);
        assert_eq!(
            (next, day.as_str()),
            (at("2026-12-06T15:00:00Z"), "2026-12-06")
        );
        // New York in winter (UTC−5).
        let (next, day) = next_midnight(at("2026-12-05T03:00:00Z"), -300);
        assert_eq!(
            (next, day.as_str()),
            (at("2026-12-05T05:00:00Z"), "2026-12-04")
        );
    }
}
