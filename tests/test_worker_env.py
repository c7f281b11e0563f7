"""The images the manifests name can be built, and the worker runs from ``requirements.txt`` alone.

No container engine runs here, so the Dockerfile is checked by parsing it,
and the worker image's Python environment is rebuilt the way the Dockerfile
builds it: a clean venv, ``pip install -r requirements.txt``, ``lib/`` and
``jobs/`` copied into an app directory, then the entry point ``python -m
jobs`` is run. A module the worker imports but ``requirements.txt`` lacks
fails here, not in a cluster.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hooks import worker_jobs
from jobs.cli import parser as cli_parser
from lib.config import Config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


# ------------------------------------------------------------------ Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name (or index), with their instructions; line continuations joined."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = Stage(name, words[0])
            stages[name] = current
        else:
            assert current is not None, f"{op} before FROM"
            current.instructions.append((op, rest.strip()))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())


def chain(target: str) -> list[Stage]:
    """The target and the stages it is built FROM, innermost last."""
    out = []
    stage: Stage | None = STAGES[target]
    while stage is not None:
        out.append(stage)
        stage = STAGES.get(stage.base)
    return out


def effective(target: str, op: str) -> list[str]:
    """Every argument of ``op`` along the target's chain, base first."""
    return [rest for stage in reversed(chain(target)) for o, rest in stage.instructions if o == op]


def copied(target: str) -> dict[str, str]:
    """COPY destination -> source for the build context (not --from)."""
    out = {}
    for rest in effective(target, "COPY"):
        if rest.startswith("--from"):
            continue
        src, dst = rest.split()
        out[dst.rstrip("/")] = src.rstrip("/")
    return out


def exec_form(value: str) -> list[str]:
    import json

    return json.loads(value)


def test_both_targets_exist():
    assert {"hooks", "worker"} <= set(STAGES)


@pytest.mark.parametrize("target", ["hooks", "worker"])
def test_base_images_are_pinned(target):
    for stage in chain(target):
        if stage.base in STAGES:
            continue
        image = stage.base
        assert "@sha256:" in image or re.search(r":[0-9][\w.-]*$", image), f"{image} is not pinned"
        assert not image.endswith(":latest")


@pytest.mark.parametrize("target", ["hooks", "worker"])
def test_runs_as_non_root_uid_the_manifests_use(target):
    users = effective(target, "USER")
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot checks numbers)"
    assert int(uid) == worker_jobs.WORKER_UID  # the uid every emitted pod runs as


@pytest.mark.parametrize(("target", "packages"), [("hooks", ("lib", "hooks")), ("worker", ("lib", "jobs"))])
def test_targets_copy_the_packages_their_entry_point_needs(target, packages):
    workdir = effective(target, "WORKDIR")[-1]
    dests = copied(target)
    for pkg in packages:
        assert dests.get(f"{workdir}/{pkg}") == pkg, f"{target} lacks {pkg}/ in {workdir}"
    other = {"hooks": "jobs", "worker": "hooks"}[target]
    assert f"{workdir}/{other}" not in dests, f"{target} should not ship {other}/"


def test_worker_entry_point_is_what_the_hooks_emit():
    """Jobs and injected init containers spell the entry point out; it must be the image's."""
    [entry] = effective("worker", "ENTRYPOINT")
    assert exec_form(entry) == ["python", "-m", "jobs"]
    from hooks import model as hooks_model
    from tests.support import hookreq as hr

    children = hooks_model.model_sync(hr.sync_request(hr.model()), Config(signing_key=b"k" * 32))["children"]
    [job] = [c for c in children if c["kind"] == "Job"]
    for c in job["spec"]["template"]["spec"]["containers"]:
        assert c["command"][:3] == ["python", "-m", "jobs"]


def test_hooks_entry_point_matches_the_deployment():
    import yaml

    [entry] = effective("hooks", "ENTRYPOINT")
    argv = exec_form(entry)
    assert argv[0] == "gunicorn" and argv[-1] == "hooks.app:app"
    config_path = argv[argv.index("--config") + 1]
    workdir = effective("hooks", "WORKDIR")[-1]
    assert config_path == f"{workdir}/hooks/gunicorn_conf.py"
    deployment = yaml.safe_load((ROOT / "deploy" / "hooks" / "deployment.yaml").read_text())
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        cmd = c["command"]
        assert cmd[0] == "gunicorn" and cmd[-1] == "hooks.app:app"
        assert cmd[cmd.index("--config") + 1] == config_path
        assert "/hooks:" in c["image"]
    assert re.search(r"^gunicorn==", (ROOT / "requirements.txt").read_text(), re.M)


def test_manifests_name_images_of_the_two_targets():
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "hooks" / "config.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert re.search(r"/worker:[0-9]", env["AI_MODELS_WORKER_IMAGE"])
    assert env["AI_MODELS_WORKER_IMAGE"] == Config().worker_image  # the default and the manifest agree
    header = DOCKERFILE.read_text()
    assert "--target hooks" in header and "--target worker" in header


def test_dockerignore_keeps_tests_and_venv_out_of_the_context():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "tests", ".git"} <= ignored


# ------------------------------------------------------------------ the worker's environment


def _pip_install_args() -> list[str]:
    """How the Dockerfile installs: the one ``pip install`` RUN line, in the stage whose venv the images copy."""
    runs = [(name, r) for name, st in STAGES.items() for o, r in st.instructions if o == "RUN" and "pip install" in r]
    [(stage, run)] = runs
    assert f"--from={stage} /opt/venv /opt/venv" in " ".join(effective("worker", "COPY"))
    words = shlex.split(run)
    return words[words.index("install") + 1 :]


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory) -> tuple[Path, Path]:
    """A clean venv with requirements.txt only, and an app dir holding lib/ and jobs/ as in the image."""
    tmp = tmp_path_factory.mktemp("worker-image")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    args = ["-r" if a == "-r" else a for a in _pip_install_args()]
    args = [str(ROOT / "requirements.txt") if a.endswith("requirements.txt") else a for a in args]
    assert args[:2] == ["-r", str(ROOT / "requirements.txt")], args
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    app = tmp / "app"
    app.mkdir()
    for dst, src in copied("worker").items():
        if dst.startswith("/app/"):
            shutil.copytree(ROOT / src, app / Path(dst).name, ignore=shutil.ignore_patterns("__pycache__"))
    assert sorted(p.name for p in app.iterdir()) == ["jobs", "lib"]
    return py, app


def run_worker(worker_env, *argv: str) -> subprocess.CompletedProcess:
    py, app = worker_env
    env = {"PATH": f"{py.parent}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(app)}
    return subprocess.run(
        [str(py), "-m", "jobs", *argv],
        cwd=app, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow  # worker_env: a clean venv like the worker image (~45 s)
def test_worker_help_runs_in_a_clean_environment(worker_env):
    proc = run_worker(worker_env, "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("publish", "upload-server", "materialize", "cleanup", "catalog-probe", "catalog-export"):
        assert command in proc.stdout


@pytest.mark.slow  # worker_env: a clean venv like the worker image (~45 s)
def test_every_worker_command_imports_in_a_clean_environment(worker_env):
    """``--help`` of each command; ``publish`` also imports every source adapter and the pipeline."""
    [sub] = [a for a in cli_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = sorted(sub.choices)
    assert "publish" in commands
    for command in commands:
        proc = run_worker(worker_env, command, "--help")
        assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
        assert "usage:" in proc.stdout
    py, app = worker_env
    modules = sorted(
        ".".join(p.relative_to(app).with_suffix("").parts)
        for p in app.rglob("*.py")
        if p.name != "__main__.py"
    )
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    proc = subprocess.run([str(py), "-c", code, *modules], cwd=app, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow  # worker_env: a clean venv like the worker image (~45 s)
def test_the_clean_environment_has_no_test_tools(worker_env):
    """What passes here would pass in the image: nothing from requirements-dev.txt leaked in."""
    py, _ = worker_env
    proc = subprocess.run([str(py), "-c", "import pytest"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k == "HOME"}})
    assert proc.returncode != 0
