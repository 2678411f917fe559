//! HMAC-signed, expiring download URLs for the embedded blob store: what
//! presigned S3 URLs are on AWS.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(key: [u8; 32]) -> Self {
        Signer { key }
    }

    fn mac(&self, action: Action, key: &str, expires: i64, file_name: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Length-prefixed fields: no two different tuples sign the same bytes.
        for field in [
            action.as_str().as_bytes(),
            key.as_bytes(),
            expires.to_string().as_bytes(),
            file_name.as_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    /// Signs one action on one key until `expires`; a download also signs
    /// the name it is served as (an upload signs an empty one).
    pub fn sign(&self, action: Action, key: &str, expires: i64, file_name: &str) -> String {
        hex::encode(
            self.mac(action, key, expires, file_name)
                .finalize()
                .into_bytes(),
        )
    }

    /// Checks the signature in constant time, then the expiry.
    pub fn verify(
        &self,
        action: Action,
        key: &str,
        expires: i64,
        file_name: &str,
        signature: &str,
        now: i64,
    ) -> bool {
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        self.mac(action, key, expires, file_name)
            .verify_slice(&signature)
            .is_ok()
            && now <= expires
    }
}

/// What a signed URL allows: one action on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Download,
    Upload,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Download => "GET",
            Action::Upload => "PUT",
        }
    }

    /// The query parameters a URL for this action has, all of them: a URL
    /// with any other is refused, so none can be added to a signed one.
    pub fn parameters(self) -> &'static [&'static str] {
        match self {
            Action::Download => &["expires", "filename", "signature"],
            Action::Upload => &["expires", "signature"],
        }
    }
}

/// Personal access tokens are stored as this hash only.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random secret (token or key), hex-encoded.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_key_expiry_and_name() {
        let signer = Signer::new([7; 32]);
        let get = Action::Download;
        let sig = signer.sign(get, "a/b", 100, "x.tar.gz");
        assert!(
            !signer.verify(Action::Upload, "a/b", 100, "x.tar.gz", &sig, 50),
            "other action"
        );
        assert!(signer.verify(get, "a/b", 100, "x.tar.gz", &sig, 50));
        assert!(
            !signer.verify(get, "a/b", 100, "x.tar.gz", &sig, 101),
            "expired"
        );
        assert!(
            !signer.verify(get, "a/c", 100, "x.tar.gz", &sig, 50),
            "other key"
        );
        assert!(
            !signer.verify(get, "a/b", 200, "x.tar.gz", &sig, 50),
            "widened expiry"
        );
        assert!(
            !signer.verify(get, "a/b", 100, "y.tar.gz", &sig, 50),
            "other name"
        );
        assert!(!signer.verify(get, "a/b", 100, "x.tar.gz", "zz", 50));
        assert!(!Signer::new([8; 32]).verify(get, "a/b", 100, "x.tar.gz", &sig, 50));
    }
}
