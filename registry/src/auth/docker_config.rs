//! docker's client config file (`~/.docker/config.json`), shared with docker, nerdctl and
//! buildx: where credentials are, and how to add and remove them without losing the rest.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::auth_entry::AuthEntry;
use super::cred_helper::{CredentialHelper, HelperLauncher};
use super::credentials::Credentials;
use super::credentials_error::{CredentialsError, CredentialsResult};
use super::private_file::write_private;
use super::registry_key::{registry_identity, server_address};

/// The parts of config.json we use; everything else rides along in `other`.
#[derive(Default, Serialize, Deserialize)]
struct ConfigFile {
    // Docker always writes `auths`, even empty, and Go sorts map keys: so does BTreeMap.
    #[serde(default, deserialize_with = "null_as_empty")]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(
        rename = "credsStore",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    creds_store: Option<String>,
    #[serde(
        rename = "credHelpers",
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    cred_helpers: BTreeMap<String, String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// Go writes nil maps as `null`; read them as empty.
fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// docker's client configuration, loaded from one file and saved back to it.
pub struct DockerConfig {
    path: PathBuf,
    file: ConfigFile,
    helpers: HelperLauncher,
}

impl DockerConfig {
    /// Where docker looks: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`, else
    /// the same under the current user's passwd home directory.
    pub fn default_path() -> CredentialsResult<PathBuf> {
        default_path_from(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
    }

    /// Loads `path`; a missing (or empty) file is an empty config. Helpers are looked up on
    /// `PATH`.
    pub fn load(path: impl Into<PathBuf>) -> CredentialsResult<Self> {
        let path = path.into();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(CredentialsError::Read { path, source }),
        };
        let file = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            // serde's message may quote the offending value (a secret); keep only where it is.
            serde_json::from_str(&text).map_err(|e| CredentialsError::Parse {
                what: match e.classify() {
                    serde_json::error::Category::Data => "unexpected value type",
                    _ => "invalid JSON",
                },
                line: e.line(),
                column: e.column(),
                path: path.clone(),
            })?
        };
        Ok(DockerConfig {
            path,
            file,
            helpers: HelperLauncher::from_path(),
        })
    }

    /// Loads the file at [`DockerConfig::default_path`].
    pub fn load_default() -> CredentialsResult<Self> {
        Self::load(Self::default_path()?)
    }

    /// Uses `helpers` to find and run credential helpers instead of searching `PATH`.
    pub fn with_helper_launcher(mut self, helpers: HelperLauncher) -> Self {
        self.helpers = helpers;
        self
    }

    /// The file this config was loaded from and saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials for `registry` (`docker.io`, `ghcr.io`, `localhost:5000`), looked up as
    /// docker does: the registry's `credHelpers` helper, else `credsStore`, then `auths`.
    pub fn get(&self, registry: &str) -> CredentialsResult<Option<Credentials>> {
        if let Some(helper) = self.helper_for(registry)? {
            if let Some(creds) = helper.get(&server_address(registry))? {
                return Ok(Some(creds));
            }
            // With a helper, `auths` normally holds only empty markers; a config that still
            // has real entries from before the helper was set up keeps working.
        }
        let Some((key, entry)) = self.auth_entry(registry) else {
            return Ok(None);
        };
        entry
            .credentials()
            .map_err(|reason| CredentialsError::InvalidAuth {
                path: self.path.clone(),
                key: key.to_string(),
                reason,
            })
    }

    /// Records `creds` for `registry`: with its helper if one is configured (leaving the empty
    /// `auths` marker docker leaves), else in `auths`. Entries under equivalent keys are
    /// dropped so no stale secret lingers. Call [`DockerConfig::save`] to write the file.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> CredentialsResult<()> {
        if let Credentials::Basic { username, .. } = creds {
            if username.contains(':') {
                return Err(CredentialsError::InvalidCredentials {
                    registry: registry.to_string(),
                    reason: "the user name contains ':'",
                });
            }
        }
        let address = server_address(registry);
        let entry = match self.helper_for(registry)? {
            Some(helper) => {
                helper.store(&address, creds)?;
                AuthEntry::default()
            }
            None => AuthEntry::from_credentials(creds),
        };
        self.remove_equivalent(registry);
        self.file.auths.insert(address, entry);
        Ok(())
    }

    /// Forgets the credentials for `registry` (logout): erases them from its helper, if any,
    /// and removes every `auths` entry whose key means that registry. False when there was
    /// nothing to forget. Call [`DockerConfig::save`] to write the file.
    pub fn erase(&mut self, registry: &str) -> CredentialsResult<bool> {
        let erased = match self.helper_for(registry)? {
            Some(helper) => helper.erase(&server_address(registry))?,
            None => false,
        };
        let removed = self.remove_equivalent(registry);
        Ok(erased || removed)
    }

    /// Writes the config back to its file: atomically, mode 0600, through a symlink.
    pub fn save(&self) -> CredentialsResult<()> {
        let write_err = |source| CredentialsError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        // Tabs, as docker indents it, so a save doesn't reformat the user's file.
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut bytes, fmt);
        self.file
            .serialize(&mut ser)
            .map_err(|e| write_err(io::Error::other(e)))?;
        bytes.push(b'\n');
        write_private(&self.path, &bytes).map_err(write_err)
    }

    /// The helper configured for `registry`: `credHelpers` by exact then equivalent key, else
    /// `credsStore`.
    fn helper_for(&self, registry: &str) -> CredentialsResult<Option<CredentialHelper>> {
        let name = find_by_key(&self.file.cred_helpers, registry)
            .map(|(_, name)| name.as_str())
            .or(self.file.creds_store.as_deref())
            .map(str::trim)
            .filter(|n| !n.is_empty());
        name.map(|n| self.helpers.helper(n)).transpose()
    }

    fn auth_entry(&self, registry: &str) -> Option<(&str, &AuthEntry)> {
        find_by_key(&self.file.auths, registry).map(|(k, v)| (k.as_str(), v))
    }

    /// Removes the `auths` entries equivalent to `registry`; true if there were any.
    fn remove_equivalent(&mut self, registry: &str) -> bool {
        let identity = registry_identity(registry);
        let before = self.file.auths.len();
        self.file
            .auths
            .retain(|key, _| registry_identity(key) != identity);
        self.file.auths.len() != before
    }
}

/// The entry for `registry`: the key written exactly as given, then docker's own spelling of
/// it, then the first key that means the same registry.
fn find_by_key<'a, V>(map: &'a BTreeMap<String, V>, registry: &str) -> Option<(&'a String, &'a V)> {
    map.get_key_value(registry)
        .or_else(|| map.get_key_value(&server_address(registry)))
        .or_else(|| {
            let identity = registry_identity(registry);
            map.iter()
                .find(|(key, _)| registry_identity(key) == identity)
        })
}

fn default_path_from(
    docker_config: Option<OsString>,
    home: Option<OsString>,
) -> CredentialsResult<PathBuf> {
    let non_empty = |v: Option<OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(docker_config) {
        return Ok(dir.join("config.json"));
    }
    let home = match non_empty(home) {
        Some(h) => h,
        None => passwd_home()?,
    };
    Ok(home.join(".docker").join("config.json"))
}

fn passwd_home() -> CredentialsResult<PathBuf> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Ok(user.dir),
        _ => Err(CredentialsError::NoHome { uid: uid.as_raw() }),
    }
}

// Hand-written: only which registries have entries, never what the entries hold.
impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("auths", &self.file.auths.keys().collect::<Vec<_>>())
            .field("creds_store", &self.file.creds_store)
            .field("cred_helpers", &self.file.cred_helpers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
