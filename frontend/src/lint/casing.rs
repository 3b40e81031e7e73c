//! Keyword casing: ConsistentInstructionCasing (all keywords upper or all lower, by
//! majority) and FromAsCasing (`AS` cased like its `FROM`).

use super::{rules, Finding};
use crate::parser::Dockerfile;

fn self_consistent(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

pub(super) fn check(df: &Dockerfile, out: &mut Vec<Finding>) {
    let (mut lower, mut upper) = (0usize, 0usize);
    for n in &df.instructions {
        if self_consistent(&n.keyword) {
            if n.keyword == n.keyword.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    // A tie counts as upper case, as in BuildKit.
    let majority_lower = lower > upper;
    for n in &df.instructions {
        let wrong = if majority_lower {
            (n.keyword != n.keyword.to_lowercase()).then_some("lowercase")
        } else {
            (n.keyword != n.keyword.to_uppercase()).then_some("uppercase")
        };
        if let Some(casing) = wrong {
            out.push(Finding::at(
                &rules::CONSISTENT_INSTRUCTION_CASING,
                n,
                format!(
                    "Command '{}' should match the case of the command majority ({casing})",
                    n.keyword
                ),
            ));
        }
        if n.name() == "from" {
            if let [_, as_kw, _] = n.words() {
                // A mixed-case FROM is ConsistentInstructionCasing's finding, not this one's.
                let matches = if n.keyword == n.keyword.to_lowercase() {
                    *as_kw == as_kw.to_lowercase()
                } else {
                    *as_kw == as_kw.to_uppercase()
                };
                if !matches {
                    out.push(Finding::at(
                        &rules::FROM_AS_CASING,
                        n,
                        format!(
                            "'{as_kw}' and '{}' keywords' casing do not match",
                            n.keyword
                        ),
                    ));
                }
            }
        }
    }
}
