//! Fresh JWT signing keys for the benchmark's token rows and the tests: RS256 (2048-bit
//! RSA) and ES256 (P-256), generated with aws-lc-rs, the library that verifies them.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A signing key and its public half.
pub struct SigningKey {
    /// `RS256` or `ES256`.
    pub alg: Algorithm,
    /// What `jsonwebtoken` signs with.
    pub encoding: EncodingKey,
    /// RSA `n` and `e`, or the EC point's `x` and `y` (big-endian bytes).
    pub public: (Vec<u8>, Vec<u8>),
}

impl SigningKey {
    /// A fresh 2048-bit RSA key (RS256).
    ///
    /// # Panics
    /// When the system has no randomness.
    pub fn rs256() -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let pkcs8 = pair.as_der().expect("RSA key encodes");
        let public = pair.public_key();
        Self {
            alg: Algorithm::RS256,
            // jsonwebtoken reads RSA keys as PKCS#1 `RSAPrivateKey`: the inside of PKCS#8.
            encoding: EncodingKey::from_rsa_der(pkcs1_of(pkcs8.as_ref())),
            public: (
                public.modulus().big_endian_without_leading_zero().to_vec(),
                public.exponent().big_endian_without_leading_zero().to_vec(),
            ),
        }
    }

    /// A fresh P-256 key (ES256).
    ///
    /// # Panics
    /// When the system has no randomness.
    pub fn es256() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        let pkcs8 = pair.to_pkcs8v1().expect("P-256 key encodes");
        // The uncompressed point: 0x04, x, y.
        let point = pair.public_key().as_ref();
        Self {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public: (point[1..33].to_vec(), point[33..65].to_vec()),
        }
    }

    /// The public key as a JWK with key id `kid`, for a key set.
    pub fn jwk(&self, kid: &str) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let (a, b) = (b64(&self.public.0), b64(&self.public.1));
        match self.alg {
            Algorithm::RS256 => json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": a, "e": b}),
            _ => json!({"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
                "x": a, "y": b}),
        }
    }

    /// `claims` signed as a compact JWT with key id `kid`.
    ///
    /// # Panics
    /// When `claims` cannot be serialised.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("JWT signs")
    }
}

/// The `privateKey` octet string of a PKCS#8 `PrivateKeyInfo` (RFC 5208): `SEQUENCE {
/// INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, … }`.
fn pkcs1_of(pkcs8: &[u8]) -> &[u8] {
    let key = (|| {
        let (_, info, _) = crate::der::element(pkcs8)?;
        let (_, _version, rest) = crate::der::element(info)?;
        let (_, _algorithm, rest) = crate::der::element(rest)?;
        let (_, key, _) = crate::der::element(rest)?;
        Some(key)
    })();
    key.expect("aws-lc-rs writes well-formed PKCS#8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_sign_tokens_their_public_halves_verify() {
        for key in [SigningKey::rs256(), SigningKey::es256()] {
            let token = key.sign("k1", &json!({"sub": "u", "exp": 4_102_444_800u64}));
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk("k1")).unwrap();
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let mut validation = jsonwebtoken::Validation::new(key.alg);
            validation.validate_aud = false;
            let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
            assert_eq!(data.claims["sub"], "u");
        }
    }
}
