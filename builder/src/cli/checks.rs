//! Printing build-check findings: after a build (one line and the excerpt each), and as the
//! whole result of `kiln build --check` (buildx's check report).

use kiln_frontend::lint::CheckWarning;

/// After a build, or before the error of a build that `error=true` failed.
pub fn print_build_warnings(warnings: &[CheckWarning]) {
    if warnings.is_empty() {
        return;
    }
    let n = warnings.len();
    eprintln!("{n} warning{} found:", if n == 1 { "" } else { "s" });
    for w in warnings {
        eprintln!("WARNING: {w}\n{}", w.location);
    }
}

/// The report of `kiln build --check`.
pub fn check_report(warnings: &[CheckWarning]) -> String {
    let mut out = match warnings.len() {
        0 => return "Check complete, no warnings found.\n".into(),
        1 => "Check complete, 1 warning has been found!\n".to_string(),
        n => format!("Check complete, {n} warnings have been found!\n"),
    };
    for w in warnings {
        out.push_str(&format!(
            "\nWARNING: {} - {}\n{}\n{}\n",
            w.rule.name,
            w.rule.url(),
            w.message,
            w.location
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_frontend::lint::{rules, Finding};

    #[test]
    fn report_names_rule_url_message_and_lines() {
        let src = "FROM a\nCMD x\n";
        let w = CheckWarning::new(
            Finding {
                rule: &rules::JSON_ARGS_RECOMMENDED,
                message: "JSON arguments recommended for CMD".into(),
                start_line: 2,
                end_line: 2,
            },
            "Dockerfile",
            src,
        );
        let r = check_report(std::slice::from_ref(&w));
        assert!(r.starts_with("Check complete, 1 warning has been found!\n\nWARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\nJSON arguments recommended for CMD\nDockerfile:2\n"), "{r}");
        assert!(r.contains(">>> CMD x"));
        assert_eq!(check_report(&[]), "Check complete, no warnings found.\n");
    }
}
