//! Accounts: the profile item, its validation, and the uniqueness items that keep emails and
//! usernames unique without a read-then-write.

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Datelike as _, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::db::{Db, Item, failed_conditions, get_s, n, put_new, s};
use crate::error::{ApiError, FieldError};
use crate::keys;

/// A membership tier, as WEAV sells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Standard,
    Premium,
}

/// Gender as SelfStar records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
}

/// A gender as clients send it: `male` / `female`, or SelfStar's Korean values for the same two
/// (`남성` male, `여성` female). Stored and shown as [`Gender`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
pub enum GenderInput {
    #[serde(rename = "male")]
    Male,
    #[serde(rename = "female")]
    Female,
    #[serde(rename = "남성")]
    MaleKorean,
    #[serde(rename = "여성")]
    FemaleKorean,
}

impl From<GenderInput> for Gender {
    fn from(input: GenderInput) -> Self {
        match input {
            GenderInput::Male | GenderInput::MaleKorean => Self::Male,
            GenderInput::Female | GenderInput::FemaleKorean => Self::Female,
        }
    }
}

/// A membership: the tier in force and when it lapses back to `free`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Membership {
    pub tier: Tier,
    pub expires_at: Option<String>,
}

/// A user's account as the API shows it to its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    /// `null` for an account made by an outside sign-in that vouched for no email.
    pub email: Option<String>,
    /// Whether the email is known to be the user's: its owner followed the verification mail's
    /// link, or the provider that made the account vouched for it.
    pub email_verified: bool,
    pub username: String,
    pub display_name: Option<String>,
    pub photo_url: Option<String>,
    /// `YYYY-MM-DD`.
    pub birthday: Option<String>,
    pub gender: Option<Gender>,
    /// Shown on the public profile.
    pub bio: Option<String>,
    /// SelfStar's consent screen: `true` until the profile holds both `birthday` and `gender`.
    pub needs_consent: bool,
    pub membership: Membership,
    /// Credit balance.
    pub credits: i64,
    pub role: String,
    pub created_at: String,
}

/// A stored user, with what only the server may see.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub view: UserView,
    /// `None` for an account that signs in only through an outside identity.
    pub password_hash: Option<String>,
}

/// A profile item as stored; other attributes (keys) are not the user's.
#[derive(Deserialize)]
struct StoredUser {
    id: String,
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
    username: String,
    password_hash: Option<String>,
    display_name: Option<String>,
    photo_url: Option<String>,
    birthday: Option<String>,
    gender: Option<String>,
    #[serde(default)]
    bio: Option<String>,
    tier: Option<String>,
    tier_expires_at: Option<String>,
    #[serde(default)]
    credits: i64,
    role: Option<String>,
    created_at: String,
}

impl UserRecord {
    fn from_item(item: &Item, now: DateTime<Utc>) -> anyhow::Result<Self> {
        let stored: StoredUser =
            serde_dynamo::from_item(item.clone()).context("reading a user's item")?;
        let stored_tier = match stored.tier.as_deref() {
            Some("standard") => Tier::Standard,
            Some("premium") => Tier::Premium,
            _ => Tier::Free,
        };
        let lapsed = stored
            .tier_expires_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t <= now);
        let membership = if lapsed || stored_tier == Tier::Free {
            Membership {
                tier: Tier::Free,
                expires_at: None,
            }
        } else {
            Membership {
                tier: stored_tier,
                expires_at: stored.tier_expires_at,
            }
        };
        let gender = match stored.gender.as_deref() {
            Some("male") => Some(Gender::Male),
            Some("female") => Some(Gender::Female),
            _ => None,
        };
        Ok(Self {
            password_hash: stored.password_hash,
            view: UserView {
                id: stored.id,
                email: stored.email,
                email_verified: stored.email_verified,
                username: stored.username,
                display_name: stored.display_name,
                photo_url: stored.photo_url,
                needs_consent: stored.birthday.is_none() || gender.is_none(),
                birthday: stored.birthday,
                gender,
                bio: stored.bio,
                membership,
                credits: stored.credits,
                role: stored.role.unwrap_or_else(|| "user".to_owned()),
                created_at: stored.created_at,
            },
        })
    }
}

/// An RFC 3339 timestamp in UTC with millisecond precision.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Normalises and checks an email address: one `@`, a dotted domain, nothing odd.
pub fn validate_email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim().to_lowercase();
    let bad = || FieldError::new("email", "must be an email address such as name@example.com");
    if email.len() > MAX_EMAIL_BYTES || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|t| t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()));
    if labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
        return Err(bad());
    }
    Ok(email)
}

/// Checks a username: 3 to 30 letters, digits, `_` or `.`.
pub fn validate_username(raw: &str) -> Result<String, FieldError> {
    let ok = (3..=MAX_USERNAME_BYTES).contains(&raw.chars().count())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            "username",
            "must be 3 to 30 letters, digits, '_' or '.'",
        ))
    }
}

/// Checks a password's length: 8 to 128 characters.
pub fn validate_password(raw: &str) -> Result<(), FieldError> {
    if (8..=128).contains(&raw.chars().count()) {
        Ok(())
    } else {
        Err(FieldError::new("password", "must be 8 to 128 characters"))
    }
}

/// A new account to store.
pub struct NewUser {
    pub id: String,
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub starting_credits: i64,
}

/// Stores a new account in one transaction: the profile, the email and username uniqueness items
/// (each `attribute_not_exists`), and the ledger entry of the starting grant. 409 on a duplicate.
pub async fn create(db: &Db, user: NewUser, now: DateTime<Utc>) -> Result<UserView, ApiError> {
    let created_at = timestamp(now);
    let pk = keys::user(&user.id);
    let put = |attributes| put_new(db, attributes);
    let mut actions = vec![
        put(new_profile(
            &pk,
            &user.id,
            &user.username,
            user.starting_credits,
            &created_at,
            vec![
                ("email", s(&user.email)),
                ("password_hash", s(&user.password_hash)),
            ],
        ))?,
        put(vec![
            ("pk", s(keys::email(&user.email))),
            ("sk", s(keys::UNIQUE)),
            ("user_id", s(&user.id)),
        ])?,
        put(vec![
            ("pk", s(keys::username(&user.username))),
            ("sk", s(keys::UNIQUE)),
            ("user_id", s(&user.id)),
        ])?,
    ];
    if let Some(grant) = starting_grant(db, &pk, user.starting_credits, &created_at)? {
        actions.push(grant);
    }
    // Findable by handle from now on.
    actions.push(crate::search::dirty(
        db,
        &keys::search_user(&user.id),
        now.timestamp_millis(),
    )?);
    let result = crate::db::transact(db, actions).await;
    match result {
        Ok(_) => {}
        Err(err) => {
            return Err(match failed_conditions(&err) {
                Some(failed) if failed.get(1) == Some(&true) => ApiError::Conflict {
                    code: "email_taken",
                    detail: "an account with this email exists".into(),
                },
                Some(failed) if failed.get(2) == Some(&true) => ApiError::Conflict {
                    code: "username_taken",
                    detail: "this username is taken".into(),
                },
                _ => ApiError::Internal(anyhow::Error::new(err).context("creating a user")),
            });
        }
    }
    Ok(new_view(
        user.id,
        Some(user.email),
        false,
        user.username,
        user.starting_credits,
        created_at,
    ))
}

/// A new account's profile item: what every account has, and `extra`.
fn new_profile(
    pk: &str,
    id: &str,
    username: &str,
    credits: i64,
    created_at: &str,
    extra: Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>,
) -> Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)> {
    let mut profile = vec![
        ("pk", s(pk)),
        ("sk", s(keys::PROFILE)),
        ("id", s(id)),
        ("username", s(username)),
        ("tier", s("free")),
        ("credits", n(credits)),
        ("active_jobs", n(0)),
        ("role", s("user")),
        ("created_at", s(created_at)),
        ("updated_at", s(created_at)),
    ];
    profile.extend(extra);
    profile
}

/// The ledger entry of a new account's starting grant (none for a grant of 0).
fn starting_grant(
    db: &Db,
    pk: &str,
    credits: i64,
    created_at: &str,
) -> Result<Option<aws_sdk_dynamodb::types::TransactWriteItem>, ApiError> {
    if credits <= 0 {
        return Ok(None);
    }
    Ok(Some(put_new(
        db,
        vec![
            ("pk", s(pk)),
            (
                "sk",
                s(keys::ledger(&uuid::Uuid::now_v7().to_string(), "grant")),
            ),
            ("amount", n(credits)),
            ("reason", s("grant")),
            ("note", s("starting grant")),
            ("created_at", s(created_at)),
        ],
    )?))
}

/// How a new account looks.
fn new_view(
    id: String,
    email: Option<String>,
    vouched: bool,
    username: String,
    credits: i64,
    created_at: String,
) -> UserView {
    UserView {
        id,
        // A new password account's email is unverified; an outside sign-in's was vouched for.
        email_verified: email.is_some() && vouched,
        email,
        username,
        display_name: None,
        photo_url: None,
        birthday: None,
        gender: None,
        bio: None,
        needs_consent: true,
        membership: Membership {
            tier: Tier::Free,
            expires_at: None,
        },
        credits,
        role: "user".into(),
        created_at,
    }
}

/// A new account made by an outside sign-in: no password, a generated username.
pub struct NewFederatedUser<'a> {
    pub id: String,
    /// The provider (`firebase`, `google`, …) and its subject for the user.
    pub provider: &'a str,
    pub subject: &'a str,
    /// An email the provider vouched for: recorded on the profile, never claimed as the
    /// account's unique email (an outside sign-in must not take over a password account).
    pub email: Option<String>,
    pub starting_credits: i64,
    /// More attributes for the account's copy of the identity (a sealed provider token).
    pub identity_extra: Vec<(&'static str, AttributeValue)>,
}

/// How an outside sign-in found its account.
pub enum Federated {
    /// A new account was made for the identity.
    Created(UserView),
    /// The identity's existing account.
    Existing(UserRecord),
}

/// The account an outside identity signs in to, made on its first sign-in: the profile, the
/// identity claim (`attribute_not_exists`), a generated username's claim and the starting grant
/// in one transaction. Two first sign-ins at once make one account: the loser reads the winner's.
pub async fn sign_in_federated(
    db: &Db,
    user: NewFederatedUser<'_>,
    now: DateTime<Utc>,
) -> Result<Federated, ApiError> {
    let claim = keys::identity(user.provider, user.subject);
    if let Some(found) = find_by_identity(db, &claim, now).await? {
        keep_on_identity(db, &found.view.id, user.provider, &user.identity_extra).await?;
        return Ok(Federated::Existing(found));
    }
    let created_at = timestamp(now);
    let pk = keys::user(&user.id);
    let username = format!("u_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut extra: Vec<_> = user.email.iter().map(|e| ("email", s(e))).collect();
    if user.email.is_some() {
        extra.push(("email_verified", AttributeValue::Bool(true)));
    }
    extra.push(("identities", n(1)));
    let profile = new_profile(
        &pk,
        &user.id,
        &username,
        user.starting_credits,
        &created_at,
        extra,
    );
    let mut actions = vec![
        put_new(db, profile)?,
        put_new(
            db,
            vec![
                ("pk", s(&claim)),
                ("sk", s(keys::UNIQUE)),
                ("user_id", s(&user.id)),
                ("provider", s(user.provider)),
            ],
        )?,
        put_new(
            db,
            vec![
                ("pk", s(keys::username(&username))),
                ("sk", s(keys::UNIQUE)),
                ("user_id", s(&user.id)),
            ],
        )?,
        put_new(db, {
            let mut copy = linked_item(
                &pk,
                user.provider,
                user.subject,
                user.email.as_deref(),
                &created_at,
            );
            copy.extend(user.identity_extra.iter().cloned());
            copy
        })?,
    ];
    if let Some(grant) = starting_grant(db, &pk, user.starting_credits, &created_at)? {
        actions.push(grant);
    }
    actions.push(crate::search::dirty(
        db,
        &keys::search_user(&user.id),
        now.timestamp_millis(),
    )?);
    match crate::db::transact(db, actions).await {
        Ok(_) => Ok(Federated::Created(new_view(
            user.id,
            user.email,
            true,
            username,
            user.starting_credits,
            created_at,
        ))),
        Err(err) if failed_conditions(&err).is_some_and(|f| f.get(1) == Some(&true)) => {
            // Another first sign-in of the same identity won the race: its account is this one.
            find_by_identity(db, &claim, now)
                .await?
                .map(Federated::Existing)
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("an identity claim without its account"))
                })
        }
        Err(err) => Err(ApiError::Internal(
            anyhow::Error::new(err).context("creating a federated user"),
        )),
    }
}

/// The account's copy of a linked identity (the claim `IDENTITY#…` says whose it is; this says
/// which identities an account has).
fn linked_item<'a>(
    pk: &str,
    provider: &str,
    subject: &str,
    email: Option<&str>,
    linked_at: &str,
) -> Vec<(&'a str, aws_sdk_dynamodb::types::AttributeValue)> {
    let mut item = vec![
        ("pk", s(pk)),
        ("sk", s(keys::linked_identity(provider))),
        ("provider", s(provider)),
        ("subject", s(subject)),
        ("linked_at", s(linked_at)),
    ];
    if let Some(email) = email {
        item.push(("email", s(email)));
    }
    item
}

/// Sets `attributes` on the account's copy of an identity (a newer provider token); nothing
/// when there are none.
async fn keep_on_identity(
    db: &Db,
    user_id: &str,
    provider: &str,
    attributes: &[(&'static str, AttributeValue)],
) -> anyhow::Result<()> {
    if attributes.is_empty() {
        return Ok(());
    }
    let set = crate::db::set_all(
        attributes
            .iter()
            .map(|(name, value)| (*name, value.clone())),
    );
    let result = db
        .client
        .update_item()
        .table_name(&db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::linked_identity(provider)))
        .condition_expression("attribute_exists(pk)")
        .update_expression(set.expression)
        .set_expression_attribute_names(Some(set.names))
        .set_expression_attribute_values(Some(set.values))
        .send()
        .await;
    crate::db::unless_condition_failed(result).context("keeping a provider token")?;
    Ok(())
}

/// A way into an account other than its password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct LinkedIdentity {
    /// `firebase`, `google`, `kakao` or `naver`.
    pub provider: String,
    /// The provider's id for the user (a Firebase uid, an OpenID Connect `sub`).
    pub subject: String,
    /// The email the provider vouched for when it was linked, if any.
    pub email: Option<String>,
    pub linked_at: String,
}

/// The identities linked to an account, by provider.
pub async fn identities(db: &Db, user_id: &str) -> anyhow::Result<Vec<LinkedIdentity>> {
    let items = db
        .query_prefix(&keys::user(user_id), keys::LINKED_IDENTITY_PREFIX)
        .await?;
    Ok(items
        .iter()
        .filter_map(|item| {
            Some(LinkedIdentity {
                provider: get_s(item, "provider")?.to_owned(),
                subject: get_s(item, "subject")?.to_owned(),
                email: get_s(item, "email").map(str::to_owned),
                linked_at: get_s(item, "linked_at")?.to_owned(),
            })
        })
        .collect())
}

/// What linking found.
pub enum Linked {
    /// Linked now.
    Created(LinkedIdentity),
    /// It was linked to this account already.
    Already(LinkedIdentity),
}

/// Links an outside identity to an account, in one transaction: the identity's claim
/// (`attribute_not_exists`: an identity belongs to one account), the account's copy (one
/// identity per provider) and the account's count of identities.
pub async fn link_identity(
    db: &Db,
    user_id: &str,
    provider: &str,
    subject: &str,
    email: Option<&str>,
    extra: Vec<(&'static str, AttributeValue)>,
    now: DateTime<Utc>,
) -> Result<Linked, ApiError> {
    let pk = keys::user(user_id);
    let claim = keys::identity(provider, subject);
    let linked_at = timestamp(now);
    let count = aws_sdk_dynamodb::types::Update::builder()
        .table_name(&db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::PROFILE))
        .update_expression("ADD identities :one")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":one", n(1))
        .build()
        .context("update")?;
    let actions = vec![
        put_new(
            db,
            vec![
                ("pk", s(&claim)),
                ("sk", s(keys::UNIQUE)),
                ("user_id", s(user_id)),
                ("provider", s(provider)),
            ],
        )?,
        put_new(db, {
            let mut copy = linked_item(&pk, provider, subject, email, &linked_at);
            copy.extend(extra.iter().cloned());
            copy
        })?,
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .update(count)
            .build(),
    ];
    let view = LinkedIdentity {
        provider: provider.to_owned(),
        subject: subject.to_owned(),
        email: email.map(str::to_owned),
        linked_at,
    };
    let Err(err) = crate::db::transact(db, actions).await else {
        return Ok(Linked::Created(view));
    };
    let Some(failed) = failed_conditions(&err) else {
        return Err(ApiError::Internal(
            anyhow::Error::new(err).context("linking an identity"),
        ));
    };
    if failed.get(2) == Some(&true) {
        return Err(ApiError::NotFound("no such account"));
    }
    if failed.first() == Some(&true) {
        let owner = db.get(&claim, keys::UNIQUE).await?;
        if owner.as_ref().and_then(|o| get_s(o, "user_id")) == Some(user_id) {
            let held = identities(db, user_id).await?;
            if let Some(found) = held
                .into_iter()
                .find(|i| i.provider == provider && i.subject == subject)
            {
                return Ok(Linked::Already(found));
            }
        }
        return Err(ApiError::Conflict {
            code: "identity_in_use",
            detail: format!("this {provider} account signs in to another Lambent account"),
        });
    }
    Err(ApiError::Conflict {
        code: "provider_already_linked",
        detail: format!("the account has a {provider} identity already; unlink it first"),
    })
}

/// Unlinks the account's identity at `provider`, unless it is the account's last way in (no
/// password and no other identity): the claim, the copy and the count go in one transaction
/// whose condition is that way in, so two unlinks at once cannot both take the last two.
pub async fn unlink_identity(db: &Db, user_id: &str, provider: &str) -> Result<(), ApiError> {
    let pk = keys::user(user_id);
    let Some(copy) = db.get(&pk, &keys::linked_identity(provider)).await? else {
        return Err(ApiError::NotFound(
            "the account has no identity at this provider",
        ));
    };
    let subject = get_s(&copy, "subject").context("an identity without its subject")?;
    let delete = |pk: String, sk: String, condition: &str, user: Option<&str>| {
        aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&db.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression(condition)
            .set_expression_attribute_values(
                user.map(|u| std::collections::HashMap::from([(":user".to_owned(), s(u))])),
            )
            .build()
            .map(|d| {
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .delete(d)
                    .build()
            })
            .context("delete")
    };
    let count = aws_sdk_dynamodb::types::Update::builder()
        .table_name(&db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::PROFILE))
        .update_expression("SET identities = identities - :one")
        .condition_expression("attribute_exists(password_hash) OR identities > :one")
        .expression_attribute_values(":one", n(1))
        .build()
        .context("update")?;
    let actions = vec![
        delete(
            pk.clone(),
            keys::linked_identity(provider),
            "attribute_exists(pk)",
            None,
        )?,
        delete(
            keys::identity(provider, subject),
            keys::UNIQUE.to_owned(),
            "user_id = :user",
            Some(user_id),
        )?,
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .update(count)
            .build(),
    ];
    match crate::db::transact(db, actions).await {
        Ok(()) => Ok(()),
        Err(err) => match failed_conditions(&err) {
            Some(failed) if failed.get(2) == Some(&true) => Err(ApiError::Conflict {
                code: "last_sign_in_method",
                detail: "this is the account's only way to sign in; set a password or link \
                         another identity first"
                    .into(),
            }),
            Some(_) => Err(ApiError::NotFound(
                "the account has no identity at this provider",
            )),
            None => Err(ApiError::Internal(
                anyhow::Error::new(err).context("unlinking an identity"),
            )),
        },
    }
}

/// What a new password replaces; each is the update's condition.
pub enum Replacing<'a> {
    /// The account's current hash (a change by its holder: a change made meanwhile wins).
    Hash(&'a str),
    /// No password (an account made by an outside sign-in sets its first).
    Nothing,
    /// Whatever was set before a reset token was issued at this time (ms): a token issued before
    /// the last change or reset no longer works.
    IssuedBefore(i64),
}

/// Sets an account's password hash and ends its sessions begun before now (refresh rotation
/// checks `sessions_after`). `false` when `replacing` no longer holds.
pub async fn set_password(
    db: &Db,
    user_id: &str,
    hash: &str,
    replacing: Replacing<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let update = db
        .client
        .update_item()
        .table_name(&db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::PROFILE))
        .update_expression(
            "SET password_hash = :hash, password_changed_ms = :now, sessions_after = :now, \
             updated_at = :at",
        )
        .expression_attribute_values(":hash", s(hash))
        .expression_attribute_values(":now", n(now.timestamp_millis()))
        .expression_attribute_values(":at", s(timestamp(now)));
    let update = match replacing {
        Replacing::Hash(old) => update
            .condition_expression("password_hash = :old")
            .expression_attribute_values(":old", s(old)),
        Replacing::Nothing => update
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(password_hash)"),
        Replacing::IssuedBefore(issued) => update
            .condition_expression(
                "attribute_exists(password_hash) AND \
                 (attribute_not_exists(password_changed_ms) OR password_changed_ms < :issued)",
            )
            .expression_attribute_values(":issued", n(issued)),
    };
    // A change whose answer came after the SDK's attempt timeout is sent again and fails its own
    // condition: the hash it finds (new, salted, so no other change wrote it) says it was this one.
    let result = update
        .return_values_on_condition_check_failure(
            aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
        )
        .send()
        .await;
    Ok(match crate::db::update_or_old(result)? {
        Ok(_) => true,
        Err(old) => old.is_some_and(|old| get_s(&old, "password_hash") == Some(hash)),
    })
}

/// Marks the account's email verified, if it is still `email`. `false` when it is not.
pub async fn mark_email_verified(
    db: &Db,
    user_id: &str,
    email: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let result = db
        .client
        .update_item()
        .table_name(&db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::PROFILE))
        .update_expression("SET email_verified = :yes, updated_at = :at")
        .condition_expression("email = :email")
        .expression_attribute_values(":yes", AttributeValue::Bool(true))
        .expression_attribute_values(":email", s(email))
        .expression_attribute_values(":at", s(timestamp(now)))
        .send()
        .await;
    Ok(crate::db::unless_condition_failed(result)?.is_some())
}

/// The password account an email is claimed by, if any (one read, the claim; then the profile).
pub async fn find_by_email(
    db: &Db,
    email: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<UserRecord>> {
    find_for_login(db, LoginName::Email(email), now).await
}

async fn find_by_identity(
    db: &Db,
    claim: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<UserRecord>> {
    let Some(item) = db.get(claim, keys::UNIQUE).await? else {
        return Ok(None);
    };
    let user_id = get_s(&item, "user_id").context("an identity claim without its user")?;
    let profile = db.get(&keys::user(user_id), keys::PROFILE).await?;
    profile
        .map(|item| UserRecord::from_item(&item, now))
        .transpose()
}

/// How a user names themself at login.
pub enum LoginName<'a> {
    Email(&'a str),
    Username(&'a str),
}

/// Finds an account by email or username. Always makes the same two reads, found or not, so the
/// time taken tells nothing about whether the account exists.
pub async fn find_for_login(
    db: &Db,
    name: LoginName<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<UserRecord>> {
    // A name longer than any registered one is nobody's; it must not reach a key (DynamoDB refuses
    // partition keys over 2,048 bytes), but it costs the same two reads as any other name.
    let unique_pk = match name {
        LoginName::Email(email) if email.trim().len() <= MAX_EMAIL_BYTES => {
            keys::email(&email.trim().to_lowercase())
        }
        LoginName::Username(username) if username.trim().len() <= MAX_USERNAME_BYTES => {
            keys::username(username.trim())
        }
        LoginName::Email(_) | LoginName::Username(_) => keys::username(NO_USER),
    };
    let unique = db.get(&unique_pk, keys::UNIQUE).await?;
    let user_id = unique
        .as_ref()
        .and_then(|item| get_s(item, "user_id"))
        .unwrap_or(NO_USER);
    let item = db.get(&keys::user(user_id), keys::PROFILE).await?;
    item.map(|item| UserRecord::from_item(&item, now))
        .transpose()
}

/// An id no account has (ids are UUIDs), and a username no account can have (too short).
const NO_USER: &str = "none";

/// The longest email an account can have (RFC 5321's path limit; registration checks it).
pub const MAX_EMAIL_BYTES: usize = 254;

/// The longest username an account can have (30 ASCII characters; registration checks it).
pub const MAX_USERNAME_BYTES: usize = 30;

/// Reads an account by id; an account being deleted is none.
pub async fn get(db: &Db, user_id: &str, now: DateTime<Utc>) -> anyhow::Result<Option<UserRecord>> {
    let item = db.get(&keys::user(user_id), keys::PROFILE).await?;
    item.filter(|item| !item.contains_key("deleted_at"))
        .map(|item| UserRecord::from_item(&item, now))
        .transpose()
}

/// Starts an account's deletion, in one transaction: the profile is marked (every read by id
/// then finds no account, and every session ends) and the claims that lead to it go (its
/// username, its email, each identity's), so nothing signs in to it and each is free for a new
/// account at once. The rest (its jobs, files, ledger, endpoints) is the purge's. `false` when
/// the account is gone already. Safe to repeat.
pub async fn begin_deletion(db: &Db, user_id: &str, now: DateTime<Utc>) -> anyhow::Result<bool> {
    use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
    let pk = keys::user(user_id);
    let Some(profile) = db.get(&pk, keys::PROFILE).await? else {
        return Ok(false);
    };
    let mut claims = Vec::new();
    if let Some(username) = get_s(&profile, "username") {
        claims.push(keys::username(username));
    }
    if let Some(email) = get_s(&profile, "email") {
        // An outside sign-in's account records an email it never claimed: the claim may be
        // another account's, and the condition below leaves it alone.
        claims.push(keys::email(email));
    }
    for identity in identities(db, user_id).await? {
        claims.push(keys::identity(&identity.provider, &identity.subject));
    }
    let mut actions =
        vec![TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name(&db.table)
                .key("pk", s(&pk))
                .key("sk", s(keys::PROFILE))
                .update_expression(
                    "SET deleted_at = if_not_exists(deleted_at, :at), sessions_after = :never",
                )
                .expression_attribute_values(":at", s(timestamp(now)))
                .expression_attribute_values(":never", n(i64::MAX))
                .build()
                .context("update")?,
        )
        .build()];
    for claim in claims {
        let owner = db.get(&claim, keys::UNIQUE).await?;
        if owner.as_ref().and_then(|o| get_s(o, "user_id")) != Some(user_id) {
            continue;
        }
        actions.push(release_claim(db, &claim, user_id)?);
    }
    // Out of the search index (its posts follow with their purge).
    actions.push(crate::search::dirty(
        db,
        &keys::search_user(user_id),
        now.timestamp_millis(),
    )?);
    crate::db::transact(db, actions)
        .await
        .context("starting an account's deletion")?;
    Ok(true)
}

/// Deletes a uniqueness claim if it is `user_id`'s (or already gone); someone else's stays.
fn release_claim(
    db: &Db,
    claim: &str,
    user_id: &str,
) -> anyhow::Result<aws_sdk_dynamodb::types::TransactWriteItem> {
    let delete = aws_sdk_dynamodb::types::Delete::builder()
        .table_name(&db.table)
        .key("pk", s(claim))
        .key("sk", s(keys::UNIQUE))
        .condition_expression("attribute_not_exists(pk) OR user_id = :user")
        .expression_attribute_values(":user", s(user_id))
        .build()
        .context("delete")?;
    Ok(aws_sdk_dynamodb::types::TransactWriteItem::builder()
        .delete(delete)
        .build())
}

/// Removes an identity the provider says is no longer linked (the user left it there): its claim,
/// the account's copy and its count, whatever ways in remain. `None` when no account has it.
pub async fn forget_identity(
    db: &Db,
    provider: &str,
    subject: &str,
) -> anyhow::Result<Option<String>> {
    use aws_sdk_dynamodb::types::{Delete, TransactWriteItem, Update};
    let claim = keys::identity(provider, subject);
    let Some(owner) = db.get(&claim, keys::UNIQUE).await? else {
        return Ok(None);
    };
    let user_id = get_s(&owner, "user_id")
        .context("an identity claim without its user")?
        .to_owned();
    let pk = keys::user(&user_id);
    let delete = |pk: String, sk: String| {
        Delete::builder()
            .table_name(&db.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .build()
            .map(|d| TransactWriteItem::builder().delete(d).build())
            .context("delete")
    };
    let count = Update::builder()
        .table_name(&db.table)
        .key("pk", s(&pk))
        .key("sk", s(keys::PROFILE))
        .update_expression("ADD identities :minus")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":minus", n(-1))
        .build()
        .context("update")?;
    let mut actions = vec![
        delete(claim, keys::UNIQUE.to_owned())?,
        delete(pk.clone(), keys::linked_identity(provider))?,
    ];
    if db.get(&pk, keys::PROFILE).await?.is_some() {
        actions.push(TransactWriteItem::builder().update(count).build());
    }
    crate::db::transact(db, actions)
        .await
        .context("forgetting an identity")?;
    Ok(Some(user_id))
}

/// `PATCH /v1/users/me`: JSON merge-patch semantics; a field set to `null` is cleared.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    /// 1 to 50 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    /// An https URL of at most 2048 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub photo_url: Option<Option<String>>,
    /// `YYYY-MM-DD`, in 1900 or later, not in the future.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub birthday: Option<Option<String>>,
    /// `male` or `female` (`남성` and `여성` are accepted for the same two).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<GenderInput>)]
    pub gender: Option<Option<GenderInput>>,
    /// At most 300 characters, shown on the public profile.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub bio: Option<Option<String>>,
    /// A new handle (the username: 3 to 30 letters, digits, `_` or `.`), unique; the old one is
    /// free for others at once.
    #[serde(default)]
    pub username: Option<String>,
}

/// Tells a field sent as `null` (`Some(None)`) from a field not sent (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl ProfilePatch {
    /// Validates every field, reporting all failures at once; returns the attributes to set or clear.
    pub fn validate(
        &self,
        today: NaiveDate,
    ) -> Result<Vec<(&'static str, Option<String>)>, ApiError> {
        let mut errors = Vec::new();
        let mut changes = Vec::new();
        if let Some(value) = &self.display_name {
            let value = value.as_ref().map(|v| v.trim().to_owned());
            match &value {
                Some(v)
                    if v.is_empty()
                        || v.chars().count() > 50
                        || v.chars().any(char::is_control) =>
                {
                    errors.push(FieldError::new(
                        "display_name",
                        "must be 1 to 50 printable characters",
                    ));
                }
                _ => changes.push(("display_name", value)),
            }
        }
        if let Some(value) = &self.photo_url {
            match value {
                Some(v)
                    if !v.starts_with("https://")
                        || v.len() <= "https://".len()
                        || v.len() > 2048
                        || v.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    errors.push(FieldError::new(
                        "photo_url",
                        "must be an https URL of at most 2048 characters",
                    ));
                }
                _ => changes.push(("photo_url", value.clone())),
            }
        }
        if let Some(value) = &self.birthday {
            match value
                .as_deref()
                .map(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d"))
            {
                None => changes.push(("birthday", None)),
                Some(Err(_)) => {
                    errors.push(FieldError::new("birthday", "must be a date as YYYY-MM-DD"))
                }
                Some(Ok(date)) if date.year() < 1900 => {
                    errors.push(FieldError::new("birthday", "must be in 1900 or later"));
                }
                Some(Ok(date)) if date > today => {
                    errors.push(FieldError::new("birthday", "must not be in the future"))
                }
                Some(Ok(date)) => {
                    changes.push(("birthday", Some(date.format("%Y-%m-%d").to_string())))
                }
            }
        }
        if let Some(value) = &self.bio {
            let value = value
                .as_ref()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            match &value {
                Some(v)
                    if v.chars().count() > MAX_BIO_CHARS
                        || v.chars().any(|c| c.is_control() && c != '\n') =>
                {
                    errors.push(FieldError::new(
                        "bio",
                        format!("must be at most {MAX_BIO_CHARS} characters"),
                    ));
                }
                _ => changes.push(("bio", value)),
            }
        }
        if let Some(username) = &self.username
            && let Err(error) = validate_username(username)
        {
            errors.push(error);
        }
        if let Some(value) = &self.gender {
            let text = value.map(|g| match Gender::from(g) {
                Gender::Male => "male".to_owned(),
                Gender::Female => "female".to_owned(),
            });
            changes.push(("gender", text));
        }
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// The longest bio.
pub const MAX_BIO_CHARS: usize = 300;

/// Changes an account's username (its handle) in one transaction: the new name's claim
/// (`attribute_not_exists`: 409 `username_taken`), the old claim's release, the profile.
pub async fn change_username(
    db: &Db,
    user_id: &str,
    new: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
    let Some(record) = get(db, user_id, now).await? else {
        return Err(ApiError::NotFound("the account no longer exists"));
    };
    let old = record.view.username;
    if old == new {
        return Ok(());
    }
    let same_claim = keys::username(&old) == keys::username(new);
    let mut actions = Vec::new();
    if !same_claim {
        actions.push(put_new(
            db,
            vec![
                ("pk", s(keys::username(new))),
                ("sk", s(keys::UNIQUE)),
                ("user_id", s(user_id)),
            ],
        )?);
        actions.push(release_claim(db, &keys::username(&old), user_id)?);
    }
    actions.push(
        TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&db.table)
                    .key("pk", s(keys::user(user_id)))
                    .key("sk", s(keys::PROFILE))
                    .update_expression("SET username = :new, updated_at = :at")
                    .condition_expression("username = :old")
                    .expression_attribute_values(":new", s(new))
                    .expression_attribute_values(":old", s(&old))
                    .expression_attribute_values(":at", s(timestamp(now)))
                    .build()
                    .context("update")?,
            )
            .build(),
    );
    actions.push(crate::search::dirty(
        db,
        &keys::search_user(user_id),
        now.timestamp_millis(),
    )?);
    match crate::db::transact(db, actions).await {
        Ok(()) => Ok(()),
        Err(err) => match failed_conditions(&err) {
            Some(failed) if !same_claim && failed.first() == Some(&true) => {
                Err(ApiError::Conflict {
                    code: "username_taken",
                    detail: "this username is taken".into(),
                })
            }
            Some(_) => Err(ApiError::Conflict {
                code: "username_changed",
                detail: "the username changed meanwhile; try again".into(),
            }),
            None => Err(ApiError::Internal(
                anyhow::Error::new(err).context("changing a username"),
            )),
        },
    }
}

/// Applies validated profile changes to an existing account and returns it as stored.
pub async fn update_profile(
    db: &Db,
    user_id: &str,
    changes: &[(&'static str, Option<String>)],
    now: DateTime<Utc>,
) -> Result<Option<UserView>, ApiError> {
    if changes.iter().any(|(name, _)| *name == "display_name") {
        // The searched name: listed for the index first (the writer reads what is stored).
        crate::search::mark(db, &keys::search_user(user_id)).await?;
    }
    let mut sets = vec!["updated_at = :updated_at".to_owned()];
    let mut removes = Vec::new();
    let mut request = db
        .client
        .update_item()
        .table_name(&db.table)
        .key("pk", s(keys::user(user_id)))
        .key("sk", s(keys::PROFILE))
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":updated_at", s(timestamp(now)))
        .return_values(ReturnValue::AllNew);
    for (name, value) in changes {
        match value {
            Some(value) => {
                sets.push(format!("{name} = :{name}"));
                request = request.expression_attribute_values(format!(":{name}"), s(value));
            }
            None => removes.push(*name),
        }
    }
    let mut expression = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    let updated =
        crate::db::unless_condition_failed(request.update_expression(expression).send().await)
            .context("updating a profile")?;
    let Some(out) = updated else { return Ok(None) };
    let item = out.attributes.context("the update returned no item")?;
    Ok(Some(UserRecord::from_item(&item, now)?.view))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(tier: &str, expires_at: Option<&str>) -> Item {
        let mut item = Item::new();
        for (k, v) in [
            ("id", "u1"),
            ("email", "a@b.co"),
            ("username", "ann"),
            ("password_hash", "h"),
            ("created_at", "t"),
            ("tier", tier),
        ] {
            item.insert(k.to_owned(), s(v));
        }
        if let Some(at) = expires_at {
            item.insert("tier_expires_at".to_owned(), s(at));
        }
        item
    }

    #[test]
    fn a_membership_lapses_to_free_at_its_expiry() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let active = UserRecord::from_item(&item("premium", Some("2026-12-01T00:00:00Z")), now)
            .expect("user");
        assert_eq!(active.view.membership.tier, Tier::Premium);
        assert_eq!(
            active.view.membership.expires_at.as_deref(),
            Some("2026-12-01T00:00:00Z")
        );
        let lapsed = UserRecord::from_item(&item("standard", Some("2026-11-01T00:00:00Z")), now)
            .expect("user");
        assert_eq!(
            lapsed.view.membership,
            Membership {
                tier: Tier::Free,
                expires_at: None
            }
        );
        let open_ended = UserRecord::from_item(&item("standard", None), now).expect("user");
        assert_eq!(open_ended.view.membership.tier, Tier::Standard);
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            validate_email("  Ann@Example.COM ").expect("valid"),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "a n@example.com",
            "ann@-x.com",
            "ann@example.c0m",
        ] {
            assert!(validate_email(bad).is_err(), "{bad} passed");
        }
    }

    #[test]
    fn usernames_and_passwords_have_bounds() {
        assert!(validate_username("ann_1.b").is_ok());
        assert!(validate_username("an").is_err());
        assert!(validate_username("ann smith").is_err());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
    }

    #[test]
    fn a_patch_reports_every_bad_field_and_clears_nulls() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).expect("date");
        let patch: ProfilePatch = serde_json::from_str(
            r#"{"display_name":"","photo_url":"http://x","birthday":"2027-01-01","gender":"female"}"#,
        )
        .expect("shape");
        let Err(ApiError::Validation(errors)) = patch.validate(today) else {
            panic!("expected errors")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["display_name", "photo_url", "birthday"]);

        let patch: ProfilePatch =
            serde_json::from_str(r#"{"birthday":null,"display_name":" Ann "}"#).expect("shape");
        let changes = patch.validate(today).expect("valid");
        assert_eq!(
            changes,
            [("display_name", Some("Ann".to_owned())), ("birthday", None)]
        );
        let patch: ProfilePatch =
            serde_json::from_str(r#"{"birthday":"1899-12-31"}"#).expect("shape");
        assert!(patch.validate(today).is_err());
    }
}
