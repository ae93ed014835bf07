//! Container ids as runc accepts them, checked before anything touches the state root.

use thiserror::Error;

const MAX_LEN: usize = 255;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidId {
    #[error("invalid container id: it is empty")]
    Empty,
    #[error("invalid container id: it is {0} bytes long, the limit is {MAX_LEN}")]
    TooLong(usize),
    #[error("invalid container id {0:?}: it must start with a letter or digit and hold only letters, digits, '_', '.', '+' and '-'")]
    BadCharacters(String),
}

/// Checks `id` against runc's rule: `[A-Za-z0-9][A-Za-z0-9_.+-]*`, 1 to 255 bytes.
/// The rule keeps ids from ever naming a path outside the state root (no `/`, no `..`).
pub fn validate(id: &str) -> Result<(), InvalidId> {
    let bytes = id.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(InvalidId::Empty);
    };
    if bytes.len() > MAX_LEN {
        return Err(InvalidId::TooLong(bytes.len()));
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-');
    if !first.is_ascii_alphanumeric() || !bytes.iter().all(allowed) {
        // Debug-quote so control characters and NULs stay visible in the message.
        let shown: String = id.chars().take(64).collect();
        return Err(InvalidId::BadCharacters(shown));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runc_ids() {
        for id in ["a", "boot.disk-setup", "A_1+b.c-d", "9", &"x".repeat(255)] {
            assert_eq!(validate(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(validate(""), Err(InvalidId::Empty));
        assert_eq!(validate(&"x".repeat(256)), Err(InvalidId::TooLong(256)));
        for id in [
            ".", "..", "../x", "a/b", "/abs", "-x", "_x", ".hidden", "a b", "a\0b", "é", "a\n",
        ] {
            assert!(
                matches!(validate(id), Err(InvalidId::BadCharacters(_))),
                "{id:?} accepted"
            );
        }
    }
}
