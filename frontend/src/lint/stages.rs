//! Rules about FROM lines and stage names: StageNameCasing, DuplicateStageName,
//! ReservedStageName, UndefinedArgInFrom, InvalidDefaultArgInFrom, RedundantTargetPlatform,
//! FromPlatformFlagConstDisallowed.

use std::collections::BTreeSet;

use super::{reference, rules, split_stages, stage_name, CheckContext, Finding};
use crate::instructions::closest_name;
use crate::parser::{go_quote, Dockerfile, Node};
use crate::shell::Lexer;

/// Stage names BuildKit reserves (`scratch` is the empty image, `context` the build context).
const RESERVED: [&str; 2] = ["context", "scratch"];

/// The global ARGs: `(name, default)` in order, from the ARG lines before the first FROM.
fn meta_args(meta: &[Node]) -> Vec<(String, Option<String>)> {
    meta.iter()
        .filter(|n| n.name() == "arg")
        .flat_map(|n| n.words())
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        })
        .collect()
}

/// The last value given to `name` (a later ARG line redefines an earlier one).
fn latest(vars: &[(String, String)], name: &str) -> Option<String> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn platform_flag(from: &Node) -> Option<&str> {
    from.flags
        .iter()
        .find_map(|f| f.strip_prefix("--platform="))
}

pub(super) fn check(df: &Dockerfile, ctx: &CheckContext, out: &mut Vec<Finding>) {
    let (meta, stages) = split_stages(df);
    let lexer = Lexer::new(df.escape);
    let metas = meta_args(meta);

    // The global scope as if no --build-arg were given: predefined ARGs, then defaults, each
    // expanded against the ones before it (BuildKit's check for InvalidDefaultArgInFrom).
    let mut defaults: Vec<(String, String)> = ctx.predefined_args.clone();
    for (k, v) in &metas {
        let Some(v) = v else { continue };
        let Ok(e) = lexer.process_word(v, &|n| latest(&defaults, n)) else {
            continue;
        };
        defaults.push((k.clone(), e.result));
    }
    let lookup = |n: &str| latest(&defaults, n);
    let declared: BTreeSet<&str> = metas
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(ctx.predefined_args.iter().map(|(k, _)| k.as_str()))
        .collect();

    let mut seen: Vec<String> = Vec::new();
    for st in &stages {
        let from = st.from;
        if let Some(name) = stage_name(from) {
            if name != name.to_lowercase() {
                out.push(Finding::at(
                    &rules::STAGE_NAME_CASING,
                    from,
                    format!("Stage name '{name}' should be lowercase"),
                ));
            }
            let lower = name.to_lowercase();
            if seen.contains(&lower) {
                out.push(Finding::at(
                    &rules::DUPLICATE_STAGE_NAME,
                    from,
                    format!(
                        "Duplicate stage name {}, stage names should be unique",
                        go_quote(&lower)
                    ),
                ));
            }
            if RESERVED.contains(&lower.as_str()) {
                out.push(Finding::at(
                    &rules::RESERVED_STAGE_NAME,
                    from,
                    format!(
                        "Stage name should not use the same name as reserved stage {}",
                        go_quote(&lower)
                    ),
                ));
            }
            seen.push(lower);
        }

        let Some(base) = from.words().first() else {
            continue;
        };
        let platform = platform_flag(from);
        for word in std::iter::once(base.as_str()).chain(platform) {
            let Ok(e) = lexer.process_word(word, &lookup) else {
                continue;
            };
            for var in e.used.iter().filter(|v| !declared.contains(v.as_str())) {
                let mut msg = format!("FROM argument '{var}' is not declared");
                if let Some(s) = closest_name(var, declared.iter().copied()) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                out.push(Finding::at(&rules::UNDEFINED_ARG_IN_FROM, from, msg));
            }
        }
        if let Ok(e) = lexer.process_word(base, &lookup) {
            if !reference::is_valid(&e.result) {
                out.push(Finding::at(
                    &rules::INVALID_DEFAULT_ARG_IN_FROM,
                    from,
                    format!(
                        "Default value for ARG {base} results in empty or invalid base image name"
                    ),
                ));
            }
        }
        if let Some(p) = platform {
            platform_rules(from, p, out);
        }
    }
}

fn platform_rules(from: &Node, p: &str, out: &mut Vec<Finding>) {
    if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
        out.push(Finding::at(
            &rules::REDUNDANT_TARGET_PLATFORM,
            from,
            format!(
                "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
            ),
        ));
    }
    if !p.contains('$') {
        // A stage named for its platform (`AS build-arm64`) is allowed to pin it.
        let name = stage_name(from).unwrap_or("").to_lowercase();
        let mut parts = p.split('/');
        let os = parts.next().unwrap_or("");
        let arch = parts.next().unwrap_or("");
        let named =
            (!os.is_empty() && name.contains(os)) || (!arch.is_empty() && name.contains(arch));
        if !named {
            out.push(Finding::at(
                &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                from,
                format!(
                    "FROM --platform flag should not use constant value {}",
                    go_quote(p)
                ),
            ));
        }
    }
}
