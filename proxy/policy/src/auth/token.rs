//! The tokens wharf's token endpoint issues: who the caller is, what the token may be used for (the
//! token spec's `access` claim: `scope.rs`) and until when, signed with a key this process drew at
//! start (HMAC-SHA256). Clients treat tokens as opaque; a restart invalidates them and clients simply
//! ask again, as they do when one expires. (So a token of an older wharf, which granted no access,
//! never reaches a newer one.)

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use wharf_model::scope::{Access, Entry};

type HmacSha256 = Hmac<Sha256>;

/// The payload's format; a token of another version does not verify.
const VERSION: u8 = 2;

pub struct Signer {
    key: [u8; 32],
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `None`: an anonymous token.
    pub identity: Option<String>,
    pub access: Access,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    exp: u64,
    access: Vec<Entry>,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Signer {
    /// A signer with a fresh random key.
    pub fn random() -> Signer {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Signer { key }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// A token for `identity` (`None`: anonymous) granting `access`, valid until `expires` (unix
    /// seconds).
    pub fn sign(&self, identity: Option<&str>, access: &Access, expires: u64) -> String {
        let payload = Payload {
            v: VERSION,
            sub: identity.map(str::to_owned),
            exp: expires,
            access: access.to_entries(),
        };
        let payload = serde_json::to_vec(&payload).expect("a payload of strings serializes");
        let mut mac = self.mac();
        mac.update(&payload);
        format!("{}.{}", b64(&payload), b64(&mac.finalize().into_bytes()))
    }

    /// The claims of a valid, unexpired token; `None` otherwise.
    pub fn verify(&self, token: &str, now: u64) -> Option<Claims> {
        let (payload, sig) = token.split_once('.')?;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = engine.decode(payload).ok()?;
        let sig = engine.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&sig).ok()?;
        let p: Payload = serde_json::from_slice(&payload).ok()?;
        if p.v != VERSION || p.exp <= now {
            return None;
        }
        Some(Claims {
            identity: p.sub.filter(|s| !s.is_empty()),
            access: Access::from_entries(p.access),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_model::scope::Actions;

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_key() {
        let s = Signer::random();
        let mut access = Access::default();
        access.grant("ci/bob", Actions::parse("pull"));
        let t = s.sign(Some("ci-robot"), &access, 100);
        let claims = s.verify(&t, 99).unwrap();
        assert_eq!(claims.identity.as_deref(), Some("ci-robot"));
        assert_eq!(claims.access, access);
        assert_eq!(s.verify(&t, 100), None, "expired");
        let anonymous = s.sign(None, &Access::default(), 100);
        assert_eq!(s.verify(&anonymous, 1).unwrap().identity, None);
        assert_eq!(Signer::random().verify(&t, 1), None, "another key");
        // A payload changed by the client does not verify: not a wider scope, not another identity.
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!(
            "{}.{sig}",
            b64(br#"{"v":2,"sub":"ci-robot","exp":100,"access":[{"type":"repository","name":"ci/bob","actions":["pull","push"]}]}"#)
        );
        assert_eq!(s.verify(&forged, 1), None);
        assert_eq!(s.verify("garbage", 1), None);
        // The format before scopes (`w1|identity|expires`), even signed with this key: refused.
        let mut mac = s.mac();
        mac.update(b"w1|ci-robot|100");
        let old = format!(
            "{}.{}",
            b64(b"w1|ci-robot|100"),
            b64(&mac.finalize().into_bytes())
        );
        assert_eq!(s.verify(&old, 1), None);
    }
}
