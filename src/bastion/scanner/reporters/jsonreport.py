"""JSON report, schema `bastion-scan/1` (documented in docs/scanner.md)."""

from __future__ import annotations

import json

from bastion.scanner.model import SEVERITIES


def document(result) -> dict:
    return {
        "schema": "bastion-scan/1",
        "target": result.target,
        "summary": {s: sum(1 for f in result.findings if f.severity == s) for s in SEVERITIES},
        "stats": {
            "requests": result.requests,
            "seconds": round(result.seconds, 2),
            "max_requests_per_second": result.max_rate_seen,
            "operations": result.operations,
            "checks": result.checks_run,
        },
        "findings": [f.as_dict() for f in result.findings],
    }


def render(result) -> str:
    return json.dumps(document(result), indent=2)
