//! Lowers every conformance case (BuildKit's real results in shared/conformance/cases) with a
//! fake busybox base and compares the image config fields that depend only on the
//! Dockerfile. Error cases that BuildKit rejects before running anything must fail to lower.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kiln_frontend::image::{ContainerConfig, ImageConfig, RootFs};
use kiln_frontend::{lower, BuildRequest, ImageMetaResolver, ResolvedImage};
use kiln_solver::llb::Platform;
use serde_json::{Map, Value};

const KEYS: [&str; 12] = [
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Healthcheck",
    "Labels",
    "OnBuild",
    "Shell",
    "StopSignal",
    "User",
    "Volumes",
    "WorkingDir",
];

/// Features whose config effects are out of this test's reach (remote sources).
const SKIP: [&str; 1] = ["16-add-http"];

struct Busybox;

#[async_trait]
impl ImageMetaResolver for Busybox {
    async fn resolve_image_config(
        &self,
        reference: &str,
        _platform: &Platform,
    ) -> Result<ResolvedImage, String> {
        Ok(ResolvedImage {
            reference: format!("{reference}@sha256:00"),
            config: ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                config: ContainerConfig {
                    env: Some(vec![
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    ]),
                    cmd: Some(vec!["/bin/sh".into()]),
                    ..Default::default()
                },
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec!["sha256:00".into()],
                },
                ..Default::default()
            },
        })
    }
}

fn cases_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/cases");
    let p = if p.exists() {
        p
    } else {
        PathBuf::from("/work/shared/conformance/cases")
    };
    p.exists().then_some(p)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(_) => false,
    }
}

/// oci-fsdump's normalisation of the config object.
fn normalise(config: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for k in KEYS {
        let Some(v) = config.get(k) else { continue };
        if is_empty(v) {
            continue;
        }
        let v = match (k, v) {
            ("ExposedPorts" | "Volumes", Value::Object(o)) => Value::Object(
                o.keys()
                    .map(|k| (k.clone(), Value::Object(Map::new())))
                    .collect(),
            ),
            ("Healthcheck", Value::Object(o)) => Value::Object(
                o.iter()
                    .filter(|(_, v)| !is_empty(v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.to_string(), v);
    }
    out
}

#[test]
fn config_matches_buildkit() {
    let Some(dir) = cases_dir() else {
        println!("skipping: conformance cases not found");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in entries {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if SKIP.contains(&name.as_str()) {
            continue;
        }
        let build: Value = std::fs::read_to_string(case.join("build.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        let df_name = build["dockerfile"].as_str().unwrap_or("Dockerfile");
        let Ok(dockerfile) = std::fs::read_to_string(case.join(df_name)) else {
            continue;
        };
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
                .unwrap();
        let mut build_args = BTreeMap::new();
        if let Some(args) = build["args"].as_object() {
            for (k, v) in args {
                build_args.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        let req = BuildRequest {
            dockerfile,
            filename: df_name.to_string(),
            build_args,
            target: build["target"].as_str().map(str::to_string),
            platform: Platform::linux_amd64(),
            build_platform: Platform::linux_amd64(),
            dockerignore: vec![],
            entitlements: Default::default(),
        };
        let result = rt.block_on(lower(&req, &Busybox));
        if expected["error"] == Value::Bool(true) {
            if expected["stage"] == "parse" {
                match result {
                    Ok(_) => failures.push(format!("{name}: should fail to lower")),
                    Err(e) => {
                        let want = expected["message_contains"].as_str().unwrap_or_default();
                        if !e.to_string().contains(want) {
                            failures.push(format!("{name}: error {e} lacks {want:?}"));
                        }
                    }
                }
            }
            continue;
        }
        checked += 1;
        let plan = match result {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let got = normalise(&serde_json::to_value(&plan.image.config).unwrap());
        let want = normalise(&expected["config"]);
        if got != want {
            failures.push(format!(
                "{name}:\n  want {}\n  got  {}",
                Value::Object(want),
                Value::Object(got)
            ));
        }
    }
    assert!(checked > 20, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
