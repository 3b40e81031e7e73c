//! Signing registry tokens: RS256 JWTs whose header names the signing key the way
//! distribution 2.8 can check it against its `rootcertbundle`.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{KeyPair as _, RsaKeyPair, RSA_PKCS1_SHA256};
use sha2::{Digest, Sha256};

/// How a token's header identifies its signing key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyHeader {
    /// `x5c`: the signing certificate itself (base64 DER); the registry verifies it chains to
    /// a certificate in its `rootcertbundle`.
    #[default]
    X5c,
    /// `kid`: the libtrust fingerprint of the signing key (what Harbor sends); the registry
    /// looks it up among the keys of its `rootcertbundle` certificates.
    Kid,
}

/// The token-signing key and its certificate, loaded once per issuer.
pub(crate) struct Signer {
    key: RsaKeyPair,
    cert_der: Vec<u8>,
    header: KeyHeader,
    rng: SystemRandom,
}

impl Signer {
    /// Loads an RSA key (PKCS#8 PEM) and its certificate (PEM).
    pub(crate) fn load(key_pem: &Path, cert_pem: &Path, header: KeyHeader) -> Signer {
        let key_der = pem_der(key_pem, "PRIVATE KEY");
        let key = RsaKeyPair::from_pkcs8(&key_der).unwrap_or_else(|e| {
            panic!(
                "{} is not an RSA PKCS#8 key ring accepts: {e}",
                key_pem.display()
            )
        });
        Signer {
            key,
            cert_der: pem_der(cert_pem, "CERTIFICATE"),
            header,
            rng: SystemRandom::new(),
        }
    }

    /// The compact JWS of `claims`.
    pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = serde_json::json!({"typ": "JWT", "alg": "RS256"});
        match self.header {
            KeyHeader::X5c => header["x5c"] = serde_json::json!([STANDARD.encode(&self.cert_der)]),
            KeyHeader::Kid => header["kid"] = libtrust_key_id(&self.spki_der()).into(),
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig)
            .expect("RSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Random bytes as hex, for token IDs and refresh tokens.
    pub(crate) fn random_hex(&self, bytes: usize) -> String {
        use ring::rand::SecureRandom as _;
        let mut b = vec![0u8; bytes];
        self.rng.fill(&mut b).expect("system randomness");
        hex::encode(b)
    }

    /// The public key as a DER SubjectPublicKeyInfo (what Go's MarshalPKIXPublicKey writes),
    /// built around ring's PKCS#1 RSAPublicKey.
    fn spki_der(&self) -> Vec<u8> {
        const RSA_ALGORITHM: &[u8] = &[
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        let pkcs1 = self.key.public_key().as_ref();
        let mut bits = vec![0u8];
        bits.extend_from_slice(pkcs1);
        let mut body = RSA_ALGORITHM.to_vec();
        body.extend(der(0x03, &bits));
        der(0x30, &body)
    }
}

/// A DER element: tag, definite length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// libtrust's key ID: the first 240 bits of SHA-256 over the SPKI, in unpadded base32,
/// in groups of four joined by ':'.
fn libtrust_key_id(spki: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki);
    // 30 bytes are exactly 48 base32 digits: no padding to trim.
    let mut digits = String::new();
    let (mut acc, mut nbits) = (0u32, 0);
    for &b in &hash[..30] {
        acc = (acc << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            digits.push(ALPHABET[((acc >> nbits) & 31) as usize] as char);
        }
    }
    let groups: Vec<&str> = (0..digits.len())
        .step_by(4)
        .map(|i| &digits[i..i + 4])
        .collect();
    groups.join(":")
}

/// The DER inside the first `-----BEGIN {label}-----` block of a PEM file.
fn pem_der(path: &Path, label: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(b64, _)| b64.split_whitespace().collect::<String>())
        .unwrap_or_else(|| panic!("{} has no {label} PEM block", path.display()));
    STANDARD
        .decode(body)
        .unwrap_or_else(|e| panic!("{}: bad base64 in the {label} block: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_use_the_long_form_past_127() {
        assert_eq!(der(0x04, &[7; 3]), vec![0x04, 3, 7, 7, 7]);
        let long = der(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn libtrust_key_id_is_twelve_groups_of_four_base32_digits() {
        let id = libtrust_key_id(b"any key");
        let groups: Vec<&str> = id.split(':').collect();
        assert_eq!(groups.len(), 12, "{id}");
        assert!(groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
    }
}
