"""deploy/monitoring: the kube-state-metrics configuration, the rules, the dashboard, the hook histograms.

kube-state-metrics is not run here: its custom-resource-state semantics are
re-implemented below from its own source and docs (v2.20.0, commit c92fe0c,
docs/metrics/extend/customresourcestate-metrics.md and
pkg/customresourcestate/{config.go,registry_factory.go}), just far enough to
render series from real status objects the hooks emit. The facts relied on:

- keys: a resource has groupVersionKind, metricNamePrefix, commonLabels,
  labelsFromPath, metrics, errorLogV (resourcePlural); a metric has name, help,
  each, commonLabels, labelsFromPath, errorLogV; ``each`` has type
  (Gauge|StateSet|Info) and the one matching block; gauge: path, valueFrom,
  labelsFromPath, labelFromKey, nilIsZero; stateSet: path, valueFrom,
  labelsFromPath, list, labelName; info: path, labelsFromPath, labelFromKey;
- name = metricNamePrefix + "_" + name (default prefix kube_customresource);
  every series gets customresource_group/_version/_kind;
- resource labels are merged with the metric's (the metric's win) and are
  resolved on the whole object; the ``each`` labels are resolved relative to the
  element and win over them; a label whose path resolves to nothing is left out;
- a path is a list of segments: a map key, an index into a list, ``[k=v]`` picks
  the list element whose k equals v; anything missing resolves to nil;
- Gauge over a list: one series per element (valueFrom relative to it; an
  element whose value is nil is skipped); over a scalar: one series; nil: none.
  Values: numbers as is, bools 1/0, strings "true"/"yes" 1, "false"/"no"/
  "unknown" 0, RFC 3339 times as Unix seconds, quantities, "N%" as N/100;
- StateSet: nil gives no series; else one series per ``list`` entry, 1 for the
  one equal to the value; Info: value 1, emitted only when some of its own
  labels resolved.
Anything else (a Gauge over a map, labelFromKey, "*" labels) fails the test
instead of being guessed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hooks.app import LATENCY, create_app
from lib.config import Config
from tests.support import hookreq as hr
from tests.test_catalog_hooks import (
    PROBE_OK,
    cat_model,
    finished,
    import_job_for,
    jobs,
    model_sync,
    pull_secret,
    ready_status,
    source,
    src_sync,
)
from tests.test_model_hooks import _ready_flow, running, sync

ROOT = Path(__file__).resolve().parents[1]
MON = ROOT / "deploy" / "monitoring"
Obj = dict[str, Any]
Series = tuple[str, frozenset[tuple[str, str]], float]

RESOURCE_KEYS = {"groupVersionKind", "metricNamePrefix", "commonLabels", "labelsFromPath", "metrics",
                 "errorLogV", "resourcePlural"}
METRIC_KEYS = {"name", "help", "each", "commonLabels", "labelsFromPath", "errorLogV"}
EACH_KEYS = {"Gauge": {"path", "valueFrom", "labelsFromPath", "labelFromKey", "nilIsZero"},
             "StateSet": {"path", "valueFrom", "labelsFromPath", "list", "labelName"},
             "Info": {"path", "labelsFromPath", "labelFromKey"}}


def ksm_config() -> Obj:
    [cm] = [d for d in yaml.safe_load_all((MON / "kube-state-metrics-config.yaml").read_text()) if d]
    return yaml.safe_load(cm["data"]["custom-resource-state.yaml"])


# ---------------------------------------------------------------- kube-state-metrics, the parts we use


def get(obj: Any, path: list[str]) -> Any:
    for part in path:
        if obj is None:
            return None
        if part.startswith("[") and part.endswith("]"):
            key, _, val = part[1:-1].partition("=")
            assert _, f"invalid list lookup {part}"
            obj = next((e for e in obj if isinstance(e, dict) and str(e.get(key)) == val), None) \
                if isinstance(obj, list) else None
        elif isinstance(obj, dict):
            assert "=" not in part, f"k=v segments are not implemented here: {part}"
            obj = obj.get(part)
        elif isinstance(obj, list):
            obj = obj[int(part)] if part.lstrip("-").isdigit() and -len(obj) <= int(part) < len(obj) else None
        else:
            return None
    return obj


def to_float(v: Any) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return float(v)
    assert isinstance(v, str), f"expected number but was {v!r}"
    low = v.lower()
    if low in ("true", "yes"):
        return 1.0
    if low in ("false", "no", "unknown"):
        return 0.0
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", v):
        return float(int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()))
    if re.fullmatch(r"[0-9]+%", v):
        return float(v[:-1]) / 100
    assert re.fullmatch(r"[+-]?[0-9.]+([eE][+-]?[0-9]+)?", v), f"quantities are not implemented here: {v!r}"
    return float(v)


def labels_of(obj: Any, paths: dict[str, list[str]]) -> dict[str, str]:
    assert not any("*" in k for k in paths), "'*' labels are not implemented here"
    out = {}
    for k, p in paths.items():
        v = get(obj, p)
        if v is not None:
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def render(cfg: Obj, obj: Obj) -> list[Series]:
    """The series kube-state-metrics would expose for ``obj`` under ``cfg``."""
    out: list[Series] = []
    for res in cfg["spec"]["resources"]:
        gvk = res["groupVersionKind"]
        if obj["apiVersion"] != f"{gvk['group']}/{gvk['version']}" or obj["kind"] != gvk["kind"]:
            continue
        prefix = res.get("metricNamePrefix", "kube_customresource")
        for m in res["metrics"]:
            common = {**res.get("commonLabels", {}), **m.get("commonLabels", {}),
                      "customresource_group": gvk["group"], "customresource_version": gvk["version"],
                      "customresource_kind": gvk["kind"]}
            base = {**common, **labels_of(obj, {**res.get("labelsFromPath", {}), **m.get("labelsFromPath", {})})}
            name = f"{prefix}_{m['name']}" if prefix else m["name"]
            for labels, value in each_values(m["each"], obj):
                out.append((name, frozenset({**base, **labels}.items()), value))
    return out


def each_values(each: Obj, obj: Obj) -> list[tuple[dict[str, str], float]]:
    kind = each["type"]
    spec = each[{"Gauge": "gauge", "StateSet": "stateSet", "Info": "info"}[kind]]
    assert "labelFromKey" not in spec, "labelFromKey is not implemented here"
    v = get(obj, spec.get("path", []))
    lp = spec.get("labelsFromPath", {})
    items = v if isinstance(v, list) else [v]
    out: list[tuple[dict[str, str], float]] = []
    if kind == "Gauge":
        assert not isinstance(v, dict), "a Gauge over an object (labelFromKey semantics) is not implemented here"
        assert not spec.get("nilIsZero"), "nilIsZero is not implemented here"
        for it in items:
            got = get(it, spec.get("valueFrom", []))
            if got is not None:
                out.append((labels_of(it, lp), to_float(got)))
    elif kind == "StateSet":
        for it in items:
            got = get(it, spec.get("valueFrom", []))
            if got is None:
                continue
            assert isinstance(got, str), f"expected value for path to be string, got {got!r}"
            out += [({spec["labelName"]: e, **labels_of(it, lp)}, 1.0 if got == e else 0.0) for e in spec["list"]]
    else:
        if isinstance(v, dict):  # the map itself, then each child (which resolves nothing for our paths)
            children = [c for c in v.values() if labels_of(c, lp)]
            assert not children, "Info over a map whose children resolve labels is not implemented here"
        for it in items:
            lab = labels_of(it, lp) if it is not None else {}
            if lab:
                out.append((lab, 1.0))
    return out


def one(series: list[Series], metric: str, **labels: str) -> float:
    found = [v for n, ls, v in series if n == metric and set(labels.items()) <= ls]
    assert len(found) == 1, (metric, labels, [s for s in series if s[0] == metric])
    return found[0]


def labelset(series: list[Series], name: str) -> list[dict[str, str]]:
    return [dict(ls) for n, ls, _ in series if n == name]


def test_the_configuration_uses_only_documented_keys():
    cfg = ksm_config()
    assert set(cfg) == {"kind", "spec"} and cfg["kind"] == "CustomResourceStateMetrics"
    crds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"]: yaml.safe_load(p.read_text())
            for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml"}
    seen = set()
    for res in cfg["spec"]["resources"]:
        assert set(res) <= RESOURCE_KEYS, set(res) - RESOURCE_KEYS
        gvk = res["groupVersionKind"]
        crd = crds[gvk["kind"]]
        assert gvk["group"] == crd["spec"]["group"] and gvk["version"] in [v["name"] for v in crd["spec"]["versions"]]
        assert gvk["kind"] not in seen, "kube-state-metrics exits on two entries for one resource"
        seen.add(gvk["kind"])
        names = set()
        for m in res["metrics"]:
            assert set(m) <= METRIC_KEYS and m["help"], m["name"]
            assert re.fullmatch(r"[a-z_][a-z0-9_]*", m["name"]) and m["name"] not in names
            names.add(m["name"])
            t = m["each"]["type"]
            block = {"Gauge": "gauge", "StateSet": "stateSet", "Info": "info"}[t]
            assert set(m["each"]) == {"type", block}, m["name"]
            assert set(m["each"][block]) <= EACH_KEYS[t], (m["name"], set(m["each"][block]) - EACH_KEYS[t])
            if t == "Info":
                assert m["name"].endswith("_info"), "kube-state-metrics logs Info metrics without _info"
    assert seen == {"Model", "ClusterModel", "ModelCatalogSource"}


def test_stateset_lists_every_phase_the_crds_allow():
    for res in ksm_config()["spec"]["resources"]:
        crd = yaml.safe_load((ROOT / "crds" / f"{res['groupVersionKind']['kind'].lower()}s.yaml").read_text())
        enum = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
            "phase"]["enum"]
        [phase] = [m for m in res["metrics"] if m["name"] == "status_phase"]
        assert phase["each"]["stateSet"]["list"] == enum


# Real status objects, from the hooks as Metacontroller would drive them.


def _model_states() -> dict[str, Obj]:
    parent = hr.model("bge-m3")
    a = sync(parent)
    pending = hr.next_parent(parent, a)
    b = sync(pending, [running(hr.find_child(a, "Job"), "42%")])
    publishing = hr.next_parent(parent, b)
    _, ready_answer, _ = _ready_flow(parent)
    ready = hr.next_parent(parent, ready_answer)
    failed = hr.next_parent(hr.model("bad"), sync(hr.model("bad", source={"url": "https://example.com/x.gguf"})))
    cparent = hr.cluster_model("qwen")
    _, cready, _ = _ready_flow(cparent)
    return {"pending": pending, "publishing": publishing, "ready": ready, "failed": failed,
            "cluster_ready": hr.next_parent(cparent, cready)}


def test_model_series_from_real_statuses():
    cfg = ksm_config()
    st = _model_states()
    s = {k: render(cfg, o) for k, o in st.items()}
    P = "ai_models_model"
    # one series per phase, 1 for the current one
    assert {dict(ls)["phase"]: v for n, ls, v in s["publishing"] if n == f"{P}_status_phase"} == {
        "Pending": 0, "WaitForUpload": 0, "Publishing": 1, "Ready": 0, "Failed": 0, "Deleting": 0}
    assert one(s["pending"], f"{P}_status_phase", phase="Pending", name="bge-m3", namespace="ai-demo") == 1
    assert one(s["failed"], f"{P}_status_phase", phase="Failed") == 1
    # progress as a ratio, only while publishing
    assert one(s["publishing"], f"{P}_progress_ratio", name="bge-m3") == 0.42
    assert labelset(s["ready"], f"{P}_progress_ratio") == []
    # Ready condition and its reason; the time as Unix seconds
    assert one(s["ready"], f"{P}_condition", condition="Ready", reason="ArtifactPublished") == 1
    assert one(s["failed"], f"{P}_condition", condition="Ready", reason="UnsupportedSource") == 0
    ltt = next(c for c in st["ready"]["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
    assert one(s["ready"], f"{P}_condition_last_transition_time_seconds", condition="Ready") == \
        datetime.fromisoformat(ltt.replace("Z", "+00:00")).timestamp()
    # size, attempt, info
    assert one(s["ready"], f"{P}_artifact_size_bytes") == st["ready"]["status"]["artifact"]["sizeBytes"]
    assert labelset(s["pending"], f"{P}_artifact_size_bytes") == []
    assert one(s["publishing"], f"{P}_attempt") == 1
    [info] = labelset(s["ready"], f"{P}_resolved_info")
    assert (info["source_type"], info["format"], info["family"]) == ("HuggingFace", "Safetensors", "bert")
    assert info["customresource_kind"] == "Model" and info["namespace"] == "ai-demo"
    # a ClusterModel: its own prefix, no namespace label
    cs = s["cluster_ready"]
    assert one(cs, "ai_models_clustermodel_status_phase", phase="Ready", name="qwen") == 1
    assert all("namespace" not in dict(ls) for _, ls, _ in cs)
    assert {n for n, _, _ in cs} >= {"ai_models_clustermodel_artifact_size_bytes", "ai_models_clustermodel_resolved_info"}


def test_catalog_series_from_real_statuses():
    cfg = ksm_config()
    parent = source()
    a = src_sync(parent, related=[pull_secret()])
    job1 = finished(jobs(a)["ai-catalog-probe-dmz-1"], PROBE_OK)
    ready = hr.next_parent(parent, src_sync(hr.next_parent(parent, a), [job1], [pull_secret()]))
    s = render(cfg, ready)
    P = "ai_models_catalogsource"
    assert one(s, f"{P}_status_phase", phase="Ready", name="dmz") == 1
    [rev] = labelset(s, f"{P}_revision_info")
    assert rev["catalog_revision"] == PROBE_OK["catalogRevision"]
    assert one(s, f"{P}_model_size_bytes", model="qwen3-8b", format="GGUF") == 1234
    assert len(labelset(s, f"{P}_model_size_bytes")) == 2
    assert one(s, f"{P}_last_probe_time_seconds") == datetime.fromisoformat("2026-01-01T00:10:00+00:00").timestamp()
    # A Model imported from the catalog carries the frozen selection.
    m = cat_model({"name": "qwen3-8b"})
    src = source(status=ready_status())
    p1 = hr.next_parent(m, model_sync(m, related=[src]))
    job = import_job_for(p1)
    dest = f"dmcr.test:5000/ai-models/catalog/namespaced/ai-demo/qwen/{m['metadata']['uid']}"
    obs = finished(job, json.loads(hr.success_result(dest, resolved_type="Catalog")))
    imported = hr.next_parent(p1, model_sync(p1, related=[src, obs]))
    [cat] = labelset(render(cfg, imported), "ai_models_model_catalog_info")
    frozen = imported["status"]["source"]["catalog"]
    assert (cat["catalog_source"], cat["catalog_revision"], cat["remote_digest"]) == (
        "dmz", frozen["catalogRevision"], frozen["remoteDigest"])


def test_every_series_the_rules_and_dashboard_read_is_produced():
    """Each ai_models_model/clustermodel/catalogsource name in an expression is one the configuration renders."""
    names = {f"{r.get('metricNamePrefix', 'kube_customresource')}_{m['name']}"
             for r in ksm_config()["spec"]["resources"] for m in r["metrics"]}
    used = set()
    for expr in rule_exprs() + dashboard_exprs():
        used |= set(re.findall(r"\bai_models_(?:model|clustermodel|catalogsource)_[a-z_]+", expr))
    assert used and used <= names, used - names
    hook = {"ai_models_hook_requests_total", "ai_models_hook_latency_seconds_bucket",
            "ai_models_hook_latency_seconds_count"}
    used_hook = {n for e in rule_exprs() + dashboard_exprs() for n in re.findall(r"\bai_models_hook_[a-z_]+", e)}
    assert used_hook <= hook, used_hook - hook


# ---------------------------------------------------------------- rules and promtool


def prometheus_rule() -> Obj:
    [rule] = [d for d in yaml.safe_load_all((MON / "prometheusrule.yaml").read_text()) if d]
    return rule


def rule_exprs() -> list[str]:
    return [r["expr"] for g in prometheus_rule()["spec"]["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    d = json.loads((MON / "dashboard.json").read_text())
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make promtool-bin` (Debian's prometheus package)"
    return path


def test_prometheus_rule_has_the_operator_shape():
    r = prometheus_rule()
    assert (r["apiVersion"], r["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert set(r) == {"apiVersion", "kind", "metadata", "spec"} and set(r["spec"]) == {"groups"}
    assert r["metadata"]["namespace"] == "d8-ai-models"
    alerts = {}
    for g in r["spec"]["groups"]:
        assert set(g) <= {"name", "interval", "rules", "partial_response_strategy", "limit"}
        for rule in g["rules"]:
            assert ("alert" in rule) != ("record" in rule) and isinstance(rule["expr"], str | int)
            assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("warning", "critical")
                assert {"summary", "description", "runbook"} <= set(rule["annotations"])
                alerts[rule["alert"]] = rule
    page = (ROOT / "docs" / "observability.md").read_text()
    for name, rule in alerts.items():
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor == name.lower() and f"### {name}" in page, name


def test_promtool_checks_and_unit_tests_every_rule(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": prometheus_rule()["spec"]["groups"]},
                                                        sort_keys=False))
    shutil.copy(ROOT / "tests" / "monitoring" / "rules-test.yaml", tmp_path / "rules-test.yaml")
    check = subprocess.run([promtool(), "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool(), "test", "rules", "rules-test.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert test.returncode == 0, test.stdout + test.stderr
    # Every alert and recording rule is exercised by the unit tests.
    tests = yaml.safe_load((tmp_path / "rules-test.yaml").read_text())["tests"]
    alerted = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    recorded = {e["expr"] for t in tests for e in t.get("promql_expr_test", [])}
    for g in prometheus_rule()["spec"]["groups"]:
        for rule in g["rules"]:
            assert rule.get("alert") in alerted or rule.get("record") in recorded, rule


def test_promtool_checks_every_dashboard_query(tmp_path):
    """Each panel query, with Grafana's variables put in, as a recording rule: `promtool check rules` parses it."""
    subst = {"$__rate_interval": "5m", "$namespace": ".*", "${datasource}": ""}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for k, v in subst.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard-rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    check = subprocess.run([promtool(), "check", "rules", str(tmp_path / "dashboard-rules.yaml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(rules)} rules found" in check.stdout


def test_dashboard_covers_the_asked_views():
    d = json.loads((MON / "dashboard.json").read_text())
    titles = " | ".join(p["title"] for p in d["panels"]).lower()
    for what in ("by phase", "throughput", "dmcr", "delivery gate", "hook latency"):
        assert what in titles, what
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])


def test_monitoring_objects_validate():
    docs = [d for p in ("kube-state-metrics-config.yaml", "podmonitors.yaml")
            for d in yaml.safe_load_all((MON / p).read_text()) if d]
    for d in docs:
        if d["kind"] == "ConfigMap":
            kubernetes_validate.validate(d, "1.33.0", strict=True)
        else:
            assert (d["apiVersion"], d["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
            assert set(d["spec"]) == {"selector", "podMetricsEndpoints"}
            for ep in d["spec"]["podMetricsEndpoints"]:
                assert set(ep) <= {"port", "path", "scheme", "tlsConfig"}
    hooks_dep = yaml.safe_load((ROOT / "deploy" / "hooks" / "deployment.yaml").read_text())
    ports = {p["name"] for c in hooks_dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    [hooks_pm] = [d for d in docs if d["kind"] == "PodMonitor" and d["metadata"]["name"] == "ai-models-hooks"]
    assert {ep["port"] for ep in hooks_pm["spec"]["podMetricsEndpoints"]} == ports, "every listener is scraped"
    # The node-cache plugin is scraped on the port its DaemonSet declares, in its own namespace.
    ds = yaml.safe_load((ROOT / "deploy" / "node-cache" / "daemonset.yaml").read_text())
    [nc_pm] = [d for d in docs if d["kind"] == "PodMonitor" and d["metadata"]["name"] == "ai-models-node-cache"]
    assert nc_pm["metadata"]["namespace"] == ds["metadata"]["namespace"]
    assert nc_pm["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    [(port,)] = [(ep["port"],) for ep in nc_pm["spec"]["podMetricsEndpoints"]]
    assert port in {p["name"] for c in ds["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}


def test_prometheus_may_reach_the_dmcr_metrics_port():
    """DMCR's own policy opens 5001 to the node only; the monitoring component opens it to Prometheus."""
    pol = yaml.safe_load((MON / "networkpolicy.yaml").read_text())
    kubernetes_validate.validate(pol, "1.33.0", strict=True)
    dep = yaml.safe_load((ROOT / "deploy" / "dmcr" / "deployment.yaml").read_text())
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    [rule] = pol["spec"]["ingress"]
    [port] = rule["ports"]
    declared = {p["name"]: p["containerPort"] for c in dep["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])}
    assert declared[port["port"]] == 5001
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "d8-monitoring"}}}]
    pm = [d for d in yaml.safe_load_all((MON / "podmonitors.yaml").read_text()) if d["metadata"]["name"] == "dmcr"]
    assert pm[0]["spec"]["podMetricsEndpoints"][0]["port"] == port["port"]
    assert "networkpolicy.yaml" in yaml.safe_load((MON / "kustomization.yaml").read_text())["resources"]


# ---------------------------------------------------------------- the hook service's latency histogram


def _count(hook: str, outcome: str) -> float:
    return sum(
        s.value for m in LATENCY.collect() for s in m.samples
        if s.name.endswith("_count") and s.labels == {"hook": hook, "outcome": outcome})


@pytest.fixture
def app_client():
    from lib import registry_token

    cfg = Config(signing_key=b"k" * 32, registry="dmcr.test:5000",
                 token_key_pem=registry_token.generate_signing_key("ec"))
    return cfg, create_app(cfg).test_client()


def test_latency_histogram_moves_per_route_and_outcome(app_client, monkeypatch):
    import base64

    from hooks import app as app_module
    from lib import credentials
    from tests.test_webhook_mutate import review
    from tests.test_workload_hooks import CONTROLLER, related, workload

    cfg, c = app_client
    model = hr.model()
    decorator = {"controller": CONTROLLER, "object": workload(model_names="bge-m3"),
                 "attachments": {"Secret.v1": {}}, "related": related(), "finalizing": False}
    ok_bodies = {
        "/hooks/model/sync": hr.sync_request(model),
        "/hooks/model/finalize": hr.sync_request(model, finalizing=True),
        "/hooks/model/customize": hr.customize_request(model),
        "/hooks/workload/sync": decorator,
        "/hooks/workload/customize": {"controller": CONTROLLER, "parent": workload(model_names="bge-m3")},
        "/webhooks/workload/mutate": review(workload(model_names="bge-m3")),
    }
    for path, body in ok_bodies.items():
        before = _count(path, "ok")
        r = c.post(path, json=body)
        assert r.status_code == 200, (path, r.get_data(as_text=True))
        assert _count(path, "ok") == before + 1, path
        before = _count(path, "invalid")
        assert c.post(path, data="[]").status_code == 400
        assert _count(path, "invalid") == before + 1, path
    # a bug: 500 is "error"
    monkeypatch.setitem(app_module.HOOKS, "/hooks/model/sync",
                        (app_module.HOOKS["/hooks/model/sync"][0], lambda body, cfg: 1 / 0))
    before = _count("/hooks/model/sync", "error")
    assert c.post("/hooks/model/sync", json=ok_bodies["/hooks/model/sync"]).status_code == 500
    assert _count("/hooks/model/sync", "error") == before + 1
    # the registry token: grant and deny
    repo = "ai-models/catalog/namespaced/ai-demo/bge-m3/uid"
    user, pw = credentials.publish_credential(cfg.signing_key, repo)
    auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    for authorization, outcome, code in ((auth, "grant", 200), (None, "deny", 401)):
        before = _count("/registry/token", outcome)
        headers = {"Authorization": authorization} if authorization else {}
        r = c.get("/registry/token", query_string={"service": "dmcr", "scope": f"repository:{repo}:pull"},
                  headers=headers)
        assert r.status_code == code, r.get_data(as_text=True)
        assert _count("/registry/token", outcome) == before + 1
    text = c.get("/metrics").get_data(as_text=True)
    assert 'ai_models_hook_latency_seconds_bucket{hook="/registry/token",le="0.001",outcome="grant"}' in text
