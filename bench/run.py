#!/usr/bin/env python3
"""bench/run.py - time kiln against docker build and buildah on generated workloads.

Run by hand as root (never part of the tests):

  bench/run.py [--runs N] [--only multistage,bigctx,parallel] [--kiln PATH] [--daemon]
               [--install-competitors] [--no-docker] [--no-buildah]
               [--files N] [--size-mb MB] [--work DIR] [--keep]

Workloads (bench/workloads.py), each built N times (median reported):
  multistage   a cold multi-stage build: generate -> compile -> test -> final, RUN + COPY --from
  bigctx       a context of ~20,000 files / 400 MB with `COPY . /app` and a RUN:
               cold build, no-change rebuild, one-file-changed rebuild
  parallel     four independent `RUN sleep 2` stages joined with COPY --from (ideal: ~2 s)

"Cold" means --no-cache with the base image already local (so registry pulls are not timed).
Competitors are used when installed: docker (a private dockerd 20.10 with BuildKit, started with
no bridge and no iptables, builds with --network=host) and buildah (--isolation=oci --layers).
--install-competitors apt-installs docker.io and buildah first. Base images come from the test
registry on localhost:5000 (scripts/base-images.sh starts it and pushes busybox).
Prints a table of medians, kiln/docker ratios and kiln's peak RSS (from /usr/bin/time).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
sys.path.insert(0, HERE)

import builders  # noqa: E402
import workloads  # noqa: E402


def sh(argv):
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def timed(fn):
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def scenarios(ctx_root, opts):
    """Generates the contexts once and returns the rows every builder runs:
    (row name, context dir, no_cache, callable run before each timed build or None)."""
    rows = []
    if "multistage" in opts.only:
        ctx = os.path.join(ctx_root, "multistage")
        workloads.make_multistage(ctx)
        rows.append(("multistage cold", ctx, True, None))
    if "bigctx" in opts.only:
        ctx = os.path.join(ctx_root, "bigctx")
        print("generating %d files / %d MB in %s ..." % (opts.files, opts.size_mb, ctx), flush=True)
        t = time.monotonic()
        edited = workloads.make_big_context(ctx, opts.files, opts.size_mb)
        print("  generated in %.1fs" % (time.monotonic() - t), flush=True)
        gen = [0]

        def edit():
            gen[0] += 1
            workloads.touch_one_file(edited, gen[0])

        rows.append(("bigctx cold", ctx, True, None))
        rows.append(("bigctx no-change rebuild", ctx, False, None))
        rows.append(("bigctx 1-file-changed rebuild", ctx, False, edit))
    if "parallel" in opts.only:
        ctx = os.path.join(ctx_root, "parallel")
        workloads.make_parallel(ctx)
        rows.append(("parallel 4x sleep 2 cold", ctx, True, None))
    return rows


def bench_all(blds, rows, runs):
    """Returns {builder: {row name: [seconds...] or "FAIL"}}. Runs are interleaved (kiln,
    docker, buildah, kiln, ...) so that the machine's noise, which drifts over minutes on
    these VMs, hits every builder alike instead of whichever happened to run during a slow
    spell."""
    results = {b.name: {} for b in blds}
    for name, ctx, no_cache, prepare in rows:
        tag = "kiln-bench/%s:latest" % os.path.basename(ctx)
        times = {b.name: [] for b in blds}
        failed = {}
        if not no_cache:
            for b in blds:  # warm the cache for the rebuild rows
                try:
                    b.build(ctx, tag, False)
                except builders.BuildError as e:
                    failed[b.name] = e
        for _ in range(runs):
            for b in blds:
                if b.name in failed:
                    continue
                if prepare:
                    prepare()
                # Untimed: write back what the previous build left dirty, so that no builder
                # pays for another's writeback (the disks here are slow and every cold build
                # writes hundreds of MB).
                os.sync()
                try:
                    times[b.name].append(timed(lambda: b.build(ctx, tag, no_cache)))
                except builders.BuildError as e:
                    failed[b.name] = e
        for b in blds:
            if b.name in failed:
                results[b.name][name] = "FAIL"
                print("  %-8s %-32s FAILED: %s" % (b.name, name, failed[b.name]), flush=True)
            else:
                results[b.name][name] = times[b.name]
                print("  %-8s %-32s %s" % (b.name, name, " ".join("%.2fs" % t for t in times[b.name])), flush=True)
    return results


def fmt(v):
    if isinstance(v, list):
        return "%.2fs" % statistics.median(v)
    return v or "-"


def print_table(rows, results, kiln_rss_kb):
    names = [r[0] for r in rows]
    cols = list(results)
    width = max(len(n) for n in names) + 2
    # (column title, width, builder on top) for each ratio against docker shown.
    ratios = []
    if "docker" in results:
        ratios.append(("kiln/docker", 14, "kiln"))
        if "kiln-daemon" in results:
            ratios.append(("daemon/docker", 16, "kiln-daemon"))
    head = "%-*s" % (width, "workload (median)") + "".join("%12s" % c for c in cols)
    head += "".join("%*s" % (w, title) for title, w, _ in ratios)
    print("\n" + head)
    print("-" * len(head))
    for n in names:
        line = "%-*s" % (width, n) + "".join("%12s" % fmt(results[c].get(n)) for c in cols)
        for _, w, who in ratios:
            k, d = results[who].get(n), results["docker"].get(n)
            ratio = "-"
            if isinstance(k, list) and isinstance(d, list):
                ratio = "%.2f" % (statistics.median(k) / statistics.median(d))
            line += "%*s" % (w, ratio)
        print(line)
    print("\nkiln peak RSS: %.1f MiB" % (kiln_rss_kb / 1024.0) if kiln_rss_kb else "\nkiln peak RSS: n/a")


def unmount_under(path):
    """Lazily unmounts whatever a builder left mounted under `path`, deepest first."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp == path or mp.startswith(path + "/"):
                mounts.append(mp)
    for mp in sorted(mounts, reverse=True):
        subprocess.call(["umount", "-l", mp], stderr=subprocess.DEVNULL)


def kiln_binary(path):
    """`path`, or the release binary of this checkout, built now."""
    if path:
        return path
    sh(["cargo", "build", "--release", "-p", "kiln", "--manifest-path", os.path.join(REPO, "Cargo.toml")])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release", "kiln")


def work_dir(path, prefix):
    """The scratch directory: `path` (--work), else a new one under /var/tmp (not /tmp: it may
    be a tmpfs, and 400 MB of context plus several image stores add up)."""
    work = path or tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    print("work dir: %s" % work, flush=True)
    return work


def clean_up(work, opts, logs):
    """Unmounts what is left under `work`, then keeps it (--keep, --work) or deletes it."""
    unmount_under(work)
    if opts.keep or opts.work:
        print("kept %s (logs: %s)" % (work, logs))
    else:
        subprocess.call(["rm", "-rf", "--one-file-system", work])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row (median reported)")
    ap.add_argument("--only", default="multistage,bigctx,parallel", help="comma-separated workloads")
    ap.add_argument("--kiln", help="kiln binary (default: cargo build --release -p kiln)")
    ap.add_argument("--install-competitors", action="store_true", help="apt-install docker.io and buildah")
    ap.add_argument("--daemon", action="store_true", help="also time kiln through a private kilnd")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--no-buildah", action="store_true")
    ap.add_argument("--files", type=int, default=20000, help="bigctx: number of files")
    ap.add_argument("--size-mb", type=int, default=400, help="bigctx: total size in MiB")
    ap.add_argument("--base", default=workloads.BASE_DEFAULT, help="base image (build arg BASE)")
    ap.add_argument("--work", help="scratch directory (default: a new one under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    opts = ap.parse_args()
    opts.only = [w.strip() for w in opts.only.split(",") if w.strip()]
    unknown = [w for w in opts.only if w not in workloads.WORKLOADS]
    if unknown:
        ap.error("unknown workload(s): %s" % ", ".join(unknown))
    if os.geteuid() != 0:
        ap.error("run as root (builds mount overlayfs and run runc)")

    deps = [os.path.join(REPO, "scripts", "install-deps.sh")]
    if opts.install_competitors:
        deps += ["docker.io", "buildah"]
    sh(deps)
    sh([os.path.join(REPO, "scripts", "base-images.sh")])
    kiln = kiln_binary(opts.kiln)
    work = work_dir(opts.work, "kiln-bench-")
    blds = [builders.Kiln(kiln, work, opts.base)]
    if opts.daemon:
        d = builders.KilnDaemon(kiln, work, opts.base)
        if d.available():
            blds.append(d)
        else:
            print("kiln-daemon: no kilnd next to %s, skipped" % kiln)
    if not opts.no_docker:
        if builders.Docker.available():
            blds.append(builders.Docker(work, opts.base))
        else:
            print("docker: not installed (--install-competitors), skipped")
    if not opts.no_buildah:
        if builders.Buildah.available():
            blds.append(builders.Buildah(work, opts.base))
        else:
            print("buildah: not installed (--install-competitors), skipped")

    results = {}
    try:
        rows = scenarios(os.path.join(work, "contexts"), opts)
        started = []
        try:
            for b in blds:
                try:
                    b.start()
                    started.append(b)
                except builders.BuildError as e:
                    print("  %s: could not start: %s" % (b.name, e))
            print("\n== %s (interleaved runs)" % ", ".join(b.name for b in started), flush=True)
            results = bench_all(started, rows, opts.runs)
        finally:
            for b in started:
                b.stop()
        print_table(rows, results, blds[0].peak_rss_kb)
    finally:
        clean_up(work, opts, "kiln.log, docker.log, buildah.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
