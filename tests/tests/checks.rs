//! End to end: build checks. `kiln build --check` reports findings without building (exit
//! status 1 when there are any); `# check=error=true` fails a real build; warnings of a
//! successful build are printed after it.

mod common;

use common::*;

#[test]
fn check_reports_findings_without_building() {
    let Some(env) = env("check_reports_findings_without_building") else {
        return;
    };
    let ctx = env.context(
        "check",
        "FROM $BASE as Build\nRUN exit 1\nCMD echo hi\n",
        &[],
    );
    let ctx_s = ctx.to_str().unwrap();
    let out = env
        .kiln()
        .args(["build", "--check", ctx_s])
        .output()
        .expect("running kiln");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("Check complete, 3 warnings have been found!\n"),
        "{stdout}"
    );
    assert!(stdout.contains(
        "WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
         JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
         Dockerfile:3\n"
    ), "{stdout}");
    assert!(stdout.contains("   3 | >>> CMD echo hi"), "{stdout}");
    assert!(stdout.contains("Stage name 'Build' should be lowercase"));
    assert!(stdout.contains("'as' and 'FROM' keywords' casing do not match"));

    // Skipped through the build argument: nothing left, exit status 0, still nothing built.
    let out = env.ok(&[
        "build",
        "--check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=JSONArgsRecommended,StageNameCasing,FromAsCasing",
        ctx_s,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Check complete, no warnings found.\n"
    );
}

#[test]
fn error_true_fails_the_build_and_warnings_follow_a_build() {
    let Some(env) = env("error_true_fails_the_build_and_warnings_follow_a_build") else {
        return;
    };
    let strict = env.context(
        "strict",
        "# check=error=true\nFROM $BASE\nCMD echo hi\n",
        &[],
    );
    let err = env.fails(&["build", "--progress", "plain", strict.to_str().unwrap()]);
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended"),
        "{err}"
    );
    assert!(err.contains("WARNING: JSONArgsRecommended - JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)"), "{err}");

    let lax = env.context("lax", "FROM $BASE\nMAINTAINER me\n", &[]);
    let out = env.ok(&["build", "--progress", "plain", lax.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARNING: MaintainerDeprecated - Maintainer instruction is deprecated in favor of using label (line 2)\nDockerfile:2\n"), "{err}");
    assert!(err.contains("   2 | >>> MAINTAINER me"), "{err}");
}

#[test]
fn a_foreign_syntax_directive_is_warned_about_once_and_docker_s_own_is_not() {
    let Some(env) = env("a_foreign_syntax_directive_is_warned_about_once_and_docker_s_own_is_not")
    else {
        return;
    };
    let warning = "WARNING: Dockerfile:1: \"# syntax=example.com/frontends/dockerfile:2\": \
                   kiln builds with its own Dockerfile frontend and ignores the frontend image named here";
    let foreign = env.context(
        "foreign",
        "# syntax=example.com/frontends/dockerfile:2\nFROM $BASE\nRUN true\n",
        &[],
    );
    for progress in ["plain", "tty"] {
        let out = env.ok(&["build", "--progress", progress, foreign.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.matches(warning).count(), 1, "{progress}:\n{stderr}");
    }

    // Shown even when the Dockerfile is one only that frontend understands.
    let custom = env.context(
        "custom",
        "# syntax=example.com/frontends/dockerfile:2\nFROM $BASE\nFROBNICATE /x\n",
        &[],
    );
    let stderr = env.fails(&["build", "--progress", "plain", custom.to_str().unwrap()]);
    assert!(stderr.contains(warning), "{stderr}");
    assert!(stderr.contains("unknown instruction"), "{stderr}");

    for own in [
        "docker/dockerfile:1",
        "docker/dockerfile:1.7",
        "docker.io/docker/dockerfile:1@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021",
    ] {
        let ctx = env.context("own", &format!("# syntax={own}\nFROM $BASE\nRUN true\n"), &[]);
        let out = env.ok(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("WARNING"), "{own}:\n{stderr}");
    }
}
