//! `RELAY_CLIENTS`: the callers given in the environment, by name and token.

use sha2::{Digest, Sha256};

use super::{CallerToken, ConfigError};
use crate::policy::{MIN_TOKEN_LEN, valid_name};

/// Parses `name:token,name:token`. Errors name the caller, never the token.
pub(super) fn parse_callers(list: &str) -> Result<Vec<CallerToken>, ConfigError> {
    let mut callers: Vec<CallerToken> = Vec::new();
    for (index, entry) in list.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let Some((name, token)) = entry.split_once(':') else {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("entry {} is not of the form name:token", index + 1),
            ));
        };
        let (name, token) = (name.trim(), token.trim());
        if !valid_name(name) {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!(
                    "entry {}: a caller name is 1 to 64 of A-Z a-z 0-9 - _ .",
                    index + 1
                ),
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("caller {name}: its token must be at least 16 characters"),
            ));
        }
        let caller = CallerToken {
            name: name.to_owned(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        };
        if callers.iter().any(|c| c.name == caller.name) {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("caller {name} is listed twice"),
            ));
        }
        if callers
            .iter()
            .any(|c| c.token_sha256 == caller.token_sha256)
        {
            return Err(ConfigError::new(
                "RELAY_CLIENTS",
                format!("caller {name} shares its token with another caller"),
            ));
        }
        callers.push(caller);
    }
    Ok(callers)
}
