//! The Secrets Manager rotation function of the signing keys: each rotation adds a new key (published
//! at once, signing three hours later) and keeps the key in force. `RotateImmediatelyOnUpdate` runs
//! it at deploy, so a fresh stack has its first key without a manual step.

use anyhow::{Context as _, bail};
use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use aws_sdk_secretsmanager::Client;
use secrecy::SecretString;

use crate::auth::keys::{KeyRing, rotate};

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

async fn pending_value(
    secrets: &Client,
    id: &str,
    token: &str,
) -> Result<
    aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput,
    aws_sdk_secretsmanager::error::SdkError<
        aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
    >,
> {
    secrets
        .get_secret_value()
        .secret_id(id)
        .version_id(token)
        .version_stage(PENDING)
        .send()
        .await
}

/// Runs one step of the rotation protocol (createSecret, setSecret, testSecret, finishSecret).
pub async fn step(
    secrets: &Client,
    event: &SecretsManagerSecretRotationEvent,
    now: i64,
) -> anyhow::Result<()> {
    let id = &event.secret_id;
    let token = &event.client_request_token;
    let described = secrets
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .context("describing the secret")?;
    let stages = described.version_ids_to_stages.unwrap_or_default();
    let token_stages = stages.get(token).cloned().unwrap_or_default();
    if token_stages.iter().any(|s| s == CURRENT) {
        tracing::info!(step = %event.step, "version already current");
        return Ok(());
    }
    // Secrets Manager labels the version AWSPENDING before createSecret; createSecret itself may
    // also be the first to store it (a manual run), so only later steps insist.
    if event.step != "createSecret" && !token_stages.iter().any(|s| s == PENDING) {
        bail!("version {token} is not pending");
    }
    match event.step.as_str() {
        "createSecret" => {
            let pending = pending_value(secrets, id, token).await;
            if pending
                .as_ref()
                .is_ok_and(|out| out.secret_string.is_some())
            {
                return Ok(());
            }
            let current = secrets
                .get_secret_value()
                .secret_id(id)
                .version_stage(CURRENT)
                .send()
                .await;
            let current = current
                .ok()
                .and_then(|out| out.secret_string)
                .map(SecretString::from);
            let current = current.filter(|value| {
                let usable = KeyRing::from_secret(value).is_ok();
                if !usable {
                    tracing::warn!("the current value holds no usable key; starting afresh");
                }
                usable
            });
            let date = chrono::DateTime::from_timestamp(now, 0)
                .unwrap_or_default()
                .format("%Y%m%d");
            let kid = format!(
                "{date}-{}",
                token
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(8)
                    .collect::<String>()
            );
            let value = rotate(current.as_ref(), &kid, now)?;
            secrets
                .put_secret_value()
                .secret_id(id)
                .client_request_token(token)
                .secret_string(secrecy::ExposeSecret::expose_secret(&value))
                .version_stages(PENDING)
                .send()
                .await
                .context("storing the pending keys")?;
            tracing::info!(kid = %kid, "new signing key pending");
        }
        // Nothing outside Secrets Manager holds the keys.
        "setSecret" => {}
        "testSecret" => {
            let pending = pending_value(secrets, id, token).await?;
            KeyRing::from_secret(&SecretString::from(
                pending.secret_string.context("no pending value")?,
            ))?;
        }
        "finishSecret" => {
            let current = stages
                .iter()
                .find(|(_, s)| s.iter().any(|s| s == CURRENT))
                .map(|(v, _)| v.clone());
            secrets
                .update_secret_version_stage()
                .secret_id(id)
                .version_stage(CURRENT)
                .move_to_version_id(token)
                .set_remove_from_version_id(current)
                .send()
                .await
                .context("promoting the new keys")?;
            tracing::info!("new signing keys current");
        }
        other => bail!("unknown rotation step {other}"),
    }
    Ok(())
}
