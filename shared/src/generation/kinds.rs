//! The generation kinds: `generate` (a provider, a model and a task with its arguments), and the
//! LOKIZ operations as named presets with their costs. Inputs are checked here before admission;
//! the provider's own input document is built from them when the worker submits.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use crate::domain::Queue;
use crate::error::FieldError;
use crate::generation::providers::ProviderName;
use crate::jobs::registry::Kind;

/// What a generation produces, each with its own arguments and defaults.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, strum::EnumString, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Task {
    TextToImage,
    ImageToImage,
    ImageToVideo,
    /// A character image and one of the owner's videos (Wan Animate: motion moved onto the
    /// character, or the video's subject replaced by it).
    VideoToVideo,
    /// The subject of an image kept, its background made transparent (WEAV's and LOKIZ's
    /// stickers).
    RemoveBackground,
    Music,
    /// A style (LoRA) trained on a set of images.
    TrainStyle,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    /// How long the provider may take once it has the job.
    pub fn run_for(self) -> Duration {
        match self {
            Self::TextToImage | Self::ImageToImage | Self::RemoveBackground => {
                Duration::from_secs(15 * 60)
            }
            Self::ImageToVideo | Self::VideoToVideo => Duration::from_secs(30 * 60),
            Self::Music => Duration::from_secs(10 * 60),
            Self::TrainStyle => Duration::from_secs(3 * 3600),
        }
    }
}

/// A LOKIZ operation: its kind name, cost, task, and the provider and model it runs on unless
/// `PRESET_MODELS` says otherwise.
pub struct Preset {
    pub name: &'static str,
    pub cost: i64,
    pub task: Task,
    pub provider: ProviderName,
    pub model: &'static str,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "template",
        cost: 20,
        task: Task::ImageToVideo,
        provider: ProviderName::Fal,
        model: "fal-ai/kling-video/v1.6/standard/image-to-video",
    },
    // Wan 2.2 Animate at fal: `video_url` and `image_url` (fal's model pages).
    Preset {
        name: "glitch_animate",
        cost: 30,
        task: Task::VideoToVideo,
        provider: ProviderName::Fal,
        model: "fal-ai/wan/v2.2-14b/animate/move",
    },
    Preset {
        name: "glitch_replace",
        cost: 30,
        task: Task::VideoToVideo,
        provider: ProviderName::Fal,
        model: "fal-ai/wan/v2.2-14b/animate/replace",
    },
    // BiRefNet at fal: `image_url` in, a transparent PNG `image` out (fal's model page).
    Preset {
        name: "remove_background",
        cost: 2,
        task: Task::RemoveBackground,
        provider: ProviderName::Fal,
        model: "fal-ai/birefnet",
    },
    Preset {
        name: "music",
        cost: 5,
        task: Task::Music,
        provider: ProviderName::Replicate,
        model: "meta/musicgen",
    },
];

/// How long a claimed generation job may take to reach its provider; after submission the task's
/// own run time applies.
const SUBMIT_WINDOW: Duration = Duration::from_secs(300);

/// The generation kinds; fails on a `PRESET_MODELS` entry that names no preset, provider or
/// model id.
pub fn kinds(config: &crate::config::Config) -> anyhow::Result<Vec<Kind>> {
    preset_models(config)?;
    Ok(vec![
        Kind {
            name: "generate",
            cost: generate_cost,
            deadline: |_| SUBMIT_WINDOW,
            queue: Queue::Cpu,
            validate: |input| parse(input, None).map(|_| ()),
            offered: check_offered,
            run: |state, job, _| Box::pin(crate::generation::work::submit(state, job)),
            present: Some(|state, job| Box::pin(crate::generation::outputs::add_urls(state, job))),
            quote: None,
        },
        preset_kind::<0>(),
        preset_kind::<1>(),
        preset_kind::<2>(),
        preset_kind::<3>(),
        preset_kind::<4>(),
        Kind {
            name: "train_style",
            cost: |_| TRAIN_STYLE_COST,
            deadline: |_| SUBMIT_WINDOW,
            queue: Queue::Cpu,
            validate: |input| parse_training(input).map(|_| ()),
            offered: check_offered,
            run: |state, job, _| Box::pin(crate::generation::work::submit(state, job)),
            present: Some(|state, job| Box::pin(crate::generation::outputs::add_urls(state, job))),
            quote: None,
        },
    ])
}

/// Where `PRESET_MODELS` moves the presets: `(preset, provider, model)`, each checked.
pub fn preset_models(
    config: &crate::config::Config,
) -> anyhow::Result<Vec<(&'static Preset, ProviderName, &str)>> {
    let mut models = Vec::new();
    for (name, provider, model) in &config.generation.preset_models {
        let preset =
            preset(name).with_context(|| format!("PRESET_MODELS: {name} is not a preset"))?;
        let provider = ProviderName::parse(provider)
            .with_context(|| format!("PRESET_MODELS: {provider} is not fal, replicate or ai"))?;
        anyhow::ensure!(
            valid_model(model),
            "PRESET_MODELS: {model} is not a model id"
        );
        models.push((preset, provider, model.as_str()));
    }
    Ok(models)
}

/// Credits a style training costs.
pub const TRAIN_STYLE_COST: i64 = 50;
/// The model our AI servers train styles with unless the request names another.
pub const DEFAULT_TRAINER: &str = "lambent/style-lora";
/// Training images per style.
pub const TRAINING_IMAGES: std::ops::RangeInclusive<usize> = 4..=50;

/// Checks a `train_style` input: `{name, upload_keys (4–50), trigger_word?, steps?, base_model?}`.
/// Styles train on our own AI servers.
pub fn parse_training(input: &Value) -> Result<Spec, Vec<FieldError>> {
    let Some(object) = input.as_object() else {
        return Err(vec![FieldError::new("input", "must be an object")]);
    };
    let mut fields = Fields {
        object,
        errors: Vec::new(),
    };
    for key in object.keys().filter(|k| {
        !matches!(
            k.as_str(),
            "name" | "upload_keys" | "trigger_word" | "steps" | "base_model"
        )
    }) {
        fields.bad(key, "is not a field of train_style");
    }
    let name: Option<String> = fields.require(
        "name",
        |n: &String| !n.trim().is_empty() && n.chars().count() <= 80,
        "is required: 1 to 80 characters",
    );
    let keys: Vec<String> = fields
        .require(
            "upload_keys",
            |keys: &Vec<String>| {
                TRAINING_IMAGES.contains(&keys.len())
                    && keys.iter().all(|k| (1..=512).contains(&k.len()))
            },
            &format!(
                "must be {} to {} upload keys",
                TRAINING_IMAGES.start(),
                TRAINING_IMAGES.end()
            ),
        )
        .unwrap_or_default();
    let trigger_word: Option<String> = fields.take(
        "trigger_word",
        |w: &String| {
            (1..=40).contains(&w.len()) && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        },
        "must be 1 to 40 letters, digits or _",
    );
    let steps = fields.integer("steps", 100..=5000, 1000);
    let model = if fields.has("base_model") {
        fields.take(
            "base_model",
            |m: &String| valid_model(m),
            "must be a model id such as owner/name",
        )
    } else {
        Some(DEFAULT_TRAINER.to_owned())
    };
    let errors = fields.errors;
    match (name, model) {
        (Some(name), Some(model)) if errors.is_empty() => {
            let mut arguments = Map::new();
            arguments.insert("name".into(), json!(name));
            arguments.insert("steps".into(), json!(steps));
            if let Some(word) = trigger_word {
                arguments.insert("trigger_word".into(), json!(word));
            }
            Ok(Spec {
                provider: ProviderName::Ai,
                model,
                task: Task::TrainStyle,
                prompt: None,
                negative_prompt: None,
                uploads: keys.into_iter().map(|k| ("image", k)).collect(),
                video_id: None,
                width: 0,
                height: 0,
                num_images: 0,
                seed: None,
                strength: 0.0,
                duration_seconds: 0,
                template: None,
                style_id: None,
                persona_id: None,
                arguments,
            })
        }
        _ => Err(errors),
    }
}

/// The kind of `PRESETS[I]` (kinds hold plain functions, so the preset is a constant).
fn preset_kind<const I: usize>() -> Kind {
    Kind {
        name: PRESETS[I].name,
        cost: |_| PRESETS[I].cost,
        deadline: |_| SUBMIT_WINDOW,
        queue: Queue::Cpu,
        validate: |input| parse(input, Some(&PRESETS[I])).map(|_| ()),
        offered: check_offered,
        run: |state, job, _| Box::pin(crate::generation::work::submit(state, job)),
        present: Some(|state, job| Box::pin(crate::generation::outputs::add_urls(state, job))),
        quote: None,
    }
}

/// Refuses, before admission, a generation job whose provider this deployment does not offer.
pub fn check_offered(
    state: &crate::state::State,
    kind: &Kind,
    input: &Value,
) -> Result<(), FieldError> {
    match configured_spec(&state.config, kind.name, input) {
        Ok(spec) if !crate::generation::offered(state, spec.provider) => Err(FieldError::new(
            if kind.name == "generate" {
                "input.provider"
            } else {
                "kind"
            },
            format!(
                "{} is not configured in this deployment",
                spec.provider.as_str()
            ),
        )),
        _ => Ok(()),
    }
}

/// A preset by name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

fn generate_cost(input: &Value) -> i64 {
    let images = input["num_images"].as_i64().unwrap_or(1).clamp(1, 4);
    match input["task"].as_str().and_then(Task::parse) {
        Some(Task::TextToImage | Task::ImageToImage) | None => 4 * images,
        Some(Task::ImageToVideo) => 20,
        Some(Task::VideoToVideo) => 30,
        Some(Task::RemoveBackground) => 2,
        Some(Task::Music) => 5,
        Some(Task::TrainStyle) => TRAIN_STYLE_COST,
    }
}

/// A checked generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub provider: ProviderName,
    pub model: String,
    pub task: Task,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    /// The uploads it reads, by role (`image`, `subject_image`).
    pub uploads: Vec<(&'static str, String)>,
    /// One of the owner's videos (`video_to_video`): the motion to move, or the scene whose
    /// subject is replaced.
    pub video_id: Option<String>,
    pub width: u32,
    pub height: u32,
    pub num_images: u32,
    pub seed: Option<u64>,
    pub strength: f64,
    pub duration_seconds: u32,
    pub template: Option<String>,
    /// A style trained here (`train_style`) whose weights the provider applies.
    pub style_id: Option<String>,
    /// One of the owner's personas: the prompt describes it first.
    pub persona_id: Option<String>,
    /// Provider-specific extras, passed through under our own fields.
    pub arguments: Map<String, Value>,
}

const MAX_PROMPT_CHARS: usize = 2000;
const MAX_ARGUMENTS_BYTES: usize = 16 * 1024;

/// Provider fields that name files: Lambent sets them from the owner's uploads and styles (as
/// presigned URLs of its own bucket) or leaves them empty; `arguments` may not.
const FILE_FIELDS: &[&str] = &[
    "image",
    "images",
    "image_url",
    "image_urls",
    "subject_image",
    "subject_image_url",
    "mask",
    "mask_url",
    "style",
    "style_url",
    "loras",
    "lora",
    "lora_url",
    "lora_weights",
    "video",
    "video_url",
    "audio",
    "audio_url",
    "input_image",
    "control_image",
    "file",
    "files",
];

/// Whether a string holds a resource a provider would fetch: a URL or URI anywhere in it
/// (`scheme://…`) or a `data:` URI.
fn names_a_resource(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.trim_start().starts_with("data:")
        || text.match_indices("://").any(|(at, _)| {
            text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
}

/// The first argument a provider could use to fetch what the owner chose (SSRF through the
/// provider, or another user's files): a file field, a key ending in `_url(s)`, or a string
/// anywhere that names a resource. `(key, why)`.
fn unsafe_argument(arguments: &Map<String, Value>) -> Option<(String, &'static str)> {
    fn strings(value: &Value) -> Box<dyn Iterator<Item = &str> + '_> {
        match value {
            Value::String(text) => Box::new(std::iter::once(text.as_str())),
            Value::Array(items) => Box::new(items.iter().flat_map(strings)),
            Value::Object(map) => Box::new(map.values().flat_map(strings)),
            _ => Box::new(std::iter::empty()),
        }
    }
    for (key, value) in arguments {
        let name = key.to_ascii_lowercase();
        if FILE_FIELDS.contains(&name.as_str()) || name.ends_with("_url") || name.ends_with("_urls")
        {
            return Some((
                key.clone(),
                "names files: give them as upload_keys or style_id",
            ));
        }
        if strings(value).any(names_a_resource) {
            return Some((
                key.clone(),
                "must not hold URLs: files come from upload_keys or style_id",
            ));
        }
    }
    None
}

/// A model id: `owner/name` (Replicate, optionally `:version`), `owner/app/path…` (fal).
pub fn valid_model(model: &str) -> bool {
    let (path, version) = match model.split_once(':') {
        Some((path, version)) => (path, Some(version)),
        None => (model, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    (1..=200).contains(&model.len())
        && (2..=6).contains(&segments.len())
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && *s != ".."
        })
        && version
            .is_none_or(|v| (1..=64).contains(&v.len()) && v.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A generation input's fields, each read with serde into its type on its own, so that every
/// problem is named at once (one struct would stop at the first wrong type).
struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn bad(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .push(FieldError::new(format!("input.{field}"), message));
    }

    /// The field as a `T` that passes `valid`; `None` when absent, or (with an error saying
    /// `message`) when it is not such a `T`.
    fn take<T: serde::de::DeserializeOwned>(
        &mut self,
        name: &str,
        valid: impl Fn(&T) -> bool,
        message: &str,
    ) -> Option<T> {
        let value = self.object.get(name)?;
        match T::deserialize(value) {
            Ok(v) if valid(&v) => Some(v),
            _ => {
                self.bad(name, message);
                None
            }
        }
    }

    /// [`Fields::take`] of a field that must be there.
    fn require<T: serde::de::DeserializeOwned>(
        &mut self,
        name: &str,
        valid: impl Fn(&T) -> bool,
        message: &str,
    ) -> Option<T> {
        if !self.object.contains_key(name) {
            self.bad(name, message);
            return None;
        }
        self.take(name, valid, message)
    }

    /// An integer in `range`, `default` when absent.
    fn integer(&mut self, name: &str, range: std::ops::RangeInclusive<u64>, default: u64) -> u64 {
        let message = format!(
            "must be an integer from {} to {}",
            range.start(),
            range.end()
        );
        self.take(name, |n: &u64| range.contains(n), &message)
            .unwrap_or(default)
    }

    fn has(&self, name: &str) -> bool {
        self.object.contains_key(name)
    }
}

fn any<T>(_: &T) -> bool {
    true
}

/// Checks a generation input (of `generate`, or of `preset` when given) and returns every problem.
pub fn parse(input: &Value, preset: Option<&Preset>) -> Result<Spec, Vec<FieldError>> {
    let Some(object) = input.as_object() else {
        return Err(vec![FieldError::new("input", "must be an object")]);
    };
    let mut fields = Fields {
        object,
        errors: Vec::new(),
    };
    let allowed: &[&str] = match preset.map(|p| p.name) {
        None => &[
            "provider",
            "model",
            "task",
            "prompt",
            "negative_prompt",
            "upload_key",
            "width",
            "height",
            "num_images",
            "seed",
            "strength",
            "duration_seconds",
            "style_id",
            "persona_id",
            "arguments",
            "remix_of",
            "video_id",
        ],
        Some("template") => &["upload_key", "template", "prompt", "remix_of"],
        Some("glitch_animate") => &["upload_key", "video_id", "prompt", "remix_of"],
        Some("glitch_replace") => &["video_id", "subject_upload_key", "prompt", "remix_of"],
        Some("remove_background") => &["upload_key", "remix_of"],
        Some(_) => &["prompt", "duration_seconds", "remix_of"],
    };
    for key in object.keys().filter(|k| !allowed.contains(&k.as_str())) {
        fields.bad(key, "is not a field of this kind");
    }
    let (provider, model, task) = match preset {
        Some(p) => (Some(p.provider), Some(p.model.to_owned()), Some(p.task)),
        None => (
            fields.require::<ProviderName>("provider", any, "must be fal, replicate or ai"),
            fields.require(
                "model",
                |m: &String| valid_model(m),
                "must be a model id such as fal-ai/flux/dev or owner/name[:version]",
            ),
            fields.require::<Task>(
                "task",
                any,
                "must be text_to_image, image_to_image, image_to_video, video_to_video, remove_background or music",
            ),
        ),
    };
    let prompt_required = matches!(
        task,
        Some(Task::TextToImage | Task::ImageToImage | Task::Music)
    );
    let prompt_message = format!("must be 1 to {MAX_PROMPT_CHARS} characters");
    let valid_prompt = |p: &String| !p.trim().is_empty() && p.chars().count() <= MAX_PROMPT_CHARS;
    let prompt = if prompt_required && !fields.has("prompt") {
        fields.bad("prompt", "is required");
        None
    } else {
        fields.take("prompt", valid_prompt, &prompt_message)
    };
    let negative_prompt = fields.take(
        "negative_prompt",
        |p: &String| p.chars().count() <= MAX_PROMPT_CHARS,
        &format!("must be at most {MAX_PROMPT_CHARS} characters"),
    );
    let needs_image = matches!(
        task,
        Some(Task::ImageToImage | Task::ImageToVideo | Task::VideoToVideo | Task::RemoveBackground)
    );
    let replaces = preset.is_some_and(|p| p.name == "glitch_replace");
    let mut uploads = Vec::new();
    // A replacement's subject is the image the model takes (`image_url` at fal).
    for (field, role, required) in [
        ("upload_key", "image", needs_image && !replaces),
        ("subject_upload_key", "image", replaces),
    ] {
        if !fields.has(field) {
            if required {
                fields.bad(field, "is required: an upload key from POST /v1/uploads");
            }
        } else if !needs_image {
            fields.bad(field, "is not used by this task");
        } else if let Some(key) = fields.take(
            field,
            |k: &String| (1..=512).contains(&k.len()),
            "must be an upload key",
        ) {
            uploads.push((role, key));
        }
    }
    let width = fields.integer("width", 256..=2048, 1024);
    let height = fields.integer("height", 256..=2048, 1024);
    let num_images = fields.integer("num_images", 1..=4, 1);
    let seed = fields
        .has("seed")
        .then(|| fields.integer("seed", 0..=u64::from(u32::MAX), 0));
    let (duration_range, duration_default) = if task == Some(Task::Music) {
        (1..=120, 30)
    } else {
        (1..=10, 5)
    };
    let duration_seconds = fields.integer("duration_seconds", duration_range, duration_default);
    if (fields.has("width") || fields.has("height"))
        && (!width.is_multiple_of(8) || !height.is_multiple_of(8))
    {
        fields.bad("width", "width and height must be multiples of 8");
    }
    let strength = fields
        .take(
            "strength",
            |s: &f64| (0.0..=1.0).contains(s),
            "must be a number from 0 to 1",
        )
        .unwrap_or(0.75);
    let template = if preset.is_some_and(|p| p.name == "template") {
        fields.require(
            "template",
            |t: &String| {
                (1..=64).contains(&t.len())
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            },
            "is required: a template name of letters, digits, - and _",
        )
    } else {
        None
    };
    let style_id = fields.take(
        "style_id",
        |id: &String| {
            uuid::Uuid::parse_str(id).is_ok()
                && matches!(task, Some(Task::TextToImage | Task::ImageToImage))
        },
        "must be the id of one of your styles or a published one, for image tasks",
    );
    let persona_id = fields.take(
        "persona_id",
        |id: &String| uuid::Uuid::parse_str(id).is_ok() && prompt.is_some(),
        "must be the id of one of your personas, with a prompt",
    );
    let video_id = if task == Some(Task::VideoToVideo) {
        fields.require(
            "video_id",
            |id: &String| uuid::Uuid::parse_str(id).is_ok(),
            "is required: the id of one of your videos (POST /v1/videos)",
        )
    } else {
        if fields.has("video_id") {
            fields.bad("video_id", "is used only by video_to_video");
        }
        None
    };
    // The post this generation remixes (LOKIZ): who may remix it is checked before admission
    // (the social layer's check), and a post published from the job records it as its source.
    fields.take(
        "remix_of",
        |id: &String| uuid::Uuid::parse_str(id).is_ok(),
        "must be the id of a post",
    );
    let arguments = fields
        .take(
            "arguments",
            |map: &Map<String, Value>| {
                map.len() <= 32
                    && Value::Object(map.clone()).to_string().len() <= MAX_ARGUMENTS_BYTES
            },
            "must be an object of at most 32 fields and 16 KiB",
        )
        .unwrap_or_default();
    if let Some((key, why)) = unsafe_argument(&arguments) {
        fields.bad(&format!("arguments.{key}"), why);
    }
    match (provider, model, task) {
        (Some(provider), Some(model), Some(task)) if fields.errors.is_empty() => Ok(Spec {
            provider,
            model,
            task,
            prompt,
            negative_prompt,
            uploads,
            video_id,
            width: u32::try_from(width).unwrap_or(1024),
            height: u32::try_from(height).unwrap_or(1024),
            num_images: u32::try_from(num_images).unwrap_or(1),
            seed,
            strength,
            duration_seconds: u32::try_from(duration_seconds).unwrap_or(5),
            template,
            style_id,
            persona_id,
            arguments,
        }),
        _ => Err(fields.errors),
    }
}

/// The spec of an admitted job of `kind`, a preset running where the configuration says.
pub fn configured_spec(
    config: &crate::config::Config,
    kind: &str,
    input: &Value,
) -> Result<Spec, Vec<FieldError>> {
    let mut spec = spec_of(kind, input)?;
    // Checked when the kinds were registered; an entry that does not parse is not applied.
    if let Some((_, provider, model)) = preset_models(config)
        .unwrap_or_default()
        .into_iter()
        .find(|(preset, _, _)| preset.name == kind)
    {
        spec.provider = provider;
        spec.model = model.to_owned();
    }
    Ok(spec)
}

/// The spec of an admitted job of `kind`.
pub fn spec_of(kind: &str, input: &Value) -> Result<Spec, Vec<FieldError>> {
    match kind {
        "generate" => parse(input, None),
        "train_style" => parse_training(input),
        name => parse(
            input,
            Some(
                preset(name)
                    .ok_or_else(|| vec![FieldError::new("kind", "not a generation kind")])?,
            ),
        ),
    }
}

/// The provider's own input document. `images` are URLs the provider can read, by role (a
/// `style` role carries a trained style's weights).
pub fn provider_input(spec: &Spec, images: &[(&'static str, String)]) -> Value {
    let mut input = Map::new();
    let image = |role: &str| {
        images
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, url)| url.clone())
    };
    let mut set = |key: &str, value: Value| {
        input.insert(key.to_owned(), value);
    };
    if let Some(prompt) = &spec.prompt {
        set("prompt", json!(prompt));
    }
    if let Some(negative) = &spec.negative_prompt {
        set("negative_prompt", json!(negative));
    }
    if let Some(seed) = spec.seed {
        set("seed", json!(seed));
    }
    if let Some(template) = &spec.template {
        set("template", json!(template));
    }
    let images_wanted = matches!(spec.task, Task::TextToImage | Task::ImageToImage);
    let style = image("style");
    if spec.task == Task::TrainStyle {
        let urls: Vec<&String> = images
            .iter()
            .filter(|(role, _)| *role == "image")
            .map(|(_, url)| url)
            .collect();
        set("task", json!(spec.task.as_str()));
        set("image_urls", json!(urls));
        let mut merged = spec.arguments.clone();
        merged.extend(input);
        return Value::Object(merged);
    }
    match spec.provider {
        ProviderName::Fal => {
            if spec.task == Task::TextToImage {
                set(
                    "image_size",
                    json!({"width": spec.width, "height": spec.height}),
                );
            }
            if images_wanted {
                set("num_images", json!(spec.num_images));
            }
            if let Some(url) = image("image") {
                set("image_url", json!(url));
            }
            if let Some(url) = image("subject_image") {
                set("subject_image_url", json!(url));
            }
            if let Some(url) = image("video") {
                set("video_url", json!(url));
            }
            if let Some(url) = &style {
                set("loras", json!([{"path": url, "scale": 1.0}]));
            }
            match spec.task {
                Task::ImageToImage => set("strength", json!(spec.strength)),
                Task::ImageToVideo => set("duration", json!(spec.duration_seconds.to_string())),
                // The output runs as long as the video.
                Task::VideoToVideo => {}
                Task::Music => set("seconds_total", json!(spec.duration_seconds)),
                Task::TextToImage | Task::TrainStyle | Task::RemoveBackground => {}
            }
        }
        ProviderName::Replicate => {
            if spec.task == Task::TextToImage {
                set("width", json!(spec.width));
                set("height", json!(spec.height));
            }
            if images_wanted {
                set("num_outputs", json!(spec.num_images));
            }
            // Wan 2.2 Animate at Replicate names its inputs `video` and `character_image`.
            match (image("image"), spec.task) {
                (Some(url), Task::VideoToVideo) => set("character_image", json!(url)),
                (Some(url), _) => set("image", json!(url)),
                (None, _) => {}
            }
            if let Some(url) = image("video") {
                set("video", json!(url));
            }
            if let Some(url) = image("subject_image") {
                set("subject_image", json!(url));
            }
            if let Some(url) = &style {
                set("lora_weights", json!(url));
            }
            match spec.task {
                Task::ImageToImage => set("prompt_strength", json!(spec.strength)),
                Task::ImageToVideo | Task::Music => set("duration", json!(spec.duration_seconds)),
                Task::VideoToVideo => {}
                Task::TextToImage | Task::TrainStyle | Task::RemoveBackground => {}
            }
        }
        ProviderName::Ai => {
            set("task", json!(spec.task.as_str()));
            set("width", json!(spec.width));
            set("height", json!(spec.height));
            set("num_images", json!(spec.num_images));
            set("strength", json!(spec.strength));
            set("duration_seconds", json!(spec.duration_seconds));
            for (role, url) in images {
                set(&format!("{role}_url"), json!(url));
            }
        }
    }
    // Extras first, so they cannot override what was checked.
    let mut merged = spec.arguments.clone();
    merged.extend(input);
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_cannot_name_files_or_urls() {
        let of = |v: Value| v.as_object().cloned().expect("object");
        for bad in [
            json!({"loras": [{"path": "weights", "scale": 1}]}),
            json!({"image_url": "x"}),
            json!({"reference_urls": []}),
            json!({"Style_URL": "x"}),
            json!({"extra": {"deep": ["https://169.254.169.254/latest"]}}),
            json!({"prompt_suffix": "see HTTP://evil.example"}),
            json!({"x": "data:image/png;base64,AAAA"}),
            json!({"x": "gs://bucket/object"}),
        ] {
            assert!(unsafe_argument(&of(bad.clone())).is_some(), "{bad} passed");
        }
        for fine in [
            json!({"guidance": 3.5, "num_inference_steps": 4, "scheduler": "euler"}),
            json!({"style_preset": "anime: bold lines", "ratio": "16:9"}),
        ] {
            assert!(
                unsafe_argument(&of(fine.clone())).is_none(),
                "{fine} refused"
            );
        }
    }

    fn config(presets: &str) -> crate::config::Config {
        let env = std::collections::HashMap::from([
            ("TABLE_NAME", "t"),
            ("SIGNING_KEY_SECRET_ID", "s"),
            ("JWT_AUDIENCE", "a"),
            ("PRESET_MODELS", presets),
        ]);
        crate::config::Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).expect("config")
    }

    #[test]
    fn preset_models_are_checked() {
        let valid = config("music=fal:fal-ai/stable-audio, template=replicate:a/b");
        assert_eq!(preset_models(&valid).expect("valid").len(), 2);
        for bad in ["nope=fal:a/b", "music=x:a/b", "music=fal:../x"] {
            assert!(kinds(&config(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_text_to_image_request_gets_its_defaults() {
        let spec = parse(
            &json!({"provider": "fal", "model": "fal-ai/flux/dev", "task": "text_to_image", "prompt": "a fox"}),
            None,
        )
        .expect("valid");
        assert_eq!((spec.width, spec.height, spec.num_images), (1024, 1024, 1));
        let input = provider_input(&spec, &[]);
        assert_eq!(
            input,
            json!({"prompt": "a fox", "image_size": {"width": 1024, "height": 1024}, "num_images": 1})
        );
    }

    #[test]
    fn wrongly_typed_fields_are_each_named_with_the_others() {
        let errors = parse(
            &json!({"provider": 7, "model": "fal-ai/flux/dev", "task": "text_to_image",
                "prompt": 5, "width": "big", "num_images": 9, "arguments": [1]}),
            None,
        )
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "input.provider",
                "input.prompt",
                "input.width",
                "input.num_images",
                "input.arguments"
            ]
        );
    }

    #[test]
    fn every_problem_is_named() {
        let errors = parse(
            &json!({"provider": "x", "model": "../etc", "task": "image_to_image", "width": 100, "strength": 2, "extra": 1}),
            None,
        )
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        for field in [
            "input.extra",
            "input.provider",
            "input.model",
            "input.prompt",
            "input.upload_key",
            "input.width",
            "input.strength",
        ] {
            assert!(fields.contains(&field), "{field} in {fields:?}");
        }
    }

    #[test]
    fn presets_cost_what_lokiz_charged_and_checked_fields_win() {
        let costs: Vec<_> = PRESETS.iter().map(|p| (p.name, p.cost)).collect();
        assert_eq!(
            costs,
            [
                ("template", 20),
                ("glitch_animate", 30),
                ("glitch_replace", 30),
                ("remove_background", 2),
                ("music", 5)
            ]
        );
        let kinds = kinds(&config("")).expect("kinds");
        let names: Vec<_> = kinds.iter().map(|k| k.name).collect();
        for preset in PRESETS {
            assert!(
                names.contains(&preset.name),
                "{} is registered",
                preset.name
            );
        }
        assert_eq!((kinds[3].cost)(&json!({})), 30);
        assert_eq!(kinds[3].name, "glitch_replace");
        let spec = parse(
            &json!({"provider": "replicate", "model": "a/b", "task": "text_to_image", "prompt": "p", "num_images": 2,
                    "arguments": {"num_outputs": 9, "guidance": 3}}),
            None,
        )
        .expect("valid");
        let input = provider_input(&spec, &[]);
        assert_eq!(input["num_outputs"], 2);
        assert_eq!(input["guidance"], 3);
        assert_eq!(
            generate_cost(&json!({"task": "text_to_image", "num_images": 2})),
            8
        );
    }

    #[test]
    fn model_ids_are_checked() {
        assert!(valid_model("fal-ai/flux/dev"));
        assert!(valid_model("meta/musicgen"));
        assert!(valid_model("a/b:0123abcd"));
        assert!(!valid_model("flux"));
        assert!(!valid_model("a/../b"));
        assert!(!valid_model("a/b?x=1"));
        assert!(!valid_model("a/b:nothex"));
    }
}
