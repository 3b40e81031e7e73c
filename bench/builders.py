"""The builders the benchmark compares: kiln, docker (dockerd 20.10 + BuildKit) and buildah.

Each builder has its own scratch state under the benchmark's work directory and builds with
`build(ctx, tag, no_cache)`; the caller times it. Every builder pulls the base image from the
plain-HTTP test registry on localhost:5000 and writes the result to its own image store.
"""
import json
import os
import shutil
import signal
import subprocess
import time


class BuildError(Exception):
    pass


def run_logged(argv, log, env=None, timeout=1800):
    """Runs argv with output appended to `log`; raises BuildError with the log's tail."""
    with open(log, "ab") as out:
        out.write(("\n$ %s\n" % " ".join(argv)).encode())
        out.flush()
        rc = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if rc != 0:
        with open(log, "rb") as f:
            tail = f.read()[-1500:].decode("utf-8", "replace")
        raise BuildError("%s exited %d; log %s:\n%s" % (argv[0], rc, log, tail))


def stop_daemon(proc):
    """SIGTERM to a daemon we started (a clean stop), SIGKILL if it takes over 30 s."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


class Kiln:
    name = "kiln"

    def __init__(self, binary, work, base):
        self.binary = binary
        self.root = os.path.join(work, "kiln-root")
        self.state = os.path.join(work, "kiln-state")
        self.base = base
        self.log = os.path.join(work, "kiln.log")
        self.peak_rss_kb = 0

    def start(self):
        os.makedirs(self.root, exist_ok=True)

    def run(self, args, env=None):
        """Runs `kiln --root R --state S ARGS...` under /usr/bin/time; returns its peak RSS in
        KiB (0 if unknown) and keeps the largest seen in peak_rss_kb."""
        # /usr/bin/time reports the peak RSS of kiln itself (children are runc and the
        # containers, which a daemon-based builder would not count either).
        rss_file = os.path.join(os.path.dirname(self.log), "kiln.rss")
        argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file, self.binary, "--root", self.root,
                "--state", self.state] + list(args)
        run_logged(argv, self.log, env=env)
        try:
            with open(rss_file) as f:
                rss = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            return 0
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        return rss

    def build(self, ctx, tag, no_cache):
        argv = ["build", "--progress", "plain", "--build-arg", "BASE=" + self.base, "-t", tag]
        if no_cache:
            argv.append("--no-cache")
        self.run(argv + [ctx])

    def stop(self):
        pass


class KilnDaemon:
    """kiln as a client of a private kilnd (own root, state and socket): the context travels
    over the daemon's API (only what changed, after the first build)."""
    name = "kiln-daemon"

    def __init__(self, binary, work, base):
        self.binary = binary
        self.kilnd = os.path.join(os.path.dirname(binary), "kilnd")
        self.root = os.path.join(work, "kilnd-root")
        self.state = os.path.join(work, "kilnd-state")
        self.sock = os.path.join(work, "kilnd.sock")
        self.base = base
        self.log = os.path.join(work, "kilnd.log")
        self.proc = None

    def available(self):
        return os.path.exists(self.kilnd)

    def start(self):
        argv = [self.kilnd, "--root", self.root, "--state", self.state, "--addr", "unix://" + self.sock]
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        for _ in range(150):
            if self.proc.poll() is not None:
                raise BuildError("kilnd exited at start-up; log %s" % self.log)
            if os.path.exists(self.sock):
                return
            time.sleep(0.2)
        raise BuildError("kilnd did not listen within 30s; log %s" % self.log)

    def build(self, ctx, tag, no_cache):
        argv = [self.binary, "--addr", "unix://" + self.sock, "build", "--progress", "plain",
                "--build-arg", "BASE=" + self.base, "-t", tag]
        if no_cache:
            argv.append("--no-cache")
        run_logged(argv + [ctx], self.log)

    def stop(self):
        stop_daemon(self.proc)


class Docker:
    """A private dockerd (own data root, exec root and socket), configured as MACHINE.md says:
    no bridge, no iptables; builds therefore use --network=host."""
    name = "docker"

    def __init__(self, work, base):
        self.dir = os.path.join(work, "docker")
        self.sock = os.path.join(self.dir, "docker.sock")
        self.base = base
        self.log = os.path.join(work, "docker.log")
        self.proc = None
        self.env = dict(os.environ, DOCKER_BUILDKIT="1", DOCKER_HOST="unix://" + self.sock)

    @staticmethod
    def available():
        return shutil.which("dockerd") is not None and os.path.exists("/usr/bin/docker")

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "daemon.json")
        with open(cfg, "w") as f:
            json.dump({"bridge": "none", "iptables": False, "insecure-registries": ["localhost:5000"],
                       "storage-driver": "overlay2"}, f)
        argv = ["dockerd", "--config-file", cfg, "--data-root", os.path.join(self.dir, "data"),
                "--exec-root", "/run/kiln-bench-docker", "--pidfile", os.path.join(self.dir, "dockerd.pid"),
                "-H", "unix://" + self.sock]
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        for _ in range(150):
            if self.proc.poll() is not None:
                raise BuildError("dockerd exited at start-up; log %s" % self.log)
            if subprocess.call(["/usr/bin/docker", "info"], env=self.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) == 0:
                break
            time.sleep(0.2)
        else:
            raise BuildError("dockerd did not answer within 30s; log %s" % self.log)
        # Have the base image local before timing anything, as kiln and buildah do after run 1.
        run_logged(["/usr/bin/docker", "pull", "-q", self.base], self.log, env=self.env)

    def build(self, ctx, tag, no_cache):
        argv = ["/usr/bin/docker", "build", "--network=host", "--progress=plain",
                "--build-arg", "BASE=" + self.base, "-t", tag]
        if no_cache:
            argv.append("--no-cache")
        run_logged(argv + [ctx], self.log, env=self.env)

    def stop(self):
        stop_daemon(self.proc)


class Buildah:
    name = "buildah"

    def __init__(self, work, base):
        self.root = os.path.join(work, "buildah-root")
        self.runroot = os.path.join(work, "buildah-run")
        self.base = base
        self.log = os.path.join(work, "buildah.log")

    @staticmethod
    def available():
        return shutil.which("buildah") is not None

    def start(self):
        os.makedirs(self.root, exist_ok=True)

    def build(self, ctx, tag, no_cache):
        argv = ["buildah", "--root", self.root, "--runroot", self.runroot, "--storage-driver", "overlay",
                "bud", "--isolation=oci", "--network=host", "--layers", "--jobs=0", "--tls-verify=false",
                "--build-arg", "BASE=" + self.base, "-t", tag]
        if no_cache:
            argv.append("--no-cache")
        run_logged(argv + [ctx], self.log)

    def stop(self):
        pass
