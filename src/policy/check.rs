//! The checks of the policy's values that its sources share (the configuration uses the first
//! three for `RELAY_CLIENTS` and `QIKCHAT_API_KEY`): tokens, names, keys, the files keys and
//! secrets are read from, URLs and counts.

use std::path::Path;

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use url::Url;

use super::{PolicyError, problem};

/// The shortest token a caller or the operator may be given (caller tokens, `RELAY_ADMIN_TOKEN`).
pub const MIN_TOKEN_LEN: usize = 16;

/// A caller's name, in `RELAY_CLIENTS` or the callers file: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A key must travel in an HTTP header: printable ASCII without spaces, once trimmed.
pub fn check_key(source: &str, key: &str) -> Result<SecretString, PolicyError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(problem(source, "the key is empty"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(problem(
            source,
            "the key must be printable ASCII without spaces",
        ));
    }
    Ok(SecretString::from(key))
}

/// Reads a key file; the file's path and content go into the fingerprint.
pub(super) fn read_key(
    source: &str,
    path: &Path,
    fingerprint: &mut Sha256,
) -> Result<SecretString, PolicyError> {
    let content = read_file(source, path, fingerprint)?;
    let content = String::from_utf8(content)
        .map_err(|_| problem(source, format!("{} is not UTF-8", path.display())))?;
    check_key(source, &content)
}

/// Reads a file that a policy is read from (a key, a webhook secret); its path and content go
/// into the fingerprint.
pub(super) fn read_file(
    source: &str,
    path: &Path,
    fingerprint: &mut Sha256,
) -> Result<Vec<u8>, PolicyError> {
    let content = std::fs::read(path)
        .map_err(|e| problem(source, format!("cannot read {}: {e}", path.display())))?;
    fingerprint.update(path.as_os_str().as_encoded_bytes());
    fingerprint.update(&content);
    Ok(content)
}

/// An http or https URL.
pub(super) fn http_url(value: &str) -> Option<Url> {
    Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

pub(super) fn positive_u32(source: &str, value: u32) -> Result<u32, PolicyError> {
    if value == 0 {
        return Err(problem(source, "must be at least 1"));
    }
    Ok(value)
}
