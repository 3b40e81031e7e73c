//! Typed instructions from the AST: flags parsed and validated, arguments checked. Values
//! are kept as written; variable expansion happens during lowering, where the scope is known.

mod copy;
mod duration;
mod flags;
mod health;
mod mount;
mod suggest;

pub use duration::parse_duration_ns;
pub use mount::{parse_mount, MountType, RunMount, Sharing};

use flags::{FlagKind, Flags};

/// The candidate closest to `word`, when it is a plausible typo of it.
pub fn closest_name<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    suggest::closest(word, candidates)
}

use crate::parser::{self, Args, Dockerfile, Heredoc, Node};

/// An instruction that could not be understood, with its lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {start_line}: {message}")]
pub struct InstructionError {
    pub message: String,
    pub start_line: usize,
    pub end_line: usize,
}

/// A command line of RUN/CMD/ENTRYPOINT/HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdLine {
    /// Shell form: one element (the text); exec form: the JSON array.
    pub args: Vec<String>,
    /// Shell form: run through the current SHELL.
    pub prepend_shell: bool,
    /// Heredoc bodies attached to the instruction.
    pub files: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub key: String,
    /// The default, unexpanded; `None` = declared without a value.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    /// Unexpanded, quotes kept (the shell lexer removes them).
    pub value: String,
    /// Legacy `ENV k v` form: the value is taken as one word.
    pub no_delim: bool,
}

/// A COPY/ADD source given as a heredoc (`COPY <<EOF /dst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocSource {
    pub name: String,
    pub data: String,
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyCmd {
    pub sources: Vec<String>,
    pub heredocs: Vec<HeredocSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunCmd {
    pub cmd: CmdLine,
    /// Raw `--mount` values; parse with [`parse_mount`] once variables can be expanded.
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCmd {
    None,
    Check {
        /// `["CMD-SHELL", "x"]` or `["CMD", …]`.
        test: Vec<String>,
        interval: i64,
        timeout: i64,
        start_period: i64,
        start_interval: i64,
        retries: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Arg(Vec<ArgDecl>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Run(RunCmd),
    Copy(CopyCmd),
    Add(CopyCmd),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(HealthCmd),
    Maintainer(String),
    /// The trigger expression as written (`RUN make`).
    Onbuild(String),
}

/// A command and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub command: Command,
    /// The instruction's logical line, for progress names and history.
    pub original: String,
    pub start_line: usize,
    pub end_line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    /// The base as written (unexpanded): image, `scratch`, stage name, `$ARG`.
    pub base: String,
    pub platform: Option<String>,
    pub original: String,
    pub start_line: usize,
    pub end_line: usize,
    pub commands: Vec<Instruction>,
}

/// Stages and the ARGs before the first FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    pub meta_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

pub const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

pub(crate) fn err(node: &Node, message: impl Into<String>) -> InstructionError {
    InstructionError {
        message: message.into(),
        start_line: node.start_line,
        end_line: node.end_line,
    }
}

/// Splits a parsed Dockerfile into stages of typed instructions.
pub fn parse_stages(df: &Dockerfile) -> Result<Stages, InstructionError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &df.instructions {
        if node.name() == "from" {
            stages.push(parse_from(node)?);
            continue;
        }
        let ins = parse_instruction(node)?;
        match stages.last_mut() {
            Some(stage) => stage.commands.push(ins),
            None => match ins.command {
                Command::Arg(_) => meta_args.push(ins),
                _ => {
                    return Err(err(
                        node,
                        format!(
                            "{} instruction before the first FROM: only ARG may come before FROM",
                            node.keyword.to_uppercase()
                        ),
                    ))
                }
            },
        }
    }
    if stages.is_empty() {
        return Err(InstructionError {
            message: "the Dockerfile has no FROM instruction".into(),
            start_line: 1,
            end_line: 1,
        });
    }
    Ok(Stages { meta_args, stages })
}

fn valid_stage_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_from(node: &Node) -> Result<Stage, InstructionError> {
    let flags = Flags::new(&[("platform", FlagKind::String)])
        .parse(&node.flags)
        .map_err(|e| err(node, e))?;
    let args = node.words();
    let name = match args {
        [_] => None,
        [_, as_kw, n] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = n.to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(err(
                    node,
                    format!(
                        "invalid name for build stage: {}, name can't start with a number or contain symbols",
                        parser::go_quote(n)
                    ),
                ));
            }
            Some(lower)
        }
        _ => return Err(err(node, "FROM requires either one or three arguments")),
    };
    Ok(Stage {
        name,
        base: args[0].clone(),
        platform: flags.string("platform"),
        original: node.original.trim().to_string(),
        start_line: node.start_line,
        end_line: node.end_line,
        commands: Vec::new(),
    })
}

pub(crate) fn no_flags(node: &Node) -> Result<(), InstructionError> {
    Flags::new(&[])
        .parse(&node.flags)
        .map_err(|e| err(node, e))?;
    Ok(())
}

fn exactly_one(node: &Node) -> Result<String, InstructionError> {
    match node.words() {
        [one] => Ok(one.clone()),
        _ => Err(err(
            node,
            format!(
                "{} requires exactly one argument",
                node.keyword.to_uppercase()
            ),
        )),
    }
}

pub(crate) fn at_least_one(node: &Node) -> Result<&[String], InstructionError> {
    match node.words() {
        [] => Err(err(
            node,
            format!(
                "{} requires at least one argument",
                node.keyword.to_uppercase()
            ),
        )),
        w => Ok(w),
    }
}

fn cmd_line(node: &Node) -> CmdLine {
    CmdLine {
        args: node.words().to_vec(),
        prepend_shell: !node.json,
        files: node.heredocs.clone(),
    }
}

fn key_values(node: &Node, what: &str) -> Result<Vec<KeyValue>, InstructionError> {
    let Args::KeyValues(kvs) = &node.args else {
        return Err(err(node, format!("{what} requires at least one argument")));
    };
    kvs.iter()
        .map(|kv| {
            if kv.key.is_empty() {
                Err(err(node, format!("{what} names can not be blank")))
            } else {
                Ok(KeyValue {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    no_delim: kv.sep.is_empty(),
                })
            }
        })
        .collect()
}

/// Parses one non-FROM instruction.
pub fn parse_instruction(node: &Node) -> Result<Instruction, InstructionError> {
    let command = parse_command(node)?;
    Ok(Instruction {
        command,
        original: node.original.trim().to_string(),
        start_line: node.start_line,
        end_line: node.end_line,
    })
}

fn parse_command(node: &Node) -> Result<Command, InstructionError> {
    let name = node.name();
    Ok(match name.as_str() {
        "env" => {
            no_flags(node)?;
            Command::Env(key_values(node, "ENV")?)
        }
        "label" => {
            no_flags(node)?;
            Command::Label(key_values(node, "LABEL")?)
        }
        "maintainer" => {
            no_flags(node)?;
            Command::Maintainer(exactly_one(node)?)
        }
        "arg" => {
            no_flags(node)?;
            let decls = at_least_one(node)?
                .iter()
                .map(|a| match a.split_once('=') {
                    Some(("", _)) => Err(err(node, "ARG names can not be blank")),
                    Some((k, v)) => Ok(ArgDecl {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    }),
                    None => Ok(ArgDecl {
                        key: a.clone(),
                        value: None,
                    }),
                })
                .collect::<Result<_, _>>()?;
            Command::Arg(decls)
        }
        "copy" | "add" => Command::from_copy(node, name == "add")?,
        "run" => {
            let f = Flags::new(&[
                ("mount", FlagKind::Strings),
                ("network", FlagKind::String),
                ("security", FlagKind::String),
            ])
            .parse(&node.flags)
            .map_err(|e| err(node, e))?;
            let mounts = f.strings("mount");
            for m in &mounts {
                parse_mount(m, &|v| Ok(v.to_string()))
                    .map_err(|e| err(node, format!("invalid --mount {m}: {e}")))?;
            }
            let network = f.string("network");
            if let Some(n) = &network {
                if !matches!(n.as_str(), "default" | "none" | "host") {
                    return Err(err(node, format!("unsupported network mode {n:?}")));
                }
            }
            let security = f.string("security");
            if let Some(s) = &security {
                if !matches!(s.as_str(), "sandbox" | "insecure") {
                    return Err(err(node, format!("unsupported security mode {s:?}")));
                }
            }
            Command::Run(RunCmd {
                cmd: cmd_line(node),
                mounts,
                network,
                security,
            })
        }
        "cmd" => {
            no_flags(node)?;
            Command::Cmd(cmd_line(node))
        }
        "entrypoint" => {
            no_flags(node)?;
            Command::Entrypoint(cmd_line(node))
        }
        "shell" => {
            no_flags(node)?;
            let w = node.words();
            if w.is_empty() {
                return Err(err(node, "SHELL requires at least one argument"));
            }
            if !node.json {
                return Err(err(node, "SHELL requires the arguments to be in JSON form"));
            }
            Command::Shell(w.to_vec())
        }
        "workdir" => {
            no_flags(node)?;
            Command::Workdir(exactly_one(node)?)
        }
        "user" => {
            no_flags(node)?;
            Command::User(exactly_one(node)?)
        }
        "stopsignal" => {
            no_flags(node)?;
            Command::StopSignal(exactly_one(node)?)
        }
        "expose" => {
            no_flags(node)?;
            let mut ports = at_least_one(node)?.to_vec();
            ports.sort();
            Command::Expose(ports)
        }
        "volume" => {
            no_flags(node)?;
            let mut vols = Vec::new();
            for v in at_least_one(node)? {
                let v = v.trim();
                if v.is_empty() {
                    return Err(err(node, "VOLUME specified can not be an empty string"));
                }
                vols.push(v.to_string());
            }
            Command::Volume(vols)
        }
        "healthcheck" => health::parse_healthcheck(node)?,
        "onbuild" => {
            no_flags(node)?;
            let Args::Sub(sub) = &node.args else {
                return Err(err(node, "ONBUILD requires at least one argument"));
            };
            match sub.name().as_str() {
                "onbuild" => {
                    return Err(err(
                        node,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ))
                }
                "maintainer" | "from" => {
                    return Err(err(
                        node,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            sub.keyword.to_uppercase()
                        ),
                    ))
                }
                _ => {}
            }
            // Validate the trigger now, so mistakes surface where they are written.
            parse_command(sub)?;
            let mut expr = strip_keyword(node.original.trim(), "onbuild").to_string();
            for h in &node.heredocs {
                expr.push('\n');
                expr.push_str(&h.content);
                expr.push_str(&h.name);
            }
            Command::Onbuild(expr)
        }
        "from" => return Err(err(node, "FROM is handled by parse_stages")),
        _ => {
            let mut msg = format!("unknown instruction: {}", node.keyword);
            if let Some(s) = suggest::closest(&name, INSTRUCTIONS) {
                msg.push_str(&format!(" (did you mean {}?)", s.to_uppercase()));
            }
            return Err(err(node, msg));
        }
    })
}

/// `ONBUILD  RUN x` → `RUN x` (case-insensitive keyword).
fn strip_keyword<'a>(s: &'a str, kw: &str) -> &'a str {
    match s.get(..kw.len()) {
        Some(head) if head.eq_ignore_ascii_case(kw) => s[kw.len()..].trim_start(),
        _ => s,
    }
}

#[cfg(test)]
mod tests;
