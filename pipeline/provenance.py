"""What made an artefact: the versions of sekbench and the libraries that shaped it.

Read from the installed distributions' metadata, never by importing them: an export must not
pay for loading torch to say which torch is installed.
"""

from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("torch", "transformers", "peft", "tokenizers", "accelerate", "datasets",
             "safetensors", "gguf", "sqlite-utils", "httpx")


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def sekbench_version() -> str:
    return version("sekbench") or "unknown"


def library_versions(names=LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (absent ones left out), with Python's."""
    found = {"python": platform.python_version()}
    for name in names:
        v = version(name)
        if v:
            found[name] = v
    return found
