//! Identifiers that encode the simulator's internal indexes.
//!
//! Every id the simulator hands out (conversation, contact, message) is a reversible
//! encoding of `(account, index)`: a keyed 32-bit permutation of the index plus a keyed
//! check value. Looking an id up therefore needs no hash map (memory stays flat at a
//! million conversations per account), unknown or foreign ids are rejected by the check,
//! and ids look random, so ordering by id is "stable but not by time" — the documented
//! behaviour of the Sinch list.

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash used for every derived value.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Hash of several values, order-sensitive.
pub(crate) fn hash_all(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x51_7CC1_B727_220A_u64, |acc, p| mix64(acc ^ mix64(*p)))
}

/// A uniform float in `[0, 1)` derived from a hash.
pub(crate) fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Keyed, reversible encoding of a 32-bit index into an id payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdCodec {
    key: u64,
}

impl IdCodec {
    pub(crate) fn new(key: u64) -> Self {
        IdCodec { key }
    }

    fn round(&self, r: u16, i: u64) -> u16 {
        (mix64(self.key ^ (i << 48) ^ u64::from(r)) & 0xFFFF) as u16
    }

    /// Keyed permutation of the 32-bit space (4-round Feistel network).
    pub(crate) fn permute(&self, index: u32) -> u32 {
        let (mut l, mut r) = ((index >> 16) as u16, (index & 0xFFFF) as u16);
        for i in 0..4 {
            let next = l ^ self.round(r, i);
            l = r;
            r = next;
        }
        (u32::from(l) << 16) | u32::from(r)
    }

    /// Inverse of [`IdCodec::permute`].
    pub(crate) fn unpermute(&self, value: u32) -> u32 {
        let (mut l, mut r) = ((value >> 16) as u16, (value & 0xFFFF) as u16);
        for i in (0..4).rev() {
            let prev = r ^ self.round(l, i);
            r = l;
            l = prev;
        }
        (u32::from(l) << 16) | u32::from(r)
    }

    fn check(&self, index: u32) -> u32 {
        (mix64(self.key.rotate_left(17) ^ u64::from(index)) >> 32) as u32
    }

    /// 64-bit payload: permuted index in the high half, check value in the low half.
    pub(crate) fn encode(&self, index: u32) -> u64 {
        (u64::from(self.permute(index)) << 32) | u64::from(self.check(index))
    }

    /// The index a payload encodes, if it was produced by this codec.
    pub(crate) fn decode(&self, payload: u64) -> Option<u32> {
        let index = self.unpermute((payload >> 32) as u32);
        (self.check(index) == payload as u32).then_some(index)
    }

    /// Account-specific 64-bit prefix (for id formats longer than 64 bits).
    pub(crate) fn prefix(&self) -> u64 {
        mix64(self.key ^ 0xA5A5_5A5A_0F0F_F0F0)
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Fixed-width Crockford base-32 of the low `chars * 5` bits of `value`.
pub(crate) fn crockford(value: u128, chars: usize) -> String {
    (0..chars)
        .rev()
        .map(|i| CROCKFORD[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Parse fixed-width Crockford base-32 (upper case only, as we emit it).
pub(crate) fn parse_crockford(s: &str) -> Option<u128> {
    if s.len() > 25 {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, b| {
        let digit = CROCKFORD.iter().position(|c| *c == b)?;
        Some((acc << 5) | digit as u128)
    })
}

/// Fixed-width base-62 of `value` (most significant digit first).
pub(crate) fn base62(mut value: u64, chars: usize) -> String {
    let mut out = vec![b'0'; chars];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Inverse of [`base62`].
pub(crate) fn parse_base62(s: &str) -> Option<u64> {
    s.bytes().try_fold(0u64, |acc, b| {
        let digit = BASE62.iter().position(|c| *c == b)? as u64;
        acc.checked_mul(62)?.checked_add(digit)
    })
}

/// Lower-case GUID text of a 128-bit value.
pub(crate) fn guid(value: u128) -> String {
    let h = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parse a GUID (any case, with or without braces) into its 128-bit value.
pub(crate) fn parse_guid(s: &str) -> Option<u128> {
    let s = s.trim_start_matches('{').trim_end_matches('}');
    let groups: Vec<&str> = s.split('-').collect();
    let widths = [8, 4, 4, 4, 12];
    if groups.len() != 5 || groups.iter().zip(widths).any(|(g, w)| g.len() != w) {
        return None;
    }
    u128::from_str_radix(&groups.concat(), 16).ok()
}

/// Standard base64 (with padding) of arbitrary bytes; used for Sinch-looking page tokens.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard or URL-safe base64 (padding optional).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_rejects_foreign_payloads() {
        let a = IdCodec::new(1);
        let b = IdCodec::new(2);
        for i in [0u32, 1, 2, 999_999, u32::MAX] {
            assert_eq!(a.decode(a.encode(i)), Some(i));
            assert_eq!(a.unpermute(a.permute(i)), i);
            assert_ne!(b.decode(a.encode(i)), Some(i));
        }
    }

    #[test]
    fn text_encodings_round_trip() {
        assert_eq!(
            parse_crockford(&crockford(123_456_789, 13)),
            Some(123_456_789)
        );
        assert_eq!(parse_base62(&base62(987_654_321, 11)), Some(987_654_321));
        let g = 0x0b9a_3c2e_5d1f_4c7a_9e21_7f3b_8d6a_1c44_u128;
        assert_eq!(parse_guid(&guid(g)), Some(g));
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(
            base64_decode(&base64(b"key:secret")).as_deref(),
            Some(&b"key:secret"[..])
        );
    }
}
