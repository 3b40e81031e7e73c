use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kiln_solver::llb::*;

use super::*;
use crate::image::{ContainerConfig, History, RootFs};

/// Returns a busybox-like config for every image and records what was asked for.
struct FakeResolver {
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl ImageMetaResolver for FakeResolver {
    async fn resolve_image_config(
        &self,
        reference: &str,
        _platform: &Platform,
    ) -> Result<ResolvedImage, String> {
        self.asked.lock().unwrap().push(reference.to_string());
        if reference.contains("missing") {
            return Err("not found".into());
        }
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}@sha256:00"),
            config: busybox(),
        })
    }
}

pub(crate) fn busybox() -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ContainerConfig {
            env: Some(vec![format!("PATH={}", state::DEFAULT_PATH)]),
            cmd: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec!["sha256:11".into()],
        },
        history: vec![History {
            created_by: Some("base".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(super) fn req(df: &str) -> BuildRequest {
    BuildRequest {
        dockerfile: df.into(),
        filename: "Dockerfile".into(),
        build_args: BTreeMap::new(),
        target: None,
        platform: Platform::linux_amd64(),
        build_platform: Platform::linux_amd64(),
        dockerignore: vec!["*.log".into()],
        entitlements: Default::default(),
    }
}

pub(super) fn run(r: BuildRequest) -> (Result<BuildPlan, FrontendError>, Vec<String>) {
    let res = FakeResolver {
        asked: Mutex::new(Vec::new()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = rt.block_on(lower(&r, &res));
    (out, res.asked.into_inner().unwrap())
}

pub(super) fn plan(df: &str) -> BuildPlan {
    run(req(df)).0.unwrap()
}

pub(super) fn root_node(p: &BuildPlan) -> &Node {
    p.definition.get(&p.root.as_ref().unwrap().digest).unwrap()
}

fn meta(p: &BuildPlan, i: &Input) -> NodeMeta {
    p.definition.meta[&i.digest].clone()
}

fn exec_of(n: &Node) -> &ExecOp {
    match &n.op {
        Op::Exec(e) => e,
        o => panic!("not exec: {o:?}"),
    }
}

pub(super) fn file_of(n: &Node) -> &FileOp {
    match &n.op {
        Op::File(f) => f,
        o => panic!("not file: {o:?}"),
    }
}

#[test]
fn run_shell_form_env_args_and_naming() {
    let p = plan("FROM busybox\nARG A=1\nARG UNSET\nENV B=2\nWORKDIR /w\nUSER nobody\nRUN --network=none echo $A\n");
    let n = root_node(&p);
    let e = exec_of(n);
    assert_eq!(e.meta.args, vec!["/bin/sh", "-c", "echo $A"]);
    assert_eq!(
        e.meta.env,
        vec![
            format!("PATH={}", state::DEFAULT_PATH),
            "A=1".into(),
            "B=2".into()
        ]
    );
    assert_eq!(e.meta.cwd, "/w");
    assert_eq!(e.meta.user, "nobody");
    assert_eq!(e.network, NetMode::None);
    assert_eq!(e.mounts[0].input, Some(0));
    assert_eq!(e.mounts[0].dest, "/");
    assert_eq!(e.mounts[0].output, Some(0));
    let m = meta(&p, p.root.as_ref().unwrap());
    assert_eq!(m.description, "[3/3] RUN --network=none echo 1");
    assert_eq!(m.lines, Some((7, 7)));
    let last = p.image.history.last().unwrap();
    assert_eq!(
        last.created_by.as_deref(),
        Some("RUN |2 A=1 UNSET= /bin/sh -c echo $A # buildkit")
    );
    assert!(!last.empty_layer);
    // The base image vertex.
    let base = &p.definition.get(&n.inputs[0].digest).unwrap().inputs[0];
    let base_meta = meta(&p, base);
    assert_eq!(
        base_meta.description,
        "[1/3] FROM docker.io/library/busybox@sha256:00"
    );
    assert_eq!(p.image.history[0].created_by.as_deref(), Some("base"));
    assert_eq!(p.image.config.working_dir.as_deref(), Some("/w"));
}

#[test]
fn exec_form_and_shell_instruction() {
    let p = plan("FROM busybox\nSHELL [\"/bin/bash\", \"-xc\"]\nRUN [\"a\", \"b\"]\nRUN c\nCMD d\nHEALTHCHECK CMD e\n");
    let n = root_node(&p);
    assert_eq!(exec_of(n).meta.args, vec!["/bin/bash", "-xc", "c"]);
    let prev = p.definition.get(&n.inputs[0].digest).unwrap();
    assert_eq!(exec_of(prev).meta.args, vec!["a", "b"]);
    assert_eq!(
        p.image.config.cmd,
        Some(vec!["/bin/bash".into(), "-xc".into(), "d".into()])
    );
    let hc = p.image.config.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, Some(vec!["CMD-SHELL".into(), "e".into()]));
}

#[test]
fn copy_context_chown_chmod_and_dest() {
    let p = plan("FROM busybox\nWORKDIR /app\nCOPY --chown=appuser --chmod=640 a.txt sub/ ./\nADD x.tar rel\n");
    let add = root_node(&p);
    let f = file_of(add);
    assert_eq!(f.base, Some(0));
    let FileAction::Copy(a) = &f.actions[0] else {
        panic!()
    };
    assert_eq!(a.src, "/x.tar");
    assert_eq!(a.dest, "/app/rel");
    assert!(a.attempt_unpack);
    let ctx = &add.inputs[a.source.unwrap()];
    assert_eq!(
        p.definition.get(&ctx.digest).unwrap().op,
        Op::Source(SourceOp::Local {
            name: "context".into(),
            include_patterns: vec![],
            exclude_patterns: vec!["*.log".into()],
        })
    );
    let copy = p.definition.get(&add.inputs[0].digest).unwrap();
    let f = file_of(copy);
    assert_eq!(f.actions.len(), 2);
    let FileAction::Copy(a) = &f.actions[1] else {
        panic!()
    };
    assert_eq!(a.src, "/sub");
    assert_eq!(a.dest, "/app/");
    assert_eq!(
        a.owner,
        Some(ChownOpt {
            user: Some(UserOpt::Name("appuser".into())),
            group: None
        })
    );
    assert_eq!(a.mode, Some(ChmodOpt::Octal(0o640)));
    assert!(!a.attempt_unpack);
    // Both COPY and ADD read the same context node.
    assert_eq!(copy.inputs[1], add.inputs[1]);
    let hist: Vec<_> = p
        .image
        .history
        .iter()
        .map(|h| h.created_by.clone().unwrap())
        .collect();
    assert_eq!(hist[1], "WORKDIR /app");
    assert_eq!(
        hist[2],
        "COPY --chown=appuser --chmod=640 a.txt sub/ ./ # buildkit"
    );
    assert_eq!(hist[3], "ADD x.tar rel # buildkit");
    // WORKDIR made its directory.
    let wd = p.definition.get(&copy.inputs[0].digest).unwrap();
    assert!(
        matches!(&file_of(wd).actions[0], FileAction::Mkdir(m) if m.path == "/app" && m.make_parents && m.mode == 0o755)
    );
}

#[test]
fn copy_several_sources_needs_dir_dest() {
    let (r, _) = run(req("FROM busybox\nCOPY a b /dst\n"));
    let e = r.unwrap_err();
    let s = e.to_string();
    assert!(s.contains("Dockerfile:2"), "{s}");
    assert!(s.contains(">>> COPY a b /dst"), "{s}");
    assert!(s.contains("must be a directory and end with a /"), "{s}");
}

#[test]
fn multi_stage_from_stage_copy_from_and_target_pruning() {
    let mut r = req("FROM busybox AS build\nRUN make\nFROM alpine AS other\nRUN x\nFROM scratch\nCOPY --from=build /out /\nCOPY --from=0 /a /b\n");
    let (p, asked) = run(r.clone());
    let p = p.unwrap();
    assert_eq!(asked, vec!["busybox"], "unused stages are not resolved");
    let n = root_node(&p);
    let f = file_of(n);
    assert_eq!(f.base, Some(0));
    let first = p.definition.get(&n.inputs[0].digest).unwrap();
    let f1 = file_of(first);
    assert_eq!(f1.base, None, "scratch stage");
    let FileAction::Copy(a) = &f1.actions[0] else {
        panic!()
    };
    assert_eq!(a.source, Some(0));
    let build_root = p.definition.get(&first.inputs[0].digest).unwrap();
    assert_eq!(exec_of(build_root).meta.args, vec!["/bin/sh", "-c", "make"]);
    assert_eq!(
        meta(&p, &first.inputs[0]).description,
        "[build 2/2] RUN make"
    );
    // Scratch: empty config with the default PATH.
    assert_eq!(
        p.image.config.env,
        Some(vec![format!("PATH={}", state::DEFAULT_PATH)])
    );
    assert_eq!(p.image.config.cmd, None);
    r.target = Some("Other".into());
    let (p, asked) = run(r.clone());
    assert_eq!(asked, vec!["alpine"]);
    assert_eq!(p.unwrap().image.config.cmd, Some(vec!["/bin/sh".into()]));
    r.target = Some("nope".into());
    assert!(matches!(
        run(r).0,
        Err(FrontendError::TargetNotFound { .. })
    ));
}

#[test]
fn from_stage_inherits_config_and_args() {
    let p = plan("FROM busybox AS base\nENV X=1\nARG Y=2\nCMD [\"a\"]\nFROM base\nENTRYPOINT [\"e\"]\nRUN env\n");
    assert_eq!(p.image.config.entrypoint, Some(vec!["e".into()]));
    assert_eq!(
        p.image.config.cmd, None,
        "ENTRYPOINT resets a CMD from the base"
    );
    let e = exec_of(root_node(&p));
    assert!(e.meta.env.contains(&"X=1".to_string()));
    assert!(e.meta.env.contains(&"Y=2".to_string()));
    let p = plan("FROM busybox\nCMD [\"a\"]\nENTRYPOINT [\"e\"]\n");
    assert_eq!(p.image.config.cmd, Some(vec!["a".into()]));
}

#[test]
fn global_args_build_args_and_platform_args() {
    let mut r = req("ARG IMG=busybox\nARG TAG\nFROM $IMG${TAG:+:$TAG}\nARG IMG\nARG TARGETARCH\nARG NOVAL\nRUN echo\n");
    r.build_args.insert("TAG".into(), "1.36".into());
    let (p, asked) = run(r);
    assert_eq!(asked, vec!["busybox:1.36"]);
    let e = exec_of(root_node(&p.unwrap())).meta.env.clone();
    assert!(e.contains(&"IMG=busybox".to_string()));
    assert!(e.contains(&"TARGETARCH=amd64".to_string()));
    assert!(
        !e.iter().any(|v| v.starts_with("NOVAL")),
        "ARG without value is unset"
    );
    assert!(
        !e.iter().any(|v| v.starts_with("TAG")),
        "not redeclared in the stage"
    );
}

#[test]
fn env_expansion_uses_values_from_before() {
    let p = plan("FROM busybox\nENV A=1\nENV A=2 B=$A\nENV PATH=$PATH:/x\nLABEL l=\"${A}-x\"\nEXPOSE 80 7000-7001/UDP\nVOLUME /v $A\nSTOPSIGNAL SIGKILL\nUSER 1000:1000\nMAINTAINER me\nONBUILD RUN x\n");
    let c = &p.image.config;
    assert_eq!(
        c.env.as_ref().unwrap(),
        &vec![
            format!("PATH={}:/x", state::DEFAULT_PATH),
            "A=2".to_string(),
            "B=1".to_string()
        ]
    );
    assert_eq!(c.labels.as_ref().unwrap()["l"], "2-x");
    let ports: Vec<_> = c.exposed_ports.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(ports, vec!["7000/udp", "7001/udp", "80/tcp"]);
    let vols: Vec<_> = c.volumes.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(vols, vec!["/v", "2"]);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGKILL"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert_eq!(p.image.author.as_deref(), Some("me"));
    assert_eq!(c.on_build, Some(vec!["RUN x".to_string()]));
    assert!(p.image.history.iter().skip(1).all(|h| h.empty_layer));
    assert_eq!(
        p.root
            .as_ref()
            .map(|r| p.definition.get(&r.digest).is_some()),
        Some(true)
    );
}

#[test]
fn errors_carry_locations() {
    let (r, _) = run(req("FROM busybox\nRUN echo ok\nFROB something\n"));
    let s = r.unwrap_err().to_string();
    assert!(
        s.contains("Dockerfile:3") && s.contains("unknown instruction: FROB"),
        "{s}"
    );
    let (r, _) = run(req("FROM busybox\nCOPY --no-such-flag=1 a /b\n"));
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("unknown flag: --no-such-flag"));
    let (r, _) = run(req(
        "FROM busybox AS loop\nRUN x\nCOPY --from=loop /one /two\n",
    ));
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("circular dependency detected on stage: loop"));
    let (r, _) = run(req("FROM missing\n"));
    assert!(matches!(r, Err(FrontendError::BaseImage { .. })));
    let (r, _) = run(req("FROM busybox\nENV X=\"${Y:?must be set}\"\n"));
    assert!(matches!(r, Err(FrontendError::Expansion { .. })));
}

#[test]
fn run_mounts() {
    let p = plan("FROM busybox AS b\nFROM busybox\nWORKDIR /w\nRUN --mount=type=cache,target=/c --mount=type=bind,from=b,source=/s,target=t --mount=type=tmpfs,target=/tmp --mount=type=secret,id=tok make\n");
    let n = root_node(&p);
    let e = exec_of(n);
    assert_eq!(e.mounts.len(), 5);
    assert!(
        matches!(&e.mounts[1].kind, MountKind::Cache { id, sharing: CacheSharing::Shared, .. } if id == "/c")
    );
    assert_eq!(e.mounts[2].dest, "/w/t");
    assert_eq!(e.mounts[2].selector, "/s");
    assert!(e.mounts[2].readonly);
    assert!(e.mounts[2].input.is_some());
    assert_eq!(e.mounts[3].kind, MountKind::Tmpfs { size: None });
    assert_eq!(e.mounts[4].dest, "/run/secrets/tok");
    assert!(e.mounts[1..].iter().all(|m| m.output.is_none()));
}

#[test]
fn run_mount_cache_owner_and_ssh_sockets() {
    let p = plan("FROM busybox\nRUN --mount=type=cache,target=/c,uid=1000,gid=1001,mode=0700 --mount=type=ssh --mount=type=ssh,id=other make\n");
    let e = exec_of(root_node(&p));
    assert!(matches!(
        &e.mounts[1].kind,
        MountKind::Cache {
            mode: Some(0o700),
            uid: Some(1000),
            gid: Some(1001),
            ..
        }
    ));
    assert_eq!(e.mounts[2].dest, "/run/buildkit/ssh_agent.0");
    assert_eq!(e.mounts[3].dest, "/run/buildkit/ssh_agent.1");
    let socks: Vec<_> = e
        .meta
        .env
        .iter()
        .filter(|v| v.starts_with("SSH_AUTH_SOCK="))
        .collect();
    assert_eq!(socks, ["SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"]);
}

#[test]
fn heredoc_run_and_copy() {
    let p = plan("FROM busybox\nARG N=v\nCOPY <<EOF /f\nhi $N\nEOF\nRUN <<EOF\necho a\nEOF\n");
    let e = exec_of(root_node(&p));
    assert_eq!(e.meta.args, vec!["/bin/sh", "-c", "echo a\n"]);
    let copy = p.definition.get(&root_node(&p).inputs[0].digest).unwrap();
    let FileAction::Copy(a) = &file_of(copy).actions[0] else {
        panic!()
    };
    let doc = p
        .definition
        .get(&copy.inputs[a.source.unwrap()].digest)
        .unwrap();
    let FileAction::Mkfile(mk) = &file_of(doc).actions[0] else {
        panic!()
    };
    assert_eq!(mk.data, b"hi v\n");
}

#[test]
fn onbuild_triggers_run_in_the_child_stage() {
    let p = plan("FROM busybox AS base\nONBUILD ENV T=yes\nONBUILD WORKDIR /trig\nRUN echo base\nFROM base\nRUN echo child\n");
    assert_eq!(p.image.config.on_build, None);
    assert_eq!(p.image.config.working_dir.as_deref(), Some("/trig"));
    let e = exec_of(root_node(&p));
    assert!(e.meta.env.contains(&"T=yes".to_string()));
    assert_eq!(e.meta.cwd, "/trig");
    let wd = &root_node(&p).inputs[0];
    assert_eq!(
        meta(&p, wd).description,
        "[stage-1 1/3] ONBUILD WORKDIR /trig"
    );
    assert_eq!(meta(&p, wd).lines, Some((5, 5)));
}

#[test]
fn heredoc_shebang_runs_as_a_file() {
    let p = plan("FROM busybox\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n");
    let n = root_node(&p);
    let e = exec_of(n);
    assert_eq!(e.meta.args, vec!["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(e.mounts[1].dest, "/dev/pipes");
    assert!(e.mounts[1].readonly);
    let doc = p
        .definition
        .get(&n.inputs[e.mounts[1].input.unwrap()].digest)
        .unwrap();
    let FileAction::Mkfile(mk) = &file_of(doc).actions[0] else {
        panic!()
    };
    assert_eq!((mk.path.as_str(), mk.mode), ("/EOF", 0o755));
    assert_eq!(
        meta(&p, p.root.as_ref().unwrap()).description,
        "[2/2] RUN <<EOF (#!/bin/sh...)"
    );
}

#[test]
fn build_checks_warn_and_fail_with_error_true() {
    let p = plan("FROM busybox\nCMD echo hi\n");
    let names: Vec<_> = p.warnings.iter().map(|w| w.rule.name).collect();
    assert_eq!(names, ["JSONArgsRecommended"]);
    assert_eq!(p.warnings[0].location.start_line, 2);

    let src = "# check=error=true\nFROM busybox\nCMD echo hi\n";
    match run(req(src)).0 {
        Err(FrontendError::Checks { message, warnings }) => {
            assert_eq!(
                message,
                "lint violation found for rules: JSONArgsRecommended"
            );
            assert_eq!(warnings.len(), 1);
        }
        other => panic!("expected a check failure, got {other:?}"),
    }
    // The build argument replaces the directive.
    let mut r = req(src);
    r.build_args.insert(
        "BUILDKIT_DOCKERFILE_CHECK".into(),
        "skip=JSONArgsRecommended;error=true".into(),
    );
    assert!(run(r).0.expect("skipped rule").warnings.is_empty());
    let bad = run(req("# check=skip\nFROM busybox\n")).0;
    assert!(matches!(bad, Err(FrontendError::Syntax { .. })), "{bad:?}");
}

#[test]
fn check_needs_no_resolver() {
    let ws = check(&req("FROM nowhere/missing as Base\nMAINTAINER me\n")).expect("valid");
    let names: Vec<_> = ws.iter().map(|w| w.rule.name).collect();
    assert_eq!(
        names,
        ["FromAsCasing", "StageNameCasing", "MaintainerDeprecated"]
    );
    assert!(check(&req("FROM a\nFROBNICATE\n")).is_err());
}

#[test]
fn source_date_epoch_stamps_history_and_workdir_and_reaches_run_through_arg() {
    let df = "FROM busybox\nARG SOURCE_DATE_EPOCH\nWORKDIR /w\nRUN echo $SOURCE_DATE_EPOCH\n";
    let mut r = req(df);
    r.build_args
        .insert(SOURCE_DATE_EPOCH.into(), "1700000000".into());
    let p = run(r).0.unwrap();
    assert_eq!(p.epoch, Some(1_700_000_000));
    // The base's entry keeps its own time; every entry of this build gets the epoch.
    assert_eq!(p.image.history[0].created, None);
    for h in &p.image.history[1..] {
        assert_eq!(h.created.as_deref(), Some("2023-11-14T22:13:20Z"), "{h:?}");
    }
    let e = exec_of(root_node(&p));
    assert!(e
        .meta
        .env
        .contains(&"SOURCE_DATE_EPOCH=1700000000".to_string()));
    let wd = p.definition.get(&root_node(&p).inputs[0].digest).unwrap();
    match &file_of(wd).actions[0] {
        FileAction::Mkdir(m) => assert_eq!(m.timestamp, Some(1_700_000_000)),
        a => panic!("{a:?}"),
    }

    // Without it: no epoch, nothing stamped, and RUN does not see it undeclared.
    let p = plan("FROM busybox\nRUN true\n");
    assert_eq!(p.epoch, None);
    assert!(p.image.history.iter().all(|h| h.created.is_none()));
}

#[test]
fn source_date_epoch_global_default_and_bad_values() {
    let p = plan("ARG SOURCE_DATE_EPOCH=0\nFROM busybox\nRUN true\n");
    assert_eq!(p.epoch, Some(0));
    assert_eq!(
        p.image.history.last().unwrap().created.as_deref(),
        Some("1970-01-01T00:00:00Z")
    );
    // A build arg overrides the default; `context` on a local context leaves it unset.
    let mut r = req("ARG SOURCE_DATE_EPOCH=0\nFROM busybox\nARG SOURCE_DATE_EPOCH\nRUN true\n");
    r.build_args
        .insert(SOURCE_DATE_EPOCH.into(), "context".into());
    let p = run(r).0.unwrap();
    assert_eq!(p.epoch, None);
    assert!(!exec_of(root_node(&p))
        .meta
        .env
        .iter()
        .any(|e| e.starts_with("SOURCE_DATE_EPOCH=")));
    let mut r = req("FROM busybox\nRUN true\n");
    r.build_args
        .insert(SOURCE_DATE_EPOCH.into(), "yesterday".into());
    let err = run(r).0.unwrap_err().to_string();
    assert!(
        err.contains("invalid SOURCE_DATE_EPOCH: yesterday"),
        "{err}"
    );
}

#[test]
fn copy_link_is_a_copy_onto_scratch_merged_onto_the_stage() {
    let p = plan("FROM busybox\nCOPY --link a.txt /app/\n");
    let merge = root_node(&p);
    assert!(matches!(merge.op, Op::Merge(_)), "{:?}", merge.op);
    assert_eq!(
        meta(&p, p.root.as_ref().unwrap()).description,
        "[2/2] LINK COPY --link a.txt /app/"
    );
    let below = p.definition.get(&merge.inputs[0].digest).unwrap();
    assert!(matches!(below.op, Op::Source(SourceOp::Image { .. })));
    let copy = p.definition.get(&merge.inputs[1].digest).unwrap();
    let f = file_of(copy);
    assert_eq!(f.base, None, "the copy does not read the stage");
    assert_eq!(
        meta(&p, &merge.inputs[1]).description,
        "[2/2] COPY --link a.txt /app/"
    );
    assert_eq!(
        p.image.history.last().unwrap().created_by.as_deref(),
        Some("COPY a.txt /app/ # buildkit")
    );

    // The same copy on another base is the same vertex.
    let q = plan("FROM other\nRUN true\nCOPY --link a.txt /app/\n");
    assert_eq!(root_node(&q).inputs[1].digest, merge.inputs[1].digest);

    // As BuildKit: with --chmod, or on scratch, a plain copy.
    let c = plan("FROM busybox\nCOPY --link --chmod=644 a.txt /app/\n");
    assert_eq!(file_of(root_node(&c)).base, Some(0));
    let s = plan("FROM scratch\nCOPY --link a.txt /app/\n");
    assert!(matches!(root_node(&s).op, Op::File(_)));
}
