//! Enrollment token strings: `rollcall1.<secret>.<CA sha256>.<root sha256>`. The secret authorises one
//! enrollment; the two pins let the agent trust the controller's CA and TUF root before it has anything else.

use base64::Engine;

const PREFIX: &str = "rollcall1";

/// A parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub secret: String,
    pub ca_sha256: String,
    pub root_sha256: String,
}

impl Token {
    pub fn generate(ca_sha256: &str, root_sha256: &str) -> Token {
        let mut secret = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut secret);
        Token {
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            ca_sha256: ca_sha256.to_owned(),
            root_sha256: root_sha256.to_owned(),
        }
    }

    /// What the store keeps: the secret's hash, never the secret.
    pub fn secret_hash(secret: &str) -> String {
        crate::sha256_hex(secret.as_bytes())
    }

    pub fn parse(text: &str) -> Result<Token, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        match parts.as_slice() {
            [PREFIX, secret, ca, root] if !secret.is_empty() && is_hex64(ca) && is_hex64(root) => Ok(Token {
                secret: (*secret).to_owned(),
                ca_sha256: (*ca).to_owned(),
                root_sha256: (*root).to_owned(),
            }),
            _ => Err(format!(
                "not a rollcall enrollment token (expected {PREFIX}.<secret>.<ca sha256>.<root sha256>)"
            )),
        }
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            self.secret, self.ca_sha256, self.root_sha256
        )
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = Token::generate(&"a".repeat(64), &"b".repeat(64));
        assert_eq!(Token::parse(&t.to_string()).unwrap(), t);
        assert!(Token::parse("rollcall1.x.y.z").is_err());
        assert!(Token::parse("hello").is_err());
        assert_ne!(Token::secret_hash(&t.secret), t.secret);
    }
}
