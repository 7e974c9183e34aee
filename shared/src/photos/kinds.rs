//! The photo job kinds, `upscale` and `bestcut`: their inputs, costs and deadlines.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::Queue;
use crate::error::{ApiError, FieldError};
use crate::jobs::executor::Finished;
use crate::jobs::registry::Kind;
use crate::state::State;
use crate::upscale::{DEFAULT_MODEL, MAX_OUTSCALE, MAX_TILE, MAX_TILE_PAD, MODELS};

/// Output file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The input's format (PNG whenever the output has alpha, as Real-ESRGAN does).
    #[default]
    Auto,
    Jpeg,
    Png,
    /// Lossless WebP.
    Webp,
}

/// How to upscale: shared by `upscale` and an upscaling `bestcut`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct UpscaleSettings {
    /// One of the shipped models; default `realesrgan-x4plus`.
    pub model: Option<String>,
    /// Final scale relative to the input (a Lanczos resize after the model), 1 to 8.
    pub outscale: Option<f32>,
    /// Tile side in input pixels (32 to 512); default the deployment's (`UPSCALE_TILE`), else 512
    /// where the model runs on Lambent's own engine on FMA (CPUs with no bf16) and 256 elsewhere.
    pub tile: Option<u32>,
    /// Context where a tile meets another, in input pixels (0 to 64); default the model's own:
    /// 24 for `realesrgan-x4plus`, 16 for its anime variant, 10 for the animevideov3 models. The
    /// image's edges get 10 mirrored pixels whatever this is.
    pub tile_pad: Option<u32>,
    /// Shrink the input first so its long side is at most this (64 to 8192; PetCam used 1080).
    pub pre_shrink: Option<u32>,
    pub format: Option<Format>,
    /// JPEG quality, 1 to 100 (default 92).
    pub quality: Option<u8>,
}

impl UpscaleSettings {
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL)
    }

    fn check(&self, at: &str, errors: &mut Vec<FieldError>) {
        let field = |name: &str| format!("{at}{name}");
        if let Some(model) = &self.model
            && !MODELS.iter().any(|(name, _)| name == model)
        {
            let names: Vec<_> = MODELS.iter().map(|(n, _)| *n).collect();
            errors.push(FieldError::new(
                field("model"),
                format!("must be one of {}", names.join(", ")),
            ));
        }
        if let Some(outscale) = self.outscale
            && !(1.0..=MAX_OUTSCALE).contains(&outscale)
        {
            errors.push(FieldError::new(
                field("outscale"),
                format!("must be from 1 to {MAX_OUTSCALE}"),
            ));
        }
        if self.tile.is_some_and(|t| !(32..=MAX_TILE).contains(&t)) {
            errors.push(FieldError::new(
                field("tile"),
                format!("must be from 32 to {MAX_TILE}"),
            ));
        }
        if self.tile_pad.is_some_and(|p| p > MAX_TILE_PAD) {
            errors.push(FieldError::new(
                field("tile_pad"),
                format!("must be from 0 to {MAX_TILE_PAD}"),
            ));
        }
        if self.pre_shrink.is_some_and(|s| !(64..=8192).contains(&s)) {
            errors.push(FieldError::new(
                field("pre_shrink"),
                "must be from 64 to 8192",
            ));
        }
        if self.quality.is_some_and(|q| !(1..=100).contains(&q)) {
            errors.push(FieldError::new(field("quality"), "must be from 1 to 100"));
        }
    }

    /// Credits: the x4plus models cost more than the compact ones.
    fn cost(&self) -> i64 {
        if self.model().starts_with("realesrgan-") {
            2
        } else {
            1
        }
    }
}

/// Where a photo was taken (PetCam records it).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Place {
    pub lat: Option<f64>,
    pub lng: Option<f64>,
}

impl Place {
    fn check(&self, errors: &mut Vec<FieldError>) {
        if self.lat.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
            errors.push(FieldError::new("lat", "must be from -90 to 90"));
        }
        if self.lng.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
            errors.push(FieldError::new("lng", "must be from -180 to 180"));
        }
        if self.lat.is_some() != self.lng.is_some() {
            errors.push(FieldError::new("lat", "lat and lng come together"));
        }
    }
}

/// The fields of [`UpscaleSettings`] and [`Place`] (serde cannot deny unknown fields through
/// `flatten`, so the kinds check the names themselves).
const SETTINGS: [&str; 9] = [
    "model",
    "outscale",
    "tile",
    "tile_pad",
    "pre_shrink",
    "format",
    "quality",
    "lat",
    "lng",
];

/// `upscale`'s input.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct UpscaleInput {
    /// A key from `POST /v1/uploads`.
    pub upload_key: String,
    #[serde(flatten)]
    pub settings: UpscaleSettings,
    #[serde(flatten)]
    pub place: Place,
}

/// The most photos one best-cut compares.
pub const BEST_CUT_MAX: usize = 20;

/// Best-cut's work is decoding: it is priced by the pixels it decodes, one credit per started
/// 24 megapixels (two 12-MP phone photos: 1; two 12000×3333 panoramas: 4), plus the upscale.
pub const BEST_CUT_PIXELS_PER_CREDIT: u64 = 24_000_000;

/// The most pixels one best-cut job decodes (6 panoramas of 40 MP, or 20 phone photos).
pub const BEST_CUT_MAX_PIXELS: u64 = 240_000_000;

/// What a best-cut of `pixels` decoded pixels costs, with the upscale of its winner if asked.
pub fn best_cut_price(pixels: u64, input: &BestCutInput) -> i64 {
    let decoding = i64::try_from(pixels.div_ceil(BEST_CUT_PIXELS_PER_CREDIT))
        .unwrap_or(i64::MAX / 2)
        .max(1);
    decoding
        + if input.upscale {
            input.settings.cost()
        } else {
            0
        }
}

/// Prices a best-cut by its uploads' dimensions (read from their headers, nothing decoded), and
/// refuses one over [`BEST_CUT_MAX_PIXELS`] before anything is charged.
async fn quote_best_cut(state: &State, user_id: &str, input: &Value) -> Result<i64, ApiError> {
    let input = check_best_cut(input).map_err(ApiError::Validation)?;
    let mut pixels = 0u64;
    for key in &input.upload_keys {
        if let Some(header) = crate::photos::media::header(state, user_id, key).await? {
            pixels += u64::from(header.width) * u64::from(header.height);
        }
    }
    if pixels > BEST_CUT_MAX_PIXELS {
        return Err(ApiError::invalid(
            "upload_keys",
            format!(
                "the photos have {} megapixels together; a best-cut takes at most {}",
                pixels.div_ceil(1_000_000),
                BEST_CUT_MAX_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(best_cut_price(pixels, &input))
}

/// `bestcut`'s input.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct BestCutInput {
    /// 2 to 20 keys from `POST /v1/uploads`.
    pub upload_keys: Vec<String>,
    /// Upscale the winner in the same job (PetCam's `/bestcut` always did).
    #[serde(default)]
    pub upscale: bool,
    #[serde(flatten)]
    pub settings: UpscaleSettings,
    #[serde(flatten)]
    pub place: Place,
}

/// Parses a kind's input: unknown fields named, then serde's first error.
fn parse<T: serde::de::DeserializeOwned>(
    input: &Value,
    own: &[&str],
) -> Result<T, Vec<FieldError>> {
    let Some(object) = input.as_object() else {
        return Err(vec![FieldError::new("input", "must be an object")]);
    };
    let unknown: Vec<_> = object
        .keys()
        .filter(|k| !own.contains(&k.as_str()) && !SETTINGS.contains(&k.as_str()))
        .map(|k| FieldError::new(k.clone(), "is not a field of this request"))
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    crate::http::from_value_at(input, "").map_err(|error| {
        // Through `flatten` serde loses the path: the flattened parts alone name the field.
        let part = crate::http::from_value_at::<UpscaleSettings>(input, "")
            .err()
            .or_else(|| crate::http::from_value_at::<Place>(input, "").err());
        vec![part.unwrap_or(error)]
    })
}

const UPSCALE_FIELDS: [&str; 1] = ["upload_key"];
const BEST_CUT_FIELDS: [&str; 2] = ["upload_keys", "upscale"];

pub fn parse_upscale(input: &Value) -> Result<UpscaleInput, Vec<FieldError>> {
    parse(input, &UPSCALE_FIELDS)
}

pub fn parse_best_cut(input: &Value) -> Result<BestCutInput, Vec<FieldError>> {
    parse(input, &BEST_CUT_FIELDS)
}

fn key_ok(key: &str) -> bool {
    key.starts_with("uploads/") && key.len() <= 512 && !key.contains("..")
}

fn finish(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Parses and checks `upscale`'s input, naming every problem.
pub fn check_upscale(input: &Value) -> Result<UpscaleInput, Vec<FieldError>> {
    let input = parse_upscale(input)?;
    let mut errors = Vec::new();
    if !key_ok(&input.upload_key) {
        errors.push(FieldError::new(
            "upload_key",
            "must be a key from POST /v1/uploads",
        ));
    }
    input.settings.check("", &mut errors);
    input.place.check(&mut errors);
    finish(errors).map(|()| input)
}

/// Parses and checks `bestcut`'s input, naming every problem.
pub fn check_best_cut(input: &Value) -> Result<BestCutInput, Vec<FieldError>> {
    let input = parse_best_cut(input)?;
    let mut errors = Vec::new();
    if !(2..=BEST_CUT_MAX).contains(&input.upload_keys.len()) {
        errors.push(FieldError::new(
            "upload_keys",
            format!("must name 2 to {BEST_CUT_MAX} uploads"),
        ));
    }
    if input.upload_keys.iter().any(|k| !key_ok(k)) {
        errors.push(FieldError::new(
            "upload_keys",
            "must be keys from POST /v1/uploads",
        ));
    }
    let mut unique = input.upload_keys.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != input.upload_keys.len() {
        errors.push(FieldError::new("upload_keys", "must not repeat a key"));
    }
    input.settings.check("", &mut errors);
    input.place.check(&mut errors);
    finish(errors).map(|()| input)
}

pub fn validate_upscale(input: &Value) -> Result<(), Vec<FieldError>> {
    check_upscale(input).map(drop)
}

pub fn validate_best_cut(input: &Value) -> Result<(), Vec<FieldError>> {
    check_best_cut(input).map(drop)
}

/// A Lambda worker runs at most 15 minutes; a job gets 14.
const UPSCALE_DEADLINE: Duration = Duration::from_secs(14 * 60);

/// The photo kinds, on the queue the deployment puts them (`UPSCALE_QUEUE`).
pub fn kinds(queue: Queue) -> Vec<Kind> {
    vec![upscale_kind(queue), best_cut_kind(queue)]
}

pub fn upscale_kind(queue: Queue) -> Kind {
    Kind {
        name: "upscale",
        cost: |input| parse_upscale(input).map_or(2, |i| i.settings.cost()),
        deadline: |_| UPSCALE_DEADLINE,
        queue,
        validate: validate_upscale,
        offered: Kind::always_offered,
        run: |state, job, progress| {
            Box::pin(async move {
                crate::photos::work::upscale(state, job, progress)
                    .await
                    .map(Finished::Output)
            })
        },
        present: None,
        quote: None,
    }
}

pub fn best_cut_kind(queue: Queue) -> Kind {
    Kind {
        name: "bestcut",
        // The least it costs; `quote` prices it by its photos' pixels at submission.
        cost: |input| parse_best_cut(input).map_or(3, |i| best_cut_price(0, &i)),
        deadline: |_| UPSCALE_DEADLINE,
        queue,
        validate: validate_best_cut,
        offered: Kind::always_offered,
        run: |state, job, progress| {
            Box::pin(async move {
                crate::photos::work::best_cut(state, job, progress)
                    .await
                    .map(Finished::Output)
            })
        },
        present: None,
        quote: Some(|state, user_id, input| Box::pin(quote_best_cut(state, user_id, input))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_checked_field_by_field() {
        assert!(validate_upscale(&json!({"upload_key": "uploads/u/a.jpg"})).is_ok());
        let errors = validate_upscale(&json!({
            "upload_key": "photos/u/a.jpg", "model": "x", "outscale": 9, "tile": 8,
            "tile_pad": 100, "quality": 0, "lat": 91
        }))
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "upload_key",
                "model",
                "outscale",
                "tile",
                "tile_pad",
                "quality",
                "lat",
                "lat"
            ]
        );
        assert!(validate_upscale(&json!({"upload_key": "uploads/u/a", "extra": 1})).is_err());
        assert!(validate_best_cut(&json!({"upload_keys": ["uploads/u/a"]})).is_err());
        assert!(
            validate_best_cut(&json!({"upload_keys": ["uploads/u/a", "uploads/u/a"]})).is_err()
        );
        assert!(
            validate_best_cut(
                &json!({"upload_keys": ["uploads/u/a", "uploads/u/b"], "upscale": true})
            )
            .is_ok()
        );
    }

    #[test]
    fn costs_follow_the_model() {
        let kind = upscale_kind(Queue::Cpu);
        assert_eq!((kind.cost)(&json!({"upload_key": "uploads/u/a"})), 2);
        assert_eq!(
            (kind.cost)(&json!({"upload_key": "uploads/u/a", "model": "realesr-animevideov3-x2"})),
            1
        );
        let kind = best_cut_kind(Queue::Cpu);
        assert_eq!(
            (kind.cost)(&json!({"upload_keys": ["uploads/u/a", "uploads/u/b"]})),
            1
        );
        assert_eq!(
            (kind.cost)(&json!({"upload_keys": ["uploads/u/a", "uploads/u/b"], "upscale": true})),
            3
        );
    }
}
