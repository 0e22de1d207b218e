"""`sekbench reap`: remove sandboxes a crashed run left behind."""

from __future__ import annotations

from pipeline.errors import MissingComponent

NAME = "reap"
HELP = "remove sandboxes whose run is gone (--all: also this workspace's live ones)"


def add_arguments(p) -> None:
    p.add_argument("--all", action="store_true",
                   help="also remove this workspace's sandboxes whose run is alive "
                        "(other workspaces' live sandboxes are never touched)")


def run(args, ws) -> dict:
    from pipeline.sandbox import bwrap_backend, docker_backend
    from pipeline.store import Store
    removed = 0
    try:
        removed += docker_backend.DockerBackend(ws, docker_backend._client(), "").reap_stale(
            everything=args.all)
    except MissingComponent:
        pass
    removed += bwrap_backend.BwrapBackend(ws, ws.images, "").reap_stale(everything=args.all)
    closed = Store(ws.db_path).mark_interrupted()
    return {"removed": removed, "sessions_closed": closed}
