//! Build checks (BuildKit's Dockerfile linter): pure functions over the parsed Dockerfile
//! that report style and correctness problems without failing the parse. Each finding names
//! its rule, carries BuildKit's message and the lines it is about; [`CheckConfig`] (the
//! `# check=` directive or `BUILDKIT_DOCKERFILE_CHECK`) skips rules or turns findings into an
//! error.

mod casing;
mod commands;
mod config;
mod reference;
pub mod rules;
mod secrets;
mod stages;
#[cfg(test)]
mod tests;

use std::fmt;

pub use config::{CheckConfig, CheckConfigError, CHECK_BUILD_ARG};
pub use rules::Rule;

use crate::lower::SourceLocation;
use crate::parser::{Dockerfile, Node};

/// One finding, before it is tied to a file: the rule, BuildKit's message, the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static Rule,
    pub message: String,
    /// 1-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
}

impl Finding {
    pub(crate) fn at(rule: &'static Rule, node: &Node, message: String) -> Finding {
        Finding {
            rule,
            message,
            start_line: node.start_line,
            end_line: node.end_line,
        }
    }
}

/// A finding with its place in the Dockerfile (file, line, excerpt), as a build reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckWarning {
    pub rule: &'static Rule,
    pub message: String,
    pub location: SourceLocation,
}

impl CheckWarning {
    pub fn new(f: Finding, filename: &str, source: &str) -> CheckWarning {
        CheckWarning {
            location: SourceLocation::new(filename, source, f.start_line, f.end_line),
            rule: f.rule,
            message: f.message,
        }
    }
}

/// buildx's one-line form: `JSONArgsRecommended - JSON arguments … (line 3)`.
impl fmt::Display for CheckWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} - {} (line {})",
            self.rule.name, self.message, self.location.start_line
        )
    }
}

/// What the checks know besides the Dockerfile: the predefined ARGs (`TARGETPLATFORM`, …)
/// with their values for this build.
#[derive(Debug, Clone, Default)]
pub struct CheckContext {
    pub predefined_args: Vec<(String, String)>,
}

/// Runs every rule over `df` and keeps the findings `config` does not skip, in line order.
pub fn run(df: &Dockerfile, ctx: &CheckContext, config: &CheckConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    // The parser's only warning is an empty continuation line.
    for w in &df.warnings {
        out.push(Finding {
            rule: &rules::NO_EMPTY_CONTINUATION,
            message: "Empty continuation line".into(),
            start_line: w.line,
            end_line: w.line,
        });
    }
    casing::check(df, &mut out);
    stages::check(df, ctx, &mut out);
    commands::check(df, &mut out);
    secrets::check(df, &mut out);
    out.retain(|f| !config.is_skipped(f.rule.name));
    // Stable: findings on one line keep the order the rules ran in.
    out.sort_by_key(|f| f.start_line);
    out
}

/// BuildKit's error for `error=true`: the rules that fired, each once, in order.
pub fn violation_message(findings: &[CheckWarning]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for f in findings {
        if !names.contains(&f.rule.name) {
            names.push(f.rule.name);
        }
    }
    format!("lint violation found for rules: {}", names.join(", "))
}

/// A Dockerfile split at its FROM lines: the ARGs before the first FROM, then each stage.
pub(crate) struct StageNodes<'a> {
    pub(crate) from: &'a Node,
    pub(crate) commands: &'a [Node],
}

pub(crate) fn split_stages(df: &Dockerfile) -> (&[Node], Vec<StageNodes<'_>>) {
    let nodes = &df.instructions[..];
    let froms: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.name() == "from")
        .map(|(i, _)| i)
        .collect();
    let meta_end = froms.first().copied().unwrap_or(nodes.len());
    let stages = froms
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let end = froms.get(k + 1).copied().unwrap_or(nodes.len());
            StageNodes {
                from: &nodes[i],
                commands: &nodes[i + 1..end],
            }
        })
        .collect();
    (&nodes[..meta_end], stages)
}

/// The `AS` name of a FROM node, as written.
pub(crate) fn stage_name(from: &Node) -> Option<&str> {
    match from.words() {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name),
        _ => None,
    }
}
