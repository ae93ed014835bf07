//! Content addressing, as containerd's content store has it: a blob is named by the SHA-256 of
//! its bytes (`sha256:<64 hex>`), and nothing is used before its bytes are checked against that
//! name.

use anyhow::{bail, Context, Result};

/// Fails unless `actual` (a SHA-256) is what `digest` names.
pub fn verify(digest: &str, actual: &[u8]) -> Result<()> {
    let actual = format!("sha256:{}", hex(actual));
    if actual != digest {
        bail!("blob {digest} is corrupt: its content hashes to {actual}");
    }
    Ok(())
}

/// Lower-case hex, as digests spell it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex part of a `sha256:` digest, checked so it can name a file.
pub fn digest_hex(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("unsupported digest {digest:?}"))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn digests_are_checked() {
        let abc = format!("sha256:{}", hex(&Sha256::digest(b"abc")));
        assert!(verify(&abc, &Sha256::digest(b"abc")).is_ok());
        assert!(verify(&abc, &Sha256::digest(b"abd")).is_err());
        assert!(digest_hex("sha256:../../etc").is_err());
        assert_eq!(digest_hex(&abc).unwrap().len(), 64);
    }
}
