//! Azure IoT Hub-compatible shared access signatures (CONTRACT §2.1) and device key derivation.
//!
//! Token: `SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded base64 sig>&se=<expiry>`,
//! where sig = base64(HMAC-SHA256(base64decode(key), "<url-encoded resource>\n<expiry>")).
//! Device keys are never stored: a key is derived from the deployment's master secret, the device id
//! and the device's generation (bumped when a device is removed and added again).

use crate::device::DeviceId;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. Every variant maps to 401; the text is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header with a SharedAccessSignature token")]
    Missing,
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    #[error("SAS token expired")]
    Expired,
    #[error("the SAS token is not valid for this device")]
    BadSignature,
    /// Deliberately indistinguishable from a bad signature for the caller.
    #[error("the SAS token is not valid for this device")]
    UnknownDevice,
}

/// A token whose shape is valid; the signature is checked separately with the device key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The `sr` value exactly as sent (still URL-encoded): the signature covers this text.
    pub raw_resource: String,
    pub device_id: DeviceId,
    pub expiry: i64,
    pub signature: Vec<u8>,
}

impl SasToken {
    /// Parses an `Authorization` header value.
    pub fn parse(header: &str) -> Result<SasToken, AuthError> {
        let rest = header
            .trim()
            .strip_prefix("SharedAccessSignature ")
            .ok_or(AuthError::Missing)?;
        let (mut sr, mut sig, mut se) = (None, None, None);
        for part in rest.trim().split('&') {
            let (k, v) = part
                .split_once('=')
                .ok_or(AuthError::Malformed("expected key=value pairs"))?;
            match k {
                "sr" => sr = Some(v),
                "sig" => sig = Some(v),
                "se" => se = Some(v),
                "skn" => {}
                _ => return Err(AuthError::Malformed("unknown field")),
            }
        }
        let raw_resource = sr.ok_or(AuthError::Malformed("missing sr"))?;
        let sig = sig.ok_or(AuthError::Malformed("missing sig"))?;
        let expiry: i64 = se
            .ok_or(AuthError::Malformed("missing se"))?
            .parse()
            .map_err(|_| AuthError::Malformed("se must be an integer"))?;
        let resource =
            percent_decode(raw_resource).ok_or(AuthError::Malformed("sr is not URL-encoded text"))?;
        let device = device_from_resource(&resource)
            .ok_or(AuthError::Malformed("sr must be <host>/devices/<deviceId>"))?;
        let device_id =
            DeviceId::parse(&device).map_err(|_| AuthError::Malformed("sr names an invalid device id"))?;
        let sig_b64 = percent_decode(sig).ok_or(AuthError::Malformed("sig is not URL-encoded text"))?;
        let signature = B64
            .decode(sig_b64.as_bytes())
            .map_err(|_| AuthError::Malformed("sig is not base64"))?;
        Ok(SasToken {
            raw_resource: raw_resource.to_owned(),
            device_id,
            expiry,
            signature,
        })
    }

    /// Checks expiry and signature. `key` is the decoded device key; `now_secs` Unix seconds.
    pub fn verify(&self, key: &[u8], now_secs: i64) -> Result<(), AuthError> {
        if self.expiry < now_secs {
            return Err(AuthError::Expired);
        }
        let matches = |resource: &str| {
            let expected = sign(key, resource, self.expiry);
            bool::from(expected.as_slice().ct_eq(self.signature.as_slice()))
        };
        // The SDKs sign the `sr` text they send; some encode it with different case or safe
        // characters, so fall back to the canonical encoding of the decoded resource.
        if matches(&self.raw_resource) {
            return Ok(());
        }
        let canonical = percent_decode(&self.raw_resource).map(|r| percent_encode(&r));
        match canonical {
            Some(c) if c != self.raw_resource && matches(&c) => Ok(()),
            _ => Err(AuthError::BadSignature),
        }
    }
}

fn device_from_resource(resource: &str) -> Option<String> {
    let without_scheme = resource.split_once("://").map_or(resource, |(_, r)| r);
    let (_host, path) = without_scheme.split_once("/devices/")?;
    let path = path.trim_end_matches('/');
    (!path.is_empty() && !path.contains('/')).then(|| path.to_owned())
}

/// HMAC-SHA256 over `"<resource>\n<expiry>"`.
pub fn sign(key: &[u8], url_encoded_resource: &str, expiry: i64) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(url_encoded_resource.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Makes a token the way the Azure IoT device SDKs do.
pub fn make_token(host: &str, device: &DeviceId, key: &[u8], expiry: i64) -> String {
    let sr = percent_encode(&format!("{host}/devices/{device}"));
    let sig = B64.encode(sign(key, &sr, expiry));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
        percent_encode(&sig)
    )
}

/// Derives a device's 32-byte key from the master secret. Nothing device-specific is stored but
/// the generation, so a stolen database reveals no key.
pub fn derive_device_key(master: &[u8], device: &DeviceId, generation: u32) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(b"iotstream-device-key\0");
    mac.update(device.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(&generation.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// The printable form of a key (`primaryKey`): standard base64.
pub fn encode_key(key: &[u8]) -> String {
    B64.encode(key)
}

/// Decodes a `primaryKey`.
pub fn decode_key(key: &str) -> Option<Vec<u8>> {
    B64.decode(key.trim()).ok()
}

/// Constant-time equality for secrets such as the admin token.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// encodeURIComponent: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )` as uppercase `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space, as form encoding does). None for invalid text.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        DeviceId::parse("pump-17").unwrap()
    }

    #[test]
    fn a_token_we_make_verifies_until_it_expires() {
        let key = derive_device_key(b"master", &device(), 0);
        let token = make_token("myhub.azure-devices.net", &device(), &key, 2_000);
        let parsed = SasToken::parse(&token).unwrap();
        assert_eq!(parsed.device_id, device());
        assert_eq!(parsed.verify(&key, 1_999), Ok(()));
        assert_eq!(parsed.verify(&key, 2_001), Err(AuthError::Expired));
    }

    #[test]
    fn a_wrong_key_or_tampered_token_is_refused() {
        let key = derive_device_key(b"master", &device(), 0);
        let other = derive_device_key(b"master", &device(), 1);
        assert_ne!(key, other, "a re-added device gets a new key");
        let token = make_token("h", &device(), &key, 2_000);
        assert_eq!(
            SasToken::parse(&token).unwrap().verify(&other, 0),
            Err(AuthError::BadSignature)
        );
        let longer = token.replace("se=2000", "se=9000");
        assert_eq!(
            SasToken::parse(&longer).unwrap().verify(&key, 0),
            Err(AuthError::BadSignature)
        );
    }

    /// A token exactly as the Azure IoT Python SDK builds it (`quote(uri, safe='')`, lowercase
    /// host), computed independently: the signed text is the encoded resource as sent.
    #[test]
    fn accepts_sdk_style_tokens_with_skn_and_any_field_order() {
        let key = B64.decode("c2VjcmV0LWtleS1mb3ItdGVzdHM=").unwrap();
        let sr = "myhub.azure-devices.net%2Fdevices%2Fpump-17";
        let sig = B64.encode(sign(&key, sr, 1_900_000_000));
        let token = format!(
            "SharedAccessSignature se=1900000000&skn=device&sr={sr}&sig={}",
            percent_encode(&sig)
        );
        let parsed = SasToken::parse(&token).unwrap();
        assert_eq!(parsed.verify(&key, 1_800_000_000), Ok(()));
        // Lower-case escapes signed as sent also verify.
        let sr_lower = "myhub.azure-devices.net%2fdevices%2fpump-17";
        let sig = B64.encode(sign(&key, sr_lower, 1_900_000_000));
        let token = format!(
            "SharedAccessSignature sr={sr_lower}&sig={}&se=1900000000",
            percent_encode(&sig)
        );
        assert_eq!(SasToken::parse(&token).unwrap().verify(&key, 0), Ok(()));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        assert_eq!(SasToken::parse("Bearer abc"), Err(AuthError::Missing));
        assert_eq!(
            SasToken::parse("SharedAccessSignature sig=a&se=1"),
            Err(AuthError::Malformed("missing sr"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=h%2Fdevices%2Fd&sig=a&se=soon"),
            Err(AuthError::Malformed("se must be an integer"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=h%2Fmodules%2Fd&sig=YQ%3D%3D&se=1"),
            Err(AuthError::Malformed("sr must be <host>/devices/<deviceId>"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=h%2Fdevices%2Fd&sig=!!!&se=1"),
            Err(AuthError::Malformed("sig is not base64"))
        );
    }

    #[test]
    fn percent_coding_round_trips() {
        let s = "hub.example/devices/a:b c";
        assert_eq!(percent_decode(&percent_encode(s)).unwrap(), s);
        assert_eq!(percent_decode("%zz"), None);
    }
}
