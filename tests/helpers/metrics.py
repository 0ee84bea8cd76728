"""``/metrics`` as a scraper reads it: fetched over HTTP and parsed with prometheus_client's text parser.

The metrics are the process's, and several tests' servers may share a process, so checks compare a value
before and after what the test did, never an absolute one.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    """A sample's value: the sum over the series that carry ``labels`` (0 when there is none yet)."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in found.items() if n == name and wanted <= series)


async def scrape_metrics(http: Any, headers: dict[str, str]) -> Samples:
    """``GET /metrics`` with ``headers`` (a bearer token), parsed."""
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse_samples(response.text)
