use super::*;
use crate::parser::parse;

fn findings(src: &str) -> Vec<(String, String, usize)> {
    let df = parse(src).expect("test Dockerfile parses");
    let ctx = CheckContext {
        predefined_args: vec![
            ("TARGETPLATFORM".into(), "linux/amd64".into()),
            ("BUILDPLATFORM".into(), "linux/amd64".into()),
            ("TARGETARCH".into(), "amd64".into()),
        ],
    };
    run(&df, &ctx, &CheckConfig::default())
        .into_iter()
        .map(|f| (f.rule.name.to_string(), f.message, f.start_line))
        .collect()
}

/// The findings of one rule: `(message, line)`.
fn of(src: &str, rule: &str) -> Vec<(String, usize)> {
    findings(src)
        .into_iter()
        .filter(|(r, _, _)| r == rule)
        .map(|(_, m, l)| (m, l))
        .collect()
}

fn one(msg: &str, line: usize) -> Vec<(String, usize)> {
    vec![(msg.to_string(), line)]
}

#[test]
fn clean_dockerfile_has_no_findings() {
    let src = "ARG BASE=alpine\nFROM $BASE AS build\nWORKDIR /src\nRUN make\nENV A=1\nLABEL x=y\nFROM build\nWORKDIR out\nCMD [\"run\"]\nENTRYPOINT [\"e\"]\n";
    assert_eq!(findings(src), vec![]);
}

#[test]
fn stage_name_casing() {
    assert_eq!(
        of("FROM a AS Build\n", "StageNameCasing"),
        one("Stage name 'Build' should be lowercase", 1)
    );
    assert!(of("FROM a AS build\n", "StageNameCasing").is_empty());
}

#[test]
fn from_as_casing() {
    assert_eq!(
        of("FROM a as b\n", "FromAsCasing"),
        one("'as' and 'FROM' keywords' casing do not match", 1)
    );
    assert_eq!(
        of("from a AS b\n", "FromAsCasing"),
        one("'AS' and 'from' keywords' casing do not match", 1)
    );
    assert!(of("FROM a AS b\nfrom c as d\n", "FromAsCasing").is_empty());
}

#[test]
fn consistent_instruction_casing() {
    let src = "FROM a\nRUN x\nrun y\n";
    assert_eq!(
        of(src, "ConsistentInstructionCasing"),
        one(
            "Command 'run' should match the case of the command majority (uppercase)",
            3
        )
    );
    let src = "from a\nrun x\nRun y\n";
    assert_eq!(
        of(src, "ConsistentInstructionCasing"),
        one(
            "Command 'Run' should match the case of the command majority (lowercase)",
            3
        )
    );
    assert!(of("from a\nrun x\n", "ConsistentInstructionCasing").is_empty());
}

#[test]
fn json_args_recommended() {
    let src = "FROM a\nCMD echo hi\nENTRYPOINT [\"x\"]\nFROM a\nENTRYPOINT run\n";
    assert_eq!(
        of(src, "JSONArgsRecommended"),
        vec![
            ("JSON arguments recommended for CMD to prevent unintended behavior related to OS signals".to_string(), 2),
            ("JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals".to_string(), 5),
        ]
    );
    // An explicit SHELL (also in the base stage) makes shell form a choice.
    let src = "FROM a AS b\nSHELL [\"/bin/bash\", \"-c\"]\nCMD x\nFROM b\nCMD y\n";
    assert!(of(src, "JSONArgsRecommended").is_empty());
}

#[test]
fn maintainer_deprecated() {
    assert_eq!(
        of("FROM a\nMAINTAINER me\n", "MaintainerDeprecated"),
        one(
            "Maintainer instruction is deprecated in favor of using label",
            2
        )
    );
    assert!(of("FROM a\nLABEL maintainer=me\n", "MaintainerDeprecated").is_empty());
}

#[test]
fn legacy_key_value_format() {
    assert_eq!(
        of("FROM a\nENV A b c\n", "LegacyKeyValueFormat"),
        one(
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
            2
        )
    );
    assert_eq!(of("FROM a\nLABEL k v\n", "LegacyKeyValueFormat").len(), 1);
    assert!(of("FROM a\nENV A=b C=d\n", "LegacyKeyValueFormat").is_empty());
}

#[test]
fn workdir_relative_path() {
    assert_eq!(
        of("FROM a\nWORKDIR app\n", "WorkdirRelativePath"),
        one(
            "Relative workdir \"app\" can have unexpected results if the base image changes",
            2
        )
    );
    assert!(of("FROM a\nWORKDIR /app\nWORKDIR sub\n", "WorkdirRelativePath").is_empty());
    assert!(of(
        "FROM a AS b\nWORKDIR /app\nFROM b\nWORKDIR sub\n",
        "WorkdirRelativePath"
    )
    .is_empty());
    assert!(of("FROM a\nWORKDIR $HOME/x\n", "WorkdirRelativePath").is_empty());
}

#[test]
fn duplicate_and_reserved_stage_names() {
    let src = "FROM a AS one\nFROM b AS One\nFROM c AS scratch\n";
    assert_eq!(
        of(src, "DuplicateStageName"),
        one(
            "Duplicate stage name \"one\", stage names should be unique",
            2
        )
    );
    assert_eq!(
        of(src, "ReservedStageName"),
        one(
            "Stage name should not use the same name as reserved stage \"scratch\"",
            3
        )
    );
    assert!(of("FROM a AS one\nFROM b AS two\n", "DuplicateStageName").is_empty());
}

#[test]
fn undefined_arg_in_from() {
    let src = "ARG VERSION\nFROM alpine:${VERSON}\n";
    assert_eq!(
        of(src, "UndefinedArgInFrom"),
        one(
            "FROM argument 'VERSON' is not declared (did you mean VERSION?)",
            2
        )
    );
    assert_eq!(
        of("FROM --platform=$PLAT alpine\n", "UndefinedArgInFrom"),
        one("FROM argument 'PLAT' is not declared", 1)
    );
    assert!(of("ARG V=1\nFROM alpine:$V\n", "UndefinedArgInFrom").is_empty());
    assert!(of(
        "FROM --platform=$BUILDPLATFORM alpine\n",
        "UndefinedArgInFrom"
    )
    .is_empty());
}

#[test]
fn invalid_default_arg_in_from() {
    assert_eq!(
        of("ARG TAG\nFROM alpine:${TAG}\n", "InvalidDefaultArgInFrom"),
        one(
            "Default value for ARG alpine:${TAG} results in empty or invalid base image name",
            2
        )
    );
    assert_eq!(
        of("ARG IMG\nFROM $IMG\n", "InvalidDefaultArgInFrom").len(),
        1
    );
    assert!(of("ARG TAG=3\nFROM alpine:${TAG}\n", "InvalidDefaultArgInFrom").is_empty());
}

#[test]
fn platform_flag_rules() {
    assert_eq!(
        of("FROM --platform=$TARGETPLATFORM a\n", "RedundantTargetPlatform"),
        one(
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
            1
        )
    );
    assert_eq!(
        of(
            "FROM --platform=linux/amd64 a\n",
            "FromPlatformFlagConstDisallowed"
        ),
        one(
            "FROM --platform flag should not use constant value \"linux/amd64\"",
            1
        )
    );
    assert!(of(
        "FROM --platform=linux/arm64 a AS build-arm64\n",
        "FromPlatformFlagConstDisallowed"
    )
    .is_empty());
    assert!(of(
        "FROM --platform=$BUILDPLATFORM a\n",
        "FromPlatformFlagConstDisallowed"
    )
    .is_empty());
}

#[test]
fn multiple_instructions_disallowed() {
    let src = "FROM a\nCMD [\"a\"]\nHEALTHCHECK NONE\nCMD [\"b\"]\nFROM a\nCMD [\"c\"]\n";
    assert_eq!(
        of(src, "MultipleInstructionsDisallowed"),
        one(
            "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
            2
        )
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    let src = "ARG GITHUB_TOKEN\nFROM a\nENV AWS_SECRET_ACCESS_KEY=x DB_PASSWORD=y\nARG PUBLIC_KEY\nARG KEYBOARD=1\n";
    assert_eq!(
        of(src, "SecretsUsedInArgOrEnv"),
        vec![
            ("Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")".to_string(), 1),
            ("Do not use ARG or ENV instructions for sensitive data (ENV \"AWS_SECRET_ACCESS_KEY\")".to_string(), 3),
            ("Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")".to_string(), 3),
        ]
    );
    assert!(secrets::is_secret_name("apikey") && secrets::is_secret_name("Auth_header"));
    assert!(!secrets::is_secret_name("public_token") && !secrets::is_secret_name("MONKEY"));
}

#[test]
fn empty_continuation() {
    assert_eq!(
        of("FROM a\nRUN a \\\n\n  b\n", "NoEmptyContinuation"),
        one("Empty continuation line", 4)
    );
}

#[test]
fn config_skips_rules() {
    let df = parse("FROM a as Build\nMAINTAINER me\n").expect("parses");
    let ctx = CheckContext::default();
    let cfg = CheckConfig::parse("skip=FromAsCasing,StageNameCasing").expect("valid");
    let names: Vec<_> = run(&df, &ctx, &cfg).iter().map(|f| f.rule.name).collect();
    assert_eq!(names, ["MaintainerDeprecated"]);
    let cfg = CheckConfig::parse("skip=all").expect("valid");
    assert!(run(&df, &ctx, &cfg).is_empty());
}

#[test]
fn warning_display_and_violation_message() {
    let src = "FROM a\nCMD x\nMAINTAINER me\n";
    let df = parse(src).expect("parses");
    let ws: Vec<CheckWarning> = run(&df, &CheckContext::default(), &CheckConfig::default())
        .into_iter()
        .map(|f| CheckWarning::new(f, "Dockerfile", src))
        .collect();
    assert_eq!(
        ws[0].to_string(),
        "JSONArgsRecommended - JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"
    );
    assert!(ws[0].location.excerpt.contains(">>> CMD x"));
    assert_eq!(
        violation_message(&ws),
        "lint violation found for rules: JSONArgsRecommended, MaintainerDeprecated"
    );
}
