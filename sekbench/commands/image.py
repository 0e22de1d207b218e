"""`sekbench image build`: the sandbox image, built offline from the host's apt source."""

from __future__ import annotations

import time

from pipeline.errors import SekbenchError

NAME = "image"
HELP = "build the sandbox image (debootstrap of the host's Debian, imported into Docker)"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["build", "tag"], help="build: build or reuse; tag: print the tag")
    p.add_argument("--no-docker", action="store_true",
                   help="build only the root filesystem for the bwrap backend")


def run(args, ws) -> dict:
    from pipeline import image
    if args.action == "tag":
        return {"image": image.current_tag()}
    client = None
    if not args.no_docker:
        from pipeline.sandbox.docker_backend import _client
        try:
            client = _client()
        except SekbenchError:
            client = None  # bwrap still gets its root; say so below
    started = time.monotonic()
    info = image.build_image(ws, docker_client=client, need_docker=False)
    return {"image": info.tag, "rootfs": str(info.rootfs), "built": info.built,
            "docker": client is not None, "seconds": round(time.monotonic() - started, 2)}
