//! RUN → an exec op over the stage's root, with its `--mount`s, network and security mode.

use kiln_solver::llb::{
    CacheSharing, ExecMeta, ExecOp, FileAction, FileOp, Input, MkfileAction, Mount, MountKind,
    NetMode, NodeMeta, Op, SecretEnv, SecretMount, SecurityMode,
};

use super::dispatch::with_shell;
use super::state::{uppercase_cmd, StageState};
use super::util::clean;
use super::{FrontendError, Lowering};
use crate::instructions::{parse_mount, Instruction, MountType, RunCmd, RunMount, Sharing};

/// Adds `input` to `inputs` (once) and returns its index.
pub(crate) fn input_index(inputs: &mut Vec<Input>, input: Input) -> usize {
    match inputs.iter().position(|i| *i == input) {
        Some(i) => i,
        None => {
            inputs.push(input);
            inputs.len() - 1
        }
    }
}

/// The first line of a heredoc body, `...` when there is more (progress names).
fn summarize(doc: &str) -> String {
    let doc = doc.trim();
    let mut lines = doc.lines();
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}

/// BuildKit's `runCommandString`: `|N K=V … args` when the stage declared ARGs.
fn run_command_string(st: &StageState, args: &[String]) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in &st.build_args {
        let v = st
            .get_env(k)
            .unwrap_or_else(|| v.clone().unwrap_or_default());
        super::state::add_or_replace(&mut pairs, k, &v);
    }
    let mut parts = Vec::new();
    if !pairs.is_empty() {
        parts.push(format!("|{}", pairs.len()));
        parts.extend(pairs.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

impl Lowering<'_> {
    pub(crate) fn run(
        &mut self,
        stage: usize,
        st: &mut StageState,
        ins: &Instruction,
        cmd: &RunCmd,
    ) -> Result<(), FrontendError> {
        let mut args = cmd.cmd.args.clone();
        let mut summary = None;
        // A `RUN <<EOF` whose body starts with `#!` runs as a script file mounted from an
        // inline document (BuildKit); `(input, name)` of that document.
        let mut script: Option<(Input, String)> = None;
        if !cmd.cmd.files.is_empty() && cmd.cmd.prepend_shell {
            let only_heredoc = cmd.cmd.files.len() == 1
                && args.len() == 1
                && crate::parser::parse_heredoc_word(args[0].trim()).is_some();
            let first = &cmd.cmd.files[0];
            let body = first.body();
            if only_heredoc {
                summary = Some(summarize(&body));
                if body.starts_with("#!") {
                    let doc = self.def.add(
                        Op::File(FileOp {
                            base: None,
                            actions: vec![FileAction::Mkfile(MkfileAction {
                                path: clean(&format!("/{}", first.name)),
                                mode: 0o755,
                                data: body.into_bytes(),
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
                    args = vec![clean(&format!("/dev/pipes/{}", first.name))];
                    script = Some((doc, first.name.clone()));
                } else {
                    // The body is the script, run by the shell.
                    args = vec![body];
                }
            } else {
                // Give the shell the heredocs back: it runs them itself.
                let mut s = args.first().cloned().unwrap_or_default();
                for f in &cmd.cmd.files {
                    s.push('\n');
                    s.push_str(&f.content);
                    s.push_str(&f.name);
                }
                args = vec![s];
            }
        }
        if cmd.cmd.prepend_shell {
            args = with_shell(st, &args);
        }

        let mut inputs = Vec::new();
        let root_mount = Mount {
            input: st.root.clone().map(|r| input_index(&mut inputs, r)),
            selector: String::new(),
            dest: "/".into(),
            output: Some(0),
            readonly: false,
            kind: MountKind::Bind,
        };
        let mut mounts = vec![root_mount];
        if let Some((doc, _)) = script {
            mounts.push(Mount {
                input: Some(input_index(&mut inputs, doc)),
                selector: "/".into(),
                dest: "/dev/pipes".into(),
                output: None,
                readonly: true,
                kind: MountKind::Bind,
            });
        }
        let mut secret_env = Vec::new();
        let mut env = st.env_strings();
        for raw in &cmd.mounts {
            let env_now = st.env.clone();
            let expander = |v: &str| -> Result<String, String> {
                let lookup = |k: &str| env_now.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                self.lexer
                    .process_word(v, &lookup)
                    .map(|e| e.result)
                    .map_err(|e| e.0)
            };
            let m = parse_mount(raw, &expander).map_err(|message| FrontendError::Instruction {
                location: self.ins_loc(ins),
                message,
            })?;
            self.add_mount(
                stage,
                st,
                ins,
                &m,
                &mut inputs,
                &mut mounts,
                &mut secret_env,
                &mut env,
            )?;
        }

        if let Some(message) = super::entitlements::refused(
            self.req.entitlements,
            cmd.network.as_deref(),
            cmd.security.as_deref(),
        ) {
            return Err(FrontendError::Instruction {
                location: self.ins_loc(ins),
                message,
            });
        }
        let network = match cmd.network.as_deref() {
            Some("none") => NetMode::None,
            _ => NetMode::Host,
        };
        let security = match cmd.security.as_deref() {
            Some("insecure") => SecurityMode::Insecure,
            _ => SecurityMode::Sandbox,
        };
        let mut text = uppercase_cmd(&self.display_text(&ins.original, &st.env, true));
        if let Some(sum) = summary {
            text.push_str(&format!(" ({sum})"));
        }
        let description = st.progress(&text);
        let out = self.def.add(
            Op::Exec(ExecOp {
                meta: ExecMeta {
                    args: args.clone(),
                    env,
                    cwd: st.cwd.clone(),
                    user: st.user.clone(),
                    hostname: None,
                },
                mounts,
                network,
                security,
                secret_env,
            }),
            inputs,
            NodeMeta {
                description,
                lines: Some((ins.start_line, ins.end_line)),
                ignore_cache: false,
            },
        );
        st.root = Some(out);
        let msg = format!("RUN {} # buildkit", run_command_string(st, &args));
        st.commit(msg, true);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_mount(
        &mut self,
        stage: usize,
        st: &StageState,
        ins: &Instruction,
        m: &RunMount,
        inputs: &mut Vec<Input>,
        mounts: &mut Vec<Mount>,
        secret_env: &mut Vec<SecretEnv>,
        env: &mut Vec<String>,
    ) -> Result<(), FrontendError> {
        let abs = |t: &str| {
            if t.starts_with('/') {
                clean(t)
            } else {
                clean(&format!("{}/{t}", st.cwd))
            }
        };
        let need_target = || FrontendError::Instruction {
            location: self.ins_loc(ins),
            message: format!("mount type {} requires a target", m.kind.as_str()),
        };
        let from_input =
            |lw: &mut Self, inputs: &mut Vec<Input>| -> Result<Option<usize>, FrontendError> {
                let src = match &m.from {
                    Some(f) => lw.source_of(f, stage, ins)?,
                    None => Some(lw.context()),
                };
                Ok(src.map(|s| input_index(inputs, s)))
            };
        match m.kind {
            MountType::Bind => {
                let dest = abs(m.target.as_deref().ok_or_else(need_target)?);
                let input = from_input(self, inputs)?;
                mounts.push(Mount {
                    input,
                    selector: m.source.clone().unwrap_or_default(),
                    dest,
                    output: None,
                    readonly: m.readonly,
                    kind: MountKind::Bind,
                });
            }
            MountType::Cache => {
                let target = m.target.as_deref().ok_or_else(need_target)?;
                let dest = abs(target);
                let input = match &m.from {
                    Some(_) => from_input(self, inputs)?,
                    None => None,
                };
                let sharing = match m.sharing {
                    Some(Sharing::Private) => CacheSharing::Private,
                    Some(Sharing::Locked) => CacheSharing::Locked,
                    _ => CacheSharing::Shared,
                };
                mounts.push(Mount {
                    input,
                    selector: m.source.clone().unwrap_or_default(),
                    dest: dest.clone(),
                    output: None,
                    readonly: m.readonly,
                    kind: MountKind::Cache {
                        id: m.id.clone().unwrap_or(dest),
                        sharing,
                        mode: m.mode,
                        uid: m.uid,
                        gid: m.gid,
                    },
                });
            }
            MountType::Tmpfs => {
                let dest = abs(m.target.as_deref().ok_or_else(need_target)?);
                mounts.push(Mount {
                    input: None,
                    selector: String::new(),
                    dest,
                    output: None,
                    readonly: false,
                    kind: MountKind::Tmpfs { size: m.size },
                });
            }
            MountType::Secret => {
                let id = match (&m.id, &m.source, &m.target) {
                    (Some(id), _, _) | (None, Some(id), _) => id.clone(),
                    (None, None, Some(t)) => t.rsplit('/').next().unwrap_or(t).to_string(),
                    _ => String::new(),
                };
                if let Some(name) = &m.env {
                    secret_env.push(SecretEnv {
                        id: id.clone(),
                        name: name.clone(),
                        optional: !m.required,
                    });
                    if m.target.is_none() {
                        return Ok(());
                    }
                }
                let dest = match &m.target {
                    Some(t) => abs(t),
                    None => format!("/run/secrets/{id}"),
                };
                mounts.push(Mount {
                    input: None,
                    selector: String::new(),
                    dest,
                    output: None,
                    readonly: true,
                    kind: MountKind::Secret(SecretMount {
                        id,
                        optional: !m.required,
                        mode: m.mode.unwrap_or(0o400),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    }),
                });
            }
            MountType::Ssh => {
                // BuildKit numbers the default sockets by their order among the RUN's ssh mounts.
                let n = mounts
                    .iter()
                    .filter(|m| matches!(m.kind, MountKind::Ssh(_)))
                    .count();
                let dest = match &m.target {
                    Some(t) => abs(t),
                    None => format!("/run/buildkit/ssh_agent.{n}"),
                };
                if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    env.push(format!("SSH_AUTH_SOCK={dest}"));
                }
                mounts.push(Mount {
                    input: None,
                    selector: String::new(),
                    dest,
                    output: None,
                    readonly: true,
                    kind: MountKind::Ssh(SecretMount {
                        id: m.id.clone().unwrap_or_else(|| "default".into()),
                        optional: !m.required,
                        mode: m.mode.unwrap_or(0o600),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    }),
                });
            }
        }
        Ok(())
    }
}
