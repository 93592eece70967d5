"""The routing cache (`Gateway._route`): a remembered answer is the one routing works out."""

from __future__ import annotations

from types import SimpleNamespace

from helpers import plain_request
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway import app as app_module
from bastion.gateway.app import Gateway
from bastion.gateway.router import Route, Router
from bastion.http import Request, Response


def make_state():
    specs = [
        ("/*", None, None, True),
        ("/users/{id}", {"GET", "PUT"}, None, True),
        ("/users/{id}/orders/{order}", None, None, True),
        ("/users/me", {"GET"}, None, True),
        ("/admin/*", {"GET", "POST"}, None, False),
        ("/admin", {"GET"}, None, False),
        ("/trace", {"TRACE", "GET"}, None, True),
        ("/api/*", None, "api.example.com", True),
        ("/api/private", {"POST"}, "*.example.com", True),
        ("/session", {"GET"}, None, True),
    ]
    routes = [
        Route(
            name=f"r{i}",
            pattern=pattern,
            methods=frozenset(methods) if methods else None,
            host=host,
            target=SimpleNamespace(methods=frozenset(methods) if methods else None),
            case_sensitive=case,
        )
        for i, (pattern, methods, host, case) in enumerate(specs)
    ]
    return SimpleNamespace(router=Router(routes), routed={})


def request(path: str, host: str) -> Request:
    return plain_request(path, host=host)


def outcome(routed, req: Request):
    if isinstance(routed, Response):
        return ("answer", routed.status, routed.body, tuple(routed.headers))
    return ("route", routed.name, dict(req.path_params))


SEGMENTS = ["users", "me", "42", "orders", "x-1", "admin", "Admin", "ADMIN", "api", "private", "trace"]
SEGMENTS += ["a.json", "index.php", "(S(abc))", "%C3%A0dmin", "se%C3%9Fion", "session", "Jos%C3%A9", "caf%C3%A9"]
paths = st.builds(
    lambda segs, slash: "/" + "/".join(segs) + ("/" if slash and segs else ""),
    st.lists(st.sampled_from(SEGMENTS), max_size=5),
    st.booleans(),
)
hosts = st.sampled_from(["", "api.example.com", "API.example.com.", "x.example.com:8443", "other", "[::1]:80"])
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "PATCH"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(methods, paths, hosts), min_size=1, max_size=12))
def test_cached_routing_is_uncached_routing(requests):
    """Requests routed in sequence through one cache (repeats included, so hits are exercised)
    get what routing each afresh gives: the same route and parameters, or the same refusal."""
    state = make_state()
    for method, path, host in requests + requests:
        fresh = request(path, host)
        expected = outcome(Gateway._route_uncached(fresh, method, state), fresh)
        req = request(path, host)
        assert outcome(Gateway._route(req, method, state), req) == expected, (method, path, host)


def test_a_request_changing_its_parameters_does_not_change_the_next_ones():
    state = make_state()
    for _ in range(3):  # a miss, then hits
        req = request("/users/42", "h")
        assert Gateway._route(req, "GET", state).name == "r1"
        assert req.path_params == {"id": "42"}
        req.path_params["id"] = "43"
        assert ("GET", "/users/42", "h") in state.routed


def test_the_cache_is_bounded_in_entries_and_key_size(monkeypatch):
    monkeypatch.setattr(app_module, "_ROUTED_MAX", 50)
    state = make_state()
    for i in range(120):
        Gateway._route(request(f"/p{i}", "h"), "GET", state)
        assert len(state.routed) <= 50
    long_path = "/" + "a" * app_module._ROUTED_KEY_MAX
    req = request(long_path, "h")
    assert Gateway._route(req, "GET", state).name == "r0"
    assert ("GET", long_path, "h") not in state.routed
    refused = request("/admin", "h")
    assert isinstance(Gateway._route(refused, "DELETE", state), Response)  # 405: not remembered
    assert ("DELETE", "/admin", "h") not in state.routed
