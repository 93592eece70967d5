"""Findings, identities, operations: what the checks share."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bastion.redact import redact

SEVERITIES = ("critical", "high", "medium", "low", "info")
CATEGORIES = {
    "API1": "API1:2023 Broken Object Level Authorization",
    "API2": "API2:2023 Broken Authentication",
    "API3": "API3:2023 Broken Object Property Level Authorization",
    "API4": "API4:2023 Unrestricted Resource Consumption",
    "API5": "API5:2023 Broken Function Level Authorization",
    "API6": "API6:2023 Unrestricted Access to Sensitive Business Flows",
    "API7": "API7:2023 Server Side Request Forgery",
    "API8": "API8:2023 Security Misconfiguration",
    "API9": "API9:2023 Improper Inventory Management",
}


@dataclass
class Finding:
    check: str  # e.g. "api2-alg-none"
    title: str
    category: str  # "API2"
    cwe: int
    severity: str
    confidence: str  # certain | firm | tentative
    method: str
    url: str
    evidence: str
    remediation: str
    bastion: str = ""  # the bastion config that mitigates it
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str | None = None

    def __post_init__(self) -> None:
        assert self.severity in SEVERITIES, self.severity
        self.evidence = redact(self.evidence)

    @property
    def owasp(self) -> str:
        return CATEGORIES.get(self.category, self.category)

    def curl(self) -> str:
        parts = ["curl", "-i", "-X", self.method]
        for k, v in self.request_headers.items():
            parts += ["-H", f"'{k}: {redact(v)}'"]
        if self.request_body is not None:
            parts += ["--data", "'" + redact(self.request_body, 300).replace("'", "'\\''") + "'"]
        parts.append(f"'{self.url}'")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["owasp"] = self.owasp
        d["curl"] = self.curl()
        d["request_headers"] = {k: redact(v) for k, v in self.request_headers.items()}
        d["request_body"] = redact(self.request_body, 300) if self.request_body is not None else None
        return d


@dataclass
class Identity:
    name: str
    headers: dict[str, str]
    subject: str | None = None  # the user id, when the token says (JWT sub) or the config does
    username: str | None = None

    @property
    def token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[7:].strip() if value.lower().startswith("bearer ") else None


@dataclass
class Operation:
    method: str
    path: str  # template, with the spec's base path
    params: list[dict[str, Any]]
    body_schema: dict[str, Any] | None
    secured: bool
    documented: bool = True
    form: bool = False  # the body is application/x-www-form-urlencoded (OAuth2 password logins)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{([^}]+)\}", self.path)
