//! [`Secret`]: how the AppSecret, server tokens, admin keys and Redis passwords are
//! held, so that no `{:?}` or `{}` in a log line or an error can print one.

use std::fmt;

use serde::Deserialize;

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, compared in constant time: a caller who
    /// guesses a secret learns nothing from how long a refusal took.
    pub fn matches(&self, presented: &str) -> bool {
        same(&self.0, presented)
    }
}

/// Whether two credentials (a secret, a token) are equal, in time that depends on
/// their lengths only, not on where they first differ.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
