"""The command line as a newcomer meets it: help texts, refusals, exit statuses, summaries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sekbench.cli import _verbs, build_parser


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "sekbench.cli", *argv], capture_output=True,
                          text=True, timeout=120)


def _sub(verb: str):
    parser = build_parser(_verbs())
    action = next(a for a in parser._actions if a.dest == "verb")
    return action.choices[verb]


@pytest.mark.parametrize("verb", ["run", "rollout", "shell"])
def test_help_states_the_defaults_the_code_uses(verb):
    p = _sub(verb)
    defaults = p.parse_args(["--operator", "reference"] if verb != "shell" else [])
    text = p.format_help()
    flat = " ".join(text.split())
    for flag, value in (("--max-turns", defaults.max_turns), ("--max-seconds", defaults.max_seconds),
                        ("--timeout", defaults.timeout)):
        action = next(a for a in p._actions if flag in a.option_strings)
        assert action.default == value
        assert f"(default {value})" in flat, f"{verb} {flag}: help does not say {value}"


def test_top_level_help_says_bare_sekbench_opens_the_workbench():
    out = _cli("--help")
    assert out.returncode == 0
    assert "alone (no verb) opens the workbench" in " ".join(out.stdout.split())


@pytest.mark.parametrize("spec", ["hf", "hf:", "script", "http:"])
def test_operator_without_its_argument_is_refused_with_the_forms(spec, ws):
    out = _cli("run", "--operator", spec, "--json")
    assert out.returncode != 0
    assert out.stdout == ""
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "hf:PATH[@ADAPTER]" in line and "script:FILE" in line


def test_admit_of_missing_and_malformed_files_exits_nonzero_with_json(tmp_path, ws):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = _cli("admit", str(bad), str(tmp_path / "missing.json"), "--json")
    assert out.returncode == 1, out.stderr
    verdicts = json.loads(out.stdout)
    assert [v["reasons"] for v in verdicts] == [["invalid"], ["invalid"]]
    assert "not JSON" in verdicts[0]["messages"]["invalid"]
    assert "cannot read" in verdicts[1]["messages"]["invalid"]


@pytest.mark.docker
def test_run_without_json_prints_a_summary_not_a_dict(tmp_path, ws):
    script = tmp_path / "cmds.txt"
    script.write_text("echo hello-summary\nexit\n")
    out = _cli("run", "--operator", f"script:{script}", "--backend", "docker")
    assert out.returncode == 0, out.stderr
    assert "'session_id'" not in out.stdout and "{" not in out.stdout.splitlines()[0]
    assert "echo hello-summary" in out.stdout
    assert "ended exit" in out.stdout


def test_an_hf_operator_says_it_is_preparing_the_model_before_loading(ws, tmp_path):
    out = _cli("run", "--operator", f"hf:{tmp_path / 'no-model-here'}", "--json")
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("sekbench: preparing the model for hf:")
    assert "Traceback" not in out.stderr and len(lines) == 2
