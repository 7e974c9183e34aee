//! Secrets Lambent keeps for users (linked accounts' tokens), encrypted at rest: each under a
//! fresh KMS data key (AES-256-GCM), the key stored as KMS encrypted it. The encryption context
//! names what the secret belongs to and is also the AEAD's associated data, so a ciphertext
//! copied onto another item does not open; IAM lets a function decrypt only with the `purpose`
//! it needs.

use anyhow::Context as _;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;

use crate::db::{Item, get_s, s};
use crate::state::State;

/// KMS; the composition root installs it.
pub struct Runtime {
    kms: aws_sdk_kms::Client,
}

impl Runtime {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            kms: aws_sdk_kms::Client::new(sdk),
        }
    }
}

/// An encrypted secret: the ciphertext (with its tag), the data key as KMS encrypted it, the
/// nonce; each base64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: String,
    pub key: String,
    pub nonce: String,
}

/// The attribute names a sealed secret is stored under: `<name>`, `<name>_key`, `<name>_nonce`.
#[derive(Clone, Copy)]
pub struct Names {
    pub ciphertext: &'static str,
    pub key: &'static str,
    pub nonce: &'static str,
}

impl Sealed {
    /// The item attributes that hold it.
    pub fn attributes(
        &self,
        names: Names,
    ) -> Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)> {
        vec![
            (names.ciphertext, s(&self.ciphertext)),
            (names.key, s(&self.key)),
            (names.nonce, s(&self.nonce)),
        ]
    }

    /// It, from an item's attributes; `None` when the item holds none.
    pub fn from_item(item: &Item, names: Names) -> Option<Self> {
        Some(Self {
            ciphertext: get_s(item, names.ciphertext)?.to_owned(),
            key: get_s(item, names.key)?.to_owned(),
            nonce: get_s(item, names.nonce)?.to_owned(),
        })
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The associated data: the context's pairs, in order.
fn aad(context: &[(&str, &str)]) -> Vec<u8> {
    context
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// Encrypts `secret` under a fresh data key of `TOKENS_KMS_KEY_ID`, bound to `context`.
pub async fn seal(state: &State, context: &[(&str, &str)], secret: &str) -> anyhow::Result<Sealed> {
    let key_id = state
        .config
        .tokens_key_id
        .as_deref()
        .context("TOKENS_KMS_KEY_ID is not set")?;
    let runtime = state.feature::<Runtime>()?;
    let mut request = runtime
        .kms
        .generate_data_key()
        .key_id(key_id)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256);
    for (k, v) in context {
        request = request.encryption_context(*k, *v);
    }
    let data_key = request.send().await.context("a data key from KMS")?;
    let plain = data_key.plaintext.context("no plaintext key")?;
    let wrapped = data_key.ciphertext_blob.context("no encrypted key")?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, plain.as_ref())
            .map_err(|_| anyhow::anyhow!("a bad data key"))?,
    );
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let mut data = secret.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(context).as_slice()),
        &mut data,
    )
    .map_err(|_| anyhow::anyhow!("sealing a secret"))?;
    Ok(Sealed {
        ciphertext: b64().encode(data),
        key: b64().encode(wrapped.as_ref()),
        nonce: b64().encode(nonce),
    })
}

/// Decrypts what [`seal`] encrypted with the same `context`.
pub async fn unseal(
    state: &State,
    context: &[(&str, &str)],
    sealed: &Sealed,
) -> anyhow::Result<String> {
    let decode = |text: &str, name: &str| {
        b64()
            .decode(text)
            .with_context(|| format!("the sealed {name} is not base64"))
    };
    let runtime = state.feature::<Runtime>()?;
    let mut request = runtime
        .kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(decode(
            &sealed.key,
            "key",
        )?));
    for (k, v) in context {
        request = request.encryption_context(*k, *v);
    }
    let plain = request
        .send()
        .await
        .context("decrypting the data key")?
        .plaintext
        .context("no plaintext key")?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, plain.as_ref())
            .map_err(|_| anyhow::anyhow!("a bad data key"))?,
    );
    let nonce: [u8; 12] = decode(&sealed.nonce, "nonce")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a bad nonce"))?;
    let mut data = decode(&sealed.ciphertext, "ciphertext")?;
    let opened = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(context).as_slice()),
            &mut data,
        )
        .map_err(|_| anyhow::anyhow!("a sealed secret that does not open"))?;
    String::from_utf8(opened.to_vec()).context("a sealed secret that is not text")
}
