//! One entry of config.json's `auths` map, and its conversion to and from [`Credentials`].

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::credentials::Credentials;

/// The user name docker and credential helpers use to mark the secret as an identity token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// Standard alphabet; padding optional on input, since some tools write `auth` without it.
const AUTH_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `auths[key]`: docker writes `auth` = base64(user:password) and maybe `identitytoken`; other
/// tools write `username`/`password`. Fields we don't know (`email`, …) are kept as they are.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identitytoken: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl AuthEntry {
    /// The entry docker writes for `creds`. An identity token goes with the user `<token>`, as
    /// docker's helpers file it, so readers that only know `auth` still see who it is.
    pub fn from_credentials(creds: &Credentials) -> Self {
        let (user, password, token) = match creds {
            Credentials::Basic { username, password } => {
                (username.as_str(), password.as_str(), None)
            }
            Credentials::IdentityToken(t) => (IDENTITY_TOKEN_USER, "", Some(t.clone())),
        };
        AuthEntry {
            auth: Some(AUTH_BASE64.encode(format!("{user}:{password}"))),
            identitytoken: token,
            ..AuthEntry::default()
        }
    }

    /// The credentials in this entry; None for an empty entry (the marker docker leaves when a
    /// helper holds the secret). An identity token wins over a user and password.
    pub fn credentials(&self) -> Result<Option<Credentials>, &'static str> {
        if let Some(token) = non_empty(&self.identitytoken) {
            return Ok(Some(Credentials::IdentityToken(token.to_string())));
        }
        if let Some(auth) = non_empty(&self.auth) {
            let (username, password) = decode_auth(auth)?;
            return Ok(Some(Credentials::Basic { username, password }));
        }
        Ok(
            non_empty(&self.username).map(|username| Credentials::Basic {
                username: username.to_string(),
                password: self.password.clone().unwrap_or_default(),
            }),
        )
    }
}

fn non_empty(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Splits base64(user:password) at the first ':' (passwords may contain ':', user names not).
fn decode_auth(auth: &str) -> Result<(String, String), &'static str> {
    let bytes = AUTH_BASE64
        .decode(auth)
        .map_err(|_| "auth is not valid base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "auth is not UTF-8")?;
    let (user, password) = text
        .split_once(':')
        .ok_or("auth has no ':' between user name and password")?;
    Ok((user.to_string(), password.to_string()))
}

// Hand-written so that secrets never end up in logs through `{:?}`.
impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthEntry")
            .field("auth", &redact(&self.auth))
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("identitytoken", &redact(&self.identitytoken))
            .field("other", &self.other.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> AuthEntry {
        serde_json::from_str(json).unwrap()
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn auth_splits_at_first_colon_and_keeps_dollar_in_user() {
        let auth = AUTH_BASE64.encode("robot$ci:pa:ss:word");
        let e = entry(&format!(r#"{{"auth":"{auth}"}}"#));
        assert_eq!(e.credentials(), Ok(Some(basic("robot$ci", "pa:ss:word"))));
    }

    #[test]
    fn auth_without_padding_and_empty_password() {
        // base64("ab:") is "YWI6" (no padding needed); "a:" is "YTo=" and written "YTo".
        assert_eq!(
            entry(r#"{"auth":"YTo"}"#).credentials(),
            Ok(Some(basic("a", "")))
        );
        assert_eq!(
            entry(r#"{"auth":"YWI6"}"#).credentials(),
            Ok(Some(basic("ab", "")))
        );
    }

    #[test]
    fn bad_auth_is_an_error_without_the_secret() {
        assert_eq!(
            entry(r#"{"auth":"not base64!"}"#).credentials(),
            Err("auth is not valid base64")
        );
        let no_colon = AUTH_BASE64.encode("justonesecret");
        let err = entry(&format!(r#"{{"auth":"{no_colon}"}}"#))
            .credentials()
            .unwrap_err();
        assert!(!err.contains("justonesecret"));
    }

    #[test]
    fn username_password_fields_and_identity_token() {
        assert_eq!(
            entry(r#"{"username":"u","password":"p:w"}"#).credentials(),
            Ok(Some(basic("u", "p:w")))
        );
        let auth = AUTH_BASE64.encode("me:");
        let e = entry(&format!(r#"{{"auth":"{auth}","identitytoken":"tok"}}"#));
        assert_eq!(
            e.credentials(),
            Ok(Some(Credentials::IdentityToken("tok".into())))
        );
        assert_eq!(entry(r#"{}"#).credentials(), Ok(None));
        assert_eq!(
            entry(r#"{"auth":"","email":"x@y"}"#).credentials(),
            Ok(None)
        );
    }

    #[test]
    fn written_entries_read_back() {
        for creds in [
            basic("robot$ci", "a:b"),
            Credentials::IdentityToken("tok".into()),
        ] {
            let e = AuthEntry::from_credentials(&creds);
            assert_eq!(e.credentials(), Ok(Some(creds)));
        }
        let e = AuthEntry::from_credentials(&Credentials::IdentityToken("tok".into()));
        assert_eq!(
            e.auth.as_deref(),
            Some(AUTH_BASE64.encode("<token>:").as_str())
        );
    }

    #[test]
    fn unknown_fields_survive_and_debug_redacts() {
        let json = r#"{"auth":"dTpzM2NyZXQ=","email":"x@y","serveraddress":"h"}"#;
        let e = entry(json);
        assert_eq!(serde_json::to_string(&e).unwrap(), json);
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("dTpzM2NyZXQ") && dbg.contains("email"));
    }
}
