use super::*;

#[test]
fn lines_spans_and_continuations() {
    let src = "FROM a\n\nRUN echo \\\n  hi\nCMD [\"x\"]\n";
    let df = parse(src).unwrap();
    assert_eq!(df.instructions.len(), 3);
    let run = &df.instructions[1];
    assert_eq!((run.start_line, run.end_line), (3, 4));
    assert_eq!(&src[run.span.clone()], "RUN echo \\\n  hi\n");
    assert_eq!(run.words(), ["echo   hi"]);
    assert!(df.instructions[2].json);
}

#[test]
fn escape_directive_and_comments_in_continuation() {
    let src = "# escape=`\nFROM a\nRUN echo `\n# comment\n  b\n";
    let df = parse(src).unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.directive("escape"), Some("`"));
    assert_eq!(df.instructions[1].words(), ["echo   b"]);
}

#[test]
fn heredocs_are_kept() {
    let src = "FROM a\nRUN <<EOF bash\necho $X\nEOF\nCOPY <<-\"A\" <<B /dst/\n\tone\n\tA\ntwo\nB\nUSER x\n";
    let df = parse(src).unwrap();
    let run = &df.instructions[1];
    assert_eq!(run.heredocs.len(), 1);
    assert_eq!(run.heredocs[0].content, "echo $X\n");
    assert!(run.heredocs[0].expand);
    assert_eq!((run.start_line, run.end_line), (2, 4));
    let copy = &df.instructions[2];
    assert_eq!(copy.heredocs.len(), 2);
    assert!(!copy.heredocs[0].expand && copy.heredocs[0].chomp);
    assert_eq!(copy.heredocs[0].body(), "one\n");
    assert_eq!(copy.heredocs[1].content, "two\n");
    assert_eq!(df.instructions[3].start_line, 10);
}

#[test]
fn errors_carry_lines() {
    let e = parse("FROM a\nENV X\n").unwrap_err();
    assert_eq!(e.start_line, 2);
    assert!(e.message.contains("ENV must have two arguments"));
    let e = parse("FROM a\nRUN <<EOF\nno end\n").unwrap_err();
    assert!(e.message.contains("unterminated heredoc"));
    assert!(parse("# just a comment\n\n").is_err());
    let e = parse("# escape=x\nFROM a\n").unwrap_err();
    assert!(e.message.contains("invalid escape token"));
}

#[test]
fn mixed_case_keywords_and_flags() {
    let df =
        parse("from a AS b\nrUn --mount=type=cache,target=/c --mount=type=tmpfs,target=/t make\n")
            .unwrap();
    assert_eq!(df.instructions[1].name(), "run");
    assert_eq!(df.instructions[1].flags.len(), 2);
    assert_eq!(df.instructions[0].words(), ["a", "AS", "b"]);
}
