"""Building and running the project's images in the tests, with podman (tests/test_images.py).

No image registry is reachable here, so every ``FROM`` gets a stand-in base built on this
machine: a Debian bookworm root filesystem (debootstrap) imported with ``podman import``, plus
Python in a venv and the CPU torch of the local wheel (``standin.Containerfile``). It is built
once and cached: the root filesystem as a tarball under ``.test-artifacts/images/`` and the image
in podman's store, both named by a hash of their inputs, so a second test run reuses them.
The product images are built with podman's layer cache (unchanged inputs: no rebuild).

Builds reach PyPI and the Debian mirror; this machine re-signs outbound HTTPS with its own CA,
so every build mounts the machine's CA bundle read-only, and a wheelhouse of the pinned stack
(:func:`wheelhouse`) with a pip.conf naming it. Build-time mounts only: nothing of them is in
the images, and the product Dockerfiles build unchanged on AWS.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ARTIFACTS = ROOT / ".test-artifacts" / "images"
CONTAINERS_CONF = HERE / "containers.conf"
STANDIN = HERE / "standin.Containerfile"
# where this machine keeps its CPU torch wheel: ML_EXP_TEST_WHEELS, else pip's find-links folder
WHEELS = Path(os.environ.get("ML_EXP_TEST_WHEELS") or (os.environ.get("PIP_FIND_LINKS") or "/opt/wheels").split()[0])
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"  # Python 3.11, as python:3.11-slim-bookworm
PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
STANDIN_REPO = "localhost/ml-exp-test-base"
ROOTFS_REPO = "localhost/ml-exp-test-rootfs"


def env() -> dict[str, str]:
    """The environment podman runs with: the repo's containers.conf (runc, cgroupfs, ulimits), and
    Docker's image format as `make images` builds it."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), "BUILDAH_FORMAT": "docker"}


def podman(*args: str, check: bool = True, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=env(), text=True, capture_output=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}... failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def torch_version() -> str:
    found = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert found, "constraints.txt pins no torch"
    return found.group(1)


def torch_wheel() -> Path | None:
    """This machine's CPU torch wheel of the version constraints.txt pins, for Python 3.11."""
    wheels = sorted(WHEELS.glob(f"torch-{torch_version()}+cpu-cp311-cp311-*.whl"))
    return wheels[0] if wheels else None


def why_not() -> str | None:
    """Why the image tests cannot run on this machine (None: they can)."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (.ci/run installs them: apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "not root: debootstrap, and podman with this machine's cgroups, need root"
    if torch_wheel() is None:
        return (f"no CPU torch wheel {WHEELS}/torch-{torch_version()}+cpu-cp311-cp311-*.whl on this machine "
                "(the stand-in base installs it: a torch from PyPI is a multi-GB CUDA build)")
    if not CA_BUNDLE.is_file():
        return f"no CA bundle at {CA_BUNDLE} to mount into the builds"
    probe = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=env(), text=True, capture_output=True)
    if probe.returncode != 0:
        return f"podman does not work here: {probe.stderr.strip()[-500:]}"
    return None


def apt_mirror() -> str:
    """The Debian mirror apt already uses on this machine (debootstrap needs a reachable one)."""
    sources = Path("/etc/apt/sources.list.d")
    texts = [p.read_text() for p in sorted(sources.glob("*.sources"))] if sources.is_dir() else []
    for text in texts:
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in uri:
                return uri.rstrip("/")
    listing = Path("/etc/apt/sources.list")
    if listing.is_file():
        for uri in re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", listing.read_text(), re.M):
            if "security" not in uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


EXTRAS = "train,sagemaker,serve,pdf"  # the most any image installs


def wheelhouse(log=print) -> Path:
    """The wheels of the pinned stack (constraints.txt), resolved and downloaded here once by this
    machine's pip for Python 3.11 on Linux (the stand-in's), so that four builds do not each
    download the same 300 MB from PyPI: the builds install from it alone (pip.conf: no-index,
    find-links), and a wheel missing from it fails the build rather than coming from elsewhere."""
    constraints, pyproject = ROOT / "constraints.txt", ROOT / "pyproject.toml"
    folder = ARTIFACTS / f"wheelhouse-{_digest(constraints.read_text(), pyproject.read_text())}"
    if folder.is_dir():
        return folder
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("wheelhouse-*"):  # earlier pins' wheels, or an interrupted download
        shutil.rmtree(old, ignore_errors=True)
    partial = folder.with_suffix(".partial")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--constraint", str(constraints), "--dest", str(partial),
                           f"{ROOT}[{EXTRAS}]", "setuptools>=69"], text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download of the pinned stack failed:\n{done.stderr[-3000:]}")
    partial.rename(folder)
    log(f"wheelhouse {folder.name}: {time.monotonic() - started:.0f} s")
    return folder


def build_mounts() -> list[str]:
    """Read-only mounts of every build: the machine's CA bundle (see the module's docstring),
    and the wheelhouse with a pip.conf naming it (pip reads /etc/pip.conf in any image)."""
    wheels = wheelhouse()
    (ARTIFACTS / "pip.conf").write_text("# written by tests/images: the wheelhouse, mounted into every build\n"
                                        "[global]\nno-index = true\nfind-links = /mnt/wheelhouse\n")
    return ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--volume", f"{wheels}:/mnt/wheelhouse:ro",
            "--volume", f"{ARTIFACTS / 'pip.conf'}:/etc/pip.conf:ro"]


def rootfs_image(log=print) -> str:
    """The imported Debian root filesystem, from a cached tarball (debootstrap only when missing)."""
    mirror = apt_mirror()
    key = _digest(SUITE, mirror, ",".join(PACKAGES), "minbase")
    tag = f"{ROOTFS_REPO}:{key}"
    if image_exists(tag):
        return tag
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tarball = ARTIFACTS / f"rootfs-{SUITE}-{key}.tar"
    if not tarball.is_file():
        target = ARTIFACTS / f"rootfs-{key}.tmp"
        shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(target), mirror],
                              text=True, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap {SUITE} from {mirror} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(target), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)  # complete or absent: an interrupted run starts again
        shutil.rmtree(target, ignore_errors=True)
        log(f"debootstrap {SUITE}: {time.monotonic() - started:.0f} s")
    podman("import", str(tarball), tag)
    return tag


def standin_base(log=print) -> str:
    """The stand-in base image (built once, then reused while its inputs are unchanged)."""
    wheel = torch_wheel()
    assert wheel is not None, why_not()
    constraints = (ROOT / "constraints.txt").read_text()
    key = _digest(STANDIN.read_text(), SUITE, apt_mirror(), ",".join(PACKAGES), wheel.name, str(wheel.stat().st_size), constraints)
    tag = f"{STANDIN_REPO}:{key}"
    if image_exists(tag):
        return tag
    rootfs = rootfs_image(log)
    started = time.monotonic()
    build(STANDIN, tag, HERE, {"ROOTFS": rootfs, "TORCH_WHEEL": wheel.name},
          mounts=["--volume", f"{wheel.parent}:/mnt/wheels:ro", "--volume", f"{ROOT / 'constraints.txt'}:/mnt/constraints.txt:ro"],
          cache=False)  # podman's layer cache does not see what the mounts hold; the key above does
    log(f"stand-in base {tag}: {time.monotonic() - started:.0f} s")
    stale = podman("images", "--format", "{{.Repository}}:{{.Tag}}", STANDIN_REPO, check=False).stdout.split()
    for old in (t for t in stale if t != tag):  # earlier inputs' stand-ins (in use: kept)
        podman("rmi", old, check=False)
    return tag


def build(dockerfile: Path, tag: str, context: Path, build_args: dict[str, str], mounts: list[str] = (), cache: bool = True) -> float:
    """``podman build`` (layer cache on), its output in .test-artifacts/images/logs/ (follow it
    there during a long build); returns the seconds it took."""
    args = ["podman", "build", "--file", str(dockerfile), "--tag", tag, *build_mounts(), *mounts, *([] if cache else ["--no-cache"])]
    for name, value in build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    logs = ARTIFACTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', tag)}.log"
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run([*args, str(context)], env=env(), stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"podman build of {dockerfile} failed ({done.returncode}); {log}:\n{log.read_text()[-6000:]}")
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
