"""The origins a CORS audit sends: arbitrary, `null`, look-alikes, downgrades, the allowed list.

Which origins count as allowed follows bastion's own `cors` policy exactly (`canonical_origin`,
and `*` standing for one DNS label), so an audit's verdict and the fix it recommends agree.

Look-alikes are generated for the endpoint's own host and for the host of every allowed origin.
Each imitates one classic matching bug and, by construction, is never allowed by the list (a
candidate the list would allow — a sibling under an allowed `https://*.example.com` — is dropped):

| kind | from `app.example.com` | passes a server that checks … |
|---|---|---|
| suffix | `app.example.com.evil-cors-audit.example` | "starts with the trusted origin" (no end anchor) |
| prefix | `evil-cors-auditapp.example.com` | "ends with the trusted host" (no dot before it) |
| sibling | `evil-cors-audit.example.com` | "any subdomain of the parent" |
| dot | `appxexample.com` | a regex with an unescaped `.` |
| downgrade | `http://app.example.com` (of `https://…`) | the host but not the scheme |
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.policies.cors import CorsConfig, OriginMatcher

ATTACKER = "evil-cors-audit.example"  # .example is reserved (RFC 2606): never anybody's site
ARBITRARY = f"https://{ATTACKER}"
LOOKALIKE_KINDS = ("suffix", "prefix", "sibling", "dot", "downgrade")


@dataclass(frozen=True)
class ProbeOrigin:
    kind: str  # arbitrary | null | suffix | prefix | sibling | dot | downgrade | allowed
    origin: str
    imitates: str = ""  # the host or allowed origin a look-alike imitates

    @property
    def lookalike(self) -> bool:
        return self.kind in LOOKALIKE_KINDS


class AllowList:
    """The origins the audit is told are legitimate, with the `cors` policy's matching rules."""

    def __init__(self, origins: list[str]) -> None:
        CorsConfig(allow_origins=list(origins))  # bad values fail here, naming the origin
        self.origins = list(origins)
        self.any = "*" in origins
        self.allows = OriginMatcher(self.origins).allows  # the policy's own rules

    def examples(self) -> list[str]:
        """One concrete origin per entry (a pattern's `*` becomes `cors-audit`), to check they work."""
        return [o.replace("*", "cors-audit") for o in self.origins if o not in ("*", "null")] + (
            ["null"] if "null" in self.origins else []
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def host_lookalikes(scheme: str, host: str) -> list[ProbeOrigin]:
    """Suffix, prefix, sibling and dot look-alikes of one host (no port: attackers use 443)."""
    host = host.lower().rstrip(".")
    if not host or ":" in host or "[" in host:
        return []  # IPv6 literals: no host string to imitate
    out = [
        ProbeOrigin("suffix", f"{scheme}://{host}.{ATTACKER}", host),
        ProbeOrigin("prefix", f"{scheme}://evil-cors-audit{host}", host),
    ]
    labels = host.split(".")
    if not _is_ip(host) and len(labels) >= 2:
        parent = labels[1:] if len(labels) >= 3 else labels
        sibling = ".".join(["evil-cors-audit", *parent])
        if sibling != host:
            out.append(ProbeOrigin("sibling", f"{scheme}://{sibling}", host))
        if len(labels) >= 3:
            out.append(ProbeOrigin("dot", f"{scheme}://{labels[0]}x{'.'.join(labels[1:])}", host))
    return out


def probe_origins(endpoint_url: str, allowed: AllowList) -> list[ProbeOrigin]:
    """Every origin to try against one endpoint, look-alikes the allow list would accept dropped."""
    parts = urlsplit(endpoint_url)
    out = [ProbeOrigin("arbitrary", ARBITRARY), ProbeOrigin("null", "null")]
    bases: list[tuple[str, str]] = [(parts.scheme or "https", parts.hostname or "")]
    downgrades = []
    for example in allowed.examples():
        if example == "null":
            continue
        a = urlsplit(example)
        bases.append((a.scheme, a.hostname or ""))
        if a.scheme == "https":
            downgrades.append(ProbeOrigin("downgrade", "http://" + example[len("https://") :], example))
    for scheme, host in dict.fromkeys(bases):
        out += host_lookalikes(scheme, host)
    out += downgrades
    seen: set[str] = set()
    result = []
    for p in out:
        if (
            p.origin in seen
            or (p.kind != "null" and allowed.allows(p.origin))
            or (p.kind == "null" and allowed.allows("null"))
        ):
            continue
        seen.add(p.origin)
        result.append(p)
    result += [ProbeOrigin("allowed", o) for o in dict.fromkeys(allowed.examples()) if o not in seen]
    return result
