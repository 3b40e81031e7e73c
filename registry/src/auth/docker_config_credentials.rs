//! The [`CredentialProvider`] backed by docker's config.json and its credential helpers.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::warn;

use super::credentials::{CredentialProvider, Credentials};
use super::credentials_error::CredentialsResult;
use super::docker_config::DockerConfig;

type Answer = Arc<OnceLock<Option<Credentials>>>;

/// Answers credential lookups from one loaded [`DockerConfig`]. Each registry is looked up at
/// most once per provider: the client asks on every request, and a helper may be slow or
/// prompt the user. A failing helper is logged and treated as "no credentials", so a pull
/// still tries anonymously.
pub struct DockerConfigCredentials {
    config: DockerConfig,
    answers: Mutex<HashMap<String, Answer>>,
}

impl DockerConfigCredentials {
    /// Serves lookups from `config`.
    pub fn new(config: DockerConfig) -> Self {
        DockerConfigCredentials {
            config,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Serves lookups from the config file docker itself would use.
    pub fn load_default() -> CredentialsResult<Self> {
        Ok(Self::new(DockerConfig::load_default()?))
    }

    /// The config answers come from.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    fn answer(&self, registry: &str) -> Answer {
        // A poisoned lock only means another lookup panicked mid-insert; the map is still valid.
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.entry(registry.to_string()).or_default().clone()
    }
}

#[async_trait::async_trait]
impl CredentialProvider for DockerConfigCredentials {
    async fn credentials(&self, registry: &str) -> Option<Credentials> {
        self.get(registry)
    }
}

impl DockerConfigCredentials {
    /// The credentials for `registry`, looked up now (a helper runs on this thread).
    pub fn get(&self, registry: &str) -> Option<Credentials> {
        // One cell per registry: lookups of other registries don't wait for a slow helper.
        let answer = self.answer(registry);
        answer
            .get_or_init(|| match self.config.get(registry) {
                Ok(creds) => creds,
                Err(error) => {
                    warn!(%registry, %error, "no credentials from docker config; going anonymous");
                    None
                }
            })
            .clone()
    }
}

impl fmt::Debug for DockerConfigCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfigCredentials")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::cred_helper::fake::{keychain_helper, script_helper};
    use crate::auth::cred_helper::HelperLauncher;

    fn provider(dir: &std::path::Path, config: &str) -> DockerConfigCredentials {
        let path = dir.join("config.json");
        std::fs::write(&path, config).unwrap();
        let launcher = HelperLauncher::in_dirs([dir.to_path_buf()]);
        DockerConfigCredentials::new(
            DockerConfig::load(&path)
                .unwrap()
                .with_helper_launcher(launcher),
        )
    }

    #[test]
    fn helper_answers_are_memoised() {
        let dir = tempfile::tempdir().unwrap();
        keychain_helper(dir.path(), "kc");
        let p = provider(dir.path(), r#"{"credsStore": "kc"}"#);
        // Seed the keychain through the helper itself.
        let mut seed = DockerConfig::load(dir.path().join("config.json"))
            .unwrap()
            .with_helper_launcher(HelperLauncher::in_dirs([dir.path().to_path_buf()]));
        let creds = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        seed.store("ghcr.io", &creds).unwrap();
        for _ in 0..3 {
            assert_eq!(p.get("ghcr.io"), Some(creds.clone()));
            assert_eq!(p.get("quay.io"), None);
        }
        let log = std::fs::read_to_string(dir.path().join("kc.log")).unwrap();
        assert_eq!(log.matches("get ghcr.io").count(), 1, "{log}");
        assert_eq!(log.matches("get quay.io").count(), 1, "{log}");
    }

    #[test]
    fn failing_helper_means_anonymous_once() {
        let dir = tempfile::tempdir().unwrap();
        script_helper(
            dir.path(),
            "broken",
            "#!/bin/sh\necho call >> \"$(dirname \"$0\")/calls\"\necho locked >&2\nexit 1\n",
        );
        let p = provider(dir.path(), r#"{"credsStore": "broken"}"#);
        assert_eq!(p.get("ghcr.io"), None);
        assert_eq!(p.get("ghcr.io"), None);
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert_eq!(calls.lines().count(), 1);
    }

    #[test]
    fn plain_auths_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        // base64("robot$ci:a:b")
        let p = provider(
            dir.path(),
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "cm9ib3QkY2k6YTpi"}}}"#,
        );
        let expected = Some(Credentials::Basic {
            username: "robot$ci".into(),
            password: "a:b".into(),
        });
        assert_eq!(p.get("docker.io"), expected);
        assert!(!format!("{p:?}").contains("cm9ib3Q"));
    }
}
