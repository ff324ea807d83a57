"""Writes deploy/k8s/monitoring.yaml: the Prometheus Operator's ServiceMonitors for the service and
the Pushgateway, and a PrometheusRule holding deploy/prometheus/rules/routeaq.yml's groups.

    python deploy/k8s/monitoring.py      # after changing a rule; commit both files
"""

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1]
HEAD = """# Prometheus Operator manifests: scrape the forecast service and the Pushgateway, and load
# RouteAQ's alert rules. Written by deploy/k8s/monitoring.py: the PrometheusRule's groups are
# deploy/prometheus/rules/routeaq.yml's, word for word (tests/test_prometheus.py checks it).
#   kubectl apply -n routeaq -f deploy/k8s/monitoring.yaml
# The `release` label is the one your Prometheus selects rules and monitors by (kube-prometheus-stack:
# its release name). The Pushgateway is the prometheus-community chart's, in namespace monitoring.
"""
LABELS = {"app.kubernetes.io/part-of": "routeaq", "release": "kube-prometheus-stack"}


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def manifests() -> str:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "routeaq.yml").read_text())
    documents = [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "routeaq-service", "labels": LABELS},
         "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "routeaq-service"}}, "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "routeaq-pushgateway", "labels": LABELS},
         "spec": {"namespaceSelector": {"matchNames": ["monitoring"]}, "selector": {"matchLabels": {"app.kubernetes.io/name": "prometheus-pushgateway"}},
                  "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s", "honorLabels": True}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "routeaq", "labels": LABELS}, "spec": {"groups": rules["groups"]}},
    ]
    return HEAD + "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=200) for d in documents)


if __name__ == "__main__":
    (DEPLOY / "k8s" / "monitoring.yaml").write_text(manifests())
    print("wrote deploy/k8s/monitoring.yaml")
