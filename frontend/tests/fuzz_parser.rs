//! Fuzzing the Dockerfile parser and everything pure behind it (stage split, build checks,
//! lowering): arbitrary text and generated Dockerfiles (directives, continuations, comments,
//! heredocs, JSON forms, flags, variables) must never panic, and results must be consistent
//! with the input. `KILN_FUZZ_CASES=200000 cargo test -p kiln-frontend --test fuzz_parser`
//! runs it longer.

mod common;

use std::collections::BTreeMap;

use async_trait::async_trait;
use kiln_frontend::lint::{self, CheckConfig, CheckContext};
use kiln_frontend::{parser, BuildRequest, ImageConfig, ImageMetaResolver, ResolvedImage};
use kiln_solver::llb::Platform;
use proptest::prelude::*;

/// Every image is an empty one: lowering needs configs, not registries.
struct NoImages;

#[async_trait]
impl ImageMetaResolver for NoImages {
    async fn resolve_image_config(
        &self,
        reference: &str,
        _platform: &Platform,
    ) -> Result<ResolvedImage, String> {
        if reference.contains("missing") {
            return Err("not found".into());
        }
        Ok(ResolvedImage {
            reference: format!("{reference}@sha256:00"),
            config: ImageConfig::default(),
        })
    }
}

/// Runs the whole frontend over `src`, asserting only what must hold for any input.
fn exercise(src: &str) {
    let lines = src.split('\n').count();
    match parser::parse(src) {
        Err(e) => {
            assert!(
                e.start_line >= 1 && e.start_line <= lines && e.end_line >= e.start_line,
                "error {e:?} outside the {lines} lines of the input"
            );
        }
        Ok(df) => {
            let body = src.strip_prefix('\u{feff}').unwrap_or(src);
            for n in &df.instructions {
                assert!(n.start_line >= 1 && n.start_line <= n.end_line && n.end_line <= lines);
                assert!(body.get(n.span.clone()).is_some(), "bad span {:?}", n.span);
            }
            let _ = kiln_frontend::instructions::parse_stages(&df);
            let _ = lint::run(&df, &CheckContext::default(), &CheckConfig::default());
        }
    }
    let req = BuildRequest {
        dockerfile: src.to_string(),
        filename: "Dockerfile".into(),
        build_args: BTreeMap::from([("A".to_string(), "x y".to_string())]),
        target: None,
        platform: Platform::linux_amd64(),
        build_platform: Platform::linux_amd64(),
        dockerignore: Vec::new(),
        entitlements: Default::default(),
    };
    let _ = kiln_frontend::check(&req);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let _ = rt.block_on(kiln_frontend::lower(&req, &NoImages));
}

/// One keyword, in some casing (including typos of real ones).
fn keyword() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "FROM",
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "COPY",
        "ADD",
        "ENV",
        "ARG",
        "LABEL",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "VOLUME",
        "SHELL",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "MAINTAINER",
        "ONBUILD",
        "FORM",
        "RUNN",
    ]);
    (words, any::<u8>()).prop_map(|(w, c)| match c % 3 {
        0 => w.to_string(),
        1 => w.to_lowercase(),
        _ => {
            let mut s = w.to_lowercase();
            s[..1].make_ascii_uppercase();
            s
        }
    })
}

/// A fragment of an argument: the characters that mean something to the parser or lexer.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_./=:-]{1,8}",
        Just(" ".to_string()),
        Just("\t".to_string()),
        prop::sample::select(vec![
            "$A",
            "${A}",
            "${A:-d}",
            "${A:+x}",
            "${A?err}",
            "${A#*.}",
            "${A%%/*}",
            "${A/a/b}",
            "${",
            "$",
            "\"",
            "'",
            "\\",
            "`",
            "\\\"",
            "=",
            "[",
            "]",
            "[\"a\", \"b\"]",
            "[\"x\"",
            "--mount=type=cache,target=/c",
            "--from=b",
            "--chown=1:1",
            "--platform=$P",
            "--network=none",
            "--interval=5s",
            "AS",
            "as",
            "b",
            "NONE",
            "CMD",
            "<<EOF",
            "<<-\"EOF\"",
            "<<'E2'",
            "3<<EOF",
            "#",
            "é",
            "\u{0}",
            "\r",
        ])
        .prop_map(str::to_string),
    ]
}

/// One physical line, or a group of lines (a heredoc body with or without its end).
fn line() -> impl Strategy<Value = String> {
    let instruction = (keyword(), prop::collection::vec(fragment(), 0..6))
        .prop_map(|(k, f)| format!("{k} {}", f.concat()));
    prop_oneof![
        6 => instruction,
        1 => prop::sample::select(vec![
            "# escape=`", "# escape=\\", "# syntax=docker/dockerfile:1", "#check=skip=all;error=true",
            "# check=error=maybe", "# escape=x", "# comment", "", "   ", "\\", "`",
            "EOF", "\tEOF", "E2", "FROM b AS b", "FROM missing", "FROM scratch",
        ]).prop_map(str::to_string),
        1 => prop::collection::vec(fragment(), 0..5).prop_map(|f| format!("  {} \\", f.concat())),
        1 => prop::collection::vec(fragment(), 0..5).prop_map(|f| format!("{} `", f.concat())),
    ]
}

/// A generated Dockerfile: usually starting with FROM, so lowering gets to dispatch.
fn dockerfile() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(line(), 0..14),
        any::<bool>(),
        prop::sample::select(vec!["\n", "\r\n"]),
    )
        .prop_map(|(lines, from_first, nl)| {
            let mut out = String::new();
            if from_first {
                out.push_str("FROM base AS b");
                out.push_str(nl);
            }
            out.push_str(&lines.join(nl));
            out
        })
}

/// A valid instruction with a generated argument: these get past validation, so lowering
/// (expansion, COPY/RUN flags, heredocs, ONBUILD, stage references) runs on them.
fn valid_instruction() -> impl Strategy<Value = String> {
    let templates = prop::sample::select(vec![
        "RUN echo {}",
        "RUN --mount=type=bind,from=b,target=/m{} true",
        "ENV K={}",
        "ENV K {}",
        "ARG A={}",
        "ARG {}",
        "LABEL l={}",
        "WORKDIR {}",
        "USER {}",
        "CMD {}",
        "ENTRYPOINT [\"{}\"]",
        "COPY --from=b {} /d/",
        "ADD --chmod=644 a{} /d",
        "COPY --chown={} a /a",
        "EXPOSE {}",
        "VOLUME {}",
        "STOPSIGNAL {}",
        "HEALTHCHECK --interval={} CMD true",
        "ONBUILD RUN {}",
        "RUN <<EOF\n{}\nEOF",
        "COPY <<-EOF /f\n\t{}\n\tEOF",
        "RUN cat <<A <<\"B\"\n{}\nA\n$A\nB",
        "FROM {} AS c",
        "FROM b",
        "SHELL [\"/bin/sh\", \"-c\"]",
    ]);
    let arg =
        prop::collection::vec(fragment(), 1..4).prop_map(|f| f.concat().replace(['\n', '\r'], ""));
    (templates, arg).prop_map(|(t, a)| t.replace("{}", &a))
}

proptest! {
    #![proptest_config(common::config(4000))]

    #[test]
    fn fuzz_parser_arbitrary_text(src in any::<String>()) {
        exercise(&src);
    }

    #[test]
    fn fuzz_parser_parser_alphabet(src in "[A-Za-z \\\\`\n\r\t#=$\"'<>\\-{}\\[\\],:]{0,120}") {
        exercise(&src);
    }

    #[test]
    fn fuzz_parser_valid_instructions(
        global in prop::collection::vec("ARG [A-Z]{1,2}(=[a-z$]{0,4})?", 0..3),
        body in prop::collection::vec(valid_instruction(), 1..8),
    ) {
        let src = format!("{}\nFROM base AS b\n{}\n", global.join("\n"), body.join("\n"));
        exercise(&src);
    }

    #[test]
    fn fuzz_parser_generated_dockerfiles(src in dockerfile()) {
        exercise(&src);
    }
}
