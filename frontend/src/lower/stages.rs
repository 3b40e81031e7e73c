//! The stage graph: expanded bases and platforms, `--from` dependencies, the target and
//! what it needs, cycle detection, ONBUILD triggers.

use std::collections::BTreeSet;

use kiln_solver::llb::Platform;

use super::{Base, FrontendError, Lowering, StageInfo};
use crate::instructions::{self, Command, Instruction, Stage};
use crate::parser;

/// Stages the target needs: its base chain and everything it copies from, transitively.
pub(super) fn reachable(infos: &[StageInfo], target: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        if let Base::Stage(b) = infos[i].base {
            todo.push(b);
        }
        todo.extend(infos[i].deps.iter().copied());
    }
    seen
}

fn parse_platform(s: &str, default: &Platform) -> Option<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    let p = match parts.as_slice() {
        [one] if ["linux", "windows", "darwin", "freebsd"].contains(one) => Platform {
            os: one.to_string(),
            architecture: default.architecture.clone(),
            variant: default.variant.clone(),
        },
        [arch] => Platform {
            os: "linux".into(),
            architecture: arch.to_string(),
            variant: None,
        },
        [os, arch] => Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: None,
        },
        [os, arch, variant] => Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: Some(variant.to_string()),
        },
        _ => return None,
    };
    (!p.os.is_empty() && !p.architecture.is_empty()).then_some(p)
}

impl Lowering<'_> {
    /// Expands each stage's base and platform, and finds what each stage depends on.
    pub(super) fn stage_infos(
        &mut self,
        stages: Vec<Stage>,
    ) -> Result<Vec<StageInfo>, FrontendError> {
        let mut infos: Vec<StageInfo> = Vec::new();
        let mut image_refs = 0;
        for (i, stage) in stages.into_iter().enumerate() {
            let loc = || self.loc(stage.start_line, stage.end_line);
            let base_name = self.expand(&stage.base, &self.global_args, loc)?;
            if base_name.is_empty() {
                return Err(FrontendError::Invalid {
                    location: loc(),
                    message: format!("base name ({}) should not be blank", stage.base),
                });
            }
            let platform = match &stage.platform {
                None => self.req.platform.clone(),
                Some(p) => {
                    let v = self.expand(p, &self.global_args, loc)?;
                    parse_platform(&v, &self.req.platform).ok_or_else(|| {
                        FrontendError::Invalid {
                            location: loc(),
                            message: format!(
                                "failed to parse platform {p}: {v:?} is not a valid platform"
                            ),
                        }
                    })?
                }
            };
            let base = if base_name == "scratch" {
                Base::Scratch
            } else if let Some(b) = infos
                .iter()
                .position(|s| s.stage.name.as_deref() == Some(base_name.as_str()))
            {
                Base::Stage(b)
            } else {
                Base::Image(base_name.clone())
            };
            let mut deps = BTreeSet::new();
            let mut total = usize::from(matches!(base, Base::Image(_)));
            for ins in &stage.commands {
                match &ins.command {
                    Command::Copy(c) | Command::Add(c) => {
                        total += 1;
                        if let Some(from) = &c.from {
                            match self.stage_ref(from, ins)? {
                                Some(s) => {
                                    deps.insert(s);
                                }
                                None => image_refs += 1,
                            }
                        }
                    }
                    Command::Run(r) => {
                        total += 1;
                        for m in &r.mounts {
                            let parsed = instructions::parse_mount(m, &|v| Ok(v.to_string()))
                                .map_err(|e| FrontendError::Instruction {
                                    location: self.ins_loc(ins),
                                    message: e,
                                })?;
                            if let Some(from) = &parsed.from {
                                if let Some(s) = self.stage_ref(from, ins)? {
                                    deps.insert(s);
                                }
                            }
                        }
                    }
                    Command::Workdir(_) => total += 1,
                    _ => {}
                }
            }
            infos.push(StageInfo {
                progress_name: stage.name.clone().unwrap_or_else(|| format!("stage-{i}")),
                stage,
                base,
                platform,
                deps,
                cmd_total: total,
            });
        }
        // A lone stage has no name in progress output.
        if infos.len() == 1 && image_refs == 0 {
            infos[0].progress_name.clear();
        }
        Ok(infos)
    }

    /// Resolves `--from=<name|index>` to a stage index; `None` = an image reference.
    pub(crate) fn stage_ref(
        &self,
        from: &str,
        ins: &Instruction,
    ) -> Result<Option<usize>, FrontendError> {
        if from.contains('$') {
            return Err(FrontendError::Invalid {
                location: self.ins_loc(ins),
                message: "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".into(),
            });
        }
        if let Ok(idx) = from.parse::<usize>() {
            if idx >= self.stage_names.len() {
                return Err(FrontendError::Invalid {
                    location: self.ins_loc(ins),
                    message: format!("invalid stage index {idx}"),
                });
            }
            return Ok(Some(idx));
        }
        let lower = from.to_lowercase();
        Ok(self
            .stage_names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str())))
    }

    pub(super) fn find_target(&self, infos: &[StageInfo]) -> Result<usize, FrontendError> {
        let Some(t) = &self.req.target else {
            return Ok(infos.len() - 1);
        };
        let lower = t.to_lowercase();
        if let Some(i) = infos
            .iter()
            .position(|s| s.stage.name.as_deref() == Some(lower.as_str()))
        {
            return Ok(i);
        }
        let names: Vec<&str> = infos
            .iter()
            .filter_map(|s| s.stage.name.as_deref())
            .collect();
        let suggestion = instructions::closest_name(&lower, names)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        Err(FrontendError::TargetNotFound {
            target: t.clone(),
            suggestion,
        })
    }

    /// A stage that (transitively) reads from itself can't be built.
    pub(super) fn check_cycles(&self, infos: &[StageInfo]) -> Result<(), FrontendError> {
        fn visit(
            i: usize,
            infos: &[StageInfo],
            path: &mut Vec<usize>,
            done: &mut BTreeSet<usize>,
        ) -> Option<usize> {
            if path.contains(&i) {
                return Some(i);
            }
            if done.contains(&i) {
                return None;
            }
            path.push(i);
            let mut next: Vec<usize> = infos[i].deps.iter().copied().collect();
            if let Base::Stage(b) = infos[i].base {
                next.push(b);
            }
            for n in next {
                if let Some(c) = visit(n, infos, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(i);
            None
        }
        let mut done = BTreeSet::new();
        for i in 0..infos.len() {
            if let Some(c) = visit(i, infos, &mut Vec::new(), &mut done) {
                let s = &infos[c].stage;
                return Err(FrontendError::CircularDependency {
                    location: self.loc(s.start_line, s.end_line),
                    stage: s.name.clone().unwrap_or_else(|| format!("stage-{c}")),
                });
            }
        }
        Ok(())
    }

    /// ONBUILD triggers as instructions, located at the FROM line that runs them.
    pub(super) fn parse_triggers(
        &self,
        info: &StageInfo,
        triggers: &[String],
    ) -> Result<Vec<Instruction>, FrontendError> {
        let s = &info.stage;
        let fail = |message: String| FrontendError::Instruction {
            location: self.loc(s.start_line, s.end_line),
            message: format!("ONBUILD trigger: {message}"),
        };
        let mut out = Vec::new();
        for t in triggers {
            let df = parser::parse(t).map_err(|e| fail(e.message))?;
            let [node] = df.instructions.as_slice() else {
                return Err(fail("onbuild trigger should be a single expression".into()));
            };
            let mut ins = instructions::parse_instruction(node).map_err(|e| fail(e.message))?;
            ins.start_line = s.start_line;
            ins.end_line = s.end_line;
            out.push(ins);
        }
        Ok(out)
    }
}
