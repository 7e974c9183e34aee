//! Credits bought with money, and given daily: the packages, orders paid through Toss Payments
//! (Korean apps) or Stripe Checkout (everyone else), refunds that take bought credits back, and
//! the daily reward. Every movement goes through [`crate::credits::Movement`]: the balance and
//! its ledger line in one transaction, with the order's state, exactly once.

pub mod admin;
pub mod artists;
pub mod daily;
pub mod orders;
pub mod stripe;
pub mod toss;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::error::ApiError;
use crate::state::State;

/// The payment keys secret: `{"toss_secret_key", "stripe_secret_key", "stripe_webhook_secret"}`;
/// an empty value leaves its provider off.
#[derive(Deserialize)]
pub(crate) struct PaymentKeys {
    toss_secret_key: Option<SecretString>,
    stripe_secret_key: Option<SecretString>,
    stripe_webhook_secret: Option<SecretString>,
}

fn present(key: Option<&SecretString>) -> Option<&SecretString> {
    key.filter(|k| !k.expose_secret().trim().is_empty())
}

impl PaymentKeys {
    pub(crate) fn toss(&self) -> Option<&SecretString> {
        present(self.toss_secret_key.as_ref())
    }

    pub(crate) fn stripe(&self) -> Option<&SecretString> {
        present(self.stripe_secret_key.as_ref())
    }

    pub(crate) fn stripe_webhook(&self) -> Option<&SecretString> {
        present(self.stripe_webhook_secret.as_ref())
    }
}

/// The payment keys, read once per process; the root installs one per [`State`].
#[derive(Default)]
pub struct Runtime {
    keys: OnceCell<PaymentKeys>,
}

/// The payment keys; 404 where this deployment sells no credits (no secret configured).
pub(crate) async fn keys(state: &State) -> Result<&PaymentKeys, ApiError> {
    let Some(id) = state.config.payments.keys_secret_id.as_deref() else {
        return Err(ApiError::NotFound("this deployment sells no credits"));
    };
    let runtime = state.feature::<Runtime>()?;
    let keys = runtime
        .keys
        .get_or_try_init(|| async {
            let text = state.secret_string(id).await?;
            serde_json::from_str::<PaymentKeys>(text.expose_secret())
                .context("the payment keys secret is not the expected JSON")
        })
        .await?;
    Ok(keys)
}

/// A provider's id of a payment (Toss's `paymentKey`, Stripe's ids): letters, digits, `_` and
/// `-`, 1 to 200 characters; it goes into URLs and keys.
pub(crate) fn valid_payment_id(id: &str) -> bool {
    (1..=200).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
