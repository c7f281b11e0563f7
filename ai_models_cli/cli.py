"""``ai-models upload`` and ``ai-models wait`` (also ``kubectl ai-models ...``).

Exit status: 0 done (uploaded, Ready), 1 refused or Failed (the message says
why), 2 usage, 3 timed out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ai_models_cli.progress import Progress, human
from ai_models_cli.upload import Outcome, Target, Uploader, UploadError, verify

TIMEOUT_EXIT = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ai-models", description="Upload model files and wait for models.")
    sub = p.add_subparsers(dest="command", required=True)

    def target(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-n", "--namespace", help="the Model's namespace (default: the context's)")
        sp.add_argument("--cluster", action="store_true", help="MODEL is a ClusterModel")
        sp.add_argument("--kubeconfig", help="path to a kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
        sp.add_argument("--context", help="kubeconfig context")
        sp.add_argument("--timeout", type=float, default=3600, help="seconds to wait for Ready")

    up = sub.add_parser("upload", help="upload FILE into MODEL's upload session, resuming after failures")
    up.add_argument("args", nargs="+", metavar="[MODEL] FILE", help="MODEL and FILE; FILE alone with --url")
    target(up)
    up.add_argument("--url", help="upload URL (else the Secret's url); with --token-file no cluster access")
    up.add_argument("--token-file", type=Path, help="file holding the bearer token (else the Secret's token)")
    up.add_argument("--filename", help="?filename= for archives (default: FILE's name unless it is a .gguf)")
    up.add_argument("--ca-file", help="CA bundle for an https upload URL")
    up.add_argument("--insecure", action="store_true", help="do not verify the upload URL's certificate")
    up.add_argument("--retries", type=int, default=8, help="attempts without progress before giving up")
    up.add_argument("--no-wait", action="store_true", help="do not wait for the Model to become Ready")
    up.add_argument("--quiet", action="store_true", help="no progress bar")

    w = sub.add_parser("wait", help="wait until MODEL is Ready or Failed and print the reason")
    w.add_argument("model", metavar="MODEL")
    target(w)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    try:
        return upload(p, a) if a.command == "upload" else wait(a)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume the upload", file=sys.stderr)
        return 130


def _cluster(a: argparse.Namespace) -> Any:
    from ai_models_cli.kube import Cluster

    return Cluster(a.kubeconfig, a.context)


def _ref(a: argparse.Namespace, cluster: Any, name: str) -> Any:
    from ai_models_cli.kube import Ref

    return Ref(name, None if a.cluster else (a.namespace or cluster.default_namespace))


def upload(p: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    offline = a.url is not None and a.token_file is not None
    if offline and len(a.args) == 1:
        model, file = None, Path(a.args[0])
    elif len(a.args) == 2:
        model, file = a.args[0], Path(a.args[1])
    else:
        p.error("upload takes MODEL FILE, or FILE alone with --url and --token-file")
    if not file.is_file():
        p.error(f"{file}: no such file")
    cluster = ref = None
    url, token = a.url, a.token_file.read_text().strip() if a.token_file else None
    if model is not None and not offline:
        from ai_models_cli.kube import KubeError

        cluster = _cluster(a)
        ref = _ref(a, cluster, model)
        try:
            secret_url, secret_token = cluster.upload_secret(ref)
        except KubeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        url, token = url or secret_url, token or secret_token
    assert url is not None and token is not None
    progress = None if a.quiet else Progress(file.stat().st_size)
    uploader = Uploader(Target(url, token, a.ca_file, a.insecure), file, a.filename, retries=a.retries,
                        progress=progress)
    try:
        out = uploader.run()
    except UploadError as e:
        if progress:
            progress.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    if progress:
        progress.close()
    report(out)
    problems = verify(out)
    if cluster is not None and ref is not None and not a.no_wait:
        return _wait_ready(cluster, ref, a.timeout, out, problems)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def report(out: Outcome) -> None:
    how = f"{out.attempts} attempt{'s' if out.attempts > 1 else ''}"
    if out.resumed_from:
        how += ", resumed at byte " + ", ".join(str(n) for n in out.resumed_from)
    print(f"uploaded {human(out.size)} ({out.size} bytes, file {out.sha256}) in {how}")
    if out.result is None:
        print("the session published before the answer was lost: the artifact is in the Model's status")
        return
    art = out.result.get("artifact") or {}
    res = out.result.get("resolved") or {}
    print(f"artifact {art.get('digest', '?')}  {res.get('format', '')} {res.get('family', '')}".rstrip())


def _wait_ready(cluster: Any, ref: Any, timeout: float, out: Outcome, problems: list[str]) -> int:
    from ai_models_cli.kube import describe

    try:
        obj = cluster.wait(ref, timeout=timeout, on_change=_print_phase(ref))
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return TIMEOUT_EXIT
    phase, reason, message = describe(obj)
    status_digest = ((obj.get("status") or {}).get("artifact") or {}).get("digest")
    if phase == "Ready" and out.result is not None:
        sent = (out.result.get("artifact") or {}).get("digest")
        if status_digest != sent:
            problems.append(f"{ref.kind} {ref} is Ready with {status_digest}, the upload published {sent}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if phase != "Ready":
        print(f"{ref.kind} {ref}: {phase} {reason}: {message}", file=sys.stderr)
        return 1
    print(f"{ref.kind} {ref}: Ready {status_digest}")
    return 1 if problems else 0


def _print_phase(ref: Any) -> Any:
    def show(phase: str, reason: str, message: str) -> None:
        print(f"{ref.kind} {ref}: {phase or '(no status yet)'} {reason}".rstrip(), file=sys.stderr)

    return show


def wait(a: argparse.Namespace) -> int:
    from ai_models_cli.kube import KubeError, describe

    cluster = _cluster(a)
    ref = _ref(a, cluster, a.model)
    try:
        obj = cluster.wait(ref, timeout=a.timeout, on_change=_print_phase(ref))
    except KubeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return TIMEOUT_EXIT
    phase, reason, message = describe(obj)
    print(f"{ref.kind} {ref}: {phase} {reason}" + (f": {message}" if message else ""))
    return 0 if phase == "Ready" else 1
