//! SelfStar's personas: the AI characters a user keeps (name, gender, features, options), stored
//! under the owner's partition, read by generation when a request names one and by the
//! personas feature that manages them and links Instagram accounts to them.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::db::{Db, Item, get_s, s};
use crate::error::FieldError;
use crate::keys;

/// The most personas an account keeps.
pub const MAX_PERSONAS: usize = 50;
const MAX_NAME_CHARS: usize = 50;
const MAX_FEATURES: usize = 20;
const MAX_FEATURE_CHARS: usize = 100;
const MAX_OPTIONS_BYTES: usize = 4 * 1024;

/// The Instagram professional account linked to a persona, as its owner sees it (the token is
/// never shown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct InstagramLink {
    /// The Instagram user id (app-scoped).
    pub user_id: String,
    pub username: Option<String>,
    pub linked_at: String,
    /// When the long-lived token runs out unless refreshed (Lambent refreshes it well before).
    pub expires_at: String,
}

/// A persona as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Persona {
    pub id: String,
    pub name: String,
    /// `male` or `female` (SelfStar's `남성` / `여성` are accepted and stored so).
    pub gender: Option<crate::users::Gender>,
    /// What the persona looks like, one trait each (`long black hair`, `round glasses`); a
    /// generation that names the persona describes it with them.
    pub features: Vec<String>,
    /// The app's own settings for the persona, kept as given (at most 4 KB of JSON).
    #[schema(value_type = Object)]
    pub options: Map<String, Value>,
    pub instagram: Option<InstagramLink>,
    pub created_at: String,
    pub updated_at: String,
}

impl Persona {
    /// How a prompt names it: its name, gender and features.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.name.clone()];
        match self.gender {
            Some(crate::users::Gender::Male) => parts.push("a man".into()),
            Some(crate::users::Gender::Female) => parts.push("a woman".into()),
            None => {}
        }
        parts.extend(self.features.iter().cloned());
        parts.join(", ")
    }
}

/// The fields a create or an edit sets.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonaFields {
    #[schema(min_length = 1, max_length = 50)]
    pub name: Option<String>,
    pub gender: Option<crate::users::GenderInput>,
    #[schema(max_items = 20)]
    pub features: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub options: Option<Map<String, Value>>,
}

impl PersonaFields {
    /// Checks every field given; each problem named.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(name) = &self.name {
            let chars = name.trim().chars().count();
            if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    "name",
                    format!("must be 1 to {MAX_NAME_CHARS} characters"),
                ));
            }
        }
        if let Some(features) = &self.features {
            if features.len() > MAX_FEATURES {
                errors.push(FieldError::new(
                    "features",
                    format!("at most {MAX_FEATURES}"),
                ));
            }
            for (i, feature) in features.iter().enumerate() {
                let chars = feature.trim().chars().count();
                if chars == 0 || chars > MAX_FEATURE_CHARS || feature.chars().any(char::is_control)
                {
                    errors.push(FieldError::new(
                        format!("features[{i}]"),
                        format!("must be 1 to {MAX_FEATURE_CHARS} characters"),
                    ));
                }
            }
        }
        if let Some(options) = &self.options {
            let bytes = serde_json::to_vec(options)
                .map(|b| b.len())
                .unwrap_or(usize::MAX);
            if bytes > MAX_OPTIONS_BYTES {
                errors.push(FieldError::new(
                    "options",
                    format!("at most {MAX_OPTIONS_BYTES} bytes of JSON"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn gender_of(input: crate::users::GenderInput) -> &'static str {
    match crate::users::Gender::from(input) {
        crate::users::Gender::Male => "male",
        crate::users::Gender::Female => "female",
    }
}

/// A persona from its item.
pub fn from_item(item: &Item) -> anyhow::Result<Persona> {
    let text = |name: &str| get_s(item, name).map(str::to_owned);
    let json = |name: &str| -> anyhow::Result<Value> {
        Ok(match text(name) {
            Some(raw) => serde_json::from_str(&raw).context("a persona's stored JSON")?,
            None => Value::Null,
        })
    };
    let gender = match text("gender").as_deref() {
        Some("male") => Some(crate::users::Gender::Male),
        Some("female") => Some(crate::users::Gender::Female),
        _ => None,
    };
    let instagram = text("ig_user_id").map(|user_id| InstagramLink {
        user_id,
        username: text("ig_username"),
        linked_at: text("ig_linked_at").unwrap_or_default(),
        expires_at: text("ig_expires_at").unwrap_or_default(),
    });
    Ok(Persona {
        id: text("id").context("a persona without its id")?,
        name: text("name").unwrap_or_default(),
        gender,
        features: serde_json::from_value(json("features")?).unwrap_or_default(),
        options: serde_json::from_value(json("options")?).unwrap_or_default(),
        instagram,
        created_at: text("created_at").unwrap_or_default(),
        updated_at: text("updated_at").unwrap_or_default(),
    })
}

/// The owner's persona `id`, if it is theirs.
pub async fn get(db: &Db, user_id: &str, id: &str) -> anyhow::Result<Option<Persona>> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    db.get(&keys::user(user_id), &keys::persona(id))
        .await?
        .map(|item| from_item(&item))
        .transpose()
}

/// The owner's personas' items.
pub async fn items(db: &Db, user_id: &str) -> anyhow::Result<Vec<Item>> {
    db.query_prefix(&keys::user(user_id), keys::PERSONA_PREFIX)
        .await
}

/// The attributes a persona's fields set.
pub fn attributes(
    fields: &PersonaFields,
    now: DateTime<Utc>,
) -> Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)> {
    let mut set = vec![("updated_at", s(crate::users::timestamp(now)))];
    if let Some(name) = &fields.name {
        set.push(("name", s(name.trim())));
    }
    if let Some(gender) = &fields.gender {
        set.push(("gender", s(gender_of(*gender))));
    }
    if let Some(features) = &fields.features {
        let trimmed: Vec<&str> = features.iter().map(|f| f.trim()).collect();
        set.push((
            "features",
            s(serde_json::to_string(&trimmed).unwrap_or_default()),
        ));
    }
    if let Some(options) = &fields.options {
        set.push((
            "options",
            s(serde_json::to_string(options).unwrap_or_default()),
        ));
    }
    set
}
