//! One function per metadata instruction (ARG, ENV, LABEL, USER, EXPOSE, VOLUME, CMD, …):
//! they change the build environment and the image config, and add a history entry.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::state::StageState;
use super::util::{go_duration, go_list, go_quoted_list, parse_ports, valid_signal};
use super::{FrontendError, Lowering};
use crate::image::Healthcheck;
use crate::instructions::{ArgDecl, CmdLine, Command, HealthCmd, Instruction, KeyValue};

/// The default shell on Linux.
pub(crate) fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

/// Shell form: the current SHELL (or the default) + the command text.
pub(crate) fn with_shell(st: &StageState, args: &[String]) -> Vec<String> {
    let mut out = match &st.image.config.shell {
        Some(s) if !s.is_empty() => s.clone(),
        _ => default_shell(),
    };
    out.push(args.join(" "));
    out
}

impl Lowering<'_> {
    pub(crate) fn dispatch(
        &mut self,
        stage: usize,
        st: &mut StageState,
        ins: &Instruction,
    ) -> Result<(), FrontendError> {
        match &ins.command {
            Command::Arg(decls) => self.arg(st, ins, decls),
            Command::Env(kvs) => self.env(st, ins, kvs),
            Command::Label(kvs) => self.label(st, ins, kvs),
            Command::Run(r) => self.run(stage, st, ins, r),
            Command::Copy(c) => self.copy(stage, st, ins, c, false),
            Command::Add(c) => self.copy(stage, st, ins, c, true),
            Command::Workdir(p) => self.workdir(st, ins, p),
            Command::User(u) => {
                let u = self.expand(u, &st.env, || self.ins_loc(ins))?;
                st.user = u.clone();
                st.image.config.user = Some(u.clone());
                st.commit(format!("USER {u}"), false);
                Ok(())
            }
            Command::Expose(ports) => self.expose(st, ins, ports),
            Command::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = self.expand(v, &st.env, || self.ins_loc(ins))?;
                    if v.is_empty() {
                        return Err(FrontendError::Invalid {
                            location: self.ins_loc(ins),
                            message: "VOLUME specified can not be an empty string".into(),
                        });
                    }
                    out.push(v);
                }
                let map = st.image.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &out {
                    map.insert(v.clone(), Value::Object(Map::new()));
                }
                st.commit(format!("VOLUME {}", go_list(&out)), false);
                Ok(())
            }
            Command::Cmd(c) => {
                let args = shell_args(st, c);
                st.image.config.cmd = Some(args.clone());
                st.image.config.args_escaped = Some(true);
                st.cmd_set = true;
                st.commit(format!("CMD {}", go_quoted_list(&args)), false);
                Ok(())
            }
            Command::Entrypoint(c) => {
                let args = shell_args(st, c);
                st.image.config.entrypoint = Some(args.clone());
                if !st.cmd_set {
                    st.image.config.cmd = None;
                }
                st.commit(format!("ENTRYPOINT {}", go_quoted_list(&args)), false);
                Ok(())
            }
            Command::Shell(sh) => {
                st.image.config.shell = Some(sh.clone());
                st.commit(format!("SHELL {}", go_list(sh)), false);
                Ok(())
            }
            Command::StopSignal(sig) => {
                let sig = self.expand(sig, &st.env, || self.ins_loc(ins))?;
                if !valid_signal(&sig) {
                    return Err(FrontendError::Invalid {
                        location: self.ins_loc(ins),
                        message: format!("Invalid signal: {sig}"),
                    });
                }
                st.image.config.stop_signal = Some(sig.clone());
                st.commit(format!("STOPSIGNAL {sig}"), false);
                Ok(())
            }
            Command::Healthcheck(h) => {
                let hc = match h {
                    HealthCmd::None => Healthcheck {
                        test: Some(vec!["NONE".into()]),
                        ..Default::default()
                    },
                    HealthCmd::Check {
                        test,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => Healthcheck {
                        test: Some(test.clone()),
                        interval: Some(*interval),
                        timeout: Some(*timeout),
                        start_period: Some(*start_period),
                        start_interval: Some(*start_interval),
                        retries: Some(*retries),
                    },
                };
                let msg = format!(
                    "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                    go_list(hc.test.as_deref().unwrap_or_default()),
                    go_duration(hc.interval.unwrap_or(0)),
                    go_duration(hc.timeout.unwrap_or(0)),
                    go_duration(hc.start_period.unwrap_or(0)),
                    go_duration(hc.start_interval.unwrap_or(0)),
                    hc.retries.unwrap_or(0)
                );
                st.image.config.healthcheck = Some(hc);
                st.commit(msg, false);
                Ok(())
            }
            Command::Maintainer(m) => {
                st.image.author = Some(m.clone());
                st.commit(format!("MAINTAINER {m}"), false);
                Ok(())
            }
            Command::Onbuild(expr) => {
                // Stored for images built FROM this one; no history entry (as BuildKit).
                st.image
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(expr.clone());
                Ok(())
            }
        }
    }

    /// ARG in a stage (BuildKit's `dispatchArg`): build arg > default > global value.
    fn arg(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        decls: &[ArgDecl],
    ) -> Result<(), FrontendError> {
        let mut parts = Vec::new();
        for d in decls {
            let value = if let Some(v) = self.build_args.get(&d.key) {
                Some(v.clone())
            } else if let Some(def) = &d.value {
                Some(self.expand(def, &st.env, || self.ins_loc(ins))?)
            } else {
                self.global_args
                    .iter()
                    .find(|(k, _)| *k == d.key)
                    .map(|(_, v)| v.clone())
            };
            if let Some(v) = &value {
                st.add_env(&d.key, v);
                parts.push(format!("{}={v}", d.key));
            } else {
                parts.push(d.key.clone());
            }
            st.build_args.push((d.key.clone(), value));
        }
        st.commit(format!("ARG {}", parts.join(" ")), false);
        Ok(())
    }

    /// ENV: every value is expanded against the environment before this instruction.
    fn env(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        kvs: &[KeyValue],
    ) -> Result<(), FrontendError> {
        let before = st.env.clone();
        let mut msg = String::from("ENV");
        for kv in kvs {
            let key = self.expand(&kv.key, &before, || self.ins_loc(ins))?;
            let value = self.expand(&kv.value, &before, || self.ins_loc(ins))?;
            msg.push_str(&format!(" {key}={value}"));
            st.add_env(&key, &value);
            st.add_image_env(&key, &value);
        }
        st.commit(msg, false);
        Ok(())
    }

    fn label(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        kvs: &[KeyValue],
    ) -> Result<(), FrontendError> {
        let mut msg = String::from("LABEL");
        for kv in kvs {
            let key = self.expand(&kv.key, &st.env, || self.ins_loc(ins))?;
            let value = self.expand(&kv.value, &st.env, || self.ins_loc(ins))?;
            msg.push_str(&format!(" {key}={value}"));
            st.image
                .config
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(key, value);
        }
        st.commit(msg, false);
        Ok(())
    }

    fn expose(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        ports: &[String],
    ) -> Result<(), FrontendError> {
        let mut specs = Vec::new();
        for p in ports {
            for w in self.expand_words(p, &st.env, || self.ins_loc(ins))? {
                specs.extend(parse_ports(&w).map_err(|message| FrontendError::Invalid {
                    location: self.ins_loc(ins),
                    message,
                })?);
            }
        }
        let map = st
            .image
            .config
            .exposed_ports
            .get_or_insert_with(BTreeMap::new);
        for s in &specs {
            map.insert(s.clone(), Value::Object(Map::new()));
        }
        st.commit(format!("EXPOSE {}", go_list(&specs)), false);
        Ok(())
    }
}

/// CMD/ENTRYPOINT arguments: exec form as is, shell form through the current SHELL.
fn shell_args(st: &StageState, c: &CmdLine) -> Vec<String> {
    if c.prepend_shell {
        with_shell(st, &c.args)
    } else {
        c.args.clone()
    }
}
