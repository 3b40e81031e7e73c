#!/usr/bin/env python3
"""bench/registry.py - push/pull throughput: kiln against docker and skopeo.

Run by hand as root (never part of the tests):

  bench/registry.py [--runs N] [--size-mb MB] [--files N] [--text-share F] [--no-docker]
                    [--kiln PATH] [--work DIR] [--keep] [--json PATH]

The image: FROM the busybox base in the test registry (localhost:5000, scripts/base-images.sh
starts it) plus two COPY layers and a small RUN layer, --size-mb MiB in --files files (defaults
400 MiB / 20,000, with bench/workloads.py's size distribution):
  /opt/data     (1 - F) of the bytes and files: bench/workloads.py's make_big_context data,
                seeded PRNG bytes, incompressible (gzip ratio 1.0, like media and archives)
  /usr/src/app  F of the bytes and files (--text-share, default 0.5): source-like text, lines
                drawn from a seeded vocabulary, which gzip shrinks about 4x
The compressed and uncompressed sizes printed are measured, not assumed. The image is built
once by kiln (and by the private dockerd, for docker push), untimed.

Timed, interleaved (kiln, docker, skopeo, kiln, ...), N runs each, median reported, os.sync()
before each; every push goes to a fresh, empty registry (Debian's docker-registry on
127.0.0.1:PORT via scripts/registry.sh, storage deleted between runs) so it uploads everything:
  push kiln            `kiln push` of the stored image as a build leaves it: the layers are
                       gzip-compressed (all cores) at push time. kiln's root is restored from a
                       copy taken right after the build before each run, since kiln keeps the
                       compressed layers it made.
  push kiln (gzipped)  `kiln push` again on that root: the compressed layers exist (upload only)
  push docker          `docker push` (dockerd 20.10 recompresses on every push)
  push skopeo          `skopeo copy oci:DIR docker://...` from an OCI layout of kiln's image
                       (`kiln build -o type=oci`), already compressed: upload only
  pull kiln            `kiln pull` into a fresh --root/--state (blobs into the content store)
  pull skopeo          `skopeo copy docker://... oci:DIR` into a fresh directory
  pull docker          `docker pull` after `docker rmi` (also unpacks the layers: more work)
Pulls read from one registry holding kiln's and docker's images.

Prints seconds (median), MB/s (10^6 bytes; compressed image size / time and uncompressed size /
time), kiln/this ratios and kiln's peak RSS (/usr/bin/time -f %M); --json PATH writes every run's
numbers. Everything started (registries, dockerd) is stopped on exit, Ctrl-C included.
"""
import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
sys.path.insert(0, HERE)

import builders  # noqa: E402
import run  # noqa: E402
import workloads  # noqa: E402

REGISTRY_SH = os.path.join(REPO, "scripts", "registry.sh")

DOCKERFILE = """\
ARG BASE=%s
FROM $BASE
COPY bin/src/ /opt/data/
COPY text/ /usr/src/app/
RUN find /opt/data /usr/src/app -type f | wc -l > /file-count && du -s /opt/data /usr/src/app > /du
"""

WORDS = ("fn let mut self return if else match struct impl use pub mod for while loop break "
         "continue const static async await trait where type enum Some None Ok Err Result "
         "Option Vec String usize u64 i32 bool true false new len push iter map collect into "
         "clone unwrap expect error config path file buffer reader writer layer digest size "
         "index count value key name data bytes chunk offset header manifest blob image").split()


def make_text_tree(root, files, total_bytes, seed=20240102):
    """`files` source-like text files of `total_bytes` in all (workloads' size distribution):
    lines from a seeded pool of 50,000 word salads, so gzip finds word-level redundancy only."""
    rng = random.Random(seed)
    pool = []
    for _ in range(50000):
        indent = "    " * rng.randrange(4)
        pool.append(indent + " ".join(rng.choices(WORDS, k=rng.randrange(2, 12))) + ";\n")
    pool = [p.encode() for p in pool]
    for i, size in enumerate(workloads.file_sizes(rng, files, total_bytes)):
        d = os.path.join(root, "t%03d" % (i // 1000), "u%02d" % ((i // 100) % 10))
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        data = b"".join(rng.choices(pool, k=size // 40 + 1))
        with open(os.path.join(d, "f%05d.rs" % i), "wb") as f:
            f.write(data[:size])


def make_context(ctx, files, size_mb, text_share, base):
    text_mb = int(round(size_mb * text_share))
    text_files = int(round(files * text_share))
    workloads.make_big_context(os.path.join(ctx, "bin"), files - text_files, size_mb - text_mb)
    os.unlink(os.path.join(ctx, "bin", "Dockerfile"))
    make_text_tree(os.path.join(ctx, "text"), text_files, text_mb * 1024 * 1024)
    workloads.write(os.path.join(ctx, "Dockerfile"), DOCKERFILE % base)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A throwaway plain-HTTP registry on 127.0.0.1:port (scripts/registry.sh), storage under
    dir; reset() stops it, deletes its storage and starts it again, empty."""

    def __init__(self, work, port):
        self.port = port
        self.host = "127.0.0.1:%d" % port
        self.env = dict(os.environ, KILN_TEST_DIR=os.path.join(work, "registries"))
        self.dir = os.path.join(self.env["KILN_TEST_DIR"], "registry-%d" % port)
        self.log = os.path.join(work, "registry.log")
        self.running = False

    def start(self):
        self.running = True
        builders.run_logged([REGISTRY_SH, "start", str(self.port)], self.log, env=self.env)

    def stop(self):
        if self.running:
            subprocess.call([REGISTRY_SH, "stop", str(self.port)], env=self.env,
                            stdout=subprocess.DEVNULL)
            self.running = False

    def reset(self):
        self.stop()
        subprocess.call(["rm", "-rf", self.dir])
        self.start()

    def image_size(self, repo, tag):
        """Bytes of the config and layers of repo:tag's manifest, as the registry serves it."""
        req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (self.host, repo, tag), headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
                      "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            m = json.load(r)
        return m["config"]["size"] + sum(l["size"] for l in m["layers"])


def uncompressed_size(layout):
    """Bytes of the image's layers once gunzipped (and of its config), from an OCI layout."""
    with open(os.path.join(layout, "index.json")) as f:
        mdesc = json.load(f)["manifests"][0]
    blob = lambda d: os.path.join(layout, "blobs", *d["digest"].split(":"))  # noqa: E731
    with open(blob(mdesc)) as f:
        m = json.load(f)
    total = m["config"]["size"]
    for l in m["layers"]:
        if l["mediaType"].endswith("gzip"):
            out = subprocess.run(["sh", "-c", 'gzip -dc "$1" | wc -c', "-", blob(l)],
                                 check=True, stdout=subprocess.PIPE)
            total += int(out.stdout)
        else:
            total += l["size"]
    return total


def restore(src, dst):
    """dst becomes a copy of src (untimed: resets kiln's root to its just-built state)."""
    run.unmount_under(dst)
    subprocess.check_call(["rm", "-rf", "--one-file-system", dst])
    subprocess.check_call(["cp", "-a", src, dst])


def one(times, name, fn, prepare=None):
    """One timed run of `fn` (after `prepare` and a sync, both untimed) into times[name]."""
    if name in times and times[name] == "FAIL":
        return
    try:
        if prepare:
            prepare()
        os.sync()
        times.setdefault(name, []).append(run.timed(fn))
        print("  %-26s %.2fs" % (name, times[name][-1]), flush=True)
    except builders.BuildError as e:
        times[name] = "FAIL"
        print("  %-26s FAILED: %s" % (name, e), flush=True)


def bench(opts, kiln_bin, work):
    ctx = os.path.join(work, "context")
    print("generating %d files / %d MiB (text share %.2f) in %s ..."
          % (opts.files, opts.size_mb, opts.text_share, ctx), flush=True)
    t = time.monotonic()
    make_context(ctx, opts.files, opts.size_mb, opts.text_share, workloads.BASE_DEFAULT)
    print("  generated in %.1fs" % (time.monotonic() - t), flush=True)

    port = free_port()
    reg = Registry(work, port)
    pull_reg = Registry(work, free_port())
    repo = "bench/registry"
    kiln_ref = "%s/%s:kiln" % (reg.host, repo)
    docker_ref = "%s/%s:docker" % (reg.host, repo)
    kiln = builders.Kiln(kiln_bin, work, workloads.BASE_DEFAULT)
    docker = None
    if not opts.no_docker:
        if builders.Docker.available():
            docker = builders.Docker(work, workloads.BASE_DEFAULT)
        else:
            print("docker: not installed, skipped")
    started = []
    times, rss = {}, {"push": [], "pull": []}
    sizes = {}
    try:
        kiln.start()
        print("building with kiln ...", flush=True)
        kiln.build(ctx, kiln_ref, True)
        pristine = kiln.root + ".built"
        restore(kiln.root, pristine)
        layout = os.path.join(work, "oci-layout")
        kiln.run(["build", "--progress", "plain", "-o", "type=oci,dest=%s.tar" % layout, ctx])
        os.makedirs(layout)
        subprocess.check_call(["tar", "-xf", layout + ".tar", "-C", layout])
        os.unlink(layout + ".tar")
        sizes["uncompressed"] = uncompressed_size(layout)
        if docker:
            docker.start()
            started.append(docker)
            print("building with docker ...", flush=True)
            docker.build(ctx, docker_ref, True)

        def dk(*args):
            builders.run_logged(["/usr/bin/docker"] + list(args), docker.log, env=docker.env)

        started.append(reg)
        print("\n== pushes to a fresh registry on %s (interleaved runs)" % reg.host, flush=True)
        for _ in range(opts.runs):
            def kiln_push():
                rss["push"].append(kiln.run(["push", "--progress", "plain", kiln_ref]))

            def fresh_kiln():
                restore(pristine, kiln.root)
                reg.reset()

            one(times, "push kiln", kiln_push, fresh_kiln)
            sizes["kiln compressed"] = reg.image_size(repo, "kiln")
            one(times, "push kiln (gzipped)", kiln_push, reg.reset)
            if docker:
                one(times, "push docker", lambda: dk("push", "-q", docker_ref), reg.reset)
                sizes["docker compressed"] = reg.image_size(repo, "docker")
            one(times, "push skopeo", lambda: builders.run_logged(
                ["skopeo", "copy", "-q", "--dest-tls-verify=false", "oci:" + layout,
                 "docker://" + kiln_ref], os.path.join(work, "skopeo.log")), reg.reset)
        reg.stop()

        print("\n== pulls from %s (interleaved runs)" % pull_reg.host, flush=True)
        started.append(pull_reg)
        pull_reg.start()
        src = "%s/%s:kiln" % (pull_reg.host, repo)
        kiln.run(["push", "-q", kiln_ref, src])
        docker_src = "%s/%s:docker" % (pull_reg.host, repo)
        if docker:
            dk("tag", docker_ref, docker_src)
            dk("push", "-q", docker_src)
            # Nothing of the image may stay in dockerd, or `docker pull` skips those layers.
            dk("rmi", docker_ref, docker_src, workloads.BASE_DEFAULT)
            dk("builder", "prune", "-af")
        puller = builders.Kiln(kiln_bin, os.path.join(work, "pull"), workloads.BASE_DEFAULT)
        oci_dest = os.path.join(work, "pulled-oci")
        for _ in range(opts.runs):
            def fresh_puller():
                for d in (puller.root, puller.state):
                    restore_empty(d)

            one(times, "pull kiln", lambda: rss["pull"].append(puller.run(["pull", "-q", src])),
                fresh_puller)
            if docker:
                one(times, "pull docker", lambda: dk("pull", "-q", docker_src),
                    lambda: subprocess.call(["/usr/bin/docker", "rmi", docker_src], env=docker.env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            one(times, "pull skopeo", lambda: builders.run_logged(
                ["skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + src,
                 "oci:" + oci_dest], os.path.join(work, "skopeo.log")),
                lambda: restore_empty(oci_dest))
    finally:
        for s in reversed(started):
            s.stop()
    return times, rss, sizes


def restore_empty(d):
    run.unmount_under(d)
    subprocess.check_call(["rm", "-rf", "--one-file-system", d])
    os.makedirs(d)


ROWS = [("push kiln", "push", "kiln"), ("push kiln (gzipped)", "push", "kiln (layers gzipped)"),
        ("push docker", "push", "docker"), ("push skopeo", "push", "skopeo (from OCI layout)"),
        ("pull kiln", "pull", "kiln (fresh root)"), ("pull skopeo", "pull", "skopeo (to OCI layout)"),
        ("pull docker", "pull", "docker (after rmi)")]


def print_table(times, rss, sizes):
    mb = lambda n: n / 1e6  # noqa: E731
    comp = sizes.get("kiln compressed")
    unc = sizes.get("uncompressed")
    print("\nimage: %.1f MB uncompressed, %.1f MB gzipped by kiln (ratio %.2f)%s" % (
        mb(unc or 0), mb(comp or 0), (unc or 0) / (comp or 1),
        ", %.1f MB by docker" % mb(sizes["docker compressed"]) if "docker compressed" in sizes else ""))
    head = "%-5s %-26s %9s  %-22s %10s %12s %10s" % (
        "op", "tool", "median", "runs (s)", "gz MB/s", "uncomp MB/s", "kiln/this")
    print(head)
    print("-" * len(head))
    for key, op, label in ROWS:
        v = times.get(key)
        if v is None:
            continue
        if v == "FAIL":
            print("%-5s %-26s %9s" % (op, label, "FAIL"))
            continue
        med = statistics.median(v)
        size = sizes.get("docker compressed") if "docker" in key else comp
        k = times.get("push kiln" if op == "push" else "pull kiln")
        ratio = "%.2f" % (statistics.median(k) / med) if isinstance(k, list) else "-"
        print("%-5s %-26s %8.2fs  %-22s %10.1f %12.1f %10s" % (
            op, label, med, " ".join("%.1f" % x for x in v), mb(size or 0) / med, mb(unc or 0) / med,
            ratio))
    print("kiln/this: kiln's median over this row's (below 1: kiln is faster)")
    for op in ("push", "pull"):
        if rss[op]:
            print("kiln %s peak RSS: %.1f MiB (max of %d runs)" % (op, max(rss[op]) / 1024.0, len(rss[op])))


def interrupted(signum, frame):
    """SIGTERM unwinds like Ctrl-C, through the finally blocks that stop what was started."""
    raise KeyboardInterrupt()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row (median reported)")
    ap.add_argument("--size-mb", type=int, default=400, help="image content in MiB")
    ap.add_argument("--files", type=int, default=20000, help="number of files")
    ap.add_argument("--text-share", type=float, default=0.5,
                    help="share of the bytes (and files) that is compressible text")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--kiln", help="kiln binary (default: cargo build --release -p kiln)")
    ap.add_argument("--work", help="scratch directory (default: a new one under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--json", help="write the raw numbers here")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("run as root (builds mount overlayfs and run runc)")
    if not 0 <= opts.text_share <= 1:
        ap.error("--text-share must be between 0 and 1")
    signal.signal(signal.SIGTERM, interrupted)

    run.sh([os.path.join(REPO, "scripts", "base-images.sh")])
    kiln = run.kiln_binary(opts.kiln)
    work = run.work_dir(opts.work, "kiln-bench-registry-")
    load = os.getloadavg()
    try:
        try:
            times, rss, sizes = bench(opts, kiln, work)
        except KeyboardInterrupt:
            print("interrupted; everything started is stopped", file=sys.stderr)
            return 130
        print_table(times, rss, sizes)
        print("load average at start: %.2f %.2f %.2f; at end: %.2f %.2f %.2f"
              % (load + os.getloadavg()))
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump({"options": {"runs": opts.runs, "size_mb": opts.size_mb, "files": opts.files,
                                       "text_share": opts.text_share},
                           "sizes_bytes": sizes, "seconds": times,
                           "kiln_peak_rss_kb": rss, "load_start": load, "load_end": os.getloadavg()},
                          f, indent=2)
            print("wrote %s" % opts.json)
    finally:
        run.clean_up(work, opts, "kiln.log, docker.log, skopeo.log, registry.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
