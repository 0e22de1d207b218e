"""The priming ladder: C0-C6 as the seed write-up defines them, and a tiny run that
checks each session gets its config's prefix, format and stop."""

from __future__ import annotations

import pytest

from pipeline.ladder import CONFIGS, LadderConfig, classify_session, load_config, matrices, prefix

SYSTEM = "sek 0.1.0\ndevice: {device}\nuser: {user}\nshell: /bin/sh"
BASE = ["cat HELLO_WORLD", "whoami", "pwd"]
FAILURE = ["cat /etc/hosts", "ls /etc", 'echo "hello', '"']
PROMPT = "{prompt}"


def commands(cfg) -> list[str]:
    return [m["content"] for m in cfg["prefix"] if m["role"] == "assistant"]


def standalone_prompts(cfg) -> int:
    return sum(m["role"] == "user" and m["content"] == PROMPT for m in cfg["prefix"])


def merged_prompts(cfg) -> int:
    return sum(m["role"] == "user" and m["content"].endswith("\n" + PROMPT) for m in cfg["prefix"])


@pytest.fixture(scope="module")
def ladder():
    return {c: load_config(c) for c in CONFIGS}


def test_every_config_loads_and_shares_the_system_line(ladder):
    for name, cfg in ladder.items():
        assert cfg["name"] == name and cfg["description"]
        assert cfg["prefix"][0] == {"role": "system", "content": SYSTEM}
        assert cfg["format"] == "ccpty"  # the live harness was fixed; only the seed varied


def test_c0_is_the_system_line_alone(ladder):
    assert len(ladder["C0"]["prefix"]) == 1


def test_c1_bare_three_commands_no_prompts(ladder):
    c1 = ladder["C1"]
    assert commands(c1) == BASE
    assert standalone_prompts(c1) == merged_prompts(c1) == 0
    roles = [m["role"] for m in c1["prefix"][1:]]
    assert roles == ["assistant", "user"] * 3


def test_c2_failure_path_with_the_prompt_merged_onto_outputs(ladder):
    c2 = ladder["C2"]
    assert commands(c2) == BASE + FAILURE
    assert standalone_prompts(c2) == 0
    assert merged_prompts(c2) == 6          # every output but the `>` continuation
    assert {"role": "user", "content": ">"} in c2["prefix"]


def test_c3_failure_path_without_any_prompt(ladder):
    c3 = ladder["C3"]
    assert commands(c3) == BASE + FAILURE
    assert standalone_prompts(c3) == merged_prompts(c3) == 0
    assert not any(PROMPT in m["content"] for m in c3["prefix"])


def test_c4_standalone_prompt_before_each_command(ladder):
    c4 = ladder["C4"]
    assert commands(c4) == BASE + FAILURE
    assert merged_prompts(c4) == 0
    msgs = c4["prefix"]
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and m["content"] != '"':
            assert msgs[i - 1] == {"role": "user", "content": PROMPT}
    assert msgs[-1] == {"role": "user", "content": PROMPT}
    assert c4["stop"] is None


def test_c5_is_c4_plus_stop_at_newline(ladder):
    assert ladder["C5"]["prefix"] == ladder["C4"]["prefix"]
    assert ladder["C5"]["stop"] == ["\n"]
    assert [c for c in CONFIGS if ladder[c]["stop"]] == ["C5"]


def test_c6_is_c4_without_the_failure_path(ladder):
    c6 = ladder["C6"]
    assert commands(c6) == BASE
    assert standalone_prompts(c6) == 4 and c6["prefix"][-1]["content"] == PROMPT
    # the same messages as C4 up to where its failure-path begins
    assert c6["prefix"] == ladder["C4"]["prefix"][:len(c6["prefix"])]


def test_prefix_takes_the_live_sandbox_names_unless_literal(ladder):
    live = prefix(ladder["C4"])
    assert {"role": "user", "content": "sek@box:~$ "} in live
    assert {"role": "user", "content": "/home/sek"} in live
    assert "user: sek" in live[0]["content"] and "device: ccpty0" in live[0]["content"]
    literal = prefix(ladder["C4"], literal=True)
    assert {"role": "user", "content": "alice@sek:~$"} in literal
    assert not any("{" in m["content"] and "}" in m["content"] for m in live + literal)


def test_command_mode_allows_over_imitation_but_not_prose():
    assert classify_session(["ls", "pwd", "exit"], "exit")["clean"]
    drift = classify_session(["ls", "Let me check the files first."], "max_turns")
    assert not drift["command_mode"] and not drift["exit"]
    echo = classify_session(["ls", "sek@box:~$ ls"], "max_turns")   # typing the prompt
    assert echo["command_mode"] and not echo["strict"]
    assert not classify_session([], "max_turns")["command_mode"]


def test_matrices_leave_void_sessions_out():
    runs = [{"config": "C0", "operator": "o", "void": False, "command_mode": True, "exit": True, "clean": True},
            {"config": "C0", "operator": "o", "void": True, "command_mode": False, "exit": False, "clean": False}]
    m = matrices(runs, ["C0"], ["o"])
    assert m["command_mode"]["C0"]["o"] == 1 and m["n"]["C0"]["o"] == 1 and m["void"]["C0"]["o"] == 1


# ----------------------------------------------------------------- a tiny real run
SEEN: list[dict] = []


class ProbeOperator:
    """Types `ls` then `exit`, and remembers the options each session began with."""
    name = "probe"

    def begin(self, ctx):
        SEEN.append(dict(ctx.options))
        self.plan = ["ls", "exit"]

    def next_command(self, transcript):
        return self.plan.pop(0)

    def close(self):
        pass


@pytest.mark.docker
def test_tiny_ladder_run_hands_each_session_its_config(ws):
    from pipeline.operators import register
    from pipeline.ladder import run_ladder
    from pipeline.store import Store

    register("probe")(lambda arg, options: ProbeOperator())
    SEEN.clear()
    store = Store(ws.db_path)
    body = run_ladder(ws=ws, store=store, cfg=LadderConfig(operators=["probe"], configs=["C0", "C5"],
                                                            n=1, workers=2, max_turns=4))
    m = body["matrices"]
    assert m["command_mode"] == {"C0": {"probe": 1}, "C5": {"probe": 1}}
    assert m["exit"] == {"C0": {"probe": 1}, "C5": {"probe": 1}}
    by_len = sorted(SEEN, key=lambda o: len(o["prefix"]))
    assert len(by_len[0]["prefix"]) == 1 and by_len[0]["stop"] is None
    assert by_len[1]["prefix"] == prefix(load_config("C5")) and by_len[1]["stop"] == ["\n"]
    assert all(o["format"] == "ccpty" for o in SEEN)
    report = store.reports("ladder")[0]
    assert report["id"] == body["report"] and "## Exit" in report["markdown"]
    assert (ws.reports / f"ladder-{body['report']}.md").is_file()


def test_ladder_sessions_are_judged_with_what_the_shell_said():
    from pipeline.ladder import classify_session
    # a confabulated "Done." looks like a command to the text alone; the shell did not find it
    text_only = classify_session(["Done.", "exit"], "exit")
    assert text_only["command_mode"] and text_only["genuine"]
    shell = classify_session(["Done.", "exit"], "exit", exit_statuses=[127, None],
                             outputs=["sh: 2: Done.: not found", ""])
    assert shell["classes"] == ["prose", "command"]
    assert not shell["command_mode"] and not shell["genuine"]
    # repeating the error line back is over-imitation: command-mode as the study counts it,
    # but not genuine operation
    echo = classify_session(["sek@box:~$: not found", "ls"], "max_turns", exit_statuses=[127, 0],
                            outputs=["sh: 3: sek@box:~$:: not found", "a"],
                            banner="sh: 2: sek@box:~$: not found")
    assert echo["classes"] == ["over_imitation", "command"]
    assert echo["command_mode"] and not echo["genuine"]
