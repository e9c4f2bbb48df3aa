//! Strict base64 (RFC 4648 §4, standard alphabet, `=` padding) for the ring
//! tables.
//!
//! Small enough to keep here rather than add a dependency; decoding is strict
//! (canonical form only) so that one table has exactly one encoding and a
//! corrupted document is refused rather than silently misread.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `bytes` as padded standard base64.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).copied().map_or(0, u32::from);
        let b2 = chunk.get(2).copied().map_or(0, u32::from);
        let triple = (b0 << 16) | (b1 << 8) | b2;
        let symbols = [
            ALPHABET[(triple >> 18) as usize & 63],
            ALPHABET[(triple >> 12) as usize & 63],
            if chunk.len() > 1 {
                ALPHABET[(triple >> 6) as usize & 63]
            } else {
                b'='
            },
            if chunk.len() > 2 {
                ALPHABET[triple as usize & 63]
            } else {
                b'='
            },
        ];
        for symbol in symbols {
            out.push(char::from(symbol));
        }
    }
    out
}

fn symbol_value(symbol: u8) -> Option<u32> {
    let value = match symbol {
        b'A'..=b'Z' => symbol - b'A',
        b'a'..=b'z' => symbol - b'a' + 26,
        b'0'..=b'9' => symbol - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Decodes canonical padded standard base64; the error says what is wrong.
pub(crate) fn decode(text: &[u8]) -> Result<Vec<u8>, &'static str> {
    if !text.len().is_multiple_of(4) {
        return Err("length is not a multiple of 4");
    }
    let groups = text.len() / 4;
    let mut out = Vec::with_capacity(groups * 3);
    for (index, group) in text.chunks_exact(4).enumerate() {
        let padding = group.iter().rev().take_while(|&&s| s == b'=').count();
        if padding > 2 {
            return Err("more than two padding characters");
        }
        if padding > 0 && index + 1 != groups {
            return Err("padding before the end");
        }
        let mut triple = 0u32;
        for &symbol in &group[..4 - padding] {
            let value = symbol_value(symbol).ok_or(if symbol == b'=' {
                "padding before the end"
            } else {
                "character outside the base64 alphabet"
            })?;
            triple = (triple << 6) | value;
        }
        triple <<= 6 * padding as u32;
        let bytes = [(triple >> 16) as u8, (triple >> 8) as u8, triple as u8];
        let kept = 3 - padding;
        if bytes[kept..].iter().any(|&b| b != 0) {
            return Err("non-zero bits in the padding");
        }
        out.extend_from_slice(&bytes[..kept]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_round_trip() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, text) in cases {
            assert_eq!(encode(raw), text);
            assert_eq!(decode(text.as_bytes()).unwrap(), raw);
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(encode(&all).as_bytes()).unwrap(), all);
    }

    #[test]
    fn non_canonical_input_is_refused() {
        for bad in [
            "Zg=", "Zg===", "Zh==", "Zm9=", "Z===", "Zg==Zg==", "Zm9v!A==", "Z=9v", "Zm 9",
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad} accepted");
        }
    }
}
