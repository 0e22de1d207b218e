"""The sandbox image: a minimal Debian root made offline from the host's own apt source.

`build_image` runs debootstrap (minbase) of the host's Debian release against
the mirror the host's apt is configured with, adds the session user and
sekbench's sandbox tools (`panic`, the login profile that shows the
breadcrumb, the reaper), and imports it into the local Docker engine tagged by
content. The same root, unpacked under the workspace, serves the bubblewrap
backend. A second call with nothing changed returns at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MissingComponent, SekbenchError
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "sandbox"
REPO = "sekbench-sandbox"
# Beyond minbase: a ps/pgrep for the reaper, and the pager and editor a model may reach for.
EXTRA_PACKAGES = ["procps", "less", "vim-tiny"]
SESSION_USER = "sek"
SESSION_UID = 1000
BUILD_VERSION = "3"  # bump when the build steps below change


@dataclass
class ImageInfo:
    tag: str
    rootfs: Path
    built: bool  # False when an existing build was reused


def host_release() -> str:
    fields = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            k, _, v = line.partition("=")
            fields[k] = v.strip().strip('"')
    except OSError:
        pass
    if fields.get("ID") != "debian" or not fields.get("VERSION_CODENAME"):
        raise MissingComponent("the sandbox image is built from the host's Debian release, "
                               "and this host is not Debian")
    return fields["VERSION_CODENAME"]


def host_mirror(suite: str) -> str:
    """The first apt source of the host that serves `suite`, read from its apt configuration."""
    candidates: list[str] = []
    deb822 = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for f in deb822:
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            kv = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, _, v = line.partition(":")
                kv[k.strip().lower()] = v.split()
            if suite in kv.get("suites", []) and "deb" in kv.get("types", ["deb"]):
                if "enabled" in kv and kv["enabled"] == ["no"]:
                    continue
                candidates += kv.get("uris", [])
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line).split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                candidates.append(parts[1])
    if not candidates:
        raise MissingComponent(f"no apt source for Debian {suite} is configured on this host")
    return candidates[0]


def content_tag(suite: str) -> str:
    h = hashlib.sha256()
    h.update(f"{BUILD_VERSION}|{suite}|{','.join(EXTRA_PACKAGES)}|{SESSION_USER}:{SESSION_UID}".encode())
    for f in sorted(ASSETS.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return f"{REPO}:{h.hexdigest()[:12]}"


def _customise(root: Path) -> None:
    """Session user, tools, profile, and the mount points the sandbox makes writable."""
    with open(root / "etc/passwd", "a") as f:
        f.write(f"{SESSION_USER}:x:{SESSION_UID}:{SESSION_UID}:sekbench session:/home/{SESSION_USER}:/bin/sh\n")
    with open(root / "etc/group", "a") as f:
        f.write(f"{SESSION_USER}:x:{SESSION_UID}:\n")
    with open(root / "etc/shadow", "a") as f:
        f.write(f"{SESSION_USER}:!:19000:0:99999:7:::\n")
    (root / "etc/profile").write_text((ASSETS / "profile").read_text())
    for name, dest in (("panic", "usr/bin/panic"), ("reap", "usr/lib/sekbench/reap")):
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ASSETS / name, target)
        target.chmod(0o755)
    for d in ("etc/sekbench", f"home/{SESSION_USER}", "srv", "opt", "usr/local/bin", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chown(root / f"home/{SESSION_USER}", SESSION_UID, SESSION_UID)
    (root / "etc/motd").write_text("")
    # Docs and caches make the image bigger and sessions no smarter.
    for d in ("usr/share/doc", "usr/share/info", "var/cache/apt/archives", "var/lib/apt/lists"):
        p = root / d
        if p.exists():
            for child in p.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                elif child.name != "lock":
                    child.unlink(missing_ok=True)


def _debootstrap(suite: str, mirror: str, dest: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise MissingComponent("debootstrap is not installed (apt-get install debootstrap; "
                               "scripts/setup.sh does it)")
    if os.geteuid() != 0:
        raise MissingComponent("building the sandbox root needs root (debootstrap)")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(EXTRA_PACKAGES)}", suite,
           str(dest), mirror]
    log.info("debootstrap %s from the host's apt source", suite)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["?"]
        raise SekbenchError(f"debootstrap failed: {tail[0]}")


def rootfs_dir(ws: Workspace, tag: str) -> Path:
    return ws.images / ("rootfs-" + tag.split(":", 1)[1])


def _rootfs_from_docker(client, tag: str, dest: Path) -> None:
    """Unpack the engine's copy of the image: the same content, without a debootstrap."""
    container = client.containers.create(tag, ["/bin/true"], network_mode="none")
    try:
        fd, name = tempfile.mkstemp(suffix=".tar", dir=dest.parent)
        with os.fdopen(fd, "wb") as out:
            for chunk in container.export():
                out.write(chunk)
        try:
            with tarfile.open(name) as tar:
                tar.extractall(dest, numeric_owner=True, filter="fully_trusted")
        finally:
            os.unlink(name)
    finally:
        container.remove(force=True)
    # the engine's own mount points, not part of the image's content
    for stub in (".dockerenv",):
        (dest / stub).unlink(missing_ok=True)


def build_rootfs(ws: Workspace, tag: str, suite: str, *, docker_client=None) -> tuple[Path, bool]:
    """The image's root under this workspace: unpacked from the engine's image of the same
    content tag where it has one (a new workspace on a machine that built it before),
    otherwise made with debootstrap."""
    root = rootfs_dir(ws, tag)
    if (root / ".sekbench-complete").exists():
        return root, False
    tmp = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=ws.images))
    reused = docker_client is not None and docker_has_image(docker_client, tag)
    try:
        if reused:
            log.info("unpacking %s from the Docker engine (no debootstrap needed)", tag)
            _rootfs_from_docker(docker_client, tag, tmp)
        else:
            _debootstrap(suite, host_mirror(suite), tmp)
            _customise(tmp)
        tmp.chmod(0o755)  # mkdtemp made it 0700; it becomes the sandbox's /
        (tmp / ".sekbench-complete").write_text(tag + "\n")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root, not reused


def docker_has_image(client, tag: str) -> bool:
    import docker.errors
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _import(client, root: Path, tag: str) -> None:
    repo, _, version = tag.partition(":")
    fd, name = tempfile.mkstemp(suffix=".tar", dir=root.parent)
    os.close(fd)
    try:
        with tarfile.open(name, mode="w") as tar:
            for child in sorted(root.iterdir()):
                if child.name != ".sekbench-complete":
                    tar.add(child, arcname=child.name)
        client.api.import_image(src=name, repository=repo, tag=version, changes=['CMD ["/bin/sh"]'])
    finally:
        os.unlink(name)
    if not docker_has_image(client, tag):
        raise SekbenchError(f"docker import did not produce {tag}")


def build_image(ws: Workspace | None = None, *, docker_client=None, need_docker: bool = True) -> ImageInfo:
    """Build (or find) the sandbox root and, where a Docker engine is reachable, its image."""
    ws = ws or Workspace.from_env()
    suite = host_release()
    tag = content_tag(suite)
    if docker_client is not None and docker_has_image(docker_client, tag) \
            and (rootfs_dir(ws, tag) / ".sekbench-complete").exists():
        return ImageInfo(tag, rootfs_dir(ws, tag), built=False)
    root, built = build_rootfs(ws, tag, suite, docker_client=docker_client)
    if docker_client is not None:
        if not docker_has_image(docker_client, tag):
            _import(docker_client, root, tag)
            built = True
    elif need_docker:
        raise MissingComponent("no Docker engine is reachable to import the image into")
    return ImageInfo(tag, root, built)


def current_tag() -> str:
    return content_tag(host_release())
