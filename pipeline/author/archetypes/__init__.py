"""Archetype builders, one module each; every builder maps (rng, paths) to a Task."""

from __future__ import annotations

from collections.abc import Callable
import random

from . import archive, cleanup, config_edit, dir_organize, file_transform, permissions, report, search_count, text_extract
from .common import Paths, Task

Builder = Callable[[random.Random, Paths], Task]

BUILDERS: dict[str, Builder] = {
    "search_count": search_count.build,
    "file_transform": file_transform.build,
    "permissions": permissions.build,
    "dir_organize": dir_organize.build,
    "text_extract": text_extract.build,
    "config_edit": config_edit.build,
    "cleanup": cleanup.build,
    "archive": archive.build,
    "report": report.build,
}

__all__ = ["BUILDERS", "Builder", "Paths", "Task"]
