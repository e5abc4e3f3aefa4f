//! Names of queues, groups, consumers and shards.

/// Longest accepted name, in bytes.
pub const NAME_LEN_MAX: usize = 128;

/// Checks that `name` is 1..=128 characters of `[A-Za-z0-9_.-]`.
///
/// Names become parts of stream keys and file names, so the alphabet excludes `:` (the key
/// separator), `/` and anything that needs quoting.
///
/// # Errors
///
/// A message naming `what` and the problem.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(format!(
            "{what} name must be 1 to {NAME_LEN_MAX} characters, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "{what} name {name:?} contains {bad:?}; allowed are letters, digits, '_', '-', '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_allow_only_key_safe_characters() {
        // Proves the alphabet: plain names pass; separators, spaces, empty and overlong fail.
        assert!(validate_name("queue", "orders.v2_eu-1").is_ok());
        for bad in ["", "a:b", "a/b", "a b", "ü"] {
            assert!(validate_name("queue", bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name("queue", &"x".repeat(NAME_LEN_MAX + 1)).is_err());
    }
}
