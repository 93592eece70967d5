"""From probe answers to findings: what a browser would let each origin do, compared with the
allow list. Pure functions over recorded exchanges (no I/O), so each rule is testable alone.

Rules (docs/scanner.md, "bastion cors-audit"):
- an origin is *trusted* when a simple GET answers `Access-Control-Allow-Origin` with exactly that
  origin, or a minimal preflight (`Access-Control-Request-Method: GET`) does with a 2xx status;
  `*` is not trust in an origin (browsers never send credentials to `*`) and is reported only
  together with `Access-Control-Allow-Credentials: true`;
- a trusted origin the allow list does not allow is a finding by its kind (arbitrary, `null`,
  look-alike); look-alikes are not reported separately when the arbitrary origin is trusted
  (any origin includes them);
- a preflight *allows* a method or header the way the Fetch standard decides it (safelisted
  methods need no listing; `*` counts only without credentials and never covers Authorization).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from bastion.cors_audit.origins import AllowList, ProbeOrigin
from bastion.scanner.model import Finding

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
CUSTOM_HEADER = "x-cors-audit-custom"
# (name a preflight asks for, what the actual request would carry)
HEADERS = (
    ("authorization", "Authorization: Bearer …"),
    ("content-type", "Content-Type: application/json"),
    ("x-requested-with", "X-Requested-With: XMLHttpRequest"),
    (CUSTOM_HEADER, "X-Cors-Audit-Custom: 1"),
)
MAX_AGE_LIMIT = 86400

CHECKS = {  # id: (column label, title)
    "cors-any-origin": ("any origin", "CORS reflects an arbitrary origin"),
    "cors-credentials-any-origin": ("creds+any", "CORS allows credentials with a wildcard or reflected origin"),
    "cors-null-origin": ("null", "CORS trusts the null origin"),
    "cors-lookalike-origin": ("look-alike", "CORS trusts a look-alike origin"),
    "cors-vary-missing": ("no Vary", "Origin-dependent CORS answer without Vary: Origin"),
    "cors-preflight-any-method": ("any method", "Preflight allows every method"),
    "cors-preflight-any-header": ("any header", "Preflight allows every request header"),
    "cors-max-age": ("max-age", "Preflight may be cached for more than a day"),
    "cors-allowed-refused": ("allowed refused", "An allowed origin is refused"),
}


@dataclass
class Exchange:
    """One probe: what was sent and what came back (only the headers that matter here)."""

    origin: ProbeOrigin
    method: str  # the HTTP method sent (GET, or OPTIONS for a preflight)
    url: str
    request_headers: dict[str, str]
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    error: str | None = None

    @property
    def acao(self) -> str | None:
        return self.headers.get("access-control-allow-origin")

    @property
    def credentials(self) -> bool:
        return self.headers.get("access-control-allow-credentials", "").strip().lower() == "true"

    @property
    def varies_on_origin(self) -> bool:
        tokens = [t.strip().lower() for t in self.headers.get("vary", "").split(",")]
        return "origin" in tokens or "*" in tokens

    def trusts_origin(self) -> bool:
        """ACAO names exactly this origin (a preflight must also answer 2xx)."""
        if self.acao != self.origin.origin:
            return False
        return self.method != "OPTIONS" or 200 <= self.status < 300

    def evidence(self) -> str:
        sent = "; ".join(f"{k}: {v}" for k, v in self.request_headers.items())
        got = "; ".join(
            f"{_title(k)}: {v}"
            for k, v in sorted(self.headers.items())
            if k.startswith("access-control-") or k == "vary"
        )
        return (
            f"{self.method} {sent} → HTTP {self.status}"
            + (f"; {got}" if got else "; no CORS headers")
            + ("" if "vary" in self.headers else "; no Vary")
        )


def _title(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


def preflight_allows(ex: Exchange, method: str, headers: tuple[str, ...] = ()) -> bool:
    """Would a browser send `method` with `headers` after this preflight answer?"""
    if ex.error or not 200 <= ex.status < 300:
        return False
    wildcard_ok = not ex.credentials
    if not (ex.acao == ex.origin.origin or (ex.acao == "*" and wildcard_ok)):
        return False
    methods = _tokens(ex.headers.get("access-control-allow-methods"))
    if method not in SAFELISTED_METHODS and method.lower() not in methods and not ("*" in methods and wildcard_ok):
        return False
    allowed = _tokens(ex.headers.get("access-control-allow-headers"))
    return all(h in allowed or ("*" in allowed and wildcard_ok and h != "authorization") for h in headers)


def fix(allowed: AllowList, credentials: bool, comment: str = "", **keys) -> str:
    """The bastion `cors` config that fixes a finding (keys are CorsConfig's, validated in tests)."""
    cfg: dict = {"allow_origins": allowed.origins or ["https://app.example.com"]}
    if credentials:
        cfg["allow_credentials"] = True
    cfg.update(keys)
    text = yaml.safe_dump({"policies": {"cors": cfg}}, default_flow_style=None, sort_keys=False).rstrip()
    return (f"# {comment}\n" if comment else "") + text


@dataclass
class Probes:
    """Everything sent to one endpoint."""

    url: str
    simple: list[Exchange]  # one GET per probe origin
    preflight: list[Exchange]  # one minimal preflight per probe origin
    reference: ProbeOrigin | None = None  # the trusted origin the method/header matrix used
    methods: dict[str, Exchange] = field(default_factory=dict)
    headers: dict[str, Exchange] = field(default_factory=dict)


def trusted_by(probes: Probes) -> dict[str, Exchange]:
    """Origin → the exchange that shows the endpoint trusts it (the simple GET preferred)."""
    out: dict[str, Exchange] = {}
    for ex in probes.simple + probes.preflight:
        if ex.trusts_origin() and ex.origin.origin not in out:
            out[ex.origin.origin] = ex
    return out


def choose_reference(origins: list[ProbeOrigin], trusted: dict[str, Exchange]) -> ProbeOrigin | None:
    """The origin whose preflights show what a trusted page may do: an allowed one first."""
    order = {"allowed": 0, "arbitrary": 1, "null": 2}
    candidates = [o for o in origins if o.origin in trusted]
    return min(candidates, key=lambda o: order.get(o.kind, 3)) if candidates else None


def verdicts(probes: Probes, allowed: AllowList) -> list[Finding]:
    out: list[Finding] = []
    trusted = trusted_by(probes)

    def add(
        check: str, severity: str, ex: Exchange, evidence: str, remediation: str, bastion: str, title: str | None = None
    ) -> None:
        out.append(
            Finding(
                check,
                title or CHECKS[check][1],
                "API8",
                942,
                severity,
                "certain",
                ex.method,
                ex.url,
                evidence,
                remediation,
                bastion,
                request_headers=dict(ex.request_headers),
            )
        )

    any_origin = trusted.get(next((o.origin.origin for o in probes.simple if o.origin.kind == "arbitrary"), ""))
    if any_origin is not None:
        add(
            "cors-any-origin",
            "medium",
            any_origin,
            any_origin.evidence(),
            "Answer Access-Control-Allow-Origin only for an exact list of origins; never echo the Origin header.",
            fix(allowed, any_origin.credentials),
        )
        if any_origin.credentials:
            add(
                "cors-credentials-any-origin",
                "critical",
                any_origin,
                any_origin.evidence(),
                "Any site can read this endpoint's answers with the user's cookies: list the origins "
                "that may send credentials.",
                fix(allowed, True),
            )
    if any_origin is None:
        star = next((ex for ex in probes.simple + probes.preflight if ex.acao == "*" and ex.credentials), None)
        if star is not None:
            add(
                "cors-credentials-any-origin",
                "medium",
                star,
                star.evidence(),
                '`*` with credentials is refused by browsers (a broken config, usually "fixed" next by '
                "reflecting the origin): list the origins instead.",
                fix(allowed, True),
            )
    null = trusted.get("null")
    if null is not None and not allowed.allows("null"):
        add(
            "cors-null-origin",
            "high" if null.credentials else "medium",
            null,
            null.evidence(),
            "Sandboxed iframes and data: URLs of any site send `Origin: null`: never trust it.",
            fix(allowed, null.credentials, "null is trusted only when listed; leave it out"),
        )
    if any_origin is None:
        for origin, ex in trusted.items():
            if ex.origin.lookalike and not allowed.allows(origin):
                add(
                    "cors-lookalike-origin",
                    "high" if ex.credentials else "medium",
                    ex,
                    f"{ex.origin.kind} look-alike of {ex.origin.imitates} trusted: {ex.evidence()}",
                    "Compare the whole origin (scheme, host, port) against an exact list, or anchor a pattern "
                    "on both ends with escaped dots.",
                    fix(allowed, ex.credentials),
                    title=f"CORS trusts a look-alike origin: {origin}",
                )
    # Vary: Origin, where the answer depends on the origin
    answered = [ex for ex in probes.simple if not ex.error]
    dependent = len({ex.acao for ex in answered}) > 1 or any(ex.trusts_origin() for ex in answered)
    no_vary = [ex for ex in answered if not ex.varies_on_origin]
    if dependent and no_vary:
        ex = next((e for e in no_vary if e.trusts_origin()), no_vary[0])
        add(
            "cors-vary-missing",
            "low",
            ex,
            ex.evidence(),
            "Send Vary: Origin on every answer whose CORS headers depend on the origin, or a shared cache "
            "serves one origin's answer to another.",
            fix(allowed, ex.credentials, "bastion's cors policy sends Vary: Origin on every answer"),
        )
    if probes.reference is not None:
        creds = trusted[probes.reference.origin].credentials
        if len(probes.methods) == len(METHODS) and all(preflight_allows(ex, m) for m, ex in probes.methods.items()):
            ex = probes.methods["DELETE"]
            add(
                "cors-preflight-any-method",
                "low",
                ex,
                ex.evidence(),
                "Allow only the methods the calling pages use.",
                fix(allowed, creds, allow_methods=["GET", "POST"]),
            )
        custom = probes.headers.get(CUSTOM_HEADER)
        if custom is not None and preflight_allows(custom, "GET", (CUSTOM_HEADER,)):
            real = [
                h
                for h, _ in HEADERS
                if h != CUSTOM_HEADER and h in probes.headers and preflight_allows(probes.headers[h], "GET", (h,))
            ]
            add(
                "cors-preflight-any-header",
                "low",
                custom,
                custom.evidence(),
                "Allow only the request headers the calling pages send (a made-up one was allowed).",
                fix(allowed, creds, allow_headers=real or ["content-type"]),
            )
        long = [
            ex
            for ex in [*probes.methods.values(), *probes.headers.values()]
            if _max_age(ex) > MAX_AGE_LIMIT and 200 <= ex.status < 300
        ]
        if long:
            add(
                "cors-max-age",
                "low",
                long[0],
                long[0].evidence(),
                "Keep Access-Control-Max-Age at a day or less, so a tightened policy takes effect.",
                fix(allowed, creds, max_age=600),
            )

    def works(o: ProbeOrigin) -> bool:  # trusted, or a public `*` (no credentials) that serves it as well
        return o.origin in trusted or any(
            e.origin == o and e.acao == "*" and not e.credentials and (e.method != "OPTIONS" or 200 <= e.status < 300)
            for e in probes.simple + probes.preflight
        )

    for o in [o for o in _allowed_origins(probes) if not works(o)]:
        ex = next(e for e in probes.simple if e.origin == o)
        pre = next((e for e in probes.preflight if e.origin == o), None)
        add(
            "cors-allowed-refused",
            "medium",
            ex,
            ex.evidence() + (f" | {pre.evidence()}" if pre else ""),
            "A page on an allowed origin cannot read this endpoint (an over-tight or broken config).",
            fix(allowed, any(e.credentials for e in probes.simple)),
            title=f"An allowed origin is refused: {o.origin}",
        )
    order = {c: i for i, c in enumerate(CHECKS)}
    out.sort(key=lambda f: order[f.check])
    return out


def _allowed_origins(probes: Probes) -> list[ProbeOrigin]:
    return [ex.origin for ex in probes.simple if ex.origin.kind == "allowed" and not ex.error]


def _max_age(ex: Exchange) -> int:
    try:
        return int(ex.headers.get("access-control-max-age", "0").strip())
    except ValueError:
        return 0
