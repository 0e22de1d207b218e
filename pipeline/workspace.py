"""Where a workspace keeps its store, images, jobs, models and adapters."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path(os.path.expanduser("~")) / ".local" / "share" / "sekbench"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> "Workspace":
        root = Path(home or os.environ.get("SEKBENCH_HOME") or DEFAULT_HOME).expanduser().resolve()
        ws = cls(root)
        ws.ensure()
        return ws

    def ensure(self) -> None:
        for d in (self.root, self.images, self.jobs, self.models, self.adapters, self.scenarios,
                  self.exports, self.reports):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def db_path(self) -> Path:
        return self.root / "store.db"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def scenarios(self) -> Path:
        """Hand-edited scenario files; the workbench watches this folder."""
        return self.root / "scenarios"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def reports(self) -> Path:
        return self.root / "reports"
