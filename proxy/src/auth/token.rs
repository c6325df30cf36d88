//! The tokens wharf's token endpoint issues: who the caller is and until when, signed with a key this
//! process drew at start (HMAC-SHA256). Clients treat tokens as opaque; a restart invalidates them
//! and clients simply ask again, as they do when one expires.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "w1";

pub struct Signer {
    key: [u8; 32],
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

    /// A token for `identity` (`None`: anonymous) valid until `expires` (unix seconds).
    pub fn sign(&self, identity: Option<&str>, expires: u64) -> String {
        let payload = format!("{VERSION}|{}|{expires}", identity.unwrap_or(""));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!(
            "{}.{}",
            b64(payload.as_bytes()),
            b64(&mac.finalize().into_bytes())
        )
    }

    /// The identity a valid, unexpired token names (`Some(None)`: anonymous); `None` otherwise.
    pub fn verify(&self, token: &str, now: u64) -> Option<Option<String>> {
        let (payload, sig) = token.split_once('.')?;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = engine.decode(payload).ok()?;
        let sig = engine.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&sig).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.splitn(3, '|');
        let (v, identity, expires) = (parts.next()?, parts.next()?, parts.next()?);
        if v != VERSION || expires.parse::<u64>().ok()? <= now {
            return None;
        }
        Some((!identity.is_empty()).then(|| identity.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_key() {
        let s = Signer::random();
        let t = s.sign(Some("ci-robot"), 100);
        assert_eq!(s.verify(&t, 99), Some(Some("ci-robot".into())));
        assert_eq!(s.verify(&t, 100), None, "expired");
        assert_eq!(s.verify(&s.sign(None, 100), 1), Some(None), "anonymous");
        assert_eq!(Signer::random().verify(&t, 1), None, "another key");
        // A payload changed by the client does not verify.
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!("{}.{sig}", b64(b"w1|admin|100"));
        assert_eq!(s.verify(&forged, 1), None);
        assert_eq!(s.verify("garbage", 1), None);
    }
}
