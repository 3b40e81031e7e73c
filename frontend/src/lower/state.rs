//! The per-stage state while lowering: current root, image config, the build environment
//! (ENV + ARG values, what RUN sees), working directory, user and progress numbering.

use kiln_solver::llb::{Input, Platform};

use crate::image::{History, ImageConfig};

/// BuildKit's default PATH for Linux images that don't set one.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone, Debug)]
pub(crate) struct StageState {
    /// The stage's filesystem so far (`None` = empty).
    pub root: Option<Input>,
    pub image: ImageConfig,
    /// The build environment in order: base image Env, then ARG/ENV as declared (a later
    /// declaration of the same name replaces the value in place).
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub user: String,
    /// ARGs declared in this stage (and the stages it is based on), with their values.
    pub build_args: Vec<(String, Option<String>)>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// Progress naming: `[name i/total]`.
    pub progress_name: String,
    pub cmd_index: usize,
    pub cmd_total: usize,
    /// Dispatching the base's ONBUILD triggers (progress names say so).
    pub in_onbuild: bool,
    /// The `created` time of this build's history entries (SOURCE_DATE_EPOCH); `None` lets
    /// the exporter use the time of the export.
    pub created: Option<String>,
}

impl StageState {
    pub(crate) fn new(
        root: Option<Input>,
        mut image: ImageConfig,
        platform: &Platform,
        progress_name: String,
        cmd_total: usize,
    ) -> Self {
        image.created = None;
        let has_path = image.env_pairs().iter().any(|(k, _)| k == "PATH");
        if !has_path && platform.os != "windows" {
            image
                .config
                .env
                .get_or_insert_with(Vec::new)
                .push(format!("PATH={DEFAULT_PATH}"));
        }
        let env = image.env_pairs();
        let cwd = match image.config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => super::util::workdir("/", w),
            _ => "/".to_string(),
        };
        let user = image.config.user.clone().unwrap_or_default();
        StageState {
            root,
            image,
            env,
            cwd,
            user,
            build_args: Vec::new(),
            cmd_set: false,
            progress_name,
            cmd_index: 0,
            cmd_total,
            in_onbuild: false,
            created: None,
        }
    }

    pub(crate) fn get_env(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Adds or replaces (in place) a variable of the build environment.
    pub(crate) fn add_env(&mut self, key: &str, value: &str) {
        add_or_replace(&mut self.env, key, value);
    }

    pub(crate) fn env_strings(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Sets a variable in the image config's Env (in place when present).
    pub(crate) fn add_image_env(&mut self, key: &str, value: &str) {
        let env = self.image.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }

    /// BuildKit's progress name: `[stage 2/5] RUN make` (no prefix when the stage has no
    /// numbered steps). Every call takes the next step number.
    pub(crate) fn progress(&mut self, text: &str) -> String {
        if self.cmd_total == 0 {
            return text.to_string();
        }
        self.cmd_index += 1;
        self.progress_again(text)
    }

    /// The name of another vertex of the step [`StageState::progress`] named last (COPY
    /// --link's merge): the same step number.
    pub(crate) fn progress_again(&self, text: &str) -> String {
        if self.cmd_total == 0 {
            return text.to_string();
        }
        let width = self.cmd_total.to_string().len();
        let mut out = String::from("[");
        if !self.progress_name.is_empty() {
            out.push_str(&self.progress_name);
            out.push(' ');
        }
        out.push_str(&format!("{:>width$}/{}] ", self.cmd_index, self.cmd_total));
        if self.in_onbuild {
            out.push_str("ONBUILD ");
        }
        out.push_str(text);
        out
    }

    pub(crate) fn commit(&mut self, created_by: String, with_layer: bool) {
        self.image.history.push(History {
            created: self.created.clone(),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: !with_layer,
            ..Default::default()
        });
    }
}

pub(crate) fn add_or_replace(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

/// BuildKit's `uppercaseCmd`: the instruction keyword upper-cased.
pub(crate) fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((k, rest)) => format!("{} {rest}", k.to_uppercase()),
        None => s.to_uppercase(),
    }
}
