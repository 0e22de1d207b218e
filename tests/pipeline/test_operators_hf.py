"""The in-process `hf:` operator on the local SmolLM2: KV-cache reuse, adapter switching, batching."""

from __future__ import annotations

import threading

import pytest

from pipeline.errors import SekbenchError
from pipeline.operators import SessionContext, make_operator
from pipeline.render import Transcript, Turn

PROMPT = "sek@box:~$ "
OUTPUTS = [
    "Assignments are handed out by orders(1). Try: orders --help",
    "usage: orders [--help] [--pending]\n  --pending   print the directives waiting for you",
    "directives: count the lines containing ERROR in ~/logs/app.log and write the number to ~/out/count.txt",
    "",
    "3",
    "total 4\n-rw-r--r-- 1 sek sek 2 Nov 21 05:30 count.txt",
]


# `model_dir` (the prepared local model) is in tests/conftest.py


def drive(op, banner: str, outputs=OUTPUTS, typed=None) -> list[str]:
    """Run a scripted session: the operator types, the script answers with canned outputs.

    `typed(i, command)` may change what the harness records as typed (it trims, for example)."""
    op.begin(SessionContext(seed=7))
    t = Transcript(banner=banner, prompt=PROMPT)
    commands = []
    for i, out in enumerate(outputs):
        command = op.next_command(t)
        assert "\n" not in command
        commands.append(command)
        t.turns.append(Turn(prompt=PROMPT, command=typed(i, command) if typed else command, output=out))
    return commands


def test_four_bit_on_cpu_is_a_clear_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; 4-bit is allowed here")
    with pytest.raises(SekbenchError, match="CUDA"):
        make_operator("hf:default", load_in_4bit=True)


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(SekbenchError, match="adapter"):
        make_operator(f"hf:default@{tmp_path / 'nope'}")


@pytest.mark.model
@pytest.mark.slow
def test_kv_reuse_gives_the_same_commands_as_recomputing(model_dir):
    reuse = make_operator("hf:default", max_new_tokens=12)
    fresh = make_operator("hf:default", max_new_tokens=12, kv_reuse=False)
    assert reuse.resident is fresh.resident
    banner = "Welcome to box (Debian).\nAssignments are handed out by orders(1)."
    assert drive(reuse, banner) == drive(fresh, banner)
    assert reuse.name == "hf:default"
    # Reuse fed only the new suffix each turn; recomputation re-read the whole history.
    assert reuse.state.reused_tokens > 0 and fresh.state.reused_tokens == 0
    assert reuse.state.fed_tokens * 2 < fresh.state.fed_tokens


@pytest.mark.model
@pytest.mark.slow
def test_sampling_is_reproducible_from_the_seed(model_dir):
    runs = [drive(make_operator("hf:default", max_new_tokens=6, temperature=1.0, seed=11), "hi", OUTPUTS[:2])
            for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.model
@pytest.mark.slow
def test_cache_falls_back_to_the_common_prefix_when_history_differs(model_dir):
    """The harness may record a different command than the model typed; the cache must
    be cropped to what still matches rather than reused blindly."""
    reuse = make_operator("hf:default", max_new_tokens=8)
    fresh = make_operator("hf:default", max_new_tokens=8, kv_reuse=False)
    typed = lambda i, c: f"echo typed-{i}"  # noqa: E731
    banner = "Welcome to box."
    assert drive(reuse, banner, OUTPUTS[:4], typed) == drive(fresh, banner, OUTPUTS[:4], typed)
    assert 0 < reuse.state.fed_tokens < fresh.state.fed_tokens


def _random_adapter(model_dir, out):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    from pipeline.sft import peft_quiet
    with peft_quiet():
        get_peft_model(model, cfg).save_pretrained(out)
    return out


@pytest.mark.model
@pytest.mark.slow
def test_adapter_switching_keeps_one_resident_base(model_dir, tmp_path):
    import torch
    adapter_dir = _random_adapter(model_dir, tmp_path / "lora")
    base_op = make_operator("hf:default", max_new_tokens=8)
    resident = base_op.resident
    base_model = resident.base
    before = drive(base_op, "Welcome.", OUTPUTS[:2])

    tuned_op = make_operator(f"hf:default@{adapter_dir}", max_new_tokens=8)
    assert tuned_op.resident is resident and resident.base is base_model
    assert resident.peft is not None and resident.peft.get_base_model() is base_model
    assert tuned_op.name == f"hf:default@{adapter_dir}"
    tuned = drive(tuned_op, "Welcome.", OUTPUTS[:2])

    # Loading it again names the same adapter; nothing is reloaded.
    again = make_operator(f"hf:default@{adapter_dir}", max_new_tokens=8)
    assert again.adapter == tuned_op.adapter and len(resident.adapters) == 1

    # The adapter really acts: the same prompt gives other logits with it than without.
    ids = torch.tensor([resident.encode([{"role": "user", "content": PROMPT}])])
    with resident.model_lock, torch.inference_mode():
        with resident._using(None):
            plain = resident.model(input_ids=ids).logits[0, -1]
        with resident._using(tuned_op.adapter):
            adapted = resident.model(input_ids=ids).logits[0, -1]
    assert not torch.allclose(plain, adapted, atol=1e-3)
    assert len(tuned) == len(before)

    # And the base is restored afterwards.
    assert drive(base_op, "Welcome.", OUTPUTS[:2]) == before


@pytest.mark.model
@pytest.mark.slow
def test_batched_sessions_match_sequential(model_dir):
    banners = ["Welcome to alpha.", "Welcome to beta.\nRead the motd.", "gamma login banner"]
    ops = [make_operator("hf:default", max_new_tokens=10) for _ in banners]
    resident = ops[0].resident
    sequential = [drive(op, b, OUTPUTS[:3]) for op, b in zip(ops, banners)]

    resident.window_s, resident.largest_batch = 0.2, 0  # wide enough to catch all three threads
    results: list = [None] * len(ops)
    start = threading.Barrier(len(ops))

    def session(i):
        start.wait()
        results[i] = drive(ops[i], banners[i], OUTPUTS[:3])

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(ops))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        resident.window_s = 0.01
    assert results == sequential
    assert resident.largest_batch >= 2


def test_buffered_cache_holds_what_concatenation_holds():
    """The in-place decode cache returns exactly the tensors DynamicLayer's concat would,
    including when a write runs past the reserved room and the buffer has to grow."""
    import torch

    from pipeline.operators.hf import _buffered_cache, _cache_from
    torch.manual_seed(0)
    start = [(torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)) for _ in range(2)]
    ours, theirs = _buffered_cache(start, capacity=7), _cache_from(start)
    for step in range(6):             # 5 + 6 tokens: past the room of 7, so it grows once
        for li in range(2):
            k, v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
            a, b = ours.update(k, v, li), theirs.update(k, v, li)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert ours.get_seq_length() == theirs.get_seq_length() == 11


def _batched(ops, banners, outputs):
    results: list = [None] * len(ops)
    start = threading.Barrier(len(ops))

    def session(i):
        start.wait()
        results[i] = drive(ops[i], banners[i], outputs)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(ops))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


@pytest.mark.model
@pytest.mark.slow
def test_buffered_decode_types_what_the_concatenating_decode_types(model_dir):
    banners = ["Welcome to alpha.", "Welcome to beta.\nRead the motd.", "gamma login banner",
               "delta: you have mail"]
    resident = make_operator("hf:default").resident
    resident.window_s, resident.largest_batch = 0.2, 0
    try:
        runs = {}
        for buffered in (True, False):
            resident.buffered_kv = buffered
            ops = [make_operator("hf:default", max_new_tokens=12) for _ in banners]
            runs[buffered] = _batched(ops, banners, OUTPUTS[:3])
    finally:
        resident.window_s, resident.buffered_kv = 0.01, True
    assert runs[True] == runs[False]
    assert resident.largest_batch >= 2


@pytest.mark.model
@pytest.mark.slow
def test_base_and_tuned_sessions_decode_in_one_batch(model_dir, tmp_path):
    """Sessions of the base and of an adapter, gathered into one mixed batch, type what each
    types alone: PEFT applies every row's own adapter, the base rows get none."""
    adapter_dir = _random_adapter(model_dir, tmp_path / "lora")
    specs = ["hf:default", f"hf:default@{adapter_dir}", "hf:default", f"hf:default@{adapter_dir}"]
    banners = ["Welcome to alpha.", "Welcome to alpha.", "gamma login banner", "gamma login banner"]
    alone = [drive(make_operator(spec, max_new_tokens=10), b, OUTPUTS[:3]) for spec, b in zip(specs, banners)]
    resident = make_operator("hf:default").resident
    assert resident.peft is not None and resident.mixed
    resident.window_s, resident.largest_batch = 0.2, 0
    try:
        together = _batched([make_operator(spec, max_new_tokens=10) for spec in specs], banners, OUTPUTS[:3])
    finally:
        resident.window_s = 0.01
    assert together == alone
    assert resident.largest_batch >= 3     # the rows of both adapters were gathered together
    assert alone[0] != alone[1] or alone[2] != alone[3]   # the adapter changes what is typed


@pytest.mark.model
@pytest.mark.slow
def test_requests_join_a_running_batch_and_type_the_same(model_dir):
    """Continuous batching: sessions whose turns arrive while a batch decodes join it (into a
    freed slot or by reassembling), and every session types what it types alone."""
    banners = [f"host-{i}: " + "welcome " * (1 + 3 * i) for i in range(5)]
    lengths = [2, 3, 3, 2, 3]            # turns per session: the batch changes under way
    alone = [drive(make_operator("hf:default", max_new_tokens=14), b, OUTPUTS[:n])
             for b, n in zip(banners, lengths)]
    resident = make_operator("hf:default").resident
    before = dict(resident.timing)
    results: list = [None] * len(banners)
    start = threading.Barrier(len(banners))

    def session(i):
        start.wait()
        results[i] = drive(make_operator("hf:default", max_new_tokens=14), banners[i], OUTPUTS[:lengths[i]])

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(banners))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert results == alone
    assert resident.timing["joined"] > before["joined"]      # some turn joined a running batch
    steps = resident.timing["decode_steps"] - before["decode_steps"]
    rows = resident.timing["decode_rows"] - before["decode_rows"]
    assert rows / steps > 1.0                                # and steps were shared
