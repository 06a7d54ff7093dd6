//! The signature checks the providers share: an HMAC-SHA256 over parts of the request,
//! compared in constant time so that a forger learns nothing from how long a refusal takes.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Whether `expected_tag` is the HMAC-SHA256 of the concatenated `parts` under `key`.
/// The comparison takes the same time wherever the tags differ.
pub fn hmac_sha256_matches(key: &[u8], parts: &[&[u8]], expected_tag: &[u8]) -> bool {
    let mut mac = hmac_sha256(key);
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(expected_tag).is_ok()
}

/// The HMAC-SHA256 of the concatenated `parts` under `key` (the simulator and tests sign
/// with it; the receiver compares with [`hmac_sha256_matches`]).
pub fn hmac_sha256_tag(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac_sha256(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC accepts keys of any length, so this cannot fail.
fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: the tag of "what do ya want for nothing?" under "Jefe".
    #[test]
    fn matches_the_rfc_4231_vector_and_nothing_else() {
        let tag = hmac_sha256_tag(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let expected: [u8; 32] = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
            0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
            0x64, 0xec, 0x38, 0x43,
        ];
        assert_eq!(tag, expected);
        assert!(hmac_sha256_matches(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &expected
        ));
        assert!(!hmac_sha256_matches(
            b"jefe",
            &[b"what do ya want for nothing?"],
            &expected
        ));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            &[b"what do ya want for nothing!"],
            &expected
        ));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &expected[..31]
        ));
    }
}
