//! Rules about instructions inside a stage: JSONArgsRecommended, MaintainerDeprecated,
//! LegacyKeyValueFormat, WorkdirRelativePath, MultipleInstructionsDisallowed.

use super::{rules, split_stages, stage_name, Finding};
use crate::parser::{Args, Dockerfile, Node};

/// What a stage passes on to stages built `FROM` it.
#[derive(Clone, Copy, Default)]
struct Inherited {
    /// A SHELL instruction ran: shell form is then a deliberate choice.
    shell_set: bool,
    /// An absolute WORKDIR was declared in the build.
    absolute_workdir: bool,
}

pub(super) fn check(df: &Dockerfile, out: &mut Vec<Finding>) {
    let (_, stages) = split_stages(df);
    let mut done: Vec<(Option<String>, Inherited)> = Vec::new();
    for st in &stages {
        let base = st.from.words().first().map(|b| b.to_lowercase());
        let mut state = done
            .iter()
            .rev()
            .find(|(name, _)| name.is_some() && *name == base)
            .map(|(_, s)| *s)
            .unwrap_or_default();
        // The node that last set CMD / ENTRYPOINT / HEALTHCHECK in this stage.
        let mut last: [Option<&Node>; 3] = [None; 3];
        for n in st.commands {
            let name = n.name();
            let upper = name.to_uppercase();
            match name.as_str() {
                "cmd" | "entrypoint" if !n.json && !state.shell_set => {
                    out.push(Finding::at(
                        &rules::JSON_ARGS_RECOMMENDED,
                        n,
                        format!(
                            "JSON arguments recommended for {upper} to prevent unintended behavior related to OS signals"
                        ),
                    ));
                }
                "shell" => state.shell_set = true,
                "maintainer" => out.push(Finding::at(
                    &rules::MAINTAINER_DEPRECATED,
                    n,
                    "Maintainer instruction is deprecated in favor of using label".into(),
                )),
                "env" | "label" => {
                    if let Args::KeyValues(kvs) = &n.args {
                        if kvs.iter().any(|kv| kv.sep.is_empty()) {
                            out.push(Finding::at(
                                &rules::LEGACY_KEY_VALUE_FORMAT,
                                n,
                                format!(
                                    "\"{upper} key=value\" should be used instead of legacy \"{upper} key value\" format"
                                ),
                            ));
                        }
                    }
                }
                "workdir" => {
                    if let Some(path) = n.words().first() {
                        // Paths from variables are judged absolute: only the expanded value
                        // could tell, and a false warning is worse than a missed one.
                        if path.starts_with('/') || path.starts_with('$') {
                            state.absolute_workdir = true;
                        } else if !state.absolute_workdir {
                            out.push(Finding::at(
                                &rules::WORKDIR_RELATIVE_PATH,
                                n,
                                format!(
                                    "Relative workdir {} can have unexpected results if the base image changes",
                                    crate::parser::go_quote(path)
                                ),
                            ));
                        }
                    }
                }
                _ => {}
            }
            let slot = match name.as_str() {
                "cmd" => 0,
                "entrypoint" => 1,
                "healthcheck" => 2,
                _ => continue,
            };
            // The earlier instruction is the one that has no effect, so it is the one reported.
            if let Some(prev) = last[slot] {
                out.push(Finding::at(
                    &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                    prev,
                    format!(
                        "Multiple {upper} instructions should not be used in the same stage because only the last one will be used"
                    ),
                ));
            }
            last[slot] = Some(n);
        }
        done.push((stage_name(st.from).map(str::to_lowercase), state));
    }
}
