//! Lowering: parsed Dockerfile → llb::Definition + image config, with BuildKit's semantics
//! (`dockerfile2llb/convert.go`): stages, ARG scoping, target pruning, one function per
//! instruction.

mod checks;
mod copy;
mod copy_remote;
mod dispatch;
mod entitlements;
mod epoch;
mod error;
mod exec;
mod stages;
mod state;
pub(crate) mod util;

use std::collections::{BTreeMap, BTreeSet};

use kiln_solver::llb::{Definition, Input, NodeMeta, Op, Platform, SourceOp};

use crate::image::ImageConfig;
use crate::instructions::{self, Command, Instruction, Stage};
use crate::lint::{self, CheckWarning};
use crate::parser;
use crate::resolver::{ImageMetaResolver, ResolvedImage};
use crate::shell::{LexOptions, Lexer};

pub use checks::check;
pub use entitlements::Entitlements;
pub use epoch::{rfc3339, SOURCE_DATE_EPOCH};
pub use error::{FrontendError, SourceLocation};
use state::StageState;

/// Everything the frontend needs to know about one build.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its name as the user knows it (for error messages), e.g. `Dockerfile`.
    pub filename: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    pub build_platform: Platform,
    /// `.dockerignore` patterns (already read with `dockerignore::parse`).
    pub dockerignore: Vec<String>,
    /// `--allow`: what RUN may ask for beyond the sandbox.
    pub entitlements: Entitlements,
}

/// The result: a graph whose `root` output is the final filesystem (`None` = empty, e.g.
/// `FROM scratch` with no changes), and the final image config. `image.history` holds the
/// base's history followed by one entry per instruction (`empty_layer` for metadata-only ones);
/// `image.rootfs.diff_ids` is the base's and is completed by the builder from the real layers.
#[derive(Clone, Debug)]
pub struct BuildPlan {
    pub definition: Definition,
    pub root: Option<Input>,
    pub image: ImageConfig,
    /// Build-check findings not skipped by the check configuration.
    pub warnings: Vec<CheckWarning>,
    /// `SOURCE_DATE_EPOCH` (Unix seconds), for the exporter to clamp timestamps with.
    pub epoch: Option<i64>,
}

/// Where a stage starts from.
#[derive(Clone, Debug)]
enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    Image(String),
}

/// A stage before dispatch: its expanded base and what it depends on.
struct StageInfo {
    stage: Stage,
    base: Base,
    platform: Platform,
    progress_name: String,
    /// Stages read by `COPY --from` / `RUN --mount from=`.
    deps: BTreeSet<usize>,
    cmd_total: usize,
}

/// Shared lowering state.
pub(crate) struct Lowering<'a> {
    pub(crate) req: &'a BuildRequest,
    /// The request's build args, `SOURCE_DATE_EPOCH` normalised as BuildKit does.
    pub(crate) build_args: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`, when set.
    pub(crate) epoch: Option<i64>,
    pub(crate) lexer: Lexer,
    pub(crate) def: Definition,
    pub(crate) global_args: Vec<(String, String)>,
    context: Option<Input>,
    /// Resolved `--from=<image>` / `from=<image>` sources, by name as written.
    pub(crate) images: BTreeMap<String, (Input, ImageConfig)>,
    /// Dispatched stages, by index.
    pub(crate) done: Vec<Option<StageState>>,
    stage_names: Vec<Option<String>>,
}

pub async fn lower(
    req: &BuildRequest,
    resolver: &dyn ImageMetaResolver,
) -> Result<BuildPlan, FrontendError> {
    let (df, parsed) = parse_request(req)?;
    let (warnings, check_config) = checks::run_checks(req, &df)?;
    let mut lw = Lowering {
        req,
        build_args: req.build_args.clone(),
        epoch: None,
        lexer: Lexer::new(df.escape),
        def: Definition::new(),
        global_args: Vec::new(),
        context: None,
        images: BTreeMap::new(),
        done: Vec::new(),
        stage_names: parsed.stages.iter().map(|s| s.name.clone()).collect(),
    };
    lw.init_global_args(&parsed.meta_args)?;
    lw.resolve_epoch(&parsed.meta_args)?;
    let infos = lw.stage_infos(parsed.stages)?;
    let target = lw.find_target(&infos)?;
    let reachable = stages::reachable(&infos, target);
    lw.check_cycles(&infos)?;
    lw.done = vec![None; infos.len()];

    for (i, info) in infos.iter().enumerate() {
        if !reachable.contains(&i) {
            continue;
        }
        let (mut st, triggers) = lw.init_stage(i, info, &infos, resolver).await?;
        st.created = lw.epoch.map(rfc3339);
        let triggers = lw.parse_triggers(info, &triggers)?;
        st.cmd_total += triggers.len();
        lw.prefetch_images(&triggers, &info.platform, resolver)
            .await?;
        lw.prefetch_images(&info.stage.commands, &info.platform, resolver)
            .await?;
        st.in_onbuild = true;
        for ins in &triggers {
            lw.dispatch(i, &mut st, ins)?;
        }
        st.in_onbuild = false;
        for ins in &info.stage.commands {
            lw.dispatch(i, &mut st, ins)?;
        }
        lw.done[i] = Some(st);
    }

    let mut st = lw.done[target]
        .take()
        .ok_or_else(|| FrontendError::Invalid {
            location: lw.loc(infos[target].stage.start_line, infos[target].stage.end_line),
            message: "internal error: target stage was not lowered".into(),
        })?;
    st.image.os = req.platform.os.clone();
    st.image.architecture = req.platform.architecture.clone();
    st.image.variant = req.platform.variant.clone();
    // `error=true`: the findings fail the build, once the Dockerfile is known to be valid.
    if check_config.error && !warnings.is_empty() {
        return Err(FrontendError::Checks {
            message: lint::violation_message(&warnings),
            warnings,
        });
    }
    Ok(BuildPlan {
        definition: lw.def,
        root: st.root,
        image: st.image,
        warnings,
        epoch: lw.epoch,
    })
}

/// The request's Dockerfile, parsed and split into stages of typed instructions.
pub(crate) fn parse_request(
    req: &BuildRequest,
) -> Result<(parser::Dockerfile, instructions::Stages), FrontendError> {
    let df = parser::parse(&req.dockerfile).map_err(|e| FrontendError::Syntax {
        location: SourceLocation::new(&req.filename, &req.dockerfile, e.start_line, e.end_line),
        message: e.message,
    })?;
    let parsed = instructions::parse_stages(&df).map_err(|e| FrontendError::Instruction {
        location: SourceLocation::new(&req.filename, &req.dockerfile, e.start_line, e.end_line),
        message: e.message,
    })?;
    Ok((df, parsed))
}

/// The ARGs every build defines (platforms, target stage), before `--build-arg` overrides.
pub(crate) fn predefined_args(req: &BuildRequest) -> Vec<(String, String)> {
    let t = &req.platform;
    let b = &req.build_platform;
    let target = req.target.clone().unwrap_or_else(|| "default".into());
    [
        ("BUILDPLATFORM", format!("{}/{}", b.os, b.architecture)),
        ("BUILDOS", b.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", b.architecture.clone()),
        ("BUILDVARIANT", b.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", t.to_string()),
        ("TARGETOS", t.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", t.architecture.clone()),
        ("TARGETVARIANT", t.variant.clone().unwrap_or_default()),
        ("TARGETSTAGE", target),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl<'a> Lowering<'a> {
    pub(crate) fn loc(&self, start: usize, end: usize) -> SourceLocation {
        SourceLocation::new(&self.req.filename, &self.req.dockerfile, start, end)
    }

    pub(crate) fn ins_loc(&self, ins: &Instruction) -> SourceLocation {
        self.loc(ins.start_line, ins.end_line)
    }

    /// Expands one word against `env` (quotes removed), as BuildKit's `ProcessWord`.
    pub(crate) fn expand(
        &self,
        word: &str,
        env: &[(String, String)],
        loc: impl FnOnce() -> SourceLocation,
    ) -> Result<String, FrontendError> {
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        self.lexer
            .process_word(word, &lookup)
            .map(|e| e.result)
            .map_err(|e| FrontendError::Expansion {
                location: loc(),
                message: e.0,
            })
    }

    pub(crate) fn expand_words(
        &self,
        text: &str,
        env: &[(String, String)],
        loc: impl FnOnce() -> SourceLocation,
    ) -> Result<Vec<String>, FrontendError> {
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        self.lexer
            .process_words(text, &lookup)
            .map_err(|e| FrontendError::Expansion {
                location: loc(),
                message: e.0,
            })
    }

    /// The instruction text for progress names: variables substituted where set, quotes kept
    /// (BuildKit's `processCmdEnv` with raw quotes / skip-unset for RUN).
    pub(crate) fn display_text(&self, text: &str, env: &[(String, String)], raw: bool) -> String {
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let opts = LexOptions {
            raw_quotes: raw,
            skip_unset_env: raw,
            ..Default::default()
        };
        self.lexer
            .process_word_with(text, &lookup, opts)
            .map(|e| e.result)
            .unwrap_or_else(|_| text.to_string())
    }

    /// The build context: one shared local source.
    pub(crate) fn context(&mut self) -> Input {
        if let Some(c) = &self.context {
            return c.clone();
        }
        let input = self.def.add(
            Op::Source(SourceOp::Local {
                name: "context".into(),
                include_patterns: vec![],
                exclude_patterns: self.req.dockerignore.clone(),
            }),
            vec![],
            NodeMeta {
                description: "[internal] load build context".into(),
                ..Default::default()
            },
        );
        self.context = Some(input.clone());
        input
    }

    /// BuildKit's `defaultArgs` + `buildMetaArgs`: platform ARGs, then the ARGs before the
    /// first FROM (build args override defaults; defaults expand against earlier ones).
    fn init_global_args(&mut self, meta: &[Instruction]) -> Result<(), FrontendError> {
        for (k, v) in predefined_args(self.req) {
            let v = self.build_args.get(&k).cloned().unwrap_or(v);
            state::add_or_replace(&mut self.global_args, &k, &v);
        }
        for ins in meta {
            let Command::Arg(decls) = &ins.command else {
                continue;
            };
            for d in decls {
                let value = match (self.build_args.get(&d.key), &d.value) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => {
                        Some(self.expand(def, &self.global_args, || self.ins_loc(ins))?)
                    }
                    (None, None) => None,
                };
                if let Some(v) = value {
                    state::add_or_replace(&mut self.global_args, &d.key, &v);
                }
            }
        }
        Ok(())
    }

    /// BuildKit's SOURCE_DATE_EPOCH step: the build arg, else a non-empty global ARG, parsed;
    /// both are then rewritten to the number (or dropped when it resolved to nothing), which
    /// is what an `ARG SOURCE_DATE_EPOCH` in a stage (and so RUN) sees.
    fn resolve_epoch(&mut self, meta: &[Instruction]) -> Result<(), FrontendError> {
        let raw = match self.build_args.get(SOURCE_DATE_EPOCH) {
            Some(v) => v.clone(),
            None => match self
                .global_args
                .iter()
                .find(|(k, _)| k == SOURCE_DATE_EPOCH)
            {
                Some((_, v)) if !v.is_empty() => v.clone(),
                _ => return Ok(()),
            },
        };
        let declared = meta.iter().find(|ins| {
            matches!(&ins.command, Command::Arg(ds) if ds.iter().any(|d| d.key == SOURCE_DATE_EPOCH))
        });
        let location = || match declared {
            Some(ins) => self.ins_loc(ins),
            None => self.loc(1, 1),
        };
        let value = match epoch::parse(&raw, &self.stage_names, location)? {
            epoch::Epoch::Seconds(n) => {
                self.epoch = Some(n);
                Some(n.to_string())
            }
            epoch::Epoch::Unset => None,
        };
        match &value {
            Some(v) => {
                if let Some(b) = self.build_args.get_mut(SOURCE_DATE_EPOCH) {
                    b.clone_from(v);
                }
                if let Some(g) = self
                    .global_args
                    .iter_mut()
                    .find(|(k, _)| k == SOURCE_DATE_EPOCH)
                {
                    g.1.clone_from(v);
                }
            }
            None => {
                self.build_args.remove(SOURCE_DATE_EPOCH);
                self.global_args.retain(|(k, _)| k != SOURCE_DATE_EPOCH);
            }
        }
        Ok(())
    }

    /// The starting state of a stage: its base stage's state, an image, or scratch.
    async fn init_stage(
        &mut self,
        index: usize,
        info: &StageInfo,
        infos: &[StageInfo],
        resolver: &dyn ImageMetaResolver,
    ) -> Result<(StageState, Vec<String>), FrontendError> {
        let s = &info.stage;
        match &info.base {
            Base::Scratch => {
                let image = ImageConfig {
                    os: info.platform.os.clone(),
                    architecture: info.platform.architecture.clone(),
                    variant: info.platform.variant.clone(),
                    ..Default::default()
                };
                let st = StageState::new(
                    None,
                    image,
                    &info.platform,
                    info.progress_name.clone(),
                    info.cmd_total,
                );
                Ok((st, Vec::new()))
            }
            Base::Stage(b) => {
                let Some(base) = self.done.get(*b).and_then(|d| d.clone()) else {
                    return Err(FrontendError::Invalid {
                        location: self.loc(s.start_line, s.end_line),
                        message: format!("stage {index} is based on a stage that was not built"),
                    });
                };
                let mut st = base;
                st.image.config.on_build = None;
                st.cmd_set = false;
                st.progress_name = info.progress_name.clone();
                st.cmd_index = 0;
                st.cmd_total = info.cmd_total;
                // The base stage's own ONBUILD instructions run here (BuildKit).
                let triggers = infos[*b]
                    .stage
                    .commands
                    .iter()
                    .filter_map(|c| match &c.command {
                        Command::Onbuild(e) => Some(e.clone()),
                        _ => None,
                    })
                    .collect();
                Ok((st, triggers))
            }
            Base::Image(name) => {
                let resolved = resolver
                    .resolve_image_config(name, &info.platform)
                    .await
                    .map_err(|message| FrontendError::BaseImage {
                        location: self.loc(s.start_line, s.end_line),
                        image: name.clone(),
                        message,
                    })?;
                let mut st = StageState::new(
                    None,
                    resolved.config.clone(),
                    &info.platform,
                    info.progress_name.clone(),
                    info.cmd_total,
                );
                let description = st.progress(&format!("FROM {}", resolved.reference));
                st.root = self.image_node(&resolved, &info.platform, description, s);
                let triggers = st.image.config.on_build.take().unwrap_or_default();
                Ok((st, triggers))
            }
        }
    }

    /// The image source node; `None` when the image has no layers (behaves as scratch).
    fn image_node(
        &mut self,
        resolved: &ResolvedImage,
        platform: &Platform,
        description: String,
        s: &Stage,
    ) -> Option<Input> {
        let cfg = &resolved.config;
        let no_layers = cfg.rootfs.diff_ids.is_empty() && cfg.history.iter().all(|h| h.empty_layer);
        if no_layers {
            return None;
        }
        Some(self.def.add(
            Op::Source(SourceOp::Image {
                reference: resolved.reference.clone(),
                platform: platform.clone(),
            }),
            vec![],
            NodeMeta {
                description,
                lines: Some((s.start_line, s.end_line)),
                ignore_cache: false,
            },
        ))
    }

    /// Resolves the images this stage reads with `COPY --from=<image>` / `from=<image>`.
    async fn prefetch_images(
        &mut self,
        commands: &[Instruction],
        platform: &Platform,
        resolver: &dyn ImageMetaResolver,
    ) -> Result<(), FrontendError> {
        for ins in commands {
            let mut froms = Vec::new();
            match &ins.command {
                Command::Copy(c) => froms.extend(c.from.clone()),
                Command::Run(r) => {
                    for m in &r.mounts {
                        if let Ok(p) = instructions::parse_mount(m, &|v| Ok(v.to_string())) {
                            froms.extend(p.from);
                        }
                    }
                }
                _ => {}
            }
            for from in froms {
                if self.stage_ref(&from, ins)?.is_some() || self.images.contains_key(&from) {
                    continue;
                }
                let resolved = resolver
                    .resolve_image_config(&from, platform)
                    .await
                    .map_err(|message| FrontendError::BaseImage {
                        location: self.ins_loc(ins),
                        image: from.clone(),
                        message,
                    })?;
                let input = self.def.add(
                    Op::Source(SourceOp::Image {
                        reference: resolved.reference.clone(),
                        platform: platform.clone(),
                    }),
                    vec![],
                    NodeMeta {
                        description: format!("FROM {}", resolved.reference),
                        lines: Some((ins.start_line, ins.end_line)),
                        ignore_cache: false,
                    },
                );
                self.images.insert(from, (input, resolved.config));
            }
        }
        Ok(())
    }

    /// The filesystem a `--from` names: an earlier stage's root or an image.
    pub(crate) fn source_of(
        &self,
        from: &str,
        current: usize,
        ins: &Instruction,
    ) -> Result<Option<Input>, FrontendError> {
        match self.stage_ref(from, ins)? {
            Some(i) => match self.done.get(i).and_then(|d| d.as_ref()) {
                Some(st) if i != current => Ok(st.root.clone()),
                _ => Err(FrontendError::Invalid {
                    location: self.ins_loc(ins),
                    message: format!(
                        "cannot copy from stage {from:?}, it needs to be defined before the current stage"
                    ),
                }),
            },
            None => match self.images.get(from) {
                Some((input, _)) => Ok(Some(input.clone())),
                None => Err(FrontendError::Invalid {
                    location: self.ins_loc(ins),
                    message: format!("image {from:?} was not resolved"),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_remote;
