//! [`BearerToken`]: a credential that never shows in `Debug` output, logs or errors.

use std::fmt;

/// A bearer token, sent as `Authorization: Bearer TOKEN`. Its `Debug` shows `BearerToken(***)`,
/// so a client holding one can be logged; read it with [`BearerToken::expose`] only to send it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps `token` (sent as given; it must be a valid HTTP header value).
    pub fn new(token: impl Into<String>) -> BearerToken {
        BearerToken(token.into())
    }

    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value, marked sensitive (HTTP/2 never indexes it). A token
    /// that is not a valid header value (a line break, say) is refused without repeating it.
    pub(crate) fn header_value(&self) -> Result<axum::http::HeaderValue, String> {
        let mut value =
            axum::http::HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| {
                format!(
                    "the bearer token ({} characters) is not a valid HTTP header value: \
                     use visible ASCII only",
                    self.0.chars().count()
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

impl From<String> for BearerToken {
    fn from(token: String) -> BearerToken {
        BearerToken(token)
    }
}

impl From<&str> for BearerToken {
    fn from(token: &str) -> BearerToken {
        BearerToken(token.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug_or_refusals() {
        let token = BearerToken::new("s3cret-value");
        assert_eq!(format!("{token:?}"), "BearerToken(***)");
        assert_eq!(token.header_value().unwrap(), "Bearer s3cret-value");
        assert!(token.header_value().unwrap().is_sensitive());
        let bad = BearerToken::new("s3cret\nvalue")
            .header_value()
            .unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
        assert!(bad.contains("12 characters"), "{bad}");
    }
}
