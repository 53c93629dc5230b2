"""Build the kvstore image for real and check it: a node container, a kvctl container, a put/get.

    python -m e2e.image.build_and_test                # base image (reused), build, smoke test
    python -m e2e.image.build_and_test --build-only   # just the image (the kind suite uses this)
    python -m e2e.image.build_and_test --base-image python:3.11.14-slim-bookworm   # with a registry

Without ``--base-image`` the base is made here, with no registry: ``debootstrap`` (Debian bookworm,
minbase, with python3, python3-venv and ca-certificates) into a temporary directory, then
``docker import`` as ``kvstore-base:bookworm``. An existing base image is reused, so only the first
run pays for it (``--rebuild-base`` forces a new one).

The build runs with ``--network host`` (a container on the default bridge may not reach the package
index here). When pip on this machine trusts a CA bundle of its own (``PIP_CERT``, or the
``/etc/ssl/certs/ca-certificates.crt`` that Debian's tools use), that bundle is imported as a
one-file image and passed as ``PIP_CA_IMAGE``, so that pip in the builder stage trusts it too; the
runtime image keeps the base's own CA bundle.

The smoke test runs the node as the image's non-root user with a read-only root filesystem, all
capabilities dropped and a volume for its data; then ``kvctl put``/``get`` from a second container
of the same image, a metrics scrape, and the other commands' ``--version``. Every container it
starts is removed at the end, whatever happens. It exits 0 when everything passed, 1 when a check
failed, and 3 when docker (or debootstrap, for a new base) is not usable here, naming what is
missing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "kvstore-base:bookworm"
CA_IMAGE_REPO = "kvstore-build-ca"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CONTAINER_PREFIX = "kvstore-image-test-"
EXIT_UNAVAILABLE = 3
IMAGE_UID = 10001


def version() -> str:
    """The project version (kvnode.__version__), read without importing the package."""
    for line in (REPO / "kvnode" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise RuntimeError("no __version__ in kvnode/__init__.py")


DEFAULT_TAG = f"kvstore:{version()}"


class Unavailable(RuntimeError):
    """Something this machine lacks (docker, debootstrap, root): not a failure of the image."""


class CheckFailed(RuntimeError):
    pass


@dataclass
class Timings:
    phases: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        log(f"{name} ...")
        try:
            yield
        finally:
            seconds = time.monotonic() - start
            self.phases.append((name, seconds))
            log(f"{name}: {seconds:.1f}s")

    def summary(self) -> str:
        total = sum(s for _, s in self.phases)
        rows = [f"  {name:<52} {s:7.1f}s" for name, s in self.phases]
        return "\n".join(["timings:", *rows, f"  {'total':<52} {total:7.1f}s"])


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args),
        check=False,
        capture_output=capture,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip()[-3000:] if capture else ""
        raise CheckFailed(f"{' '.join(args[:6])} ... exited {result.returncode}\n{detail}")
    return result


# -- prerequisites -------------------------------------------------------------------------------


def docker_problem() -> str | None:
    """None when the docker CLI is installed and its daemon answers; otherwise what is missing."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (Debian: apt-get install docker.io)"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "the docker daemon did not answer within 20s"
    if info.returncode != 0 or not info.stdout.strip():
        why = (info.stderr or "").strip().splitlines()
        return "the docker daemon is not running or not reachable (start dockerd)" + (
            f": {why[-1]}" if why else ""
        )
    return None


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], check=False).returncode == 0


def image_id(ref: str) -> str:
    """The image's ID, or "" when there is no such image."""
    result = run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def debootstrap_problem() -> str | None:
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (Debian: apt-get install debootstrap)"
    if os.geteuid() != 0:
        return "debootstrap needs root"
    return None


def problems(base_image: str | None, rebuild_base: bool = False) -> list[str]:
    """Everything that keeps a build from running here (empty: it can run)."""
    out = []
    docker = docker_problem()
    if docker:
        return [docker]
    if base_image is None and (rebuild_base or not image_exists(BASE_IMAGE)):
        boot = debootstrap_problem()
        if boot:
            out.append(f"no {BASE_IMAGE} image yet, and {boot}")
    return out


# -- images --------------------------------------------------------------------------------------


def build_base_image(mirror: str, tag: str = BASE_IMAGE) -> None:
    """Debian bookworm (minbase + python3, venv, CA certificates) with debootstrap, as ``tag``."""
    with tempfile.TemporaryDirectory(prefix="kvstore-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                DEBIAN_SUITE,
                str(root),
                mirror,
            ],
            timeout=1800,
        )
        # What an image does not need: downloaded packages, package lists, docs, man pages.
        for pattern in (
            "var/cache/apt/archives/*.deb",
            "var/lib/apt/lists/*",
            "usr/share/doc/*",
            "usr/share/man/*",
            "usr/share/info/*",
            "var/log/*.log",
        ):
            for path in root.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imported = subprocess.run(
            ["docker", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["/bin/bash"]', "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise CheckFailed(f"docker import of the debootstrap tree failed: {imported.stderr.strip()}")


def pip_ca_bundle() -> Path | None:
    """The CA bundle pip trusts on this machine, if any: $PIP_CERT, else Debian's system bundle."""
    for candidate in (os.environ.get("PIP_CERT", ""), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def ensure_ca_image(bundle: Path) -> str:
    """A one-file image holding ``bundle`` at /etc/ssl/certs/ca-certificates.crt, named by its hash
    (so an unchanged bundle reuses the image)."""
    data = bundle.read_bytes()
    tag = f"{CA_IMAGE_REPO}:{hashlib.sha256(data).hexdigest()[:16]}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="kvstore-ca-") as tmp:
        target = Path(tmp) / "etc" / "ssl" / "certs" / "ca-certificates.crt"
        target.parent.mkdir(parents=True)
        target.write_bytes(data)
        tar = subprocess.run(
            ["tar", "-C", tmp, "--numeric-owner", "--owner=0", "--group=0", "-c", "etc"],
            capture_output=True,
            check=True,
        )
        imported = subprocess.run(
            ["docker", "import", "-", tag], input=tar.stdout, capture_output=True, check=False
        )
        if imported.returncode != 0:
            raise CheckFailed(f"docker import of the CA bundle failed: {imported.stderr.decode().strip()}")
    return tag


def build_image(tag: str, base_image: str, ca_image: str | None, network_host: bool = True) -> None:
    args = [
        "docker",
        "build",
        "--file",
        str(REPO / "Dockerfile"),
        "--tag",
        tag,
        "--build-arg",
        f"BASE_IMAGE={base_image}",
    ]
    if ca_image:
        args += ["--build-arg", f"PIP_CA_IMAGE={ca_image}"]
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        # Only real index URLs travel into the build; this machine's file:// mirrors cannot.
        value = " ".join(u for u in os.environ.get(name, "").split() if u.startswith(("http://", "https://")))
        if value:
            args += ["--build-arg", f"{name}={value}"]
    if network_host:
        args += ["--network", "host"]
    args.append(str(REPO))
    # The classic builder: it works with every daemon (Debian's docker.io has no buildx), and the
    # Dockerfile needs nothing BuildKit-only.
    env = {**os.environ, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=3600)
    if result.returncode != 0:
        raise CheckFailed(f"docker build failed:\n{(result.stdout + result.stderr)[-6000:]}")


# -- smoke test ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, timeout: float, probe: object) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if probe():  # type: ignore[operator]
                return
        except Exception as exc:  # noqa: BLE001 - the probe fails until the thing is up
            last = str(exc)
        time.sleep(0.2)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else ""))


HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def kvctl(tag: str, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            *HARDENED,
            tag,
            "kvctl",
            "--endpoints",
            endpoint,
            "--timeout",
            "5s",
            *args,
        ],
        check=False,
        timeout=120,
    )


def smoke_test(tag: str) -> None:
    config = json.loads(run(["docker", "image", "inspect", tag]).stdout)[0]["Config"]
    user = str(config.get("User", ""))
    if user.split(":")[0] != str(IMAGE_UID):
        raise CheckFailed(f"the image's user is {user!r}, expected {IMAGE_UID}:{IMAGE_UID}")
    exposed = set((config.get("ExposedPorts") or {}).keys())
    if not {"7000/tcp", "9100/tcp"} <= exposed:
        raise CheckFailed(f"the image exposes {sorted(exposed)}, expected 7000/tcp and 9100/tcp")
    for command in (["kvnode", "--version"], ["kvctl", "--version"], ["kvstore-operator", "--version"]):
        out = run(["docker", "run", "--rm", *HARDENED, tag, *command], timeout=120)
        log(f"{' '.join(command)}: {out.stdout.strip() or out.stderr.strip()}")
    ident = run(["docker", "run", "--rm", tag, "id", "-u"], timeout=60).stdout.strip()
    if ident != str(IMAGE_UID):
        raise CheckFailed(f"containers run as uid {ident}, expected {IMAGE_UID}")

    port, metrics_port = free_port(), free_port()
    endpoint = f"127.0.0.1:{port}"
    name = f"{CONTAINER_PREFIX}node-{secrets.token_hex(3)}"
    try:
        run(
            [
                "docker",
                "run",
                "--detach",
                "--name",
                name,
                "--network",
                "host",
                *HARDENED,
                "--mount",
                "type=volume,dst=/var/lib/kvnode",
                tag,
                "kvnode",
                "--node-id",
                "smoke-0",
                "--listen",
                endpoint,
                "--metrics-listen",
                f"127.0.0.1:{metrics_port}",
            ],
            timeout=120,
        )

        def serving() -> bool:
            state = run(["docker", "inspect", "--format", "{{.State.Running}}", name]).stdout.strip()
            if state != "true":
                logs = run(["docker", "logs", "--tail", "30", name], check=False)
                raise CheckFailed(f"the node container stopped:\n{logs.stdout}{logs.stderr}")
            return kvctl(tag, endpoint, "status").returncode == 0

        wait_for("the node container to serve", 90, serving)
        value = f"from-the-image-{secrets.token_hex(4)}"
        put = kvctl(tag, endpoint, "put", "smoke/hello", value)
        if put.returncode != 0:
            raise CheckFailed(f"kvctl put failed ({put.returncode}): {put.stderr.strip()}")
        got = kvctl(tag, endpoint, "get", "smoke/hello")
        if got.returncode != 0 or got.stdout.strip() != value:
            raise CheckFailed(f"kvctl get returned {got.returncode} {got.stdout!r}, expected {value!r}")
        log(f"put/get through kvctl in a second container: {got.stdout.strip()!r}")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            page = response.read().decode()
        for metric in ("kvnode_requests_total", "kvnode_lmdb_used_bytes", "kvnode_membership_epoch"):
            if metric not in page:
                raise CheckFailed(f"the node's /metrics has no {metric}")
        log("metrics endpoint serves the node's metrics")
        stopped = run(["docker", "stop", "--time", "20", name], check=False, timeout=60)
        code = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", name]).stdout.strip()
        if stopped.returncode != 0 or code != "0":
            logs = run(["docker", "logs", "--tail", "30", name], check=False)
            raise CheckFailed(f"the node did not stop cleanly on SIGTERM (exit {code}):\n{logs.stderr}")
        log("the node stopped cleanly on SIGTERM")
    finally:
        run(["docker", "rm", "--force", "--volumes", name], check=False, timeout=60)


def remove_leftovers() -> None:
    """Containers of an earlier run that was killed before it could clean up."""
    names = run(
        ["docker", "ps", "--all", "--filter", f"name={CONTAINER_PREFIX}", "--format", "{{.Names}}"],
        check=False,
    ).stdout.split()
    if names:
        run(["docker", "rm", "--force", "--volumes", *names], check=False)


# -- main ----------------------------------------------------------------------------------------


def build(
    tag: str = DEFAULT_TAG,
    *,
    base_image: str | None = None,
    rebuild_base: bool = False,
    mirror: str = DEFAULT_MIRROR,
    timings: Timings | None = None,
) -> str:
    """Build the image as ``tag`` (making the debootstrap base first if needed); return the tag."""
    timings = timings or Timings()
    missing = problems(base_image, rebuild_base)
    if missing:
        raise Unavailable("; ".join(missing))
    base = base_image or BASE_IMAGE
    if base_image is None and (rebuild_base or not image_exists(BASE_IMAGE)):
        with timings.phase(f"base image {BASE_IMAGE} (debootstrap + import)"):
            build_base_image(mirror)
    else:
        log(f"base image {base}: reused" if image_exists(base) else f"base image {base}: pulled by the build")
    bundle = pip_ca_bundle()
    ca_image = None
    if bundle is not None:
        with timings.phase("CA bundle image"):
            ca_image = ensure_ca_image(bundle)
    before = image_id(tag)
    with timings.phase(f"docker build {tag}"):
        build_image(tag, base, ca_image)
    after = image_id(tag)
    if before and before != after:
        # The image this tag named before is now untagged; drop it unless something still uses it.
        run(["docker", "image", "rm", before], check=False)
    size = run(["docker", "image", "inspect", "--format", "{{.Size}}", tag]).stdout.strip()
    log(f"{tag}: {int(size) / 1e6:.0f} MB")
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.image.build_and_test", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image tag (default: {DEFAULT_TAG})")
    parser.add_argument(
        "--base-image",
        default=None,
        help=f"base image to build on (default: {BASE_IMAGE}, made with debootstrap)",
    )
    parser.add_argument("--rebuild-base", action="store_true", help="make the debootstrap base again")
    parser.add_argument(
        "--mirror",
        default=os.environ.get("KVSTORE_DEBIAN_MIRROR", DEFAULT_MIRROR),
        help="Debian mirror for debootstrap (env KVSTORE_DEBIAN_MIRROR)",
    )
    parser.add_argument("--build-only", action="store_true", help="build, skip the smoke test")
    args = parser.parse_args(argv)
    timings = Timings()
    try:
        remove_leftovers() if docker_problem() is None else None
        build(
            args.tag,
            base_image=args.base_image,
            rebuild_base=args.rebuild_base,
            mirror=args.mirror,
            timings=timings,
        )
        if not args.build_only:
            with timings.phase("smoke test (node + kvctl containers)"):
                smoke_test(args.tag)
    except Unavailable as exc:
        log(f"cannot build the image here: {exc}")
        return EXIT_UNAVAILABLE
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        log(f"FAILED: {exc}")
        print(timings.summary(), file=sys.stderr)
        return 1
    print(timings.summary(), file=sys.stderr)
    log(f"OK: {args.tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
