"""Markdown report (for pull requests and tickets)."""

from __future__ import annotations

from bastion.scanner.model import SEVERITIES


def render(result) -> str:
    lines = [
        f"# bastion scan: {result.target}",
        "",
        f"{len(result.findings)} finding(s) in {result.seconds:.1f} s, {result.requests} requests.",
        "",
        "| severity | count |",
        "|---|---|",
    ]
    lines += [f"| {s} | {sum(1 for f in result.findings if f.severity == s)} |" for s in SEVERITIES]
    for f in result.findings:
        lines += [
            "",
            f"## [{f.severity}] {f.title}",
            "",
            f"- **check** `{f.check}` · {f.owasp} · CWE-{f.cwe} · confidence {f.confidence}",
            f"- **where** `{f.method} {f.url}`",
            f"- **evidence** {f.evidence}",
            "",
            "```sh",
            f.curl(),
            "```",
            "",
            f"**Fix:** {f.remediation}",
            "",
            "```yaml",
            f.bastion,
            "```",
        ]
    return "\n".join(lines) + "\n"
