//! Opaque pagination cursors: the position, signed so a client cannot forge or alter one, and
//! bound to the caller and the listing it came from.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use lambda_http::Request;

use crate::error::ApiError;
use crate::http::{page_limit, query_param};

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], scope: &str, position: &str) -> HmacSha256 {
    // Any key length is accepted by HMAC; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(scope.as_bytes());
    mac.update(b"\n");
    mac.update(position.as_bytes());
    mac
}

/// A cursor for `position` within `scope` (the listing and the caller).
pub fn encode(key: &[u8], scope: &str, position: &str) -> String {
    let tag = mac(key, scope, position).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(position),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The position of a cursor made by [`encode`] for the same scope; 400 `invalid_cursor` otherwise.
pub fn decode(key: &[u8], scope: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::BadRequest {
        code: "invalid_cursor",
        detail: "the cursor is not one this listing issued".into(),
    };
    if cursor.len() > 512 {
        return Err(invalid());
    }
    let (position, tag) = cursor.split_once('.').ok_or_else(invalid)?;
    let position = String::from_utf8(URL_SAFE_NO_PAD.decode(position).map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    // Constant-time comparison.
    mac(key, scope, &position)
        .verify_slice(&tag)
        .map_err(|_| invalid())?;
    Ok(position)
}

/// One page of a listing as the request asks for it: `?limit=` (1 to 100, default 20) and a
/// `?cursor=` this listing issued to this caller.
pub struct Paging<'k> {
    pub limit: usize,
    /// Where the page starts: the position the cursor carries.
    pub after: Option<String>,
    key: &'k [u8],
    scope: String,
}

impl<'k> Paging<'k> {
    /// Reads the page of `scope` (the listing and the caller, `jobs|{user}`) from the request.
    pub fn from_request(req: &Request, key: &'k [u8], scope: String) -> Result<Self, ApiError> {
        let limit = page_limit(req)?;
        let after = query_param(req, "cursor")
            .map(|c| decode(key, &scope, &c))
            .transpose()?;
        Ok(Self {
            limit,
            after,
            key,
            scope,
        })
    }

    /// The cursor of the next page, when the listing has one after `position`.
    pub fn next_cursor(&self, position: Option<String>) -> Option<String> {
        position.map(|position| encode(self.key, &self.scope, &position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_only_in_its_scope_and_unaltered() {
        let cursor = encode(b"key", "jobs|u1", "0193-abc");
        assert_eq!(
            decode(b"key", "jobs|u1", &cursor).expect("valid"),
            "0193-abc"
        );
        assert!(decode(b"key", "jobs|u2", &cursor).is_err());
        assert!(decode(b"other", "jobs|u1", &cursor).is_err());
        let (position, tag) = cursor.split_once('.').expect("dot");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("0193-abd"));
        assert!(decode(b"key", "jobs|u1", &forged).is_err());
        assert!(decode(b"key", "jobs|u1", position).is_err());
        assert!(decode(b"key", "jobs|u1", "!!!.???").is_err());
    }
}
