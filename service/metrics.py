"""The service's Prometheus metrics: jobs by state, segments labeled, VLM request latency and errors."""

from __future__ import annotations

from service.jobs import JobStore


class Metrics:
    def __init__(self, store: JobStore):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.store = store
        self.jobs = Gauge("densedpo_jobs", "Label jobs by state", ["state"], registry=self.registry)
        self.segments = Counter("densedpo_segments_labeled", "Segments labeled", registry=self.registry)
        self.latency = Histogram(
            "densedpo_vlm_request_seconds",
            "VLM request latency",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.errors = Counter(
            "densedpo_vlm_request_errors", "VLM requests that failed", ["status"], registry=self.registry
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        for state, n in self.store.count_by_state().items():
            self.jobs.labels(state=state).set(n)
        return generate_latest(self.registry)
