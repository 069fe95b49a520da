//! One-time enrollment tokens, stored by the sha256 of their secret so the store never holds a usable token.

use serde::{Deserialize, Serialize};

use super::{Result, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub site: String,
    pub uses_left: u32,
    pub expires_at: i64,
    pub created_at: i64,
    /// The TUF root version the token pins; enrollment hands out exactly that root.
    pub root_version: u64,
    #[serde(default)]
    pub created_by: String,
    /// 0 unless revoked.
    #[serde(default)]
    pub revoked_at: i64,
}

/// How `token list` names a token: the start of its secret's hash.
pub fn token_id(secret_hash: &str) -> &str {
    &secret_hash[..secret_hash.len().min(12)]
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired { at: i64 },
    UsedUp,
    Revoked { at: i64 },
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRefusal::Unknown => write!(f, "unknown enrollment token"),
            TokenRefusal::Expired { at } => write!(
                f,
                "enrollment token expired at {}",
                chrono::DateTime::from_timestamp(*at, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| at.to_string())
            ),
            TokenRefusal::UsedUp => write!(f, "enrollment token has no uses left"),
            TokenRefusal::Revoked { at } => write!(
                f,
                "enrollment token was revoked at {}",
                chrono::DateTime::from_timestamp(*at, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| at.to_string())
            ),
        }
    }
}

/// The token rule, kept apart from the store so it has a plain unit test.
pub(super) fn check_token(
    token: Option<TokenRecord>,
    now: i64,
) -> Result<TokenRecord, TokenRefusal> {
    let token = token.ok_or(TokenRefusal::Unknown)?;
    if token.revoked_at > 0 {
        return Err(TokenRefusal::Revoked {
            at: token.revoked_at,
        });
    }
    if now >= token.expires_at {
        return Err(TokenRefusal::Expired {
            at: token.expires_at,
        });
    }
    if token.uses_left == 0 {
        return Err(TokenRefusal::UsedUp);
    }
    Ok(token)
}

impl Store {
    /// Every token with the hash it is stored under.
    pub fn tokens(&self) -> Result<Vec<(String, TokenRecord)>> {
        self.tokens
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    super::decode("tokens", &k, &v)?,
                ))
            })
            .collect()
    }
}

impl Store {
    /// Check a token without spending it (enrollment checks again, atomically, when it spends it).
    pub fn check_token(
        &self,
        secret_hash: &str,
        now: i64,
    ) -> Result<Result<TokenRecord, TokenRefusal>> {
        let token = super::get(&self.tokens, "tokens", secret_hash.as_bytes())?;
        Ok(check_token(token, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(uses: u32, expires_at: i64) -> TokenRecord {
        TokenRecord {
            site: "north".into(),
            uses_left: uses,
            expires_at,
            created_at: 0,
            root_version: 1,
            created_by: "admin".into(),
            revoked_at: 0,
        }
    }

    #[test]
    fn token_rules() {
        assert_eq!(check_token(None, 10).unwrap_err(), TokenRefusal::Unknown);
        assert_eq!(
            check_token(Some(token(1, 10)), 10).unwrap_err(),
            TokenRefusal::Expired { at: 10 }
        );
        assert_eq!(
            check_token(Some(token(0, 100)), 10).unwrap_err(),
            TokenRefusal::UsedUp
        );
        assert_eq!(check_token(Some(token(2, 100)), 10).unwrap().uses_left, 2);
        let revoked = TokenRecord {
            revoked_at: 5,
            ..token(2, 100)
        };
        assert_eq!(
            check_token(Some(revoked), 10).unwrap_err(),
            TokenRefusal::Revoked { at: 5 }
        );
    }
}
