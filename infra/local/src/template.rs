//! `template.yaml` as the one source of truth: the local stack creates the resources it declares,
//! with the same keys, indexes, TTL and queue settings, and reads the functions' environment from it.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde_yaml::Value;

/// The parsed template.
pub struct Template {
    doc: Value,
}

/// A route as the template declares it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateRoute {
    pub method: String,
    pub path: String,
    /// The function serving it (its `Handler:`).
    pub function: String,
    pub authorized: bool,
}

/// What the local stack created: each resource's local physical id and the resolved environment.
#[derive(Clone, Debug, Default)]
pub struct LocalStack {
    pub refs: HashMap<String, String>,
    pub arns: HashMap<String, String>,
    pub env: HashMap<String, String>,
    /// `(queue URL, function)`: which function the template has consume each queue.
    pub consumers: Vec<(String, String)>,
}

/// A function's name: its `Handler:`.
fn handler(function: &Value) -> Option<&str> {
    function.get("Properties")?.get("Handler")?.as_str()
}

fn tagged<'a>(value: &'a Value, tag: &str) -> Option<&'a Value> {
    match value {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

impl Template {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self {
            doc: serde_yaml::from_str(&text).context("parsing template.yaml")?,
        })
    }

    /// `(logical id, resource)` pairs of one type.
    pub fn resources(&self, kind: &str) -> Vec<(String, &Value)> {
        let Some(Value::Mapping(resources)) = self.doc.get("Resources") else {
            return Vec::new();
        };
        resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
            .filter_map(|(k, r)| Some((k.as_str()?.to_owned(), r)))
            .collect()
    }

    /// The name of every function: its `Handler:`, which picks what the one executable serves.
    pub fn functions(&self) -> BTreeSet<String> {
        self.resources("AWS::Serverless::Function")
            .into_iter()
            .filter_map(|(_, f)| Some(handler(f)?.to_owned()))
            .collect()
    }

    /// The function whose `Handler:` is `name`.
    pub fn function(&self, name: &str) -> Option<&Value> {
        self.resources("AWS::Serverless::Function")
            .into_iter()
            .map(|(_, f)| f)
            .find(|f| handler(f) == Some(name))
    }

    /// Each function's timeout (its `Timeout:`, else the `Globals` one, else Lambda's 3 s).
    pub fn timeouts(&self) -> HashMap<String, std::time::Duration> {
        let seconds = |value: Option<&Value>| value.and_then(Value::as_u64);
        let global = seconds(
            self.doc
                .get("Globals")
                .and_then(|g| g.get("Function"))
                .and_then(|f| f.get("Timeout")),
        )
        .unwrap_or(3);
        self.resources("AWS::Serverless::Function")
            .into_iter()
            .filter_map(|(_, f)| {
                let own = seconds(f.get("Properties").and_then(|p| p.get("Timeout")));
                Some((
                    handler(f)?.to_owned(),
                    std::time::Duration::from_secs(own.unwrap_or(global)),
                ))
            })
            .collect()
    }

    /// The executables the functions are built from (`BuildProperties: Binary:`).
    pub fn executables(&self) -> BTreeSet<String> {
        self.resources("AWS::Serverless::Function")
            .into_iter()
            .filter_map(|(_, f)| {
                Some(
                    f.get("Metadata")?
                        .get("BuildProperties")?
                        .get("Binary")?
                        .as_str()?
                        .to_owned(),
                )
            })
            .collect()
    }

    /// Every HttpApi route of every function, `$default` included (method `ANY`).
    pub fn routes(&self) -> BTreeSet<TemplateRoute> {
        let default_auth = self
            .doc
            .get("Resources")
            .and_then(|r| r.get("HttpApi"))
            .and_then(|a| a.get("Properties")?.get("Auth")?.get("DefaultAuthorizer"))
            .is_some();
        let mut routes = BTreeSet::new();
        for (_, function) in self.resources("AWS::Serverless::Function") {
            let name = handler(function).unwrap_or_default().to_owned();
            let Some(Value::Mapping(events)) =
                function.get("Properties").and_then(|p| p.get("Events"))
            else {
                continue;
            };
            for event in events.values() {
                if event.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                    continue;
                }
                let props = event.get("Properties");
                let field =
                    |name: &str| props.and_then(|p| p.get(name)?.as_str()).map(str::to_owned);
                let authorizer = props.and_then(|p| p.get("Auth")?.get("Authorizer")?.as_str());
                // Only the main API has the JWT authorizer; the identity and webhooks APIs are public.
                let on_main_api = props
                    .and_then(|p| p.get("ApiId"))
                    .and_then(|v| tagged(v, "!Ref"))
                    .and_then(Value::as_str)
                    .is_none_or(|api| api == "HttpApi");
                routes.insert(TemplateRoute {
                    method: field("Method")
                        .map(|m| m.to_uppercase())
                        .unwrap_or_else(|| "ANY".to_owned()),
                    path: field("Path").unwrap_or_else(|| "$default".to_owned()),
                    function: name.clone(),
                    authorized: default_auth && on_main_api && authorizer != Some("NONE"),
                });
            }
        }
        routes
    }

    fn parameter_default(&self, name: &str) -> Option<String> {
        let value = self.doc.get("Parameters")?.get(name)?.get("Default")?;
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Resolves `!Ref`, `!GetAtt X.Arn` and `!Sub` against the local stack; `None` when a value
    /// names something that only exists in AWS (an API id).
    fn resolve(&self, value: &Value, stack: &LocalStack) -> Option<String> {
        let name_of = |name: &str| -> Option<String> {
            match name {
                "AWS::Region" => Some("us-east-1".to_owned()),
                "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
                "AWS::AccountId" => Some("123456789012".to_owned()),
                "AWS::StackName" => Some("lambent-local".to_owned()),
                _ => stack
                    .refs
                    .get(name)
                    .cloned()
                    .or_else(|| self.parameter_default(name)),
            }
        };
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Tagged(t) if t.tag == "!Ref" => name_of(t.value.as_str()?),
            Value::Tagged(t) if t.tag == "!GetAtt" => {
                let target = t.value.as_str()?.strip_suffix(".Arn")?;
                stack.arns.get(target).cloned()
            }
            Value::Tagged(t) if t.tag == "!Sub" => {
                let mut text = t.value.as_str()?.to_owned();
                while let Some(start) = text.find("${") {
                    let end = start + text[start..].find('}')?;
                    let resolved = name_of(&text[start + 2..end])?;
                    text.replace_range(start..=end, &resolved);
                }
                Some(text)
            }
            _ => None,
        }
    }

    /// `(queue URL, function)` of every SQS event source in the template.
    fn queue_consumers(&self, stack: &LocalStack) -> Vec<(String, String)> {
        let mut consumers = Vec::new();
        for (_, function) in self.resources("AWS::Serverless::Function") {
            let Some(name) = handler(function) else {
                continue;
            };
            let Some(Value::Mapping(events)) =
                function.get("Properties").and_then(|p| p.get("Events"))
            else {
                continue;
            };
            for event in events.values() {
                if event.get("Type").and_then(Value::as_str) != Some("SQS") {
                    continue;
                }
                let queue = event
                    .get("Properties")
                    .and_then(|p| p.get("Queue"))
                    .and_then(|q| tagged(q, "!GetAtt"))
                    .and_then(Value::as_str)
                    .and_then(|target| target.strip_suffix(".Arn"))
                    .and_then(|id| stack.refs.get(id));
                if let Some(url) = queue {
                    consumers.push((url.clone(), name.to_owned()));
                }
            }
        }
        consumers
    }

    /// The environment every function sees (Globals, then each function's own variables), as far
    /// as it resolves locally.
    fn environment(&self, stack: &LocalStack) -> HashMap<String, String> {
        let mut env = HashMap::new();
        let mut add = |vars: Option<&Value>| {
            if let Some(Value::Mapping(vars)) = vars {
                for (k, v) in vars {
                    if let (Some(k), Some(v)) = (k.as_str(), self.resolve(v, stack)) {
                        env.insert(k.to_owned(), v);
                    }
                }
            }
        };
        add(self
            .doc
            .get("Globals")
            .and_then(|g| g.get("Function")?.get("Environment")?.get("Variables")));
        for (_, function) in self.resources("AWS::Serverless::Function") {
            add(function
                .get("Properties")
                .and_then(|p| p.get("Environment")?.get("Variables")));
        }
        env
    }
}

fn random_alphanumeric(length: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; length];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    // 248 = 4 * 62: values above it would bias the choice; redraw them.
    let mut out = String::with_capacity(length);
    let mut extra = [0u8; 1];
    for mut byte in bytes {
        while byte >= 248 {
            aws_lc_rs::rand::fill(&mut extra).map_err(|_| anyhow::anyhow!("no randomness"))?;
            byte = extra[0];
        }
        out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
    }
    Ok(out)
}

fn strings(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value
        .and_then(Value::as_sequence)
        .map(|s| s.iter())
        .into_iter()
        .flatten()
}

fn key_schema(value: Option<&Value>) -> anyhow::Result<Vec<KeySchemaElement>> {
    strings(value)
        .map(|k| {
            let name = k
                .get("AttributeName")
                .and_then(Value::as_str)
                .context("AttributeName")?;
            let kind = match k.get("KeyType").and_then(Value::as_str) {
                Some("HASH") => KeyType::Hash,
                Some("RANGE") => KeyType::Range,
                other => bail!("unknown KeyType {other:?}"),
            };
            Ok(KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()?)
        })
        .collect()
}

/// Creates every table, secret, bucket and queue of the template in the emulator, named
/// `{prefix}-{LogicalId}`, and resolves the functions' environment against them.
pub async fn bootstrap(
    template: &Template,
    sdk: &aws_config::SdkConfig,
    prefix: &str,
) -> anyhow::Result<LocalStack> {
    let mut stack = LocalStack::default();
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    for (id, resource) in template.resources("AWS::DynamoDB::Table") {
        let props = resource.get("Properties").context("table properties")?;
        let name = format!("{prefix}-{id}");
        let definitions = strings(props.get("AttributeDefinitions"))
            .map(|d| {
                let kind = match d.get("AttributeType").and_then(Value::as_str) {
                    Some("S") => ScalarAttributeType::S,
                    Some("N") => ScalarAttributeType::N,
                    Some("B") => ScalarAttributeType::B,
                    other => bail!("unknown AttributeType {other:?}"),
                };
                let attr = d
                    .get("AttributeName")
                    .and_then(Value::as_str)
                    .context("AttributeName")?;
                Ok(AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(kind)
                    .build()?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let indexes = strings(props.get("GlobalSecondaryIndexes"))
            .map(|g| {
                let projection = match g
                    .get("Projection")
                    .and_then(|p| p.get("ProjectionType")?.as_str())
                {
                    Some("KEYS_ONLY") => ProjectionType::KeysOnly,
                    Some("INCLUDE") => ProjectionType::Include,
                    _ => ProjectionType::All,
                };
                let attrs = strings(g.get("Projection").and_then(|p| p.get("NonKeyAttributes")))
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>();
                Ok(GlobalSecondaryIndex::builder()
                    .index_name(
                        g.get("IndexName")
                            .and_then(Value::as_str)
                            .context("IndexName")?,
                    )
                    .set_key_schema(Some(key_schema(g.get("KeySchema"))?))
                    .projection(
                        Projection::builder()
                            .projection_type(projection)
                            .set_non_key_attributes((!attrs.is_empty()).then_some(attrs))
                            .build(),
                    )
                    .build()?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(definitions))
            .set_key_schema(Some(key_schema(props.get("KeySchema"))?))
            .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
            .send()
            .await
            .with_context(|| format!("creating table {name}"))?;
        if let Some(ttl) = props.get("TimeToLiveSpecification") {
            let attr = ttl
                .get("AttributeName")
                .and_then(Value::as_str)
                .context("TTL AttributeName")?;
            dynamodb
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await
                .context("enabling TTL")?;
        }
        stack.arns.insert(
            id.clone(),
            format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}"),
        );
        stack.refs.insert(id, name);
    }

    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    for (id, resource) in template.resources("AWS::SecretsManager::Secret") {
        let name = format!("{prefix}/{id}");
        let value = match resource
            .get("Metadata")
            .and_then(|m| m.get("LocalValue")?.as_str())
        {
            Some("rsa-signing-keys") => {
                let secret = lambent::auth::keys::generate_secret("local-1")?;
                secrecy::ExposeSecret::expose_secret(&secret).to_owned()
            }
            // Test-mode keys the local Toss and Stripe accept (connect_payments hands them over).
            Some("payment-keys") => serde_json::json!({
                "toss_secret_key": format!("test_sk_{}", uuid::Uuid::new_v4().simple()),
                "stripe_secret_key": format!("sk_test_{}", uuid::Uuid::new_v4().simple()),
                "stripe_webhook_secret": format!("whsec_{}", uuid::Uuid::new_v4().simple()),
            })
            .to_string(),
            // Keys the local fake providers accept (infra/local's fakes read them from here).
            Some("provider-keys") => serde_json::json!({
                "fal_key": format!("local-fal-{}", uuid::Uuid::new_v4().simple()),
                "fal_user_id": crate::fakes::FAL_USER_ID,
                "replicate_api_token": format!("local-replicate-{}", uuid::Uuid::new_v4().simple()),
                "llm_api_key": format!("local-llm-{}", uuid::Uuid::new_v4().simple()),
            })
            .to_string(),
            // Client secrets the local fake OpenID Providers accept (they read them from here).
            Some("oauth-clients") => serde_json::json!({
                "google": format!("local-google-{}", uuid::Uuid::new_v4().simple()),
                "kakao": format!("local-kakao-{}", uuid::Uuid::new_v4().simple()),
                "naver": format!("local-naver-{}", uuid::Uuid::new_v4().simple()),
                "kakao_admin_key": format!("local-kakao-admin-{}", uuid::Uuid::new_v4().simple()),
                "instagram": format!("local-instagram-{}", uuid::Uuid::new_v4().simple()),
            })
            .to_string(),
            _ => match resource
                .get("Properties")
                .and_then(|p| p.get("GenerateSecretString"))
            {
                // As Secrets Manager generates it: letters and digits when punctuation is excluded.
                Some(generate) => {
                    let length = generate
                        .get("PasswordLength")
                        .and_then(Value::as_u64)
                        .unwrap_or(32);
                    random_alphanumeric(usize::try_from(length).unwrap_or(32))?
                }
                None => uuid::Uuid::new_v4().to_string(),
            },
        };
        let out = secrets
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await
            .with_context(|| format!("creating secret {name}"))?;
        stack
            .arns
            .insert(id.clone(), out.arn.unwrap_or_else(|| name.clone()));
        stack.refs.insert(id, name);
    }

    // KMS keys (linked accounts' tokens are encrypted under data keys of one).
    let kms = aws_sdk_kms::Client::new(sdk);
    for (id, _) in template.resources("AWS::KMS::Key") {
        let out = kms
            .create_key()
            .description(format!("{prefix}/{id}"))
            .send()
            .await
            .with_context(|| format!("creating the KMS key {id}"))?;
        let metadata = out.key_metadata.context("the key's metadata")?;
        stack.arns.insert(
            id.clone(),
            metadata.arn.unwrap_or_else(|| metadata.key_id.clone()),
        );
        stack.refs.insert(id, metadata.key_id);
    }

    // The mail sender: moto's SES, like SES after its verification, sends only from an identity.
    let ses = aws_sdk_sesv2::Client::new(sdk);
    for (id, resource) in template.resources("AWS::SES::EmailIdentity") {
        let identity = resource
            .get("Properties")
            .and_then(|p| p.get("EmailIdentity"))
            .and_then(|v| template.resolve(v, &stack))
            .with_context(|| format!("{id}'s EmailIdentity"))?;
        ses.create_email_identity()
            .email_identity(&identity)
            .send()
            .await
            .with_context(|| format!("creating the SES identity {identity}"))?;
        stack.refs.insert(id, identity);
    }

    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    for (id, _) in template.resources("AWS::S3::Bucket") {
        let name = format!("{prefix}-{}", id.to_lowercase());
        s3.create_bucket()
            .bucket(&name)
            .send()
            .await
            .with_context(|| format!("creating bucket {name}"))?;
        stack
            .arns
            .insert(id.clone(), format!("arn:aws:s3:::{name}"));
        stack.refs.insert(id, name);
    }

    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut queues = template.resources("AWS::SQS::Queue");
    // Dead-letter queues first: the queues that redrive to them need their ARNs.
    queues.sort_by_key(|(_, q)| {
        q.get("Properties")
            .and_then(|p| p.get("RedrivePolicy"))
            .is_some()
    });
    for (id, resource) in queues {
        let props = resource.get("Properties");
        let fifo = props
            .and_then(|p| p.get("FifoQueue"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let name = format!("{prefix}-{id}{}", if fifo { ".fifo" } else { "" });
        let mut request = sqs.create_queue().queue_name(&name);
        if let Some(Value::Mapping(props)) = props {
            for (key, value) in props {
                let Some(key) = key.as_str().filter(|k| !matches!(*k, "QueueName" | "Tags")) else {
                    continue;
                };
                let attribute = if key == "RedrivePolicy" {
                    let target = value
                        .get("deadLetterTargetArn")
                        .context("deadLetterTargetArn")?;
                    let arn = template
                        .resolve(target, &stack)
                        .context("the dead-letter queue must come first")?;
                    let count = value
                        .get("maxReceiveCount")
                        .and_then(|c| template.resolve(c, &stack))
                        .context("maxReceiveCount")?;
                    serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": count })
                        .to_string()
                } else if let Some(resolved) = template.resolve(value, &stack) {
                    resolved
                } else {
                    continue;
                };
                request = request
                    .attributes(aws_sdk_sqs::types::QueueAttributeName::from(key), attribute);
            }
        }
        let out = request
            .send()
            .await
            .with_context(|| format!("creating queue {name}"))?;
        let url = out.queue_url.context("queue URL")?;
        stack.arns.insert(
            id.clone(),
            format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
        );
        stack.refs.insert(id, url);
    }

    stack.consumers = template.queue_consumers(&stack);
    stack.env = template.environment(&stack);
    Ok(stack)
}
