"""SFT data: exported trajectories -> token ids with assistant-only labels -> length-grouped batches.

Labels are -100 everywhere except the command tokens of each assistant turn and
the end-of-turn token that closes it, so the model learns what to type and when
a command ends, never to imitate the shell. Positions come from the tokenizer's
own chat template: the text before each assistant turn is the template rendered
with a generation prompt, and the offset mapping of one tokenization of the whole
conversation turns those character spans into token positions. A token that
straddles a span boundary would make the mask inexact, so it is an error.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import SekbenchError

IGNORE = -100


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def n_labelled(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


@dataclass
class Dataset:
    examples: list[Example]
    sha256: str
    path: str
    overlong: list[dict] = field(default_factory=list)   # {"id", "tokens"}: dropped, reported
    empty: list[str] = field(default_factory=list)       # ids with no assistant turn: dropped
    manifest: dict | None = None

    def report(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "examples": len(self.examples),
                "tokens": sum(len(e.input_ids) for e in self.examples),
                "labelled_tokens": sum(e.n_labelled for e in self.examples),
                "overlong": self.overlong, "empty": self.empty}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_trajectories(path: str | Path) -> list[dict]:
    """The export's JSONL, one trajectory per line; a malformed line is an error with its number."""
    path = Path(path)
    if not path.is_file():
        raise SekbenchError(f"no trajectory file at {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise SekbenchError(f"{path}:{n}: not JSON ({e})") from None
            msgs = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(msgs, list) or not all(
                    isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                    and isinstance(m.get("content"), str) for m in msgs):
                raise SekbenchError(f"{path}:{n}: expected {{\"messages\": [{{role, content}}, ...]}}")
            row.setdefault("rollout_id", row.get("id") or f"line-{n}")
            rows.append(row)
    if not rows:
        raise SekbenchError(f"{path} holds no trajectories")
    return rows


def end_of_turn(tokenizer) -> str:
    """The text that closes an assistant turn in the chat template (SmolLM2: <|im_end|>)."""
    eot = tokenizer.eos_token
    if not eot:
        raise SekbenchError("the tokenizer names no end-of-turn (eos) token")
    return eot


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as the chat template renders it, and the character span of each
    assistant turn's content plus its end-of-turn token (turns with `weight` 0 get none)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    eot = end_of_turn(tokenizer)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:   # weight 0: shown, not learned
            continue
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False,
                                               add_generation_prompt=True)
        start = len(prefix)
        end = start + len(m["content"])
        if not text.startswith(prefix) or text[start:end] != m["content"]:
            raise SekbenchError("the chat template does not render assistant turns as "
                                "generation prompt + content; cannot place the loss mask")
        if text[end:end + len(eot)] != eot:
            raise SekbenchError(f"the chat template does not close assistant turns with {eot!r}")
        spans.append((start, end + len(eot)))
    return text, spans


def tokenize_with_labels(tokenizer, messages: list[dict], id: str = "") -> Example:
    """Token ids of the templated conversation; labels copy the ids inside assistant spans."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        reach = start   # how far the labelled tokens cover the span, left to right
        for k, (a, b) in enumerate(offsets):
            if a < end and b > start:           # overlaps the span
                if a < start or b > end:
                    raise SekbenchError(f"{id}: a token straddles an assistant-turn boundary "
                                        f"({text[a:b]!r}); the loss mask would be inexact")
                if a > reach:
                    break
                labels[k] = ids[k]
                reach = max(reach, b)   # byte-level pieces of one character share offsets
        if reach != end:
            raise SekbenchError(f"{id}: labelled tokens do not cover the assistant turn exactly")
    return Example(id=id, input_ids=list(ids), labels=labels)


def load_dataset(path: str | Path, tokenizer, max_len: int) -> Dataset:
    """Read, template and label every trajectory. Over-long ones and ones with nothing to
    learn are dropped and reported, never cut: a cut trajectory loses its terminal."""
    path = Path(path)
    rows = read_trajectories(path)
    ds = Dataset(examples=[], sha256=file_sha256(path), path=str(path.resolve()))
    from pipeline.record import read_manifest
    ds.manifest = read_manifest(path)
    for row in rows:
        rid = str(row["rollout_id"])
        ex = tokenize_with_labels(tokenizer, row["messages"], rid)
        if ex.n_labelled == 0:
            ds.empty.append(rid)
        elif len(ex.input_ids) > max_len:
            ds.overlong.append({"id": rid, "tokens": len(ex.input_ids)})
        else:
            ds.examples.append(ex)
    if not ds.examples:
        why = (f"{len(ds.overlong)} longer than max_len={max_len}" if ds.overlong else
               "none has an assistant turn")
        raise SekbenchError(f"no trainable trajectory in {path} ({why})")
    return ds


def length_grouped_batches(examples: list[Example], token_budget: int, seed: int,
                           epoch: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size (rows x longest)
    stays within token_budget. Sorting by length keeps padding near zero; the batch order
    is shuffled per epoch, deterministically from (seed, epoch), so resume can rebuild it."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)   # ties in length land in a different order each epoch
    order.sort(key=lambda i: len(examples[i].input_ids))
    batches, cur, longest = [], [], 0
    for i in order:
        n = len(examples[i].input_ids)
        if cur and max(longest, n) * (len(cur) + 1) > token_budget:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int):
    """Right-padded tensors; the attention mask is None when no row needs padding, which
    lets attention take its causal fast path."""
    import torch

    longest = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        labels[r, :n] = torch.tensor(e.labels)
        mask[r, :n] = 1
    return ids, labels, (None if bool(mask.all()) else mask)
