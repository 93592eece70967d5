"""SARIF 2.1.0 (validated in the tests against the official schema)."""

from __future__ import annotations

import json

import bastion

LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
SCORE = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}


def render(result) -> str:
    rules: dict[str, dict] = {}
    results = []
    for f in result.findings:
        if f.check not in rules:
            rules[f.check] = {
                "id": f.check,
                "name": f.check.replace("-", "_"),
                "shortDescription": {"text": f.title},
                "fullDescription": {"text": f"{f.owasp}. {f.remediation}"},
                "help": {"text": f.remediation, "markdown": f"{f.remediation}\n\nbastion:\n```yaml\n{f.bastion}\n```"},
                "properties": {
                    "tags": ["security", f.owasp, f"CWE-{f.cwe}"],
                    "security-severity": SCORE[f.severity],
                    "precision": {"certain": "very-high", "firm": "high"}.get(f.confidence, "medium"),
                },
            }
        results.append(
            {
                "ruleId": f.check,
                "ruleIndex": list(rules).index(f.check),
                "level": LEVEL[f.severity],
                "message": {"text": f"{f.title}: {f.evidence}"},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.url}}}],
                "webRequest": {
                    "method": f.method if f.method != "-" else "GET",
                    "target": f.url,
                    "headers": f.as_dict()["request_headers"],
                },
                "properties": {
                    "severity": f.severity,
                    "confidence": f.confidence,
                    "owasp": f.owasp,
                    "cwe": f.cwe,
                    "curl": f.curl(),
                },
            }
        )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "bastion scan",
                        "informationUri": "https://bastion.dev/docs/scanner",
                        "version": getattr(bastion, "__version__", "0.1.0"),
                        "rules": list(rules.values()),
                    }
                },
                "results": results,
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "properties": {"requests": result.requests, "seconds": round(result.seconds, 2)},
                    }
                ],
            }
        ],
    }
    return json.dumps(doc, indent=2)
