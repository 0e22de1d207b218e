"""The sandbox image: a new workspace reuses the engine's image instead of a debootstrap."""

from __future__ import annotations

import pytest

from pipeline import image
from pipeline.workspace import Workspace

pytestmark = pytest.mark.docker


def test_a_new_workspace_unpacks_the_engines_image_instead_of_debootstrapping(tmp_path,
                                                                             monkeypatch):
    from pipeline.sandbox.docker_backend import _client
    client = _client(timeout=60)
    fresh = Workspace.from_env(tmp_path / "fresh")     # no images of its own

    def no_debootstrap(*a, **k):
        raise AssertionError("debootstrap ran although the engine has the image")

    monkeypatch.setattr(image, "_debootstrap", no_debootstrap)
    info = image.build_image(fresh, docker_client=client)
    assert info.tag == image.current_tag() and not info.built
    root = image.rootfs_dir(fresh, info.tag)
    assert (root / ".sekbench-complete").read_text().strip() == info.tag
    assert (root / "usr/bin/dash").exists() and (root / "usr/bin/panic").exists()
    passwd = (root / "etc/passwd").read_text()
    assert "sek:x:1000:1000" in passwd
    # a second call finds both and returns at once
    again = image.build_image(fresh, docker_client=client)
    assert not again.built
