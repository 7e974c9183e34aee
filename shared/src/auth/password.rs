//! Argon2id password hashing, with a decoy hash so a login for an unknown account costs the same.

use anyhow::Context as _;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

/// OWASP's argon2id floor: 19 MiB, 2 passes, 1 lane.
fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params =
        Params::new(19 * 1024, 2, 1, None).map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string. CPU-bound: runs on the blocking pool.
pub async fn hash(password: SecretString) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        let hash = argon2()?
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
        Ok(hash.to_string())
    })
    .await
    .context("the hashing task failed")?
}

/// Checks a password against a stored PHC string; with `None` it checks against a decoy hash of the
/// same cost and answers `false`, so unknown accounts take as long as wrong passwords.
pub async fn verify(password: SecretString, stored: Option<String>) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| DECOY.to_owned());
        let parsed =
            PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("stored hash is not PHC: {e}"))?;
        let matches = argon2()?
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .context("the verifying task failed")?
}

/// An argon2id hash of a random password with the parameters above; no password matches it.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$3qC4iCRPHB0nfhfkq6yTbw$KQ3rBZaYeYQe86h3k7R6y0kq7J0n1p1bYtqM7BOA3v4";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let stored = hash(SecretString::from("correct horse"))
            .await
            .expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify(SecretString::from("correct horse"), Some(stored.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !verify(SecretString::from("wrong horse"), Some(stored))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn the_decoy_parses_and_never_matches() {
        assert!(PasswordHash::new(DECOY).is_ok());
        assert!(
            !verify(SecretString::from("anything"), None)
                .await
                .expect("verify")
        );
    }
}
