use super::*;

fn stages(src: &str) -> Result<Stages, InstructionError> {
    parse_stages(&crate::parser::parse(src).unwrap())
}

fn cmds(src: &str) -> Vec<Command> {
    stages(src).unwrap().stages[0]
        .commands
        .iter()
        .map(|i| i.command.clone())
        .collect()
}

#[test]
fn from_and_meta_args() {
    let s =
        stages("ARG V=1\nFROM --platform=$BUILDPLATFORM img:$V AS Build\nFROM build\n").unwrap();
    assert_eq!(s.meta_args.len(), 1);
    assert_eq!(s.stages[0].name.as_deref(), Some("build"));
    assert_eq!(s.stages[0].platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(s.stages[0].base, "img:$V");
    assert_eq!(s.stages[1].name, None);
    assert!(stages("FROM a AS 1x\n").is_err());
    assert!(stages("FROM a b\n").is_err());
    assert!(stages("RUN x\nFROM a\n").is_err());
}

#[test]
fn unknown_instruction_suggests() {
    let e = stages("FROM a\nRUNN echo\n").unwrap_err();
    assert_eq!(e.start_line, 2);
    assert!(
        e.message.contains("unknown instruction: RUNN"),
        "{}",
        e.message
    );
    assert!(e.message.contains("RUN"), "{}", e.message);
}

#[test]
fn copy_flags() {
    let c = cmds(
        "FROM a\nCOPY --from=b --chown=1:2 --chmod=755 --link --exclude=*.md --exclude=x a b /d/\n",
    );
    let Command::Copy(c) = &c[0] else { panic!() };
    assert_eq!(c.sources, vec!["a", "b"]);
    assert_eq!(c.dest, "/d/");
    assert_eq!(c.from.as_deref(), Some("b"));
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert_eq!(c.chmod.as_deref(), Some("755"));
    assert!(c.link);
    assert_eq!(c.excludes, vec!["*.md", "x"]);
    let e = stages("FROM a\nCOPY --frm=b x y\n").unwrap_err();
    assert!(e.message.contains("unknown flag: --frm"), "{}", e.message);
    assert!(stages("FROM a\nADD --from=b x y\n").is_err());
    assert!(stages("FROM a\nCOPY x\n").is_err());
    let c = cmds("FROM a\nADD --checksum=sha256:00 --unpack=false --keep-git-dir x y\n");
    let Command::Add(c) = &c[0] else { panic!() };
    assert_eq!(c.unpack, Some(false));
    assert_eq!(c.keep_git_dir, Some(true));
}

#[test]
fn copy_heredoc_source() {
    let c = cmds("FROM a\nCOPY <<EOF /x\nhello\nEOF\n");
    let Command::Copy(c) = &c[0] else { panic!() };
    assert!(c.sources.is_empty());
    assert_eq!(c.heredocs[0].data, "hello\n");
}

#[test]
fn run_flags_and_forms() {
    let c = cmds("FROM a\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none make\nRUN [\"a\",\"b\"]\n");
    let Command::Run(r) = &c[0] else { panic!() };
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(r.network.as_deref(), Some("none"));
    assert!(r.cmd.prepend_shell);
    assert_eq!(r.cmd.args, vec!["make"]);
    let Command::Run(r) = &c[1] else { panic!() };
    assert!(!r.cmd.prepend_shell);
    assert!(stages("FROM a\nRUN --mount=type=bogus x\n").is_err());
    assert!(stages("FROM a\nRUN --network=foo x\n").is_err());
}

#[test]
fn metadata_instructions() {
    let c = cmds("FROM a\nENV A=1 B=\"2 3\"\nENV C d e\nARG X Y=2\nLABEL k=v\nEXPOSE 80 443/tcp\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\nSHELL [\"/bin/bash\", \"-c\"]\nSTOPSIGNAL SIGKILL\nMAINTAINER me\nONBUILD RUN echo hi\n");
    assert_eq!(
        c[0],
        Command::Env(vec![
            KeyValue {
                key: "A".into(),
                value: "1".into(),
                no_delim: false
            },
            KeyValue {
                key: "B".into(),
                value: "\"2 3\"".into(),
                no_delim: false
            },
        ])
    );
    assert!(matches!(&c[1], Command::Env(kv) if kv[0].no_delim && kv[0].value == "d e"));
    assert!(
        matches!(&c[2], Command::Arg(a) if a[0].value.is_none() && a[1].value.as_deref() == Some("2"))
    );
    assert!(matches!(&c[5], Command::Volume(v) if v == &["/a", "/b"]));
    assert!(matches!(&c[6], Command::Volume(v) if v == &["/c", "/d"]));
    assert!(matches!(&c[10], Command::Onbuild(e) if e == "RUN echo hi"));
    assert!(stages("FROM a\nSHELL /bin/bash\n").is_err());
    assert!(stages("FROM a\nONBUILD FROM x\n").is_err());
    assert!(stages("FROM a\nONBUILD ONBUILD RUN x\n").is_err());
    assert!(stages("FROM a\nWORKDIR\n").is_err());
}

#[test]
fn healthcheck() {
    let c = cmds("FROM a\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f x\nHEALTHCHECK NONE\nHEALTHCHECK CMD [\"a\"]\n");
    assert_eq!(
        c[0],
        Command::Healthcheck(HealthCmd::Check {
            test: vec!["CMD-SHELL".into(), "curl -f x".into()],
            interval: 5_000_000_000,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 3,
        })
    );
    assert_eq!(c[1], Command::Healthcheck(HealthCmd::None));
    assert!(
        matches!(&c[2], Command::Healthcheck(HealthCmd::Check { test, .. }) if test == &["CMD", "a"])
    );
    assert!(stages("FROM a\nHEALTHCHECK NONE x\n").is_err());
    assert!(stages("FROM a\nHEALTHCHECK CMD\n").is_err());
    assert!(stages("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").is_err());
    assert!(stages("FROM a\nHEALTHCHECK --interval=10us CMD x\n").is_err());
}
