//! ADD of remote sources: an http(s) URL becomes an HTTP source node holding one file, a git
//! repository a git source node holding its checkout; the ADD copies from them
//! (BuildKit's `dispatchCopy`).

use kiln_solver::llb::{Input, NodeMeta, Op, SourceOp};

use super::{FrontendError, Lowering};
use crate::instructions::Instruction;
use crate::remote::git::clean_subdir;
use crate::remote::{parse_http_checksum, url_file_name, GitRef};

impl Lowering<'_> {
    /// The HTTP source of `ADD <url>` and the path of its file inside it.
    pub(crate) fn http_source(
        &mut self,
        ins: &Instruction,
        url: &str,
        checksum: Option<&str>,
        description: &str,
    ) -> Result<(Input, String), FrontendError> {
        let checksum = checksum
            .map(parse_http_checksum)
            .transpose()
            .map_err(|message| self.invalid(ins, message))?;
        let filename = url_file_name(url);
        let input = self.def.add(
            Op::Source(SourceOp::Http {
                url: url.to_string(),
                filename: filename.clone(),
                checksum,
            }),
            vec![],
            source_meta(ins, description),
        );
        Ok((input, format!("/{filename}")))
    }

    /// The git source of `ADD <repository>`; `keep_flag` is `--keep-git-dir`, `checksum`
    /// `--checksum` (both may also come from the URL's query, and must then agree).
    pub(crate) fn git_source(
        &mut self,
        ins: &Instruction,
        g: &GitRef,
        keep_flag: Option<bool>,
        checksum: Option<&str>,
        description: &str,
    ) -> Result<Input, FrontendError> {
        let keep = match (keep_flag, g.keep_git_dir) {
            (Some(a), Some(b)) if a != b => {
                return Err(self.invalid(ins, "inconsistent keep-git-dir configuration".into()))
            }
            (a, b) => b.or(a).unwrap_or(false),
        };
        let checksum = match (checksum, g.checksum.as_deref()) {
            (Some(a), Some(b)) if a != b => {
                return Err(self.invalid(ins, format!("checksum mismatch {a:?} != {b:?}")))
            }
            (a, b) => b.or(a),
        };
        if let Some(c) = checksum {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(self.invalid(
                    ins,
                    format!("invalid checksum {c} for Git URL, expected hex commit hash"),
                ));
            }
        }
        if g.mtime.as_deref() == Some("commit") || g.fetch_by_commit {
            return Err(FrontendError::Unsupported {
                location: self.ins_loc(ins),
                message: "the git URL options mtime=commit and fetch-by-commit".into(),
            });
        }
        if let Some(r) = g.reference.as_deref().filter(|r| r.starts_with('-')) {
            return Err(self.invalid(ins, format!("invalid git ref {r:?}")));
        }
        let subdir = g
            .subdir
            .as_deref()
            .map(clean_subdir)
            .filter(|s| !s.is_empty());
        Ok(self.def.add(
            Op::Source(SourceOp::Git {
                remote: g.remote.clone(),
                reference: g.reference.clone(),
                subdir,
                keep_git_dir: keep,
                checksum: checksum.map(|c| c.to_ascii_lowercase()),
            }),
            vec![],
            source_meta(ins, description),
        ))
    }

    fn invalid(&self, ins: &Instruction, message: String) -> FrontendError {
        FrontendError::Invalid {
            location: self.ins_loc(ins),
            message,
        }
    }
}

/// Named as the ADD itself (as BuildKit names them), with its lines so that a failed
/// download points at the instruction.
fn source_meta(ins: &Instruction, description: &str) -> NodeMeta {
    NodeMeta {
        description: description.to_string(),
        lines: Some((ins.start_line, ins.end_line)),
        ignore_cache: false,
    }
}
