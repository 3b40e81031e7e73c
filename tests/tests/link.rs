//! End to end: `COPY --link`. The copy does not depend on what is below it: when the base
//! image changes, the copy step stays cached and the image gets the very same layer (merged
//! onto the new base), as with BuildKit.

mod common;

use common::*;

/// The plain-progress vertex whose name ends with `name`: was it CACHED?
fn cached(stderr: &str, name: &str) -> bool {
    let id = stderr
        .lines()
        .find(|l| l.starts_with('#') && l.ends_with(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {name:?} in:\n{stderr}"));
    stderr.lines().any(|l| l == format!("{id} CACHED"))
}

/// The layer digests of a stored image.
fn layers(env: &Env, name: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&env.ok(&["inspect", name]).stdout).unwrap();
    v[0]["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn build(env: &Env, ctx: &std::path::Path, base: &str, tag: &str) -> String {
    let arg = format!("BASE_IMAGE={base}");
    let out = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--build-arg",
        &arg,
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn copy_link_layer_is_reused_when_the_base_changes() {
    let Some(env) = env("copy_link_layer_is_reused_when_the_base_changes") else {
        return;
    };
    // The other base: busybox with one more file.
    let b2 = env.context("base2", "FROM $BASE\nRUN echo extra > /extra\n", &[]);
    env.ok(&["build", "-q", "-t", "base:2", b2.to_str().unwrap()]);

    let files: &[(&str, &str)] = &[("f.txt", "F\n"), ("dir/g.txt", "G\n")];
    let linked = env.context(
        "linked",
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY --link f.txt dir /app/\nCMD [\"cat\", \"/app/f.txt\", \"/app/g.txt\"]\n",
        files,
    );
    let step = "COPY --link f.txt dir /app/";
    let first = build(&env, &linked, &env.base_image(), "linked:1");
    assert!(!cached(&first, step));
    let l1 = layers(&env, "linked:1");

    let second = build(&env, &linked, "base:2", "linked:2");
    assert!(
        cached(&second, step),
        "the copy is cached on the new base:\n{second}"
    );
    assert!(!cached(&second, &format!("LINK {step}")), "the merge ran");
    let l2 = layers(&env, "linked:2");
    assert_eq!(l2.len(), l1.len() + 1, "{l1:?} {l2:?}");
    assert_eq!(l2.last(), l1.last(), "the same layer: {l1:?} {l2:?}");
    assert_ne!(l2[..l2.len() - 1], l1[..l1.len() - 1]);

    // The merged image is the new base plus the copy, as independent tools see it.
    let tar = env.path("linked2.tar");
    env.ok(&["save", "-o", tar.to_str().unwrap(), "linked:2"]);
    let bundle = unpack(&tar, &env.path("linked2-bundle"), "2");
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("extra")).unwrap(),
        "extra\n"
    );
    assert_eq!(runc_run(&bundle, None), "F\nG\n");
    // Built on again: a RUN sees both.
    let on = env.context(
        "on",
        "FROM linked:2\nRUN cat /extra /app/f.txt > /both\n",
        &[],
    );
    env.ok(&["build", "-q", on.to_str().unwrap()]);

    // Without --link the copy depends on the base, so the same change reruns it: the check
    // above is one that tells the two apart.
    let plain = env.context(
        "plain",
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY f.txt dir /app/\n",
        files,
    );
    build(&env, &plain, &env.base_image(), "plain:1");
    let again = build(&env, &plain, "base:2", "plain:2");
    assert!(!cached(&again, "COPY f.txt dir /app/"), "{again}");
}
