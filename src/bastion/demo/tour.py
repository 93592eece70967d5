"""The parts of `bastion demo` beyond the edge tour: curl lines for the OpenAPI route, the token
service and the GraphQL guard, the dashboard address, and the scan of the demo API twice (directly
and through the gateway) with the two summaries side by side."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PASSWORD = "Demo-password-9!"  # the tour's users; the token service wants 12+ mixed characters

FACES = """\
The API behind its OpenAPI spec ({gw}/api; routes, scopes and bodies come from the spec):
  curl -i {gw}/api/users
      -> 401: the spec says bearer token (get one from the token service, below)
  curl -i {gw}/api/internal/debug
      -> 404 undocumented-endpoint: only the spec's operations exist
  curl -i {gw}/api/users -H "Authorization: Bearer $TOKEN"
      -> 200 (answers are checked against the spec too: undeclared properties are removed)
  curl -i {gw}/api/users/1/orders -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"item": "pen", "quantity": 1000}}'
      -> 422: quantity must be at most 100 (the upstream never sees it)
  curl -i {gw}/api/users/1/orders -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"item": "pen", "total": 0}}'
      -> 422: mass assignment refused, 'total' is not the client's to set
  curl -i {gw}/api/admin/settings -H "Authorization: Bearer $TOKEN"
      -> 403 insufficient scope: the spec wants 'admin', the token has orders:read

The token service ({gw}/auth):
  curl -s {gw}/auth/register -H 'Content-Type: application/json' -d '{{"username": "dana", "email": "dana@example.com", "password": "{password}"}}'
  curl -s {gw}/auth/login -H 'Content-Type: application/json' -d '{{"username": "dana", "password": "{password}"}}' > /tmp/bastion-login.json
  TOKEN=$(python3 -c 'import json; print(json.load(open("/tmp/bastion-login.json"))["access_token"])')
  REFRESH=$(python3 -c 'import json; print(json.load(open("/tmp/bastion-login.json"))["refresh_token"])')
  curl -s {gw}/auth/refresh -H 'Content-Type: application/json' -d "{{\\"refresh_token\\": \\"$REFRESH\\"}}"
      -> a new pair; the old refresh token is spent (presenting it again revokes the whole login)
  curl -i -X POST {gw}/auth/logout -H "Authorization: Bearer $TOKEN"
      -> 204; the same token is refused at once: curl -i {gw}/api/users -H "Authorization: Bearer $TOKEN"
  ({gw}/auth/.well-known/openid-configuration and .../jwks.json: what other services verify with)

GraphQL behind the guard ({gw}/api/graphql; the same API unguarded: {up}/graphql):
  curl -s {gw}/api/graphql -H 'Content-Type: application/json' -d '{{"query": "{{ users(first: 2) {{ username orders {{ item }} }} }}"}}'
      -> 200
  curl -s {gw}/api/graphql -H 'Content-Type: application/json' -d '{{"query": "{{ users {{ friends {{ friends {{ friends {{ friends {{ friends {{ id }} }} }} }} }} }} }}"}}'
      -> 400: depth 7 over the limit of 5 (the upstream answers it: try {up}/graphql)
  curl -s {gw}/api/graphql -H 'Content-Type: application/json' -d '{{"query": "{{ __schema {{ types {{ name }} }} }}"}}'
      -> 403: introspection is refused

The live dashboard: {admin}/dashboard   (admin token: {token})
  Prometheus metrics: {admin}/metrics ; admin API: curl -H 'Authorization: Bearer {token}' {admin}/admin/config
"""


def faces(gw: str, up: str, admin: str, token: str) -> str:
    return FACES.format(gw=gw, up=up, admin=admin, token=token, password=PASSWORD)


def _post(url: str, doc: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else {}


def scan_identities(gw: str) -> list[Any]:
    """Two users of the token service, logged in through the gateway: the scanner's identities
    (BOLA and BFLA need two)."""
    from bastion.scanner.model import Identity

    out = []
    for name in ("scan_alice", "scan_bob"):
        try:
            _post(f"{gw}/auth/register", {"username": name, "email": f"{name}@example.com", "password": PASSWORD})
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already there (a second scan in the same demo)
                raise
        token = _post(f"{gw}/auth/login", {"username": name, "password": PASSWORD})["access_token"]
        out.append(Identity(name, {"Authorization": f"Bearer {token}"}, username=name))
    return out


def run_scans(gw: str, up: str, workdir: Path, rate: float = 25.0) -> tuple[Any, Any, dict[str, Path]]:
    """The OWASP API Top 10 scan of the demo API, directly and through the gateway; HTML reports."""
    from importlib import resources

    from bastion.scanner.reporters import FORMATS
    from bastion.scanner.runner import ScanOptions, run_sync

    spec = str(resources.files("bastion.demo") / "openapi.json")
    identities = scan_identities(gw)
    results, reports = [], {}
    for label, base in (("direct", up), ("gateway", f"{gw}/api")):
        opts = ScanOptions(base, spec, "/graphql", identities=list(identities), rate=rate, concurrency=4, timeout=5)
        result = run_sync(opts)
        path = workdir / f"scan-{label}.html"
        path.write_text(FORMATS["html"](result))
        results.append(result)
        reports[label] = path
    return results[0], results[1], reports


def _counts(findings: list[Any]) -> str:
    from bastion.scanner.model import SEVERITIES

    n = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    return ", ".join(f"{v} {s}" for s, v in n.items() if v) or "-"


def side_by_side(direct: Any, gateway: Any) -> Any:
    """A table: per OWASP category, the findings of each scan."""
    from rich.table import Table

    from bastion.scanner.model import CATEGORIES

    table = Table(title="OWASP API Security Top 10 scan of the demo API", title_justify="left")
    table.add_column("category")
    table.add_column(f"directly ({direct.target})")
    table.add_column(f"through bastion ({gateway.target})")
    cats = sorted({f.category for f in direct.findings + gateway.findings} | set(CATEGORIES))
    for cat in cats:
        d = [f for f in direct.findings if f.category == cat]
        g = [f for f in gateway.findings if f.category == cat]
        table.add_row(CATEGORIES.get(cat, cat).replace(":2023", ""), _counts(d), _counts(g))
    table.add_row(
        "[bold]all findings[/]",
        f"[bold]{len(direct.findings)}[/] ({_counts(direct.findings)})",
        f"[bold]{len(gateway.findings)}[/] ({_counts(gateway.findings)})",
    )
    table.add_row(
        "requests, seconds", f"{direct.requests}, {direct.seconds:.0f}", f"{gateway.requests}, {gateway.seconds:.0f}"
    )
    return table
