//! End to end: what layers carry — whiteouts, opaque directories, hard links, xattrs
//! (file capabilities), device nodes, setuid bits — checked with the conformance suite's
//! independent dumper (shared/tools/oci-fsdump).

mod common;

use common::*;

#[test]
fn layers_keep_whiteouts_links_xattrs_devices_and_modes() {
    let Some(env) = env("layers_keep_whiteouts_links_xattrs_devices_and_modes") else {
        return;
    };
    let shared = std::env::var("KILN_SHARED").unwrap_or_else(|_| "../../shared".into());
    let fsdump = std::path::Path::new(&shared).join("tools/oci-fsdump");
    assert!(
        fsdump.exists(),
        "oci-fsdump not found at {} (set KILN_SHARED)",
        fsdump.display()
    );
    let ctx = env.context(
        "layers",
        r#"FROM $BASE
COPY capfile /capfile
RUN mkdir -p /data/a && echo 1 > /data/a/f && echo keep > /data/k
RUN rm -rf /home /data/a /bin/cat && mkdir /data/a && echo new > /data/a/g
RUN echo h > /h1 && ln /h1 /h2 && mknod /null2 c 1 3 && mkfifo /fifo && echo s > /suid && chmod 4755 /suid && chmod 1777 /data
"#,
        &[("capfile", "cap\n")],
    );
    // cap_net_raw+ep as a VFS v2 capability xattr.
    let cap: [u8; 20] = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let py = format!(
        "import os; os.setxattr('{}', 'security.capability', bytes({:?}))",
        ctx.join("capfile").display(),
        cap.to_vec()
    );
    run("python3", &["-c", &py]);
    let tar = env.path("layers.tar");
    env.ok(&[
        "build",
        "-o",
        &format!("type=oci,dest={}", tar.display()),
        ctx.to_str().unwrap(),
    ]);
    let dump: serde_json::Value =
        serde_json::from_str(&run(fsdump.to_str().unwrap(), &[tar.to_str().unwrap()])).unwrap();
    let files = dump["files"].as_array().unwrap();
    let get = |p: &str| files.iter().find(|f| f["path"] == p).cloned();
    assert!(get("/home").is_none(), "deleted directory is whited out");
    assert!(get("/bin/cat").is_none(), "deleted symlink is whited out");
    assert!(
        get("/data/a/f").is_none(),
        "the recreated directory is opaque"
    );
    assert_eq!(get("/data/a/g").unwrap()["type"], "file");
    assert_eq!(get("/data/k").unwrap()["type"], "file");
    assert_eq!(get("/data").unwrap()["mode"], "1777");
    assert_eq!(get("/h2").unwrap()["sha256"], get("/h1").unwrap()["sha256"]);
    let null2 = get("/null2").unwrap();
    assert_eq!(
        (
            null2["type"].as_str(),
            null2["devmajor"].as_i64(),
            null2["devminor"].as_i64()
        ),
        (Some("char"), Some(1), Some(3))
    );
    assert_eq!(get("/fifo").unwrap()["type"], "fifo");
    assert_eq!(get("/suid").unwrap()["mode"], "4755");
    let capf = get("/capfile").unwrap();
    assert!(
        capf["xattrs"].get("security.capability").is_some(),
        "file capability lost: {capf}"
    );
    assert!(
        get("/etc/hosts").is_none() && get("/etc/resolv.conf").is_none(),
        "runtime mount stubs leaked into the image"
    );

    // Hard links really are hard links in the layer tar.
    let layout = env.path("layers-layout");
    std::fs::create_dir_all(&layout).unwrap();
    run(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", layout.to_str().unwrap()],
    );
    let mut found_link = false;
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        if let Ok(listing) = std::process::Command::new("tar")
            .args(["-tvzf", p.to_str().unwrap()])
            .output()
        {
            found_link |= String::from_utf8_lossy(&listing.stdout)
                .lines()
                .any(|l| l.starts_with('h') && l.contains("h2 link to h1"));
        }
    }
    assert!(found_link, "no hardlink entry for /h2 in any layer");
}
