//! What a cache key may be (the same rule over HTTP and RESP).

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 250;

/// A key is 1-250 bytes with no ASCII whitespace or control characters (UTF-8 allowed): it must
/// survive a URL path, a log line and a RESP inline command unchanged.
///
/// # Errors
/// A message naming the problem.
pub fn validate_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "the key has {} bytes; at most {KEY_BYTES_MAX} are allowed",
            key.len()
        ));
    }
    if let Some(position) = key
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "the key contains whitespace or a control character at byte {position}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_printable() {
        // Proves each rule on both sides of its boundary.
        assert!(validate_key(b"user:42").is_ok());
        assert!(validate_key("clé".as_bytes()).is_ok());
        assert!(validate_key(&[b'k'; KEY_BYTES_MAX]).is_ok());
        assert!(validate_key(&[b'k'; KEY_BYTES_MAX + 1]).is_err());
        assert!(validate_key(b"").is_err());
        assert!(validate_key(b"a b").is_err());
        assert!(validate_key(b"a\nb").is_err());
        assert!(validate_key(b"a\x7fb").is_err());
    }
}
