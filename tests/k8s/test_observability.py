"""The dev overlay's metrics stack (k8s/components/metrics): Prometheus discovers and scrapes every
service's admin port, Grafana's datasources point at the rendered Prometheus and Jaeger, the
dashboard charts only metrics the services expose, the NetworkPolicies let the scrapes through,
and none of it reaches the production overlays.

The metric names below are the services' contract with the dashboard: a metric renamed in the
code (or in the dashboard) fails here until both sides agree again.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import REPO, Manifests, all_services, docs, render_kustomization

# The metrics the shop services expose on their admin port's /metrics (prefix shop_; the
# OpenMetrics encoder adds _total to counters; histograms expose _bucket, _sum and _count).
METRICS: dict[str, str] = {
    "shop_grpc_server_handled_total": "counter",
    "shop_grpc_server_handling_seconds": "histogram",
    "shop_grpc_server_in_flight": "gauge",
    "shop_grpc_client_handled_total": "counter",
    "shop_grpc_client_handling_seconds": "histogram",
    "shop_grpc_server_rejected_total": "counter",
    "shop_grpc_client_rejected_total": "counter",
    "shop_grpc_client_retries_total": "counter",
    "shop_client_breaker_state": "gauge",
    "shop_outbox_unpublished": "gauge",
    "shop_outbox_parked": "gauge",
    "shop_outbox_oldest_unpublished_age_seconds": "gauge",
    "shop_saga_runs": "gauge",
    "shop_saga_steps_total": "counter",
    "shop_saga_step_duration_seconds": "histogram",
    "shop_events_handled_total": "counter",
    "shop_events_redeliveries_total": "counter",
    "shop_events_dead_lettered_total": "counter",
    "shop_events_consumer_pending": "gauge",
}
# Series Prometheus itself writes for every target (the $service variable reads `up`).
PROMETHEUS_SERIES = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

DASHBOARD = REPO / "k8s" / "components" / "metrics" / "dashboards" / "shop-mesh.json"
ROWS = ["RPC servers", "RPC clients & resilience", "Outbox & events", "Saga"]
NAMESPACE = "shop"
ADMIN_PORT = 9090
SCRAPE_JOB = "shop"
SERVICES = all_services()
DEV_ONLY_APPS = ("prometheus", "grafana")


# --- PromQL ------------------------------------------------------------------------------------

# Functions and aggregation operators of PromQL (Prometheus 3), and the keywords that look like
# identifiers. Anything else an expression names is a metric.
PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
    "holt_winters", "double_exponential_smoothing", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar",
    "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt",
    "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
    "timestamp", "vector", "year",
    # aggregation operators
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "atan2", "offset", "start", "end", "inf", "nan",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects. Raises ValueError on an unknown function.

    Label values, label names (in selectors and by/without/on clauses), ranges, Grafana
    variables, numbers and durations are not metric names.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers (strings already blanked)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    text = _GROUPING.sub(r"\1", text)
    names = set()
    for match in _IDENT.finditer(text):
        word, call = match.group(1), match.group(2)
        if word in PROMQL_KEYWORDS:
            continue
        if call:
            if word not in PROMQL_FUNCTIONS:
                raise ValueError(f"unknown PromQL function {word}() in {expr!r}")
        elif word not in PROMQL_FUNCTIONS:
            names.add(word)
    return names


def series_names(metrics: dict[str, str]) -> set[str]:
    """The series names the metrics expose: histograms only as _bucket, _sum and _count."""
    names = set(PROMETHEUS_SERIES)
    for name, kind in metrics.items():
        if kind == "histogram":
            names |= {name + suffix for suffix in HISTOGRAM_SUFFIXES}
        else:
            names.add(name)
    return names


def metric_of(series: str, metrics: dict[str, str]) -> str | None:
    """The listed metric a series name belongs to (a histogram's _bucket is its histogram)."""
    if series in metrics:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and metrics.get(base) == "histogram":
            return base
    return None


# --- the dashboard -----------------------------------------------------------------------------


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows and the panels of collapsed rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def query_panels(dashboard: dict) -> list[dict]:
    return [p for p in all_panels(dashboard) if p.get("type") != "row"]


def variable_exprs(dashboard: dict) -> list[str]:
    """The PromQL inside the query variables (label_values(<selector>, <label>))."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        out.append(match.group(1) if match else query)
    return out


def dashboard_problems(dashboard: dict, metrics: dict[str, str] = METRICS) -> list[str]:
    """Everything wrong with a dashboard; empty when Grafana can load it and every query names
    only series the services (or Prometheus) write."""
    problems = []
    panels = all_panels(dashboard)
    ids = [p.get("id") for p in panels]
    duplicates = sorted({i for i in ids if ids.count(i) > 1 and i is not None})
    if duplicates:
        problems.append(f"duplicate panel ids {duplicates}")
    if None in ids:
        problems.append("a panel without an id")
    if not query_panels(dashboard):
        problems.append("no panels")
    known = series_names(metrics)
    exprs = list(variable_exprs(dashboard))
    for panel in query_panels(dashboard):
        title = panel.get("title", f"panel {panel.get('id')}")
        if not panel.get("datasource"):
            problems.append(f"{title}: no datasource")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no targets")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                problems.append(f"{title}: target {target.get('refId')} has no expr")
            exprs.append(expr)
    for expr in exprs:
        try:
            names = promql_metric_names(expr)
        except ValueError as error:
            problems.append(str(error))
            continue
        for name in sorted(names - known):
            problems.append(f"unknown metric {name} in {expr!r}")
    return problems


def metrics_charted(dashboard: dict, metrics: dict[str, str] = METRICS) -> set[str]:
    names = set()
    for panel in query_panels(dashboard):
        for target in panel.get("targets", []):
            names |= {metric_of(n, metrics) for n in promql_metric_names(target.get("expr", ""))}
    return names - {None}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def dev(rendered) -> Manifests:
    return rendered["dev"]


def test_dashboard_loads_and_charts_only_listed_metrics(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard_problems(dashboard) == []


def test_every_listed_metric_is_charted(dashboard):
    missing = sorted(set(METRICS) - metrics_charted(dashboard))
    assert not missing, f"metrics no panel shows: {missing}"


def test_dashboard_rows(dashboard):
    """Four rows, in this order, each with panels under it."""
    top = dashboard["panels"]
    rows = [p["title"] for p in top if p["type"] == "row"]
    assert rows == ROWS
    # Panels after each row (expanded rows) or inside it (collapsed rows).
    current, under = None, {}
    for panel in top:
        if panel["type"] == "row":
            current = panel["title"]
            under[current] = list(panel.get("panels", []))
        else:
            assert current, f"{panel['title']}: above the first row"
            under[current].append(panel)
    assert all(under[r] for r in ROWS), {r: len(under[r]) for r in ROWS}


def test_dashboard_variables(dashboard):
    """A datasource variable every panel uses, and $service over the scrape's service label."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    service = variables["service"]
    assert service["type"] == "query" and service["datasource"]["uid"] == "${datasource}"
    assert variable_exprs({"templating": {"list": [service]}}) == [f'up{{job="{SCRAPE_JOB}"}}']
    query = service["query"]["query"] if isinstance(service["query"], dict) else service["query"]
    assert query.rstrip(")").rsplit(",", 1)[1].strip() == "service"
    assert service["multi"] and service["includeAll"]
    for panel in query_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
            assert 'service=~"$service"' in target["expr"], f"{panel['title']}: not filtered by $service"


def test_error_ratios_count_every_code_but_ok(dashboard):
    """The services label a call's code with tonic's Code name (`Ok`, `NotFound`, ...)."""
    ratios = [t["expr"] for p in query_panels(dashboard) if "error ratio" in p["title"].lower()
              for t in p["targets"]]
    assert len(ratios) == 2
    for expr in ratios:
        assert 'grpc_code!="Ok"' in expr and " / " in expr


# --- the checker itself ------------------------------------------------------------------------


def test_promql_metric_names():
    expr = (
        'histogram_quantile(0.99, sum by (le, grpc_method) (rate(shop_grpc_server_handling_seconds_bucket'
        '{service=~"$service", grpc_code!="shop_not_a_metric"}[$__rate_interval])))'
        " / ignoring(le) group_left sum without (pod) (up offset 5m) > bool 0.5"
    )
    assert promql_metric_names(expr) == {"shop_grpc_server_handling_seconds_bucket", "up"}
    assert promql_metric_names('{__name__="x"}') == set()
    assert promql_metric_names("sum(rate(a[5m])) by (b) / on(c) d:recorded") == {"a", "d:recorded"}
    with pytest.raises(ValueError, match="rat"):
        promql_metric_names("rat(shop_saga_steps_total[5m])")


def _with_expr(dashboard: dict, expr: str) -> dict:
    broken = copy.deepcopy(dashboard)
    query_panels(broken)[0]["targets"][0]["expr"] = expr
    return broken


@pytest.mark.parametrize(
    "expr, problem",
    [
        # A metric renamed on one side only.
        ('sum(rate(shop_grpc_server_calls_total{service=~"$service"}[5m]))', "unknown metric shop_grpc_server_calls_total"),
        # A counter without the _total the encoder adds.
        ('rate(shop_events_handled{service=~"$service"}[5m])', "unknown metric shop_events_handled"),
        # A histogram is only its _bucket, _sum and _count series; a gauge has none of them.
        ('shop_saga_step_duration_seconds{service=~"$service"}', "unknown metric shop_saga_step_duration_seconds"),
        ('shop_outbox_parked_bucket{service=~"$service"}', "unknown metric shop_outbox_parked_bucket"),
        ('rat(shop_saga_steps_total{service=~"$service"}[5m])', "unknown PromQL function rat()"),
        ("", "has no expr"),
    ],
)
def test_the_checker_rejects_a_dashboard_with_an_unknown_metric(dashboard, expr, problem):
    problems = dashboard_problems(_with_expr(dashboard, expr))
    assert any(problem in p for p in problems), problems


def test_the_checker_rejects_a_renamed_metric_in_the_list(dashboard):
    """The other direction: the code renames a metric, the list follows, the dashboard fails."""
    renamed = {("shop_outbox_pending" if k == "shop_outbox_unpublished" else k): v for k, v in METRICS.items()}
    assert any("unknown metric shop_outbox_unpublished" in p for p in dashboard_problems(dashboard, renamed))


def test_the_checker_rejects_broken_panels(dashboard):
    broken = copy.deepcopy(dashboard)
    first, second = query_panels(broken)[:2]
    second["id"] = first["id"]
    del first["datasource"]
    second["targets"] = []
    problems = dashboard_problems(broken)
    assert f"duplicate panel ids [{first['id']}]" in problems
    assert f"{first['title']}: no datasource" in problems
    assert f"{second['title']}: no targets" in problems
    assert "unknown metric shop_nope in 'shop_nope'" in dashboard_problems(
        {"panels": [{"id": 1, "type": "stat", "datasource": {"uid": "x"}, "targets": [{"expr": "shop_nope"}]}]}
    )


# --- rendered objects --------------------------------------------------------------------------


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def mounted_configmap(m: Manifests, deployment: dict, mount_path: str) -> dict:
    """The ConfigMap a Deployment's container mounts at ``mount_path`` (generated names)."""
    spec = pod_spec(deployment)
    mounts = {v["mountPath"]: v["name"] for v in spec["containers"][0].get("volumeMounts", [])}
    assert mount_path in mounts, f"{deployment['metadata']['name']}: nothing mounted at {mount_path}"
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[mount_path])
    assert "configMap" in volume, f"{mount_path} is not a ConfigMap"
    config = m.get("ConfigMap", volume["configMap"]["name"])
    assert config, f"no ConfigMap {volume['configMap']['name']}"
    return config


def container_ports(deployment: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in pod_spec(deployment)["containers"] for p in c.get("ports", [])}


def service_url_target(m: Manifests, url: str) -> tuple[dict, int]:
    """The Deployment and container port that ``http://<service>:<port>`` reaches."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    assert parts.scheme == "http" and host and port, url
    svc = m.get("Service", host.split(".")[0])
    assert svc, f"{url}: no Service {host} in the dev overlay"
    if "." in host:
        assert host.split(".")[1] == NAMESPACE, url
    svc_port = next((p for p in svc["spec"]["ports"] if p["port"] == port), None)
    assert svc_port, f"{url}: Service {host} has no port {port}"
    selector = svc["spec"]["selector"]
    backends = [d for d in m.of("Deployment")
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert len(backends) == 1, f"{url}: Service {host} selects {len(backends)} Deployments"
    target = svc_port.get("targetPort", port)
    ports = container_ports(backends[0])
    number = ports.get(target) if isinstance(target, str) else target
    assert number in ports.values(), f"{url}: target port {target} is no container port"
    return backends[0], number


def test_dev_only_objects_stay_out_of_production():
    for overlay in ("base", "overlays/prod", "overlays/prod-linkerd"):
        for o in docs(render_kustomization(overlay)):
            meta = o["metadata"]
            app = (meta.get("labels") or {}).get("app.kubernetes.io/name", "")
            assert not any(a in meta["name"] or a in app for a in DEV_ONLY_APPS), (
                f"{overlay}: {o['kind']} {meta['name']} is dev-only"
            )
            assert o["kind"] not in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"), (
                f"{overlay}: {o['kind']} {meta['name']}: no workload of prod needs the Kubernetes API"
            )


@pytest.mark.parametrize("app", DEV_ONLY_APPS)
def test_dev_only_workloads_are_hardened(dev, app):
    deployment = dev.get("Deployment", app)
    assert deployment, f"dev: no Deployment {app}"
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] >= 10000
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    # Only Prometheus reads the API (discovery); Grafana gets no token.
    assert spec["automountServiceAccountToken"] is (app == "prometheus")
    (c,) = spec["containers"]
    name, _, tag = c["image"].rpartition(":")
    assert name and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{app}: image {c['image']} not pinned"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "readinessProbe" in c and "livenessProbe" in c
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    assert dev.selecting("NetworkPolicy", app), f"dev: no NetworkPolicy for {app}"


# --- Prometheus --------------------------------------------------------------------------------


def prometheus_config(m: Manifests) -> dict:
    deployment = m.get("Deployment", "prometheus")
    args = pod_spec(deployment)["containers"][0]["args"]
    path = next(a.split("=", 1)[1] for a in args if a.startswith("--config.file="))
    config = mounted_configmap(m, deployment, posixpath.dirname(path))
    text = config["data"][posixpath.basename(path)]
    return yaml.safe_load(text)


def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (keep, drop, replace) of one target; None when dropped."""
    labels = dict(labels)
    for rc in configs:
        action = rc.get("action", "replace")
        value = rc.get("separator", ";").join(labels.get(s, "") for s in rc.get("source_labels", []))
        regex = re.compile(rc.get("regex", "(.*)"))
        match = regex.fullmatch(value)
        if action == "keep":
            if not match:
                return None
        elif action == "drop":
            if match:
                return None
        elif action == "replace":
            if match:
                replacement = re.sub(r"\$\{?(\d+)\}?", r"\\\1", rc.get("replacement", "$1"))
                result = match.expand(replacement)
                if result:
                    labels[rc["target_label"]] = result
                else:
                    labels.pop(rc["target_label"], None)
        else:
            raise AssertionError(f"relabel action {action} not modelled here")
    return {k: v for k, v in labels.items() if not k.startswith("__meta_")}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered_targets(job: dict, objects: list[dict]) -> list[dict[str, str]]:
    """The targets a kubernetes_sd_configs role pod job gets from the rendered workloads' pods:
    one per container port, with the meta labels Prometheus gives them, relabelled."""
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    namespaces = sd.get("namespaces", {}).get("names")
    targets = []
    for o in objects:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        if namespaces is not None and o["metadata"].get("namespace") not in namespaces:
            continue
        template = o["spec"]["template"]
        for c in template["spec"]["containers"]:
            for port in c.get("ports", []):
                meta = {
                    "__address__": f"10.0.0.1:{port['containerPort']}",
                    "__scheme__": job.get("scheme", "http"),
                    "__metrics_path__": job.get("metrics_path", "/metrics"),
                    "job": job["job_name"],
                    "__meta_kubernetes_namespace": o["metadata"].get("namespace", ""),
                    "__meta_kubernetes_pod_name": f"{o['metadata']['name']}-0",
                    "__meta_kubernetes_pod_phase": "Running",
                    "__meta_kubernetes_pod_container_name": c["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                }
                for k, v in (template["metadata"].get("labels") or {}).items():
                    meta[f"__meta_kubernetes_pod_label_{_sanitize(k)}"] = v
                for k, v in (template["metadata"].get("annotations") or {}).items():
                    meta[f"__meta_kubernetes_pod_annotation_{_sanitize(k)}"] = v
                target = relabel(meta, job.get("relabel_configs", []))
                if target:
                    target["__workload__"] = o["metadata"]["name"]
                    targets.append(target)
    return targets


def test_scrape_config_parses_and_discovers_namespace_shop(dev):
    config = prometheus_config(dev)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    job = jobs[SCRAPE_JOB]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == [NAMESPACE]
    assert dev.get("Deployment", "prometheus")["metadata"]["namespace"] == NAMESPACE


def test_every_service_is_scraped_once_on_its_admin_port(dev):
    job = {j["job_name"]: j for j in prometheus_config(dev)["scrape_configs"]}[SCRAPE_JOB]
    targets = discovered_targets(job, dev.objects)
    by_workload = {}
    for t in targets:
        by_workload.setdefault(t["__workload__"], []).append(t)
    assert sorted(by_workload) == sorted(SERVICES), "scraped workloads are not exactly the services"
    for service in SERVICES:
        (target,) = by_workload[service]
        deployment = dev.get("Deployment", service)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert container_ports(deployment)["admin"] == ADMIN_PORT
        assert annotations["prometheus.io/port"] == str(ADMIN_PORT)
        assert target["__address__"].endswith(f":{ADMIN_PORT}")
        assert target["__metrics_path__"] == annotations["prometheus.io/path"] == "/metrics"
        assert target["__scheme__"] == "http"
        # The dashboards' $service and the series' identity.
        assert target["service"] == service and target["namespace"] == NAMESPACE and target["pod"]
        assert target["job"] == SCRAPE_JOB


def test_the_target_model_drops_what_does_not_opt_in(dev):
    """Control for the test above: without the annotation a service is not scraped."""
    job = {j["job_name"]: j for j in prometheus_config(dev)["scrape_configs"]}[SCRAPE_JOB]
    objects = copy.deepcopy(dev.objects)
    orders = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "orders")
    del orders["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"]
    assert "orders" not in {t["__workload__"] for t in discovered_targets(job, objects)}


def test_prometheus_may_list_and_watch_pods_in_its_namespace(dev):
    deployment = dev.get("Deployment", "prometheus")
    account = pod_spec(deployment)["serviceAccountName"]
    assert dev.get("ServiceAccount", account)
    bindings = [b for b in dev.of("RoleBinding")
                if {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in b["subjects"]]
    assert bindings, f"no RoleBinding for ServiceAccount {account}"
    verbs = set()
    for binding in bindings:
        assert binding["metadata"]["namespace"] == NAMESPACE
        assert binding["roleRef"]["kind"] == "Role", "namespaced: a Role, not a ClusterRole"
        role = dev.get("Role", binding["roleRef"]["name"])
        assert role and role["metadata"]["namespace"] == NAMESPACE
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, "read only"
            if "" in rule["apiGroups"] and "pods" in rule["resources"]:
                verbs |= set(rule["verbs"])
    assert {"list", "watch"} <= verbs
    assert not dev.of("ClusterRole") and not dev.of("ClusterRoleBinding")


# --- Grafana -----------------------------------------------------------------------------------


def grafana_provisioning(m: Manifests, kind: str) -> dict:
    deployment = m.get("Deployment", "grafana")
    env = {e["name"]: e.get("value") for e in pod_spec(deployment)["containers"][0].get("env", [])}
    root = env.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
    config = mounted_configmap(m, deployment, f"{root}/{kind}")
    files = [yaml.safe_load(v) for k, v in config["data"].items() if k.endswith((".yaml", ".yml"))]
    assert len(files) == 1, f"{kind}: {len(files)} provisioning files"
    return files[0]


def test_grafana_datasources_point_at_the_rendered_services(dev, dashboard):
    sources = {d["type"]: d for d in grafana_provisioning(dev, "datasources")["datasources"]}
    assert set(sources) == {"prometheus", "jaeger"}
    prometheus, port = service_url_target(dev, sources["prometheus"]["url"])
    assert prometheus["metadata"]["name"] == "prometheus"
    assert port == container_ports(prometheus)["web"]
    jaeger, port = service_url_target(dev, sources["jaeger"]["url"])
    assert jaeger["metadata"]["name"] == "jaeger"
    # Grafana's Jaeger datasource talks to the query API, which is served on the UI port.
    assert port == container_ports(jaeger)["ui"]
    assert sources["prometheus"].get("isDefault") is True
    # The dashboard's datasource variable defaults to the provisioned Prometheus.
    ds = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert ds["current"]["value"] == sources["prometheus"]["uid"]


def test_grafana_loads_the_dashboard_file(dev):
    providers = grafana_provisioning(dev, "dashboards")["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    config = mounted_configmap(dev, dev.get("Deployment", "grafana"), provider["options"]["path"])
    assert json.loads(config["data"][DASHBOARD.name]) == json.loads(DASHBOARD.read_text())


# --- NetworkPolicies ---------------------------------------------------------------------------


def _selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _pod(m: Manifests, name: str) -> dict:
    workload = m.get("Deployment", name) or m.get("StatefulSet", name)
    assert workload, f"no workload {name}"
    template = workload["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    return {"labels": template["metadata"]["labels"], "namespace": workload["metadata"]["namespace"], "ports": ports}


# Peers outside the rendered overlay.
KUBE_DNS = {"labels": {"k8s-app": "kube-dns"}, "namespace": "kube-system", "ports": {"dns": 53}}
# The API server: on the nodes' network, no pod labels, no namespace.
API_SERVER = {"labels": None, "namespace": None, "ports": {}}


def _peer_matches(peer: dict, pod: dict, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        # Only a catch-all block is known to contain an address we do not know.
        return peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0") and not peer["ipBlock"].get("except")
    if pod["labels"] is None:
        return False  # host network: no pod or namespace selector matches
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": pod["namespace"]}
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif pod["namespace"] != policy_namespace:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], pod["labels"])


def _port_matches(ports: list[dict] | None, port: int, protocol: str, pod: dict) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        number = pod["ports"].get(p["port"]) if isinstance(p["port"], str) else p["port"]
        if number is not None and number <= port <= p.get("endPort", number):
            return True
    return False


def allowed(m: Manifests, src: dict, dst: dict, port: int, protocol: str = "TCP") -> bool:
    """Whether the NetworkPolicies of ``m`` let ``src`` open ``port`` on ``dst`` (both ways:
    egress from src, ingress to dst). Pods no policy isolates in a direction are open in it."""
    policies = m.of("NetworkPolicy")

    def direction(pod: dict, kind: str, peer: dict, rules_key: str, peers_key: str, target: dict) -> bool:
        if pod["labels"] is None:
            return True  # not ours to police
        isolating = [
            p for p in policies
            if p["metadata"]["namespace"] == pod["namespace"]
            and _selects(p["spec"]["podSelector"], pod["labels"])
            and kind in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not isolating:
            return True
        for policy in isolating:
            for rule in policy["spec"].get(rules_key) or []:
                peers = rule.get(peers_key)
                if (not peers or any(_peer_matches(x, peer, policy["metadata"]["namespace"]) for x in peers)) \
                        and _port_matches(rule.get("ports"), port, protocol, target):
                    return True
        return False

    if src["namespace"] != NAMESPACE and dst["namespace"] != NAMESPACE:
        raise AssertionError("neither end is in the overlay")
    egress = src["namespace"] != NAMESPACE or direction(src, "Egress", dst, "egress", "to", dst)
    ingress = dst["namespace"] != NAMESPACE or direction(dst, "Ingress", src, "ingress", "from", dst)
    return egress and ingress


@pytest.mark.parametrize("service", SERVICES)
def test_prometheus_may_scrape_every_admin_port(dev, service):
    target = _pod(dev, service)
    assert allowed(dev, _pod(dev, "prometheus"), target, target["ports"]["admin"])
    # ...and only the admin port.
    grpc = target["ports"].get("grpc") or target["ports"]["http"]
    assert not allowed(dev, _pod(dev, "prometheus"), target, grpc)


def test_prometheus_reaches_dns_and_the_api_server_and_nothing_else(dev):
    prometheus = _pod(dev, "prometheus")
    for protocol in ("UDP", "TCP"):
        assert allowed(dev, prometheus, KUBE_DNS, 53, protocol)
    assert allowed(dev, prometheus, API_SERVER, 6443) and allowed(dev, prometheus, API_SERVER, 443)
    assert not allowed(dev, prometheus, _pod(dev, "postgres"), 5432)
    assert not allowed(dev, prometheus, _pod(dev, "nats"), 4222)


def test_grafana_reaches_its_datasources_and_only_it_queries_prometheus(dev):
    grafana, prometheus, jaeger = _pod(dev, "grafana"), _pod(dev, "prometheus"), _pod(dev, "jaeger")
    assert allowed(dev, grafana, prometheus, prometheus["ports"]["web"])
    assert allowed(dev, grafana, jaeger, jaeger["ports"]["ui"])
    assert allowed(dev, grafana, KUBE_DNS, 53, "UDP")
    assert not allowed(dev, _pod(dev, "gateway"), prometheus, prometheus["ports"]["web"])
    assert not allowed(dev, grafana, _pod(dev, "orders"), ADMIN_PORT)


def test_the_policy_model_denies_without_the_dev_scrape_policy(dev):
    """Control: the admin ports are open to this Prometheus because of the component's policy,
    not because the model lets everything through. The base admits only namespace monitoring."""
    without = Manifests([o for o in dev.objects if not (o["kind"] == "NetworkPolicy"
                                                          and o["metadata"]["name"] == "prometheus-scrape")])
    orders = _pod(without, "orders")
    assert not allowed(without, _pod(without, "prometheus"), orders, ADMIN_PORT)
    platform = {"labels": {"app.kubernetes.io/name": "prometheus"}, "namespace": "monitoring", "ports": {}}
    assert allowed(without, platform, orders, ADMIN_PORT)
    assert not allowed(without, _pod(without, "gateway"), orders, ADMIN_PORT)
