"""Shared fixtures: a throw-away workspace per test, and markers that skip with a reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.workspace import Workspace

# The image's root filesystem is built once into the default workspace by
# scripts/setup.sh; test workspaces borrow it instead of rebuilding.
_REAL = Workspace.from_env(os.environ.get("SEKBENCH_HOME"))


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "images").symlink_to(_REAL.images, target_is_directory=True)
    if _REAL.models.exists():
        (root / "models").symlink_to(_REAL.models, target_is_directory=True)
    monkeypatch.setenv("SEKBENCH_HOME", str(root))
    return Workspace.from_env(root)


def _docker_reason() -> str | None:
    try:
        from pipeline.image import current_tag, docker_has_image
        from pipeline.sandbox.docker_backend import _client
        client = _client(timeout=10)
    except Exception as e:
        return f"no Docker engine reachable ({e}); scripts/setup.sh starts one"
    tag = current_tag()
    if not docker_has_image(client, tag):
        return f"sandbox image {tag} not built; run: sekbench image build"
    return None


def _bwrap_reason() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed"
    from pipeline.image import current_tag, rootfs_dir
    if not (rootfs_dir(_REAL, current_tag()) / ".sekbench-complete").exists():
        return "sandbox root filesystem not built; run: sekbench image build"
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here ({probe.stderr.strip()[:120]})"
    from pipeline.sandbox.bwrap_backend import host_reason
    return host_reason(rootfs_dir(_REAL, current_tag()))


def pytest_collection_modifyitems(config, items):
    reasons = {}
    for item in items:
        for marker, probe in (("docker", _docker_reason), ("bwrap", _bwrap_reason)):
            if marker in item.keywords:
                if marker not in reasons:
                    reasons[marker] = probe()
                if reasons[marker]:
                    item.add_marker(pytest.mark.skip(reason=reasons[marker]))
        if "gpu" in item.keywords:
            try:
                import torch
                ok = torch.cuda.is_available()
            except Exception:
                ok = False
            if not ok:
                item.add_marker(pytest.mark.skip(reason="no CUDA device on this machine"))


def _transformers_cli() -> str | None:
    # the CLI installed beside this Python (scripts/setup.sh's venv is not on PATH), else PATH
    import sys
    beside = Path(sys.executable).parent / "transformers"
    return str(beside) if beside.exists() else shutil.which("transformers")


@pytest.fixture(scope="session")
def served_model():
    """`transformers serve` on loopback, pinned to the prepared SmolLM2; started once per test
    run and always terminated. Yields (base URL, model folder)."""
    import socket
    import time

    import httpx

    from pipeline.errors import MissingComponent
    from pipeline.models import prepare_base_model
    try:
        model_dir = str(prepare_base_model(_REAL))
    except MissingComponent as e:
        pytest.skip(f"the local model cannot be prepared: {e}")
    exe = _transformers_cli()
    if exe is None:
        pytest.skip("no `transformers` CLI (pip install 'sekbench[serve]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One thread: on a busy shared CPU, more threads make decoding many times slower, not faster.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", model_dir], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                tail = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
                pytest.skip(f"transformers serve exited: {tail[0] if tail else proc.returncode}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.skip("transformers serve did not become ready within 180 s")
            time.sleep(0.5)
        yield base, model_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def hanging():
    """A loopback socket that accepts connections and never answers; yields its URL."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        srv.close()


class _ChatServer(BaseHTTPRequestHandler):
    """Answers POSTs with `respond(body, n)` when set, else with `replies` in order (the last one
    repeating), each (status, payload) or (status, payload, headers); every request is kept in
    `seen`."""

    replies: list = []
    respond = None
    seen: list = []

    def do_POST(self):
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        cls.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        n = len(cls.seen)
        # a reply is (status, payload) or (status, payload, {header: value})
        status, payload, *headers = cls.respond(body, n) if cls.respond else \
            cls.replies[min(n, len(cls.replies)) - 1]
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for k, v in (headers[0] if headers else {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    """A chat-completions server on loopback that says what the test tells it to (recorded
    replies; only where a real model cannot do the test's part); yields (base URL, handler)."""
    handler = type("Handler", (_ChatServer,), {"replies": [], "respond": None, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def model_dir():
    """The local SmolLM2 directory, prepared once (skips, saying why, when it cannot be)."""
    from pipeline.errors import MissingComponent
    from pipeline.models import prepare_base_model
    try:
        return prepare_base_model()
    except MissingComponent as e:
        pytest.skip(f"the local model cannot be prepared: {e}")
