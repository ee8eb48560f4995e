"""Fuzz every operation of the service's OpenAPI document with schemathesis (seeded): whatever
the body, the answer is never a 5xx."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration


def test_openapi_fuzz_no_5xx(ws_copy, monkeypatch):
    schemathesis = pytest.importorskip("schemathesis")
    from starlette.testclient import TestClient

    monkeypatch.setenv("DECISIONING_HOME", str(ws_copy.root))
    monkeypatch.delenv("DECISIONING_SERVING_CONFIG", raising=False)
    from serving.service import asgi_app

    with TestClient(asgi_app(), raise_server_exceptions=False) as client:
        doc = client.get("/docs.json").json()
        schema = schemathesis.openapi.from_dict(doc)
        ops = [op.ok() for op in schema.get_all_operations()]
        ops = [op for op in ops if op.method.upper() == "POST" and op.path != "/status"]
        assert {op.path for op in ops} >= {"/decide", "/decide/batch", "/outcome", "/noop"}
        failures: list[str] = []
        strategy = st.one_of(*[op.as_strategy() for op in ops])

        @settings(max_examples=150, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case):
            kwargs = {"headers": {k: v for k, v in (case.headers or {}).items() if isinstance(v, str)}}
            if case.body is not None and type(case.body).__name__ != "NotSet":
                kwargs["json"] = case.body
            r = client.request(case.method, case.formatted_path, **kwargs)
            if r.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {str(case.body)[:200]} -> {r.status_code}")

        run()
        # malformed JSON and wrong content types are client errors too
        for path in ("/decide", "/decide/batch", "/outcome"):
            r = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
            if r.status_code >= 500:
                failures.append(f"{path} malformed -> {r.status_code}")
    assert not failures, failures[:10]
