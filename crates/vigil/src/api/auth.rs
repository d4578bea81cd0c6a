//! Bearer tokens for state-changing requests.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// Whether the request carries the token (compared in constant time).
pub fn authorized(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.trim().as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_bearer_token() {
        let mut h = HeaderMap::new();
        assert!(authorized(None, &h));
        assert!(!authorized(Some("secret-token-123456"), &h));
        h.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(!authorized(Some("secret-token-123456"), &h));
        h.insert(
            "authorization",
            "Bearer secret-token-123456".parse().unwrap(),
        );
        assert!(authorized(Some("secret-token-123456"), &h));
    }
}
