"""Benchmark workloads: each writes a build context (Dockerfile included) into a directory.

Every workload builds FROM the busybox base in the local test registry (build arg BASE), needs
no network, and is deterministic (fixed seeds), so runs on different machines compare.
"""
import os
import random

BASE_DEFAULT = "localhost:5000/library/busybox:latest"

MULTISTAGE = """\
ARG BASE
# Stage 1: generate a source tree.
FROM $BASE AS gen
RUN mkdir -p /src && cd /src \\
 && for d in $(seq 1 40); do mkdir d$d; for f in $(seq 1 50); do \\
      echo "dir $d file $f $(seq 1 $f)" > d$d/f$f.txt; done; done
# Stage 2: "compile" it: checksums and a concatenation.
FROM $BASE AS build
COPY --from=gen /src /src
RUN cd /src && find . -type f | sort | xargs sha256sum > /sums \\
 && find . -type f | sort | xargs cat | gzip -9 > /bundle.gz
# Stage 3: tests against the build output.
FROM $BASE AS test
COPY --from=build /sums /bundle.gz /out/
RUN test "$(wc -l < /out/sums)" = 2000 && gzip -t /out/bundle.gz && echo ok > /out/tested
# Final image: the artifacts only.
FROM $BASE
COPY --from=build /bundle.gz /app/
COPY --from=test /out/tested /app/
CMD ["ls", "-l", "/app"]
"""

BIG_CONTEXT = """\
ARG BASE
FROM $BASE
COPY . /app
RUN find /app -type f | wc -l > /file-count && du -s /app > /du
"""

PARALLEL = """\
ARG BASE
FROM $BASE AS a
RUN sleep 2 && echo a > /a
FROM $BASE AS b
RUN sleep 2 && echo b > /b
FROM $BASE AS c
RUN sleep 2 && echo c > /c
FROM $BASE AS d
RUN sleep 2 && echo d > /d
FROM $BASE
COPY --from=a /a /out/
COPY --from=b /b /out/
COPY --from=c /c /out/
COPY --from=d /d /out/
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def make_multistage(ctx):
    write(os.path.join(ctx, "Dockerfile"), MULTISTAGE)


def make_parallel(ctx):
    write(os.path.join(ctx, "Dockerfile"), PARALLEL)


def file_sizes(rng, count, total):
    """Sizes that look like a source tree: mostly small files, a few large ones, summing
    to exactly `total` bytes."""
    raw = [rng.lognormvariate(8.0, 2.0) for _ in range(count)]
    scale = total / sum(raw)
    sizes = [max(1, int(r * scale)) for r in raw]
    sizes[-1] += total - sum(sizes)
    if sizes[-1] < 1:  # rounding pushed the last one negative: take it from the largest
        i = max(range(count), key=lambda k: sizes[k])
        sizes[i] += sizes[-1] - 1
        sizes[-1] = 1
    return sizes


def make_big_context(ctx, files=20000, total_mb=400, seed=20240101):
    """~`files` files, `total_mb` MiB in all, in a two-level tree; content from a seeded PRNG
    (incompressible, like binaries and media) with a text header so files differ early."""
    write(os.path.join(ctx, "Dockerfile"), BIG_CONTEXT)
    rng = random.Random(seed)
    sizes = file_sizes(rng, files, total_mb * 1024 * 1024)
    per_dir = 100
    for i, size in enumerate(sizes):
        d = os.path.join(ctx, "src", "m%03d" % (i // (per_dir * 10)), "p%02d" % ((i // per_dir) % 10))
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        header = b"file %d\n" % i
        body = rng.randbytes(max(0, size - len(header)))
        with open(os.path.join(d, "f%05d.dat" % i), "wb") as f:
            f.write((header + body)[:size])
    return os.path.join(ctx, "src", "m000", "p00", "f00000.dat")


def touch_one_file(path, generation):
    """Changes one file's content (not just its mtime), differently each time."""
    with open(path, "r+b") as f:
        f.write(b"edit %08d\n" % generation)


WORKLOADS = {
    "multistage": make_multistage,
    "bigctx": make_big_context,
    "parallel": make_parallel,
}
