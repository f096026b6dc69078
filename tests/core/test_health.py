"""GET /healthz: open to anyone, names each dependency's state and nothing about where it runs."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_healthz_reports_every_dependency_without_a_key(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "database": "ok", "cache": "ok", "broker": "in_process",
        "fallbacks": {name: {"failures": 0, "fallbacks": 0}
                      for name in ("database", "rate_limit_cache", "fold_publish")},
    }  # fmt: skip
