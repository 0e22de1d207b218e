"""`pipeline` never imports textual: the data factory runs headless, without the workbench."""

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_never_imports_textual():
    import pipeline
    modules = ["pipeline"] + [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")]
    # Modules the CLI shares with the workbench must stay headless too.
    modules += ["sekbench.replay"]
    code = (
        "import importlib, sys\n"
        f"failed = []\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as e:  # an optional dependency (torch, docker) may be absent\n"
        "        if 'textual' in str(e): raise\n"
        "        failed.append(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not leaked, leaked[:5]\n"
        "print(len(failed))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_textual_import_statement_in_pipeline():
    for path in (ROOT / "pipeline").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import textual" not in text and "from textual" not in text, path
