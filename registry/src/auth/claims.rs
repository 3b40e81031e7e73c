//! Reading what a bearer token grants. Registries verify tokens; kiln only peeks at the claims
//! (without verifying them) to explain a refusal: Harbor silently drops the actions a user may
//! not have, so "the token you got has no push" is the precise diagnosis.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    access: Vec<Access>,
}

#[derive(Deserialize)]
struct Access {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    actions: Vec<String>,
}

/// The actions a JWT bearer token grants on `repository`; None when the token is not a JWT
/// kiln can read (opaque tokens are legal).
pub fn granted_actions(token: &str, repository: &str) -> Option<Vec<String>> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some(
        claims
            .access
            .into_iter()
            .filter(|a| a.kind == "repository" && a.name == repository)
            .flat_map(|a| a.actions)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn reads_the_access_claim() {
        let t = jwt(
            r#"{"access":[{"type":"repository","name":"proj/app","actions":["pull"]},{"type":"repository","name":"other","actions":["push"]}]}"#,
        );
        assert_eq!(granted_actions(&t, "proj/app"), Some(vec!["pull".into()]));
        assert_eq!(granted_actions(&t, "missing"), Some(vec![]));
        assert_eq!(granted_actions(&jwt("{}"), "x"), Some(vec![]));
        assert_eq!(granted_actions("opaque-token", "x"), None);
        assert_eq!(granted_actions("a.!!!.c", "x"), None);
    }
}
