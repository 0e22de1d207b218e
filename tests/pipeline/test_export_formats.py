"""Exports other tools take as they are: `datasets` (one file, two files, a folder), a
LLaMA-Factory sharegpt loader and an axolotl chat_template loader, each written after its
documented format. No engine needed: rollouts go into a store straight from the fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.chat_roles import alternate, alternates
from pipeline.record import EXPORT_SCHEMA, export, manifest_path
from pipeline.store import Store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trajectories.jsonl"


def fixture_rows() -> list[dict]:
    return [json.loads(x) for x in FIXTURE.read_text().splitlines() if x.strip()]


@pytest.fixture
def store(tmp_path) -> Store:
    st = Store(tmp_path / "store.db")
    for i, r in enumerate(fixture_rows()):
        split = "holdout" if r["archetype"] == "search_count" else "train"
        st.put_rollout({"id": r["rollout_id"], "session_id": f"s{i}", "scenario_id": r["scenario_id"],
                        "archetype": r["archetype"], "split": split, "operator": "reference",
                        "batch_id": "b1", "end_reason": "exit", "terminal": "exit",
                        "verified": 1, "verdict": "kept", "reasons": ["kept"],
                        "turns": sum(m["role"] == "assistant" for m in r["messages"]),
                        "messages": r["messages"], "created_at": 1000.0 + i,
                        "meta": {"format": "ccpty"}})
    return st


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_alternate_merges_runs_of_one_role_like_a_terminal():
    msgs = [{"role": "user", "content": "banner\n"}, {"role": "user", "content": "$ "},
            {"role": "assistant", "content": "ls"}, {"role": "user", "content": "a b"},
            {"role": "user", "content": "$ "}, {"role": "assistant", "content": "exit"}]
    assert alternate(msgs) == [{"role": "user", "content": "banner\n$ "},
                               {"role": "assistant", "content": "ls"},
                               {"role": "user", "content": "a b\n$ "},
                               {"role": "assistant", "content": "exit"}]
    assert alternates(alternate(msgs)) and not alternates(msgs)


def test_columns_have_one_type_and_the_manifest_is_a_hidden_sidecar(store, tmp_path):
    # one rollout with a curator decision, the others without: decision is a string in both
    store.decide("r-file_transform-0007", "accept", note="fine")
    m = export(store, tmp_path / "out" / "train.jsonl", form="alternating")
    rows = lines(tmp_path / "out" / "train.jsonl")
    assert m["trajectories"] == len(rows) == 5
    assert {type(r["outcome"]["decision"]) for r in rows} == {str}
    assert {r["outcome"]["decision"] for r in rows} == {"accept", "none"}
    for r in rows:
        assert r["form"] == "alternating" and alternates(r["messages"])
        assert isinstance(r["outcome"]["turns"], int) and isinstance(r["outcome"]["verified"], bool)
    side = manifest_path(tmp_path / "out" / "train.jsonl")
    assert side.name == ".train.jsonl.manifest.json" and Path(m["manifest"]) == side.resolve()
    written = json.loads(side.read_text())
    assert written["path"] == "train.jsonl"            # relative to its folder
    assert written["schema_version"] == EXPORT_SCHEMA and written["form"] == "alternating"
    assert written["sekbench_version"] and written["libraries"]["python"]
    assert "sqlite-utils" in written["libraries"]


def test_exports_load_in_datasets_alone_in_pairs_and_as_a_folder(store, tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is part of the ml extra")
    datasets.disable_progress_bars()
    folder = tmp_path / "exports"
    store.decide("r-archive-0002", "reject")            # decision "reject" leaves it out
    store.decide("r-search_count-0003", "accept")       # a string here, "none" in the others
    a = export(store, folder / "train.jsonl")
    b = export(store, folder / "holdout.jsonl", split="holdout")
    c = export(store, tmp_path / "other" / "train.jsonl", form="alternating")
    one = datasets.load_dataset("json", data_files=a["path"], split="train")
    assert len(one) == a["trajectories"] == 4 and one[0]["messages"][-1]["role"] == "assistant"
    pair = datasets.load_dataset("json", data_files=[a["path"], b["path"]], split="train")
    assert len(pair) == a["trajectories"] + b["trajectories"] == 5
    assert sorted(set(pair["split"])) == ["holdout", "train"]
    # the two forms together too: same columns, same types
    forms = datasets.load_dataset("json", data_files=[a["path"], c["path"]], split="train")
    assert sorted(set(forms["form"])) == ["alternating", "ccpty"]
    # a folder: the hidden manifests are not read as data; train.jsonl is the train split and
    # holdout.jsonl needs naming (datasets knows no "holdout" split keyword)
    whole = datasets.load_dataset(str(folder))
    assert list(whole) == ["train"] and len(whole["train"]) == 4
    both = datasets.load_dataset(str(folder), data_files={"train": "train.jsonl",
                                                          "holdout": "holdout.jsonl"})
    assert {k: len(v) for k, v in both.items()} == {"train": 4, "holdout": 1}
    by_dir = datasets.load_dataset("json", data_dir=str(tmp_path / "other"), split="train")
    assert len(by_dir) == c["trajectories"]


# --- LLaMA-Factory, data/README.md: sharegpt format, dataset_info.json "tags" map the role and
# content keys; user/observation turns must sit at odd positions (1st, 3rd, ...) and
# assistant/function turns at even ones, and the count must be even, or the example is
# skipped ("Invalid role tag", "Invalid message count").
LLAMA_FACTORY_INFO = {"sekbench": {"file_name": "train.jsonl", "formatting": "sharegpt",
                                   "columns": {"messages": "messages"},
                                   "tags": {"role_tag": "role", "content_tag": "content",
                                            "user_tag": "user", "assistant_tag": "assistant",
                                            "system_tag": "system"}}}


def llama_factory_sharegpt(example: dict, info: dict) -> dict | None:
    tags, col = info["tags"], info["columns"]["messages"]
    role, content = tags["role_tag"], tags["content_tag"]
    odd = (tags["user_tag"], tags.get("observation_tag", "observation"))
    even = (tags["assistant_tag"], tags.get("function_tag", "function_call"))
    messages = example[col]
    system = ""
    if messages and messages[0][role] == tags.get("system_tag"):
        system, messages = messages[0][content], messages[1:]
    aligned = []
    for i, m in enumerate(messages):
        if m[role] not in (odd, even)[i % 2]:
            return None                               # "Invalid role tag": row dropped
        aligned.append({"role": "user" if m[role] in odd else "assistant", "content": m[content]})
    if len(aligned) % 2:
        return None                                   # "Invalid message count": row dropped
    return {"_prompt": aligned[:-1], "_response": aligned[-1:], "_system": system}


# --- axolotl, docs/dataset-formats/conversation.qmd: type chat_template with field_messages and
# message_property_mappings; roles_to_train ["assistant"]; a template such as gemma's may be
# set instead of the tokenizer's, and gemma's raises unless roles alternate.
AXOLOTL_DATASET = {"type": "chat_template", "field_messages": "messages",
                   "message_property_mappings": {"role": "role", "content": "content"},
                   "roles_to_train": ["assistant"]}
GEMMA_STYLE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}")


def axolotl_chat_template(example: dict, cfg: dict, template: str) -> tuple[str, int] | None:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    mapping = cfg["message_property_mappings"]
    messages = [{"role": m[mapping["role"]], "content": m[mapping["content"]]}
                for m in example[cfg["field_messages"]]]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        text = env.from_string(template).render(messages=messages, bos_token="<bos>")
    except jinja2.TemplateError:
        return None
    trained = sum(1 for m in messages if m["role"] in cfg["roles_to_train"])
    return text, trained


def test_llama_factory_and_axolotl_keep_every_alternating_row(store, tmp_path):
    alt = export(store, tmp_path / "alt" / "train.jsonl", form="alternating")
    ccpty = export(store, tmp_path / "ccpty" / "train.jsonl")
    info = LLAMA_FACTORY_INFO["sekbench"]
    rows = lines(alt["path"])
    converted = [llama_factory_sharegpt(r, info) for r in rows]
    assert len(rows) == alt["trajectories"] and all(c is not None for c in converted)
    assert all(c["_response"][0]["content"] in ("exit", "panic") or
               c["_response"][0]["content"].startswith("panic") for c in converted)
    rendered = [axolotl_chat_template(r, AXOLOTL_DATASET, GEMMA_STYLE) for r in rows]
    assert all(x is not None and x[1] >= 2 for x in rendered)
    assert "<start_of_turn>model\nexit<end_of_turn>" in rendered[0][0]
    # every command survives the merge, in order
    for r, src in zip(rows, lines(ccpty["path"])):
        assert [m["content"] for m in r["messages"] if m["role"] == "assistant"] == \
            [m["content"] for m in src["messages"] if m["role"] == "assistant"]
    # the ccpty view, as the issue found it, is what both loaders drop
    assert all(llama_factory_sharegpt(r, info) is None for r in lines(ccpty["path"]))
    assert all(axolotl_chat_template(r, AXOLOTL_DATASET, GEMMA_STYLE) is None
               for r in lines(ccpty["path"]))


def test_export_cli_takes_the_form_and_names_the_manifest(ws, tmp_path):
    import subprocess
    import sys
    st = Store(ws.db_path)
    r = fixture_rows()[0]
    st.put_rollout({"id": "r1", "session_id": "s1", "scenario_id": r["scenario_id"],
                    "archetype": r["archetype"], "split": "train", "operator": "reference",
                    "end_reason": "exit", "verified": 1, "verdict": "kept", "reasons": ["kept"],
                    "turns": 6, "messages": r["messages"], "meta": {}})
    done = subprocess.run([sys.executable, "-m", "sekbench.cli", "export", "--form", "alternating",
                           "--out", str(tmp_path / "e" / "t.jsonl"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["trajectories"] == 1 and out["form"] == "alternating"
    assert Path(out["manifest"]).name == ".t.jsonl.manifest.json" and Path(out["manifest"]).is_file()
    bad = subprocess.run([sys.executable, "-m", "sekbench.cli", "export", "--form", "sharegpt",
                          "--json"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
