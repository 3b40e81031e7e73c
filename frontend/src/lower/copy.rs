//! COPY/ADD → a file op with one copy action per source; WORKDIR → a mkdir file op.

use kiln_solver::llb::{
    ChmodOpt, ChownOpt, CopyAction, FileAction, FileOp, Input, MergeOp, MkdirAction, MkfileAction,
    NodeMeta, Op,
};

use super::exec::input_index;
use super::state::{uppercase_cmd, StageState};
use super::util::{clean, dest_path, parse_chmod, parse_chown, workdir};
use super::{FrontendError, Lowering};
use crate::instructions::{CopyCmd, Instruction};
use crate::remote::{is_http_source, parse_git_ref, GitSource};
use crate::shell::LexOptions;

/// A copy of exactly the entry at `path` of input `idx` (BuildKit's CopyInfo defaults: no
/// wildcards, no symlink following, a directory itself rather than its contents).
fn exact_copy(
    idx: usize,
    path: String,
    dest: &str,
    owner: &Option<ChownOpt>,
    mode: &Option<ChmodOpt>,
    excludes: &[String],
) -> CopyAction {
    let mut a = CopyAction::new(Some(idx), path, dest);
    a.owner = owner.clone();
    a.mode = mode.clone();
    a.follow_symlinks = false;
    a.dir_copy_contents = false;
    a.allow_wildcard = false;
    a.exclude_patterns = excludes.to_vec();
    a
}

impl Lowering<'_> {
    pub(crate) fn copy(
        &mut self,
        stage: usize,
        st: &mut StageState,
        ins: &Instruction,
        c: &CopyCmd,
        add: bool,
    ) -> Result<(), FrontendError> {
        let what = if add { "ADD" } else { "COPY" };
        let location = self.ins_loc(ins);
        let loc = || location.clone();
        let invalid = |message: String| FrontendError::Invalid {
            location: location.clone(),
            message,
        };
        let mut sources = Vec::new();
        for s in &c.sources {
            sources.push(self.expand(s, &st.env, loc)?);
        }
        let dest_raw = self.expand(&c.dest, &st.env, loc)?;
        let chown = match &c.chown {
            Some(v) => Some(self.expand(v, &st.env, loc)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(v) => Some(self.expand(v, &st.env, loc)?),
            None => None,
        };
        // As BuildKit: --exclude patterns are not expanded.
        let excludes = c.excludes.clone();
        let checksum = match &c.checksum {
            Some(v) => Some(self.expand(v, &st.env, loc)?).filter(|v| !v.is_empty()),
            None => None,
        };
        if checksum.is_some() {
            if sources.len() != 1 {
                return Err(invalid(
                    "checksum can't be specified for multiple sources".into(),
                ));
            }
            let s = &sources[0];
            if !is_http_source(s) && !matches!(parse_git_ref(s), GitSource::Yes(_)) {
                return Err(invalid("checksum requires HTTP(S) or Git sources".into()));
            }
        }
        if sources.len() + c.heredocs.len() > 1 && !dest_raw.ends_with('/') {
            return Err(invalid(format!(
                "When using {what} with more than one source file, the destination must be a directory and end with a /"
            )));
        }
        let owner = chown.as_deref().and_then(parse_chown);
        let mode = match chmod.as_deref() {
            Some(m) => Some(parse_chmod(m).map_err(invalid)?),
            None => None,
        };
        let dest = dest_path(&st.cwd, &dest_raw);

        // BuildKit: --link (without --chmod) copies onto scratch and merges that onto the
        // stage, so the copy does not depend on the stage: it stays cached, and its layer the
        // same, when what is below it changes.
        let link = c.link && chmod.is_none();
        let mut inputs = Vec::new();
        let base = match (&st.root, link) {
            (Some(r), false) => Some(input_index(&mut inputs, r.clone())),
            _ => None,
        };
        // The context node only when a local source reads it (not for remote-only ADDs).
        let from: Option<Option<Input>> = match &c.from {
            Some(from) => Some(self.source_of(from, stage, ins)?),
            None => None,
        };
        let mut actions = Vec::new();
        let mut msg = String::from(what);
        if c.parents {
            msg.push_str(" --parents");
        }
        if let Some(v) = &chown {
            msg.push_str(&format!(" --chown={v}"));
        }
        if let Some(v) = &chmod {
            msg.push_str(&format!(" --chmod={v}"));
        }
        let text = uppercase_cmd(&self.display_text(&ins.original, &st.env, false));
        let description = st.progress(&text);
        for src in &sources {
            msg.push_str(&format!(" {src}"));
            // Remote sources: a node of their own, copied from with BuildKit's CopyInfo
            // defaults (no wildcards, no symlink following, the source itself not its
            // contents — the same for a tree's root).
            let remote = match parse_git_ref(src) {
                GitSource::Invalid(e) => return Err(invalid(e)),
                GitSource::Yes(_) if !add => {
                    return Err(invalid("source can't be a git ref for COPY".into()))
                }
                GitSource::Yes(g) => {
                    let node = self.git_source(
                        ins,
                        &g,
                        c.keep_git_dir,
                        checksum.as_deref(),
                        &description,
                    )?;
                    Some((node, "/".to_string(), false))
                }
                GitSource::No if is_http_source(src) => {
                    if !add {
                        return Err(invalid("source can't be a URL for COPY".into()));
                    }
                    let (node, path) =
                        self.http_source(ins, src, checksum.as_deref(), &description)?;
                    // Downloads are not extracted unless asked (`--unpack=true`).
                    Some((node, path, c.unpack == Some(true)))
                }
                GitSource::No => None,
            };
            if let Some((node, path, unpack)) = remote {
                let idx = input_index(&mut inputs, node);
                let mut a = exact_copy(idx, path, &dest, &owner, &mode, &excludes);
                a.attempt_unpack = unpack;
                actions.push(FileAction::Copy(a));
                continue;
            }
            let (src_path, include) = if c.parents {
                match src.split_once("/./") {
                    Some((parent, pattern)) => (
                        clean(&format!("/{parent}")),
                        vec![clean(&format!("/{pattern}"))[1..].to_string()],
                    ),
                    None => (
                        "/".to_string(),
                        vec![clean(&format!("/{src}"))[1..].to_string()],
                    ),
                }
            } else {
                (clean(&format!("/{src}")), Vec::new())
            };
            let source = match &from {
                Some(f) => f.clone(),
                None => Some(self.context()),
            };
            let src_input = source.map(|s| input_index(&mut inputs, s));
            let mut a = CopyAction::new(src_input, src_path, dest.clone());
            a.owner = owner.clone();
            a.mode = mode.clone();
            a.attempt_unpack = add && c.unpack.unwrap_or(true);
            a.allow_empty_wildcard = true;
            a.include_patterns = include;
            a.exclude_patterns = excludes.clone();
            actions.push(FileAction::Copy(a));
        }
        for h in &c.heredocs {
            msg.push_str(&format!(" <<{}", h.name));
            let data = if h.expand {
                let env = st.env.clone();
                let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let opts = LexOptions {
                    skip_process_quotes: true,
                    ..Default::default()
                };
                crate::shell::Lexer::new('\\')
                    .process_word_with(&h.data, &lookup, opts)
                    .map(|e| e.result)
                    .map_err(|e| FrontendError::Expansion {
                        location: loc(),
                        message: e.0,
                    })?
            } else {
                h.data.clone()
            };
            let path = clean(&format!("/{}", h.name));
            let doc = self.def.add(
                Op::File(FileOp {
                    base: None,
                    actions: vec![FileAction::Mkfile(MkfileAction {
                        path: path.clone(),
                        mode: 0o644,
                        data: data.into_bytes(),
                        owner: None,
                        timestamp: None,
                    })],
                }),
                vec![],
                NodeMeta {
                    description: "[internal] preparing inline document".into(),
                    lines: Some((ins.start_line, ins.end_line)),
                    ignore_cache: false,
                },
            );
            let idx = input_index(&mut inputs, doc);
            let a = exact_copy(idx, path, &dest, &owner, &mode, &excludes);
            actions.push(FileAction::Copy(a));
        }
        msg.push_str(&format!(" {dest_raw} # buildkit"));

        let lines = Some((ins.start_line, ins.end_line));
        let out = self.def.add(
            Op::File(FileOp { base, actions }),
            inputs,
            NodeMeta {
                description,
                lines,
                ignore_cache: false,
            },
        );
        st.root = match (st.root.take(), link) {
            (Some(below), true) => Some(self.def.add(
                Op::Merge(MergeOp {}),
                vec![below, out],
                NodeMeta {
                    description: st.progress_again(&format!("LINK {text}")),
                    lines,
                    ignore_cache: false,
                },
            )),
            _ => Some(out),
        };
        st.commit(msg, true);
        Ok(())
    }

    pub(crate) fn workdir(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        path: &str,
    ) -> Result<(), FrontendError> {
        let p = self.expand(path, &st.env, || self.ins_loc(ins))?;
        let prev = st.image.config.working_dir.clone().unwrap_or_default();
        let wd = workdir(&prev, &p);
        st.image.config.working_dir = Some(wd.clone());
        st.cwd = wd.clone();
        let with_layer = wd != "/";
        if with_layer {
            let mut inputs = Vec::new();
            let base = st.root.clone().map(|r| input_index(&mut inputs, r));
            let text = uppercase_cmd(&self.display_text(&ins.original, &st.env, false));
            let description = st.progress(&text);
            let out = self.def.add(
                Op::File(FileOp {
                    base,
                    actions: vec![FileAction::Mkdir(MkdirAction {
                        path: wd.clone(),
                        mode: 0o755,
                        make_parents: true,
                        owner: parse_chown(&st.user),
                        timestamp: self.epoch,
                    })],
                }),
                inputs,
                NodeMeta {
                    description,
                    lines: Some((ins.start_line, ins.end_line)),
                    ignore_cache: false,
                },
            );
            st.root = Some(out);
        }
        st.commit(format!("WORKDIR {wd}"), with_layer);
        Ok(())
    }
}
