"""Where the bwrap backend puts its cgroups, on a fake cgroup v2 tree (no root needed)."""

from __future__ import annotations

import pytest

from pipeline.errors import MissingComponent
from pipeline.sandbox import cgroups


def _tree(tmp_path, *, own_busy: bool, parent_delegates: bool):
    root = tmp_path / "cg"
    slice_ = root / "system.slice"
    own = slice_ / "harness.service"
    own.mkdir(parents=True)
    for d in (root, slice_, own):
        (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (d / "cgroup.subtree_control").write_text("")
    if parent_delegates:
        (slice_ / "cgroup.subtree_control").write_text("cpu memory pids\n")
    if own_busy:  # the kernel answers EBUSY: a group with processes cannot delegate
        (own / "cgroup.subtree_control").unlink()
        (own / "cgroup.subtree_control").mkdir()
    return root, slice_, own


def test_v2_groups_go_below_our_own_group_when_it_can_delegate(tmp_path, monkeypatch):
    root, _, own = _tree(tmp_path, own_busy=False, parent_delegates=False)
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    assert cgroups._v2_parent(own) == own / "sekbench"
    assert "+memory" in (own / "sekbench" / "cgroup.subtree_control").read_text()


def test_v2_groups_go_below_a_delegating_parent_when_ours_holds_processes(tmp_path, monkeypatch):
    root, slice_, own = _tree(tmp_path, own_busy=True, parent_delegates=True)
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    assert cgroups._v2_parent(own) == slice_ / "sekbench"


def test_v2_without_the_controllers_is_a_one_line_refusal(tmp_path, monkeypatch):
    root, _, own = _tree(tmp_path, own_busy=True, parent_delegates=False)
    (own / "cgroup.controllers").write_text("cpu io\n")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    with pytest.raises(MissingComponent) as e:
        cgroups._v2_parent(own)
    assert "memory, pids" in str(e.value) and "\n" not in str(e.value)


def test_a_group_record_names_only_sekbench_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    good = tmp_path / "x" / "sekbench" / "sb1"
    good.mkdir(parents=True)
    stray = tmp_path / "x" / "other"
    stray.mkdir()
    g = cgroups.Group(2, {"": good})
    assert cgroups.from_record(g.record()).dirs == {"": good}
    assert cgroups.from_record(f"version\t2\n\t{stray}\n") is None
    assert cgroups.from_record("version\tnonsense\n") is None
