//! kiln's parser against BuildKit's own parser test data: every positive case must dump
//! byte for byte like BuildKit's `ast.Dump()`, every negative case must fail.

use std::path::{Path, PathBuf};

fn data_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/parser");
    let p = if p.exists() {
        p
    } else {
        PathBuf::from("/work/shared/conformance/parser")
    };
    p.exists().then_some(p)
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn positive_cases_dump_like_buildkit() {
    let Some(dir) = data_dir() else {
        println!("skipping: conformance parser data not found");
        return;
    };
    let mut failures = Vec::new();
    let all = cases(&dir.join("testfiles"));
    assert!(!all.is_empty());
    for case in &all {
        let src = std::fs::read(case.join("Dockerfile")).unwrap();
        let src = String::from_utf8_lossy(&src);
        let want = std::fs::read_to_string(case.join("result")).unwrap();
        match kiln_frontend::parser::parse(&src) {
            Ok(df) => {
                let got = df.dump() + "\n";
                if got != want {
                    failures.push(format!(
                        "{}:\n--- want\n{want}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: parse error {e}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail() {
    let Some(dir) = data_dir() else {
        println!("skipping: conformance parser data not found");
        return;
    };
    for case in cases(&dir.join("testfiles-negative")) {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        assert!(
            kiln_frontend::parser::parse(&src).is_err(),
            "{} should fail",
            case.display()
        );
    }
}
