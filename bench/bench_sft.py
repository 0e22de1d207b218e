"""SFT throughput: sekbench's trainer against TRL's SFTTrainer, same data, model, machine and
labelled tokens; then the selective LM head against full logits inside our own loop.

    python bench/bench_sft.py                       # synthetic trajectories, the prepared SmolLM2
    python bench/bench_sft.py --data FILE --device cuda --qlora

Both trainers get the same token ids and the same assistant mask (TRL through its
`assistant_masks` column, which it folds into the labels), one epoch, the same LoRA,
learning rate and schedule, and no gradient checkpointing (TRL turns it on by
default; it trades speed for memory, which would flatter us). TRL keeps its default
sampler (random order, padding to the longest row of each batch), with as many
rows per batch as our token budget holds on average. tokens/s counts real (unpadded)
tokens over the training loop's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.sft import (SFTConfig, collate, full_logits_loss, load_lora_model,  # noqa: E402
                          load_tokenizer, resolve_device, selective_loss, train)
from pipeline.sft_data import IGNORE, length_grouped_batches, load_dataset, read_trajectories  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "trajectories.jsonl"
FILES = ["report.txt", "names.txt", "app.log", "notes.md", "orders.csv", "todo.txt"]


def synthetic_trajectories(path: Path, n: int, seed: int) -> Path:
    """Fixture trajectories with extra look-around turns whose outputs vary in length, so the
    lengths spread the way real exports do (a `cat` of a long file, a short `ls`)."""
    rng = random.Random(seed)
    base = read_trajectories(FIXTURE)
    rows = []
    for i in range(n):
        row = json.loads(json.dumps(base[i % len(base)]))
        msgs = row["messages"]
        extra = []
        for _ in range(rng.randint(0, 4)):
            f = rng.choice(FILES)
            lines = [f"{rng.choice(['alpha', 'beta', 'gamma', 'delta'])} {rng.randint(0, 99999)} "
                     f"{rng.choice(['ok', 'pending', 'ERROR', 'done'])}" for _ in range(rng.randint(1, 40))]
            extra += [{"role": "user", "content": "sek@box:~$ "},
                      {"role": "assistant", "content": f"cat ~/inbox/{f}"},
                      {"role": "user", "content": "\n".join(lines)}]
        msgs[1:1] = extra
        row["rollout_id"] = f"synthetic-{i}"
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench_ours(cfg: SFTConfig) -> dict:
    import torch
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    r = train(cfg)
    out = {"tokens_per_s": r["tokens_per_s"], "tokens_per_cpu_s": r["tokens"] / r["train_cpu_seconds"],
           "steps": r["steps"], "final_loss": r["final_loss"]}
    if torch.cuda.is_available():
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def bench_trl(cfg: SFTConfig, examples, batch_size: int, device: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig, SFTTrainer

    tok = load_tokenizer(cfg.model)
    data = Dataset.from_dict({
        "input_ids": [e.input_ids for e in examples],
        "assistant_masks": [[int(lab != IGNORE) for lab in e.labels] for e in examples]})
    kw = {"dtype": torch.bfloat16 if device.startswith("cuda") else torch.float32}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig
        kw = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16), "device_map": {"": device}}
    model = AutoModelForCausalLM.from_pretrained(cfg.model, attn_implementation="sdpa", **kw)
    args = TRLConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=batch_size,
        num_train_epochs=1, learning_rate=cfg.lr, lr_scheduler_type=cfg.schedule,
        warmup_steps=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm, weight_decay=cfg.weight_decay,
        gradient_checkpointing=False, report_to=[], logging_steps=10_000, save_strategy="no",
        max_length=None, seed=cfg.seed, bf16=device.startswith("cuda"), use_cpu=device == "cpu",
        dataloader_num_workers=0)
    peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                         peft_config=peft_cfg)
    theirs = trainer.train_dataset["labels"]
    ours = [e.labels for e in examples]
    same = [list(a) for a in theirs] == ours
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    res = trainer.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(len(e.input_ids) for e in examples)
    out = {"tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu, "train_runtime": res.metrics.get("train_runtime"),
           "steps": res.global_step, "final_loss": res.training_loss, "same_labels": same}
    if torch.cuda.is_available():
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def bench_head(cfg: SFTConfig, examples, device: str, n_batches: int, tokenizer) -> dict:
    """Forward + backward over the same batches, round-robin: the selective head as our loop
    runs it (no padding mask), full logits without the mask (the head alone differs), and
    full logits with the mask (the usual way). Timed in CPU seconds on the CPU (a shared
    machine's wall time is mostly other people's work), in wall seconds on CUDA."""
    import torch
    model = load_lora_model(cfg, device)
    model.train()
    batches = length_grouped_batches(examples, cfg.batch_tokens, cfg.seed, 0)[:n_batches]
    variants = {"selective": (selective_loss, False), "full_logits": (full_logits_loss, False),
                "full_logits_masked": (full_logits_loss, True)}
    times = dict.fromkeys(variants, 0.0)
    tokens = 0
    for b in batches:
        ids, labels, mask = collate([examples[i] for i in b], tokenizer.pad_token_id)
        ids, labels = ids.to(device), labels.to(device)
        mask = mask.to(device) if mask is not None else None
        tokens += int(ids.numel() if mask is None else mask.sum())
        for name, (fn, masked) in variants.items():
            t0 = time.perf_counter() if device.startswith("cuda") else time.process_time()
            fn(model, ids, labels, mask if masked else None).backward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name] += (time.perf_counter() if device.startswith("cuda") else time.process_time()) - t0
            model.zero_grad(set_to_none=True)
    out = {"batches": len(batches), "tokens": tokens}
    out.update({f"{k}_tokens_per_s": tokens / v for k, v in times.items()})
    out["selective_vs_full_logits"] = times["full_logits"] / times["selective"]
    out["selective_vs_full_logits_masked"] = times["full_logits_masked"] / times["selective"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="base model dir (default: the prepared SmolLM2)")
    p.add_argument("--data", help="exported trajectories; default: synthetic ones from the fixture")
    p.add_argument("--synthetic", type=int, default=12, help="how many synthetic trajectories")
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--head-batches", type=int, default=2, help="batches for the head comparison")
    p.add_argument("--device", default="auto")
    p.add_argument("--qlora", action="store_true", help="4-bit base (CUDA only)")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternate ours/TRL this many times and keep each one's best run "
                        "(a shared machine is noisy)")
    p.add_argument("--skip", choices=["trl", "head"], action="append", default=[])
    a = p.parse_args()

    from pipeline.models import resolve_model
    from pipeline.workspace import Workspace
    model = str(resolve_model(a.model, Workspace.from_env()))
    device = resolve_device(a.device)
    tmp = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    data = Path(a.data) if a.data else synthetic_trajectories(tmp / "synthetic.jsonl", a.synthetic, 0)
    tokenizer = load_tokenizer(model)
    ds = load_dataset(data, tokenizer, a.max_len)
    n_batches = len(length_grouped_batches(ds.examples, a.batch_tokens, 0, 0))
    cfg = SFTConfig(data=str(data), out=str(tmp / "ours"), model=model, max_steps=n_batches,
                    batch_tokens=a.batch_tokens, max_len=a.max_len, checkpoint_every=0,
                    device=device, load_in_4bit=a.qlora, log_every=10_000)
    lens = [len(e.input_ids) for e in ds.examples]
    mean_len = sum(lens) / len(lens)
    trl_bs = max(1, round(a.batch_tokens / mean_len))
    report = {"device": device, "qlora": a.qlora, "model": model, "trajectories": len(lens),
              "tokens": sum(lens), "labelled_tokens": sum(e.n_labelled for e in ds.examples),
              "length_min_mean_max": [min(lens), round(mean_len), max(lens)],
              "batch_tokens": a.batch_tokens, "trl_batch_size": trl_bs, "torch_threads": None}
    import torch
    report["torch_threads"] = torch.get_num_threads()
    runs: dict[str, list] = {"ours": [], "trl": []}
    for r in range(a.repeats):
        cfg.out = str(tmp / f"ours-{r}")
        runs["ours"].append(bench_ours(cfg))
        print(json.dumps({"ours": runs["ours"][-1]}), file=sys.stderr, flush=True)
        if "trl" not in a.skip:
            runs["trl"].append(bench_trl(cfg, ds.examples, trl_bs, device))
            print(json.dumps({"trl": runs["trl"][-1]}), file=sys.stderr, flush=True)
    for name, rs in runs.items():
        if rs:
            report[name] = max(rs, key=lambda x: x["tokens_per_s"])
            report[name]["all_tokens_per_s"] = [x["tokens_per_s"] for x in rs]
    if runs["trl"]:
        report["speedup_vs_trl"] = report["ours"]["tokens_per_s"] / report["trl"]["tokens_per_s"]
        # CPU seconds are what each trainer itself burned: steadier than wall time when
        # other work shares the cores
        report["speedup_vs_trl_cpu_time"] = (max(x["tokens_per_cpu_s"] for x in runs["ours"]) /
                                             max(x["tokens_per_cpu_s"] for x in runs["trl"]))
    if "head" not in a.skip:
        report["head"] = bench_head(cfg, ds.examples, device, a.head_batches, tokenizer)
    report["reproduce"] = "python " + " ".join(sys.argv)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
