//! COPY / ADD: flags, sources (paths and heredocs) and destination.

use super::flags::{FlagKind, Flags};
use super::{err, Command, CopyCmd, HeredocSource, InstructionError};
use crate::parser::{self, Node};

impl Command {
    pub(super) fn from_copy(node: &Node, add: bool) -> Result<Command, InstructionError> {
        let what = if add { "ADD" } else { "COPY" };
        let spec: &[(&'static str, FlagKind)] = if add {
            &[
                ("chown", FlagKind::String),
                ("chmod", FlagKind::String),
                ("link", FlagKind::Bool),
                ("keep-git-dir", FlagKind::Bool),
                ("checksum", FlagKind::String),
                ("unpack", FlagKind::Bool),
                ("exclude", FlagKind::Strings),
            ]
        } else {
            &[
                ("chown", FlagKind::String),
                ("from", FlagKind::String),
                ("chmod", FlagKind::String),
                ("link", FlagKind::Bool),
                ("exclude", FlagKind::Strings),
                ("parents", FlagKind::Bool),
            ]
        };
        let words = node.words();
        if words.len() < 2 {
            return Err(err(
                node,
                format!("{what} requires at least two arguments, but only one was provided. Destination could not be determined"),
            ));
        }
        let f = Flags::new(spec)
            .parse(&node.flags)
            .map_err(|e| err(node, e))?;
        let (dest, srcs) = words.split_last().unwrap_or((&words[0], &[]));
        if parser::parse_heredoc_word(dest).is_some() {
            return Err(err(
                node,
                format!("{what} cannot accept a heredoc as a destination"),
            ));
        }
        let mut sources = Vec::new();
        let mut heredocs = Vec::new();
        for s in srcs {
            match parser::parse_heredoc_word(s) {
                Some(h) => {
                    let found = node.heredocs.iter().find(|d| d.name == h.name);
                    let data = found.map(|d| d.body()).unwrap_or_default();
                    heredocs.push(HeredocSource {
                        name: h.name,
                        data,
                        expand: h.expand,
                    });
                }
                None => sources.push(s.clone()),
            }
        }
        let cmd = CopyCmd {
            sources,
            heredocs,
            dest: dest.clone(),
            from: f.string("from"),
            chown: f.string("chown"),
            chmod: f.string("chmod"),
            link: f.bool("link"),
            parents: f.bool("parents"),
            excludes: f.strings("exclude"),
            checksum: f.string("checksum"),
            keep_git_dir: f.bool_opt("keep-git-dir"),
            unpack: f.bool_opt("unpack"),
        };
        Ok(if add {
            Command::Add(cmd)
        } else {
            Command::Copy(cmd)
        })
    }
}
