"""BentoML's request timeout (TimeoutMiddleware) as serving.service installs it: a request's timer
is released when the request is over (BentoML's own kept each request's context alive for the
whole timeout, 300 s here), and a request without a response by the timeout still gets its 504."""

from __future__ import annotations

import asyncio
import gc


def _middleware():
    from bentoml._internal.server.http import traffic

    import serving.service  # noqa: F401  (installs it)

    return traffic.TimeoutMiddleware


async def _call(mw) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await mw({"type": "http", "path": "/noop", "method": "POST", "headers": []}, receive, send)
    return sent


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


def _armed_timers(mw) -> int:
    """Timer handles still due to call this middleware's ``_set_timer_out`` (each holds its request's
    context until then)."""
    n = 0
    for o in gc.get_objects():
        if isinstance(o, asyncio.TimerHandle) and not o.cancelled():
            cb = getattr(o, "_callback", None)
            if getattr(cb, "__self__", None) is mw:
                n += 1
    return n


def test_the_service_installs_a_timeout_middleware_that_releases_its_timer():
    cls = _middleware()
    assert getattr(cls, "releases_its_timer", False)
    mw = cls(_app, timeout=300)

    async def many():
        for _ in range(50):
            sent = await _call(mw)
            assert sent[0]["status"] == 200
        return _armed_timers(mw)

    assert asyncio.run(many()) == 0
    # BentoML's own class, for comparison: every request leaves its timer armed for 300 s
    base = cls.__mro__[1]
    assert not getattr(base, "releases_its_timer", False)
    old = base(_app, timeout=300)

    async def many_old():
        for _ in range(50):
            await _call(old)
        return _armed_timers(old)

    assert asyncio.run(many_old()) == 50


def test_a_request_without_a_response_by_the_timeout_still_gets_504():
    mw = _middleware()(None, timeout=0.05)

    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    mw.app = slow
    sent = asyncio.run(_call(mw))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 504
    assert b"0.05 seconds" in sent[1]["body"]
