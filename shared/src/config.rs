//! Typed configuration, read once per cold start from the environment.

use std::time::Duration;

/// What a function needs to know about its deployment.
#[derive(Clone, Debug)]
pub struct Config {
    /// The single DynamoDB table (`TABLE_NAME`).
    pub table_name: String,
    /// Secrets Manager id of the JWT signing keys (`SIGNING_KEY_SECRET_ID`).
    pub signing_key_secret_id: String,
    /// `iss` of every access token (`JWT_ISSUER`); only the functions that sign tokens need it.
    pub issuer: Option<String>,
    /// `aud` of every access token (`JWT_AUDIENCE`).
    pub audience: String,
    /// Lifetime of an access token (`ACCESS_TOKEN_TTL_SECONDS`, default 900).
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token family (`REFRESH_TOKEN_TTL_SECONDS`, default 30 days).
    pub refresh_token_ttl: Duration,
    /// Credits granted to every new account (`STARTING_CREDITS`, default 100).
    pub starting_credits: i64,
    /// Per-minute request budgets (`REGISTER_RATE_PER_MINUTE`, `LOGIN_RATE_PER_MINUTE`).
    pub rate_limits: RateLimits,
    /// Jobs running at once per user, by tier (`JOB_CAP_FREE`, `_STANDARD`, `_PREMIUM`, default 4).
    pub job_caps: JobCaps,
    /// How long after admission a job's message counts as lost if its sender has not confirmed it
    /// (`OUTBOX_GRACE_SECONDS`, default 15: past the API functions' 10 s timeout); the reaper then
    /// sends it again.
    pub outbox_grace: Duration,
    /// The CPU worker's queue (`JOBS_QUEUE_URL`).
    pub jobs_queue_url: Option<String>,
    /// The GPU worker's queue (`GPU_JOBS_QUEUE_URL`).
    pub gpu_jobs_queue_url: Option<String>,
    /// The video worker's queue (`VIDEO_JOBS_QUEUE_URL`); unset, video jobs go to the CPU queue.
    pub video_jobs_queue_url: Option<String>,
    /// Secrets Manager id of the key that signs pagination cursors (`CURSOR_KEY_SECRET_ID`).
    pub cursor_key_secret_id: Option<String>,
    /// Offer the test kinds such as `sleep` (`ENABLE_TEST_KINDS`; never in production).
    pub test_kinds: bool,
    /// Accept webhook URLs on loopback and private networks (`ALLOW_PRIVATE_WEBHOOKS`; local only).
    pub allow_private_webhooks: bool,
    /// The bucket of uploads and artifacts (`MEDIA_BUCKET`).
    pub media_bucket: Option<String>,
    /// Path-style S3 addressing (`S3_FORCE_PATH_STYLE`; the local emulator needs it).
    pub s3_force_path_style: bool,
    /// Where the upscaler finds its runtime and models.
    pub upscale: UpscaleConfig,
    /// The outside providers and their webhooks.
    pub generation: GenerationConfig,
    /// Text generation for conversations.
    pub chat: ChatConfig,
    /// Video uploads and the studio: the FFmpeg toolchain and the limits.
    pub video: VideoConfig,
    /// Firebase sign-in: the project whose ID tokens are accepted (`FIREBASE_PROJECT_ID`; unset,
    /// `POST /v1/auth/firebase` answers 404) and where Google publishes the certificates that sign
    /// them (`FIREBASE_CERTS_URL`, default Google's securetoken x509 URL).
    pub firebase: FirebaseConfig,
    /// OpenID Connect sign-in with Google, Kakao and Naver (web code flow and native ID tokens).
    pub oidc: OidcConfig,
    /// Mail to account holders (email verification, password reset).
    pub mail: MailConfig,
    /// Instagram accounts linked to personas ("Instagram API with Instagram Login").
    pub instagram: InstagramConfig,
    /// The KMS key whose data keys encrypt linked accounts' tokens (`TOKENS_KMS_KEY_ID`).
    pub tokens_key_id: Option<String>,
    /// The queue of account deletions and provider unlinks to carry out
    /// (`ACCOUNT_REMOVAL_QUEUE_URL`); unset, `DELETE /v1/users/me` answers 404.
    pub removal_queue_url: Option<String>,
    /// The social layer's queue (`SOCIAL_QUEUE_URL`): deleted posts' purges; unset, a purge runs
    /// in the request that deletes.
    pub social_queue_url: Option<String>,
    /// Wakes the search index's writer (`index-search`); unset, the writer runs on its schedule only.
    pub search_queue_url: Option<String>,
    /// The most followers an account's posts are fanned out to (`FANOUT_MAX_FOLLOWERS`, default
    /// 10,000); an account with more has its posts merged into its followers' feeds as they read.
    pub fanout_max_followers: u64,
    /// Distinct reporters that hide a post or comment until an admin decides
    /// (`REPORT_HIDE_THRESHOLD`, default 5).
    pub report_hide_threshold: u64,
    /// Followers one fan-out message serves before it queues the next page
    /// (`FANOUT_PAGE_SIZE`, default 1,000).
    pub fanout_page_size: u64,
    /// The queue of outbound webhook deliveries (`DELIVERIES_QUEUE_URL`); unset, no events are sent.
    pub deliveries_queue_url: Option<String>,
    /// Multiplies the delivery retry schedule (`WEBHOOK_RETRY_SCALE`, default 1; tests shrink it).
    pub delivery_retry_scale: f64,
    /// Credits sold for money (Toss Payments, Stripe) and the daily reward.
    pub payments: PaymentsConfig,
    /// Accounts that are admins once their email is verified (`ADMIN_EMAILS`, comma-separated;
    /// the template's `AdminEmails`): the first admin is named at deploy.
    pub admin_emails: Vec<String>,
}

/// A credit package: credits for a price in each currency it is sold in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// `basic_100`: letters, digits and `_`, 1 to 40.
    pub id: String,
    pub credits: i64,
    /// Price by ISO 4217 code, in the currency's smallest unit (KRW has none below the won:
    /// `10000` is ₩10,000; USD counts cents: `999` is $9.99).
    pub prices: std::collections::BTreeMap<String, i64>,
}

/// Payments: the packages, the providers' APIs, the keys' secret, the daily reward.
#[derive(Clone, Debug)]
pub struct PaymentsConfig {
    /// `CREDIT_PACKAGES`: a JSON array of [`Package`]; default Style License's three, in KRW and USD.
    pub packages: Vec<Package>,
    /// Secrets Manager id of `{"toss_secret_key", "stripe_secret_key", "stripe_webhook_secret"}`
    /// (`PAYMENT_KEYS_SECRET_ID`); unset, orders answer 404.
    pub keys_secret_id: Option<String>,
    /// Toss Payments' API (`TOSS_API_URL`, default `https://api.tosspayments.com`).
    pub toss_api_url: String,
    /// Stripe's API (`STRIPE_API_URL`, default `https://api.stripe.com`).
    pub stripe_api_url: String,
    /// Where Stripe Checkout sends the buyer back (`CHECKOUT_SUCCESS_URL`, `CHECKOUT_CANCEL_URL`:
    /// your app's pages; `{ORDER_ID}` is replaced by the order's id).
    pub checkout_success_url: Option<String>,
    pub checkout_cancel_url: Option<String>,
    /// Credits of the daily reward (`DAILY_REWARD_CREDITS`, default 10; 0 turns it off).
    pub daily_reward: i64,
    /// The platform's share of a style's price, in percent (`STYLE_FEE_PERCENT`, default 30):
    /// the artist earns the rest.
    pub style_fee_percent: i64,
}

impl PaymentsConfig {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let optional = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let packages = match optional("CREDIT_PACKAGES") {
            None => default_packages(),
            Some(text) => serde_json::from_str(&text).map_err(|e| ConfigError::Invalid {
                name: "CREDIT_PACKAGES",
                reason: e.to_string(),
            })?,
        };
        check_packages(&packages).map_err(|reason| ConfigError::Invalid {
            name: "CREDIT_PACKAGES",
            reason,
        })?;
        let bounded = |name: &'static str, default: i64, most: i64| match optional(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=most).contains(n))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("must be a number from 0 to {most}"),
                }),
        };
        let daily_reward = bounded("DAILY_REWARD_CREDITS", 10, 1_000_000)?;
        let style_fee_percent = bounded("STYLE_FEE_PERCENT", 30, 100)?;
        Ok(Self {
            style_fee_percent,
            packages,
            keys_secret_id: optional("PAYMENT_KEYS_SECRET_ID"),
            toss_api_url: base_url(lookup, "TOSS_API_URL")?
                .unwrap_or_else(|| "https://api.tosspayments.com".into()),
            stripe_api_url: base_url(lookup, "STRIPE_API_URL")?
                .unwrap_or_else(|| "https://api.stripe.com".into()),
            checkout_success_url: optional("CHECKOUT_SUCCESS_URL").map(|v| v.trim().to_owned()),
            checkout_cancel_url: optional("CHECKOUT_CANCEL_URL").map(|v| v.trim().to_owned()),
            daily_reward,
        })
    }

    /// The package with this id.
    pub fn package(&self, id: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.id == id)
    }
}

/// Style License's packages: 100, 500 and 1,000 credits.
fn default_packages() -> Vec<Package> {
    let package = |id: &str, credits: i64, krw: i64, usd: i64| Package {
        id: id.to_owned(),
        credits,
        prices: [("KRW".to_owned(), krw), ("USD".to_owned(), usd)].into(),
    };
    vec![
        package("basic_100", 100, 10_000, 999),
        package("standard_500", 500, 45_000, 3_999),
        package("premium_1000", 1000, 80_000, 6_999),
    ]
}

fn check_packages(packages: &[Package]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for package in packages {
        let id_ok = (1..=40).contains(&package.id.len())
            && package
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !id_ok || !seen.insert(package.id.as_str()) {
            return Err(format!("{:?} is not a unique package id", package.id));
        }
        if !(1..=10_000_000).contains(&package.credits) || package.prices.is_empty() {
            return Err(format!("{}: credits 1 to 10000000 and a price", package.id));
        }
        for (currency, amount) in &package.prices {
            let code_ok = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
            if !code_ok || !(1..=100_000_000).contains(amount) {
                return Err(format!(
                    "{}: {currency} {amount} is not a price",
                    package.id
                ));
            }
        }
    }
    Ok(())
}

/// The generation providers: where they are, where their keys are, where they call back.
#[derive(Clone, Debug)]
pub struct GenerationConfig {
    /// The public base URL providers send webhooks to (`WEBHOOK_BASE_URL`: the webhooks API).
    pub webhook_base_url: Option<String>,
    /// Secrets Manager id of `{"fal_key", "replicate_api_token", "replicate_webhook_secret"?}`
    /// (`PROVIDER_KEYS_SECRET_ID`).
    pub provider_keys_secret_id: Option<String>,
    /// Secrets Manager id of the secret our AI servers and we sign with (`AI_WEBHOOK_SECRET_ID`).
    pub ai_webhook_secret_id: Option<String>,
    /// fal's queue (`FAL_QUEUE_URL`, default `https://queue.fal.run`).
    pub fal_queue_url: String,
    /// fal's webhook keys (`FAL_JWKS_URL`, default `https://rest.alpha.fal.ai/.well-known/jwks.json`).
    pub fal_jwks_url: String,
    /// Replicate's API (`REPLICATE_API_URL`, default `https://api.replicate.com`).
    pub replicate_api_url: String,
    /// Our own AI servers (`AI_SERVER_URL`); unset, the `ai` provider is not offered.
    pub ai_server_url: Option<String>,
    /// How long a job at a provider may go without news before the reconciler polls it
    /// (`RECONCILE_QUIET_SECONDS`, default 300).
    pub quiet: Duration,
    /// Where the LOKIZ presets run instead of their defaults (`PRESET_MODELS`:
    /// `music=replicate:meta/musicgen,template=fal:fal-ai/kling-video/v2/master/image-to-video`).
    pub preset_models: Vec<(String, String, String)>,
}

/// The upscaler's deployment.
#[derive(Clone, Debug)]
pub struct UpscaleConfig {
    /// The ONNX Runtime library (`ORT_DYLIB_PATH`); else the system's search path.
    pub library: Option<std::path::PathBuf>,
    /// A directory of `<model>.onnx` files (`MODELS_DIR`): the local stack and the GPU image.
    pub models_dir: Option<std::path::PathBuf>,
    /// Or a bucket and prefix to copy them from to /tmp at cold start (`MODELS_BUCKET`,
    /// `MODELS_PREFIX`, default `models/`): the Lambda worker.
    pub models_bucket: Option<String>,
    pub models_prefix: String,
    /// `cpu` (exact fp32), `openvino` (`UPSCALE_PRECISION` bf16, the default, or fp32; needs the
    /// onnxruntime-openvino library) or `cuda` (`UPSCALE_PROVIDER`; cuda needs the `cuda` build).
    /// Under `openvino` in bf16 the models run on Lambent's own engine where the CPU suits it
    /// (`crate::upscale::own_engine`: AMX, or fp32 on FMA where the CPU computes no bf16;
    /// `UPSCALE_AMX`: `on`, the default, or `off`).
    pub provider: crate::upscale::Provider,
    /// Which queue runs upscaling and best-cut (`UPSCALE_QUEUE`: `cpu` or `gpu`, default cpu).
    pub queue: crate::domain::Queue,
    /// Tile side when the request names none (`UPSCALE_TILE`); unset, each model's engine's
    /// (`crate::upscale::Upscaler::default_tile`: 512 on Lambent's own engine on FMA, else 256).
    pub tile: Option<u32>,
}

/// Concurrent jobs allowed per user, by membership tier; never lower for a higher tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobCaps {
    pub free: u32,
    pub standard: u32,
    pub premium: u32,
}

/// Requests allowed per client IP and per account in one minute.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    pub register_per_minute: u32,
    pub login_per_minute: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Config {
    /// The issuer, for the functions that sign tokens.
    pub fn issuer(&self) -> anyhow::Result<&str> {
        self.issuer
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("JWT_ISSUER is not set"))
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests can supply their own values.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let number =
            |name: &'static str, default: u64| -> Result<u64, ConfigError> {
                match lookup(name).filter(|v| !v.trim().is_empty()) {
                    None => Ok(default),
                    Some(v) => v.trim().parse().map_err(|e: std::num::ParseIntError| {
                        ConfigError::Invalid {
                            name,
                            reason: e.to_string(),
                        }
                    }),
                }
            };
        let flag = |name: &'static str| -> Result<bool, ConfigError> {
            match lookup(name)
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("") | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(other) => Err(ConfigError::Invalid {
                    name,
                    reason: format!("{other} is not true or false"),
                }),
            }
        };
        let optional = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let job_caps = JobCaps {
            free: small(number("JOB_CAP_FREE", 4)?, "JOB_CAP_FREE")?,
            standard: small(number("JOB_CAP_STANDARD", 4)?, "JOB_CAP_STANDARD")?,
            premium: small(number("JOB_CAP_PREMIUM", 4)?, "JOB_CAP_PREMIUM")?,
        };
        if !(job_caps.free <= job_caps.standard && job_caps.standard <= job_caps.premium) {
            return Err(ConfigError::Invalid {
                name: "JOB_CAP_STANDARD",
                reason: "caps must not fall as the tier rises".into(),
            });
        }
        let issuer = lookup("JWT_ISSUER")
            .map(|v| v.trim().trim_end_matches('/').to_owned())
            .filter(|v| !v.is_empty());
        Ok(Self {
            table_name: required("TABLE_NAME")?,
            signing_key_secret_id: required("SIGNING_KEY_SECRET_ID")?,
            audience: required("JWT_AUDIENCE")?,
            issuer,
            access_token_ttl: Duration::from_secs(number("ACCESS_TOKEN_TTL_SECONDS", 900)?),
            refresh_token_ttl: Duration::from_secs(number(
                "REFRESH_TOKEN_TTL_SECONDS",
                30 * 86_400,
            )?),
            starting_credits: i64::try_from(number("STARTING_CREDITS", 100)?).map_err(|e| {
                ConfigError::Invalid {
                    name: "STARTING_CREDITS",
                    reason: e.to_string(),
                }
            })?,
            rate_limits: RateLimits {
                register_per_minute: small(
                    number("REGISTER_RATE_PER_MINUTE", 5)?,
                    "REGISTER_RATE_PER_MINUTE",
                )?,
                login_per_minute: small(
                    number("LOGIN_RATE_PER_MINUTE", 10)?,
                    "LOGIN_RATE_PER_MINUTE",
                )?,
            },
            job_caps,
            outbox_grace: Duration::from_secs(number("OUTBOX_GRACE_SECONDS", 15)?),
            jobs_queue_url: optional("JOBS_QUEUE_URL"),
            gpu_jobs_queue_url: optional("GPU_JOBS_QUEUE_URL"),
            video_jobs_queue_url: optional("VIDEO_JOBS_QUEUE_URL"),
            cursor_key_secret_id: optional("CURSOR_KEY_SECRET_ID"),
            test_kinds: flag("ENABLE_TEST_KINDS")?,
            allow_private_webhooks: flag("ALLOW_PRIVATE_WEBHOOKS")?,
            media_bucket: optional("MEDIA_BUCKET"),
            s3_force_path_style: flag("S3_FORCE_PATH_STYLE")?,
            upscale: UpscaleConfig {
                library: optional("ORT_DYLIB_PATH").map(Into::into),
                models_dir: optional("MODELS_DIR").map(Into::into),
                models_bucket: optional("MODELS_BUCKET"),
                models_prefix: optional("MODELS_PREFIX").unwrap_or_else(|| "models/".into()),
                provider: match optional("UPSCALE_PROVIDER").as_deref().map(str::trim) {
                    None | Some("cpu") => crate::upscale::Provider::Cpu,
                    Some("openvino") => crate::upscale::Provider::OpenVino {
                        bf16: match optional("UPSCALE_PRECISION").as_deref().map(str::trim) {
                            None | Some("bf16") => true,
                            Some("fp32") => false,
                            Some(other) => {
                                return Err(ConfigError::Invalid {
                                    name: "UPSCALE_PRECISION",
                                    reason: format!("{other} is not bf16 or fp32"),
                                });
                            }
                        },
                        amx: match optional("UPSCALE_AMX").as_deref().map(str::trim) {
                            None | Some("on") => true,
                            Some("off") => false,
                            Some(other) => {
                                return Err(ConfigError::Invalid {
                                    name: "UPSCALE_AMX",
                                    reason: format!("{other} is not on or off"),
                                });
                            }
                        },
                    },
                    Some("cuda") => crate::upscale::Provider::Cuda,
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            name: "UPSCALE_PROVIDER",
                            reason: format!("{other} is not cpu, openvino or cuda"),
                        });
                    }
                },
                queue: match optional("UPSCALE_QUEUE").as_deref().map(str::trim) {
                    None | Some("cpu") => crate::domain::Queue::Cpu,
                    Some("gpu") => crate::domain::Queue::Gpu,
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            name: "UPSCALE_QUEUE",
                            reason: format!("{other} is not cpu or gpu"),
                        });
                    }
                },
                tile: match optional("UPSCALE_TILE") {
                    None => None,
                    Some(_) => match small(number("UPSCALE_TILE", 0)?, "UPSCALE_TILE")? {
                        tile if (32..=crate::upscale::MAX_TILE).contains(&tile) => Some(tile),
                        _ => {
                            return Err(ConfigError::Invalid {
                                name: "UPSCALE_TILE",
                                reason: format!("must be 32 to {}", crate::upscale::MAX_TILE),
                            });
                        }
                    },
                },
            },
            deliveries_queue_url: optional("DELIVERIES_QUEUE_URL"),
            delivery_retry_scale: match optional("WEBHOOK_RETRY_SCALE") {
                None => 1.0,
                Some(raw) => match raw.trim().parse::<f64>() {
                    Ok(scale) if (0.0..=1.0).contains(&scale) => scale,
                    _ => {
                        return Err(ConfigError::Invalid {
                            name: "WEBHOOK_RETRY_SCALE",
                            reason: "must be a number from 0 to 1".into(),
                        });
                    }
                },
            },
            firebase: FirebaseConfig {
                project_id: optional("FIREBASE_PROJECT_ID").map(|v| v.trim().to_owned()),
                certs_url: base_url(&lookup, "FIREBASE_CERTS_URL")?
                    .unwrap_or_else(|| FIREBASE_CERTS_URL.to_owned()),
                refetch_floor: Duration::from_secs(number("FIREBASE_KEYS_REFETCH_SECONDS", 60)?),
            },
            oidc: oidc_config(&lookup)?,
            payments: PaymentsConfig::from_lookup(&lookup)?,
            chat: ChatConfig::from_lookup(&lookup)?,
            video: VideoConfig::from_lookup(&lookup)?,
            admin_emails: optional("ADMIN_EMAILS")
                .unwrap_or_default()
                .split(',')
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
            removal_queue_url: optional("ACCOUNT_REMOVAL_QUEUE_URL"),
            social_queue_url: optional("SOCIAL_QUEUE_URL"),
            search_queue_url: optional("SEARCH_QUEUE_URL"),
            fanout_max_followers: number("FANOUT_MAX_FOLLOWERS", 10_000)?,
            fanout_page_size: number("FANOUT_PAGE_SIZE", 1_000)?.clamp(1, 1_000),
            report_hide_threshold: number("REPORT_HIDE_THRESHOLD", 5)?.max(1),
            tokens_key_id: optional("TOKENS_KMS_KEY_ID"),
            instagram: InstagramConfig {
                app_id: optional("INSTAGRAM_APP_ID").map(|v| v.trim().to_owned()),
                oauth_url: base_url(&lookup, "INSTAGRAM_OAUTH_URL")?
                    .unwrap_or_else(|| "https://api.instagram.com".to_owned()),
                graph_url: base_url(&lookup, "INSTAGRAM_GRAPH_URL")?
                    .unwrap_or_else(|| "https://graph.instagram.com".to_owned()),
            },
            mail: MailConfig {
                queue_url: optional("ACCOUNT_MAIL_QUEUE_URL"),
                from: optional("MAIL_FROM").map(|v| v.trim().to_owned()),
                link_base_url: base_url(&lookup, "ACCOUNT_LINK_BASE_URL")?,
            },
            generation: GenerationConfig {
                webhook_base_url: base_url(&lookup, "WEBHOOK_BASE_URL")?,
                provider_keys_secret_id: optional("PROVIDER_KEYS_SECRET_ID"),
                ai_webhook_secret_id: optional("AI_WEBHOOK_SECRET_ID"),
                fal_queue_url: base_url(&lookup, "FAL_QUEUE_URL")?
                    .unwrap_or_else(|| "https://queue.fal.run".into()),
                fal_jwks_url: base_url(&lookup, "FAL_JWKS_URL")?
                    .unwrap_or_else(|| "https://rest.alpha.fal.ai/.well-known/jwks.json".into()),
                replicate_api_url: base_url(&lookup, "REPLICATE_API_URL")?
                    .unwrap_or_else(|| "https://api.replicate.com".into()),
                ai_server_url: base_url(&lookup, "AI_SERVER_URL")?,
                quiet: Duration::from_secs(number("RECONCILE_QUIET_SECONDS", 300)?.max(1)),
                preset_models: preset_models(optional("PRESET_MODELS").as_deref())?,
            },
        })
    }
}

/// Where a chat model runs: an OpenAI-compatible chat completions API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmProvider {
    /// `LLM_API_URL` with the provider keys' `llm_api_key` (OpenAI, OpenRouter, vLLM, …).
    OpenAi,
    /// fal's LLM endpoint (OpenRouter behind fal's key).
    Fal,
}

/// A chat model this deployment offers, and its price in credits per 1,000 tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatModel {
    pub provider: LlmProvider,
    pub model: String,
    pub input_per_1k: i64,
    pub output_per_1k: i64,
}

/// Video's settings.
#[derive(Clone, Debug)]
pub struct VideoConfig {
    /// `FFMPEG_PATH` and `FFPROBE_PATH` (default `/opt/bin/ffmpeg` and `/opt/bin/ffprobe`: the
    /// Lambda layer's), `VIDEO_TOOL_MEMORY_MB` (default 1,024: the most one run may hold) and
    /// `VIDEO_TOOL_THREADS` (default 0: FFmpeg's own choice for the CPUs it sees).
    pub toolchain: crate::video::Toolchain,
    /// `VIDEO_MAX_BYTES`: the largest video upload (default 200 MB).
    pub max_upload_bytes: u64,
    /// `VIDEO_MAX_SECONDS` (default 180), `VIDEO_MAX_SIDE` (default 4,096) and
    /// `VIDEO_MAX_PIXELS` (default 3840×2160).
    pub limits: crate::video::Limits,
    /// `VIDEO_STUDIO_CREDITS`: what each studio job costs (default 0).
    pub studio_credits: i64,
    /// `VIDEO_WORK_DIR`: where the worker keeps a job's files while it runs (default the
    /// system's temporary directory; /tmp on Lambda, sized by the function's ephemeral storage).
    pub work_dir: std::path::PathBuf,
}

impl VideoConfig {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let optional = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let number = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            match optional(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        name,
                        reason: format!(
                            "must be a number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    }),
            }
        };
        let path = |name: &str, default: &str| {
            std::path::PathBuf::from(optional(name).unwrap_or_else(|| default.to_owned()))
        };
        let max_side = number("VIDEO_MAX_SIDE", 4_096, 64..=16_384)?;
        Ok(Self {
            toolchain: crate::video::Toolchain {
                ffmpeg: path("FFMPEG_PATH", "/opt/bin/ffmpeg"),
                ffprobe: path("FFPROBE_PATH", "/opt/bin/ffprobe"),
                memory_bytes: number("VIDEO_TOOL_MEMORY_MB", 1_024, 128..=10_240)? * 1024 * 1024,
                threads: u32::try_from(number("VIDEO_TOOL_THREADS", 0, 0..=64)?).unwrap_or(0),
            },
            max_upload_bytes: number("VIDEO_MAX_BYTES", 200_000_000, 1_000_000..=5_000_000_000)?,
            limits: crate::video::Limits {
                max_seconds: number("VIDEO_MAX_SECONDS", 180, 1..=3_600)? as f64,
                max_pixels: number("VIDEO_MAX_PIXELS", 3_840 * 2_160, 4_096..=268_435_456)?,
                max_side: u32::try_from(max_side).unwrap_or(4_096),
            },
            studio_credits: i64::try_from(number("VIDEO_STUDIO_CREDITS", 0, 0..=1_000)?)
                .unwrap_or(0),
            work_dir: optional("VIDEO_WORK_DIR")
                .map(Into::into)
                .unwrap_or_else(std::env::temp_dir),
        })
    }
}

/// Text generation's settings.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// `CHAT_MODELS`: `provider:model:input:output,…` (credits per 1,000 input and output
    /// tokens; provider `openai` or `fal`); the first is the default. Default
    /// `openai:gpt-4o-mini:1:2`.
    pub models: Vec<ChatModel>,
    /// `LLM_API_URL`: the OpenAI-compatible API (default `https://api.openai.com/v1`).
    pub openai_url: String,
    /// `FAL_LLM_URL`: fal's OpenAI-compatible LLM endpoint (default
    /// `https://fal.run/openrouter/router/openai/v1`).
    pub fal_url: String,
    /// `CHAT_CONTEXT_TOKENS`: the most tokens of a session's messages sent as context
    /// (default 16,000; counted as UTF-8 bytes, an upper bound of any byte-level tokenizer's count).
    pub context_tokens: i64,
    /// `CHAT_MAX_OUTPUT_TOKENS`: the longest reply (default 1,024).
    pub max_output_tokens: i64,
    /// `CHAT_STREAM_URL`: the streaming function's URL, told to clients.
    pub stream_url: Option<String>,
}

impl ChatConfig {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let optional = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let invalid = |name: &'static str, reason: String| ConfigError::Invalid { name, reason };
        let mut models = Vec::new();
        let raw = optional("CHAT_MODELS").unwrap_or_else(|| "openai:gpt-4o-mini:1:2".into());
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parts: Vec<&str> = entry.split(':').collect();
            let [provider, model @ .., input, output] = parts.as_slice() else {
                return Err(invalid(
                    "CHAT_MODELS",
                    format!("{entry} is not provider:model:input:output"),
                ));
            };
            let provider = match *provider {
                "openai" => LlmProvider::OpenAi,
                "fal" => LlmProvider::Fal,
                other => {
                    return Err(invalid(
                        "CHAT_MODELS",
                        format!("{other} is not openai or fal"),
                    ));
                }
            };
            let price = |text: &str| {
                text.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|p| (0..=1_000_000).contains(p))
            };
            let (Some(input_per_1k), Some(output_per_1k)) = (price(input), price(output)) else {
                return Err(invalid(
                    "CHAT_MODELS",
                    format!("{entry}: prices must be whole credits from 0 to 1000000"),
                ));
            };
            let model = model.join(":");
            if model.is_empty() || model.len() > 200 {
                return Err(invalid(
                    "CHAT_MODELS",
                    format!("{entry}: the model must be 1 to 200 characters"),
                ));
            }
            models.push(ChatModel {
                provider,
                model,
                input_per_1k,
                output_per_1k,
            });
        }
        if models.is_empty() {
            return Err(invalid("CHAT_MODELS", "names no model".into()));
        }
        let number = |name: &'static str, default: i64, range: std::ops::RangeInclusive<i64>| {
            match optional(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        invalid(
                            name,
                            format!("must be a number from {} to {}", range.start(), range.end()),
                        )
                    }),
            }
        };
        Ok(Self {
            models,
            openai_url: base_url(lookup, "LLM_API_URL")?
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            fal_url: base_url(lookup, "FAL_LLM_URL")?
                .unwrap_or_else(|| "https://fal.run/openrouter/router/openai/v1".into()),
            context_tokens: number("CHAT_CONTEXT_TOKENS", 16_000, 1_000..=1_000_000)?,
            max_output_tokens: number("CHAT_MAX_OUTPUT_TOKENS", 1_024, 16..=100_000)?,
            stream_url: base_url(lookup, "CHAT_STREAM_URL")?,
        })
    }

    /// The model named, or the default.
    pub fn model(&self, name: Option<&str>) -> Option<&ChatModel> {
        match name {
            None => self.models.first(),
            Some(name) => self.models.iter().find(|m| m.model == name),
        }
    }
}

/// `name=provider:model,…` for the LOKIZ presets, as written; generation checks that each names a
/// preset, a provider and a model id when it registers its kinds.
fn preset_models(raw: Option<&str>) -> Result<Vec<(String, String, String)>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "PRESET_MODELS",
        reason,
    };
    let mut models = Vec::new();
    for entry in raw
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (name, target) = entry
            .split_once('=')
            .ok_or_else(|| invalid(format!("{entry} is not name=provider:model")))?;
        let (provider, model) = target
            .split_once(':')
            .ok_or_else(|| invalid(format!("{entry} is not name=provider:model")))?;
        models.push((name.to_owned(), provider.to_owned(), model.to_owned()));
    }
    Ok(models)
}

/// An optional absolute http(s) URL without its trailing slash.
/// Where Google publishes the certificates that sign Firebase ID tokens (a JSON object of
/// kid → PEM X.509 certificate; firebase.google.com/docs/auth/admin/verify-id-tokens).
pub const FIREBASE_CERTS_URL: &str =
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";

/// Firebase sign-in's settings.
#[derive(Clone, Debug)]
pub struct FirebaseConfig {
    pub project_id: Option<String>,
    pub certs_url: String,
    /// The shortest time between two fetches of the certificates when a token names a key not
    /// held (`FIREBASE_KEYS_REFETCH_SECONDS`, default 60): tokens with made-up key ids cannot
    /// make every request fetch.
    pub refetch_floor: Duration,
}

/// Instagram linking and publishing.
#[derive(Clone, Debug, Default)]
pub struct InstagramConfig {
    /// The Instagram app id (`INSTAGRAM_APP_ID`); unset, the Instagram routes answer 404. Its
    /// secret is `instagram` in the OAuth clients secret.
    pub app_id: Option<String>,
    /// Instagram's OAuth host (`INSTAGRAM_OAUTH_URL`, default `https://api.instagram.com`).
    pub oauth_url: String,
    /// The Graph API (`INSTAGRAM_GRAPH_URL`, default `https://graph.instagram.com`).
    pub graph_url: String,
}

/// Mail to account holders: sent by the mail queue's consumer through Amazon SES.
#[derive(Clone, Debug, Default)]
pub struct MailConfig {
    /// The queue of mail to send (`ACCOUNT_MAIL_QUEUE_URL`); unset, the routes that send mail
    /// answer 404.
    pub queue_url: Option<String>,
    /// The sender, an SES-verified identity (`MAIL_FROM`).
    pub from: Option<String>,
    /// The app's pages that take a token (`ACCOUNT_LINK_BASE_URL`): the mail links to
    /// `<base>/verify-email?token=…` and `<base>/reset-password?token=…`; unset, the mail
    /// carries the token alone for the app to ask for.
    pub link_base_url: Option<String>,
}

/// The OpenID Connect providers Lambent signs users in with, and the browser flow's settings.
#[derive(Clone, Debug, Default)]
pub struct OidcConfig {
    /// The providers whose client ids are configured; the others answer 404.
    pub providers: Vec<OidcProvider>,
    /// Where an app may be sent back to after a browser sign-in (`OAUTH_REDIRECT_URIS`, exact
    /// strings, comma-separated), and the console (`<OAUTH_CALLBACK_BASE_URL>/console`): never
    /// anywhere else.
    pub redirect_uris: Vec<String>,
    /// The public URL of this API, for the callback URL registered at each provider
    /// (`OAUTH_CALLBACK_BASE_URL`: the callback is `<base>/v1/auth/oauth/<provider>/callback`).
    pub callback_base_url: Option<String>,
    /// Secrets Manager id of `{"google": "<client secret>", "kakao": …, "naver": …}`
    /// (`OAUTH_CLIENTS_SECRET_ID`).
    pub clients_secret_id: Option<String>,
    /// The shortest time between two fetches of a provider's keys when a token names a key not
    /// held (`OIDC_KEYS_REFETCH_SECONDS`, default 60).
    pub refetch_floor: Duration,
    /// Kakao's user API (`KAKAO_API_URL`, default `https://kapi.kakao.com`): a deleted account's
    /// Kakao link is ended there with the admin key.
    pub kakao_api_url: String,
}

impl OidcConfig {
    pub fn provider(&self, name: &str) -> Option<&OidcProvider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// One OpenID Connect provider.
#[derive(Clone, Debug)]
pub struct OidcProvider {
    /// `google`, `kakao` or `naver`.
    pub name: &'static str,
    /// The issuer its ID tokens name and its discovery document sits under
    /// (`<issuer>/.well-known/openid-configuration`): `GOOGLE_ISSUER`, `KAKAO_ISSUER`,
    /// `NAVER_ISSUER`, each defaulting to the provider's own.
    pub issuer: String,
    /// Other issuer strings its tokens may carry (Google's legacy `accounts.google.com`).
    pub legacy_issuers: Vec<String>,
    /// The audiences accepted (`GOOGLE_CLIENT_IDS`, …, comma-separated): the first is the web
    /// client the browser flow uses; the rest are the platform ones (Kakao's native and
    /// JavaScript keys, Google's Android and iOS client ids) whose SDK-issued tokens apps send.
    pub client_ids: Vec<String>,
    /// The scopes the browser flow asks for.
    pub scopes: &'static str,
    /// A profile API read when the ID token names no email (Naver's classic `v1/nid/me`;
    /// `NAVER_PROFILE_URL`).
    pub profile_url: Option<String>,
}

impl OidcProvider {
    /// The web client id (the browser flow's).
    pub fn web_client_id(&self) -> &str {
        self.client_ids
            .first()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Whether a token's `iss` names this provider.
    pub fn issued(&self, iss: &str) -> bool {
        iss == self.issuer || self.legacy_issuers.iter().any(|l| l == iss)
    }
}

fn oidc_config(lookup: &impl Fn(&str) -> Option<String>) -> Result<OidcConfig, ConfigError> {
    let list = |name: &str| -> Vec<String> {
        lookup(name)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let known: [(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ); 3] = [
        (
            "google",
            "GOOGLE_CLIENT_IDS",
            "GOOGLE_ISSUER",
            "https://accounts.google.com",
            "openid email profile",
        ),
        (
            "kakao",
            "KAKAO_CLIENT_IDS",
            "KAKAO_ISSUER",
            "https://kauth.kakao.com",
            "openid",
        ),
        (
            "naver",
            "NAVER_CLIENT_IDS",
            "NAVER_ISSUER",
            "https://nid.naver.com",
            "openid",
        ),
    ];
    let mut providers = Vec::new();
    for (name, ids_var, issuer_var, default_issuer, scopes) in known {
        let client_ids = list(ids_var);
        if client_ids.is_empty() {
            continue;
        }
        let issuer = base_url(lookup, issuer_var)?.unwrap_or_else(|| default_issuer.to_owned());
        providers.push(OidcProvider {
            name,
            legacy_issuers: if name == "google" && issuer == default_issuer {
                vec!["accounts.google.com".to_owned()]
            } else {
                Vec::new()
            },
            issuer,
            client_ids,
            scopes,
            profile_url: if name == "naver" {
                Some(
                    base_url(lookup, "NAVER_PROFILE_URL")?
                        .unwrap_or_else(|| "https://openapi.naver.com/v1/nid/me".to_owned()),
                )
            } else {
                None
            },
        });
    }
    let mut redirect_uris = list("OAUTH_REDIRECT_URIS");
    let callback_base_url = base_url(lookup, "OAUTH_CALLBACK_BASE_URL")?;
    // The console (`GET /console`) is this API's own page: it may always be sent back to.
    if let Some(base) = &callback_base_url {
        let console = format!("{}/console", base.trim_end_matches('/'));
        if !redirect_uris.contains(&console) {
            redirect_uris.push(console);
        }
    }
    for uri in &redirect_uris {
        let parsed = url::Url::parse(uri).map_err(|e| ConfigError::Invalid {
            name: "OAUTH_REDIRECT_URIS",
            reason: format!("{uri}: {e}"),
        })?;
        if parsed.fragment().is_some() {
            return Err(ConfigError::Invalid {
                name: "OAUTH_REDIRECT_URIS",
                reason: format!("{uri} has a fragment"),
            });
        }
    }
    let floor = match lookup("OIDC_KEYS_REFETCH_SECONDS").filter(|v| !v.trim().is_empty()) {
        None => 60,
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
                name: "OIDC_KEYS_REFETCH_SECONDS",
                reason: e.to_string(),
            })?,
    };
    Ok(OidcConfig {
        providers,
        redirect_uris,
        callback_base_url,
        clients_secret_id: lookup("OAUTH_CLIENTS_SECRET_ID").filter(|v| !v.trim().is_empty()),
        refetch_floor: Duration::from_secs(floor),
        kakao_api_url: base_url(lookup, "KAKAO_API_URL")?
            .unwrap_or_else(|| "https://kapi.kakao.com".to_owned()),
    })
}

fn base_url(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<String>, ConfigError> {
    let Some(raw) = lookup(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let raw = raw.trim().trim_end_matches('/').to_owned();
    match url::Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(Some(raw))
        }
        _ => Err(ConfigError::Invalid {
            name,
            reason: "must be an absolute http(s) URL".into(),
        }),
    }
}

fn small(value: u64, name: &'static str) -> Result<u32, ConfigError> {
    u32::try_from(value).map_err(|e| ConfigError::Invalid {
        name,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("TABLE_NAME", "t"),
            ("SIGNING_KEY_SECRET_ID", "s"),
            ("JWT_ISSUER", "https://issuer.example/"),
            ("JWT_AUDIENCE", "lambent"),
        ])
    }

    #[test]
    fn defaults_apply_and_issuer_loses_its_trailing_slash() {
        let env = base();
        let config = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).expect("valid");
        assert_eq!(config.issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(config.rate_limits.register_per_minute, 5);
        assert_eq!(config.rate_limits.login_per_minute, 10);
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let mut env = base();
        env.remove("TABLE_NAME");
        let err = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "environment variable TABLE_NAME is not set"
        );
    }

    #[test]
    fn preset_models_are_read_as_name_provider_model() {
        let mut env = base();
        env.insert(
            "PRESET_MODELS",
            "music=fal:fal-ai/stable-audio, template=replicate:a/b",
        );
        let config = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).expect("valid");
        assert_eq!(config.generation.preset_models.len(), 2);
        env.insert("PRESET_MODELS", "music=fal");
        assert!(Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).is_err());
    }

    #[test]
    fn the_upscale_tile_is_the_engines_unless_the_deployment_names_one() {
        let mut env = base();
        let config =
            |env: &HashMap<&str, &str>| Config::from_lookup(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(config(&env).expect("valid").upscale.tile, None);
        env.insert("UPSCALE_TILE", "384");
        assert_eq!(config(&env).expect("valid").upscale.tile, Some(384));
        for bad in ["16", "1024", "big"] {
            env.insert("UPSCALE_TILE", bad);
            let err = config(&env).expect_err(bad).to_string();
            assert!(err.contains("UPSCALE_TILE"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_bad_number_is_named() {
        let mut env = base();
        env.insert("STARTING_CREDITS", "lots");
        let err = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).expect_err("invalid");
        assert!(err.to_string().contains("STARTING_CREDITS"));
    }
}
