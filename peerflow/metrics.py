"""Prometheus export of a run, the same for every runtime (Ray adds its own families).

Values are read from the run's `RunStats` at scrape time, so the hot path pays nothing;
per-role figures move when tasks finish (the sink is where steps are counted locally).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from peerflow.stats import RunStats


class StatsCollector:
    def __init__(
        self,
        stats: RunStats,
        in_flight: Callable[[], int],
        extra: Callable[[], Iterator[Any]] | None = None,
    ):
        self.stats = stats
        self.in_flight = in_flight
        self.extra = extra  # a runtime's own families (Ray: messages, queues, restarts)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        roles = dict(self.stats.roles)
        families = {
            "peerflow_steps": ("Agent steps run", lambda r: r.latency.count),
            "peerflow_step_errors": ("Agent steps that failed", lambda r: r.errors),
            "peerflow_step_retries": ("Service call retries inside steps", lambda r: r.retries),
        }
        for name, (doc, value) in families.items():
            fam = CounterMetricFamily(name, doc, labels=["role"])
            for role, rs in roles.items():
                fam.add_metric([role], value(rs))
            yield fam
        tokens = CounterMetricFamily("peerflow_tokens", "Tokens spent", labels=["role", "kind"])
        latency = GaugeMetricFamily(
            "peerflow_step_latency_seconds", "Step latency quantiles", labels=["role", "quantile"]
        )
        for role, rs in roles.items():
            tokens.add_metric([role, "prompt"], rs.prompt_tokens)
            tokens.add_metric([role, "completion"], rs.completion_tokens)
            for q in (0.5, 0.95, 0.99):
                latency.add_metric([role, str(q)], rs.latency.quantile(q))
        yield tokens
        yield latency
        yield GaugeMetricFamily(
            "peerflow_in_flight_tasks", "Tasks admitted and not finished", value=self.in_flight()
        )
        done = CounterMetricFamily("peerflow_tasks_finished", "Records written", labels=["status"])
        for status, n in dict(self.stats.by_status).items():
            done.add_metric([status], n)
        yield done
        if self.extra is not None:
            yield from self.extra()


def serve_metrics(
    port: int,
    stats: RunStats,
    in_flight: Callable[[], int],
    extra: Callable[[], Iterator[Any]] | None = None,
) -> Any:
    """Start a /metrics HTTP server on `port` (0 = any); returns it (call `.shutdown()`)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, in_flight, extra))  # type: ignore[arg-type]
    server, _ = start_http_server(port, registry=registry)
    return server
