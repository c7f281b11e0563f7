"""Each atheris target in ``fuzz/`` runs briefly (2000 inputs from real seeds) when atheris is installed.

Longer campaigns are run by hand (``fuzz/README.md``); this keeps the targets
working and catches the easy crashes on every test run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    subprocess.run([sys.executable, str(ROOT / "fuzz" / "corpus.py"), str(root)], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)
    return root


@pytest.mark.parametrize("target", ["gguf", "safetensors", "archive", "hooks"])
def test_fuzz_target_runs_clean(target: str, corpus: Path, tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / f"fuzz_{target}.py"), "-runs=2000", "-rss_limit_mb=1024",
         "-timeout=10", f"-artifact_prefix={tmp_path}/", str(corpus / target)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    assert "Done 2000 runs" in p.stderr
