"""cors-audit without sockets: the look-alike generator (a property over any host and allow list),
the verdict rules over simulated servers, and the fixes (valid bastion `cors` configs)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bastion.cors_audit.inputs import InputError, collect, read_url_file
from bastion.cors_audit.origins import ATTACKER, AllowList, ProbeOrigin, probe_origins
from bastion.cors_audit.verdicts import (
    CHECKS,
    CUSTOM_HEADER,
    HEADERS,
    METHODS,
    Exchange,
    Probes,
    choose_reference,
    fix,
    preflight_allows,
    trusted_by,
    verdicts,
)
from bastion.policies.cors import CorsConfig, canonical_origin

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
dns = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
host = st.one_of(
    dns, ipv4, st.sampled_from(["localhost", "app.example.com", "example.com", "App.Example.COM", "[::1]"])
)
port = st.one_of(st.none(), st.integers(1, 65535))


def origin_of(scheme: str, h: str, p: int | None) -> str:
    return f"{scheme}://{h}" + (f":{p}" if p else "")


exact = st.builds(origin_of, st.sampled_from(["http", "https"]), host, port)
pattern = st.builds(lambda labels: "https://*." + ".".join(labels), st.lists(label, min_size=2, max_size=3))
allowed_lists = st.lists(st.one_of(exact, pattern, st.just("null")), max_size=3)
endpoint = st.builds(lambda s, h, p: origin_of(s, h, p) + "/api/x", st.sampled_from(["http", "https"]), host, port)


def _host(origin: str) -> str:
    return urlsplit(origin).hostname or ""


def check_lookalike(p: ProbeOrigin) -> None:
    """The security-relevant way each kind differs from what it imitates."""
    h = _host(p.origin)
    if p.kind == "downgrade":
        assert p.imitates.startswith("https://") and p.origin == "http://" + p.imitates[len("https://") :]
        return
    imitated = p.imitates
    assert h != imitated and not h.endswith("." + imitated) or p.kind == "sibling"
    if p.kind == "suffix":  # passes "starts with", but the attacker owns the registrable domain
        assert h.startswith(imitated + ".") and h.endswith("." + ATTACKER)
    elif p.kind == "prefix":  # passes "ends with", but is not a subdomain
        assert h.endswith(imitated) and h != imitated and not h.endswith("." + imitated)
    elif p.kind == "sibling":  # another label under the same parent (or under a two-label host)
        assert h != imitated
        parent = imitated.split(".", 1)[1] if imitated.count(".") >= 2 else imitated
        assert h.endswith("." + parent) and h.split(".")[0] == "evil-cors-audit"
    elif p.kind == "dot":  # one '.' turned into a letter: matches a regex with an unescaped dot
        assert len(h) == len(imitated)
        diff = [i for i, (a, b) in enumerate(zip(h, imitated, strict=False)) if a != b]
        assert len(diff) == 1 and imitated[diff[0]] == "." and h[diff[0]] == "x"
    else:
        raise AssertionError(p.kind)


def lookalike_property(url: str, origins: list[str]) -> None:
    allowed = AllowList(origins)
    probes = probe_origins(url, allowed)
    canon_allowed = {canonical_origin(o) for o in origins}
    assert len({p.origin for p in probes}) == len(probes)
    for p in probes:
        if p.kind == "allowed":
            assert allowed.allows(p.origin)
            continue
        assert not allowed.allows(p.origin), p
        assert canonical_origin(p.origin) not in canon_allowed, p
        if p.lookalike:
            check_lookalike(p)
    kinds = {p.kind for p in probes}  # the kinds the issue asks for are there whenever they can exist
    assert "arbitrary" in kinds
    assert ("null" in kinds) != ("null" in origins)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(endpoint, allowed_lists)
def test_lookalikes_are_never_allowed_and_differ_where_it_matters(url, origins):
    lookalike_property(url, origins)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(endpoint, allowed_lists)
def test_lookalikes_property_large_budget(url, origins):
    lookalike_property(url, origins)


def test_regression_an_origin_listed_twice_is_probed_once():
    probes = probe_origins("http://localhost/api/x", AllowList(["https://*.0000000.0000000"] * 2))
    assert len({p.origin for p in probes}) == len(probes)


def test_lookalikes_of_a_named_host():
    kinds = {
        (p.kind, p.origin)
        for p in probe_origins("https://api.shop.example.com/v1/x", AllowList(["https://app.shop.example.com"]))
    }
    assert ("suffix", "https://app.shop.example.com.evil-cors-audit.example") in kinds
    assert ("prefix", "https://evil-cors-auditapp.shop.example.com") in kinds
    assert ("sibling", "https://evil-cors-audit.shop.example.com") in kinds
    assert ("dot", "https://appxshop.example.com") in kinds
    assert ("downgrade", "http://app.shop.example.com") in kinds
    assert ("suffix", "https://api.shop.example.com.evil-cors-audit.example") in kinds
    assert ("allowed", "https://app.shop.example.com") in kinds


def test_a_pattern_drops_the_siblings_it_allows():
    probes = probe_origins("https://api.example.com/x", AllowList(["https://*.example.com"]))
    assert not any(p.kind == "sibling" for p in probes)
    assert ("allowed", "https://cors-audit.example.com") in {(p.kind, p.origin) for p in probes}


# ---- verdicts over simulated servers ----------------------------------------------------------

URL = "https://api.example.com/x"


def simulate(
    url: str,
    allowed: AllowList,
    trusts,
    *,
    creds: bool = False,
    vary: bool = True,
    methods: str = "GET, POST",
    headers: str = "authorization, content-type",
    max_age: int = 600,
) -> Probes:
    """A server that trusts `trusts(origin)`, answering the way Starlette or bastion would."""
    origins = probe_origins(url, allowed)

    def answer(o: ProbeOrigin, method: str, sent: dict[str, str]) -> Exchange:
        h: dict[str, str] = {"vary": "Origin"} if vary else {}
        ok = trusts(o.origin)
        status = 200
        if ok:
            h["access-control-allow-origin"] = o.origin
            if creds:
                h["access-control-allow-credentials"] = "true"
        if method == "OPTIONS":
            h.update(
                {
                    "access-control-allow-methods": methods,
                    "access-control-allow-headers": headers,
                    "access-control-max-age": str(max_age),
                }
            )
            status = 200 if ok else 403
        return Exchange(o, method, url, {"Origin": o.origin, **sent}, status, h)

    probes = Probes(
        url,
        [answer(o, "GET", {}) for o in origins],
        [answer(o, "OPTIONS", {"Access-Control-Request-Method": "GET"}) for o in origins],
    )
    ref = choose_reference(origins, trusted_by(probes))
    if ref is not None:
        probes.reference = ref
        probes.methods = {m: answer(ref, "OPTIONS", {"Access-Control-Request-Method": m}) for m in METHODS}
        probes.headers = {
            n: answer(ref, "OPTIONS", {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": n})
            for n, _ in HEADERS
        }
    return probes


@settings(max_examples=60, deadline=None)
@given(endpoint, st.lists(exact, min_size=1, max_size=2), st.booleans())
def test_a_server_that_trusts_exactly_the_list_has_no_findings(url, origins, creds):
    allowed = AllowList(origins)
    assert verdicts(simulate(url, allowed, allowed.allows, creds=creds), allowed) == []


@settings(max_examples=60, deadline=None)
@given(endpoint, st.lists(exact, min_size=1, max_size=2), st.data())
def test_one_extra_trusted_lookalike_is_exactly_one_finding_naming_it(url, origins, data):
    allowed = AllowList(origins)
    looks = [p for p in probe_origins(url, allowed) if p.lookalike]
    assume(looks)  # IPv6 literals and plain-http origins have none
    extra = data.draw(st.sampled_from(looks))
    found = verdicts(simulate(url, allowed, lambda o: allowed.allows(o) or o == extra.origin), allowed)
    assert [(f.check, f.request_headers["Origin"]) for f in found] == [("cors-lookalike-origin", extra.origin)]


def test_reflect_everything_with_credentials():
    allowed = AllowList(["https://app.example.com"])
    found = verdicts(simulate(URL, allowed, lambda o: True, creds=True, vary=False, methods="*", headers="*"), allowed)
    # `*` does not count with credentials (Fetch), so no any-method/any-header from a literal '*'
    assert sorted((f.check, f.severity) for f in found) == sorted(
        [
            ("cors-any-origin", "medium"),
            ("cors-credentials-any-origin", "critical"),
            ("cors-null-origin", "high"),
            ("cors-vary-missing", "low"),
        ]
    )


def test_wildcard_with_credentials_is_reported_but_is_not_trust():
    allowed = AllowList(["https://app.example.com"])
    probes = simulate(URL, allowed, allowed.allows)
    for ex in probes.simple:
        ex.headers.update({"access-control-allow-origin": "*", "access-control-allow-credentials": "true"})
    found = verdicts(probes, allowed)
    assert [(f.check, f.severity) for f in found] == [("cors-credentials-any-origin", "medium")]


def test_preflight_follows_fetch():
    o = ProbeOrigin("allowed", "https://app.example.com")

    def ex(headers, status=200):
        return Exchange(o, "OPTIONS", URL, {}, status, {"access-control-allow-origin": o.origin, **headers})

    assert preflight_allows(ex({}), "POST")  # safelisted
    assert not preflight_allows(ex({}), "PUT")
    assert preflight_allows(ex({"access-control-allow-methods": "put"}), "PUT")
    assert preflight_allows(ex({"access-control-allow-methods": "*"}), "DELETE")
    assert not preflight_allows(
        ex({"access-control-allow-methods": "*", "access-control-allow-credentials": "true"}), "DELETE"
    )
    assert preflight_allows(ex({"access-control-allow-headers": "*"}), "GET", (CUSTOM_HEADER,))
    assert not preflight_allows(ex({"access-control-allow-headers": "*"}), "GET", ("authorization",))
    assert not preflight_allows(ex({"access-control-allow-methods": "PUT"}, status=403), "PUT")


def test_every_fix_is_a_valid_cors_config():
    allowed = AllowList(["https://app.example.com", "https://*.example.org"])
    probes = simulate(
        URL,
        allowed,
        lambda o: True,
        creds=True,
        vary=False,
        methods="GET, POST, PUT, PATCH, DELETE",
        headers="authorization, content-type, " + CUSTOM_HEADER,
        max_age=10 * 86400,
    )
    found = verdicts(probes, allowed)
    assert {f.check for f in found} >= set(CHECKS) - {"cors-lookalike-origin", "cors-allowed-refused"}
    refused = verdicts(simulate(URL, allowed, lambda o: False), allowed)
    assert {f.check for f in refused} == {"cors-allowed-refused"}
    for f in (
        found
        + refused
        + [type(found[0])("x", "t", "API8", 942, "low", "certain", "GET", URL, "", "", fix(AllowList([]), True))]
    ):
        doc = yaml.safe_load(f.bastion)
        CorsConfig(**doc["policies"]["cors"])  # raises on an unknown key or a bad value


def test_url_file_comments(tmp_path):
    p = tmp_path / "urls"
    p.write_text("# estate\nhttps://a.example/x  # service a\n\n   https://b.example/y#frag\n#https://c/\n")
    assert read_url_file(p) == ["https://a.example/x", "https://b.example/y#frag"]


def test_openapi_paths_against_a_base_url(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "openapi": "3.0.3",
                "info": {"title": "t", "version": "1"},
                "servers": [{"url": "/v1"}],
                "paths": {"/items": {"get": {}, "post": {}}, "/items/{id}": {"get": {}}},
            }
        )
    )
    assert collect(["https://a.example/x"], spec=str(spec), base_url="https://api.example") == [
        "https://a.example/x",
        "https://api.example/v1/items",
        "https://api.example/v1/items/1",
    ]
    with pytest.raises(InputError):
        collect([], spec=str(spec))
    with pytest.raises(InputError):
        collect(["ftp://x/"])
    with pytest.raises(InputError):
        collect([])


def test_a_public_wildcard_api_has_no_findings_and_serves_the_allowed_origin():
    allowed = AllowList(["https://app.example.com"])
    probes = simulate(URL, allowed, lambda o: False, vary=False)
    for ex in probes.simple + probes.preflight:
        ex.headers["access-control-allow-origin"] = "*"
        ex.status = 200
    assert verdicts(probes, allowed) == []
