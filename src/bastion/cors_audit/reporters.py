"""Report formats for `bastion cors-audit`, grouped per endpoint, with the endpoints × findings
matrix in console, HTML and Markdown. JSON, SARIF and each endpoint's Markdown section are the
scanner's reporters run on the audit (or on one endpoint of it); console and HTML are drawn here
because the scanner's group by severity, not by endpoint (they reuse its colours and styles)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from html import escape
from io import StringIO
from typing import Any

from rich.console import Console
from rich.table import Table

from bastion.cors_audit.runner import AuditResult, EndpointResult
from bastion.cors_audit.verdicts import CHECKS
from bastion.scanner.model import SEVERITIES
from bastion.scanner.reporters import html as scan_html
from bastion.scanner.reporters import jsonreport, markdown, sarif
from bastion.scanner.reporters.console import COLOURS

SHORT = {"critical": "CRIT", "high": "HIGH", "medium": "MED", "low": "LOW", "info": "INFO"}
ORDER = {s: i for i, s in enumerate(SEVERITIES)}


def cell(endpoint: EndpointResult, check: str) -> tuple[str, str | None]:
    """A matrix cell: the worst severity of that check on that endpoint (×n when several), or ''."""
    hits = [f for f in endpoint.findings if f.check == check]
    if not hits:
        return "", None
    worst = min(hits, key=lambda f: ORDER[f.severity]).severity
    return SHORT[worst] + (f"×{len(hits)}" if len(hits) > 1 else ""), worst


def matrix(result: AuditResult) -> list[dict]:
    return [
        {
            "endpoint": e.url,
            "error": e.error,
            **{c: sorted({f.severity for f in e.findings if f.check == c}, key=ORDER.__getitem__) for c in CHECKS},
        }
        for e in result.endpoints
    ]


def _summary_line(result: AuditResult) -> str:
    counts = " · ".join(f"{sum(1 for f in result.findings if f.severity == s)} {s}" for s in SEVERITIES)
    return (
        f"{counts}  —  {len(result.endpoints)} endpoints on {result.hosts} host(s), {result.requests} requests "
        f"in {result.seconds:.1f} s (at most {result.max_rate_seen:.0f}/s to one host)"
    )


def render_console(result: AuditResult, console: Console | None = None) -> str:
    buf = StringIO()
    out = console or Console(file=buf, width=160, force_terminal=False)
    table = Table(title="CORS audit: endpoints × findings", show_lines=False)
    table.add_column("endpoint", overflow="fold")
    for c in CHECKS:
        table.add_column(CHECKS[c][0], justify="center")
    for e in result.endpoints:
        if e.error:
            table.add_row(escape_markup(e.url), f"[dim]{escape_markup(e.error)}[/]", *[""] * (len(CHECKS) - 1))
            continue
        cells = []
        for c in CHECKS:
            text, sev = cell(e, c)
            cells.append(f"[{COLOURS[sev]}]{text}[/]" if sev else "[dim]·[/]")
        table.add_row(escape_markup(e.url), *cells)
    out.print(table)
    for e in result.endpoints:
        if not e.findings:
            continue
        t = Table(title=escape_markup(e.url), title_justify="left", show_lines=False)
        for col in ("severity", "check", "evidence"):
            t.add_column(col, overflow="fold")
        for f in e.findings:
            t.add_row(f"[{COLOURS[f.severity]}]{f.severity}[/]", f.check, escape_markup(f.evidence))
        out.print(t)
    out.print(_summary_line(result), markup=False, highlight=False)
    return buf.getvalue()


def escape_markup(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def render_json(result: AuditResult) -> str:
    doc = jsonreport.document(result)
    doc["schema"] = "bastion-cors-audit/1"
    doc["allowed_origins"] = result.allowed_origins
    doc["stats"]["endpoints"] = doc["stats"].pop("operations")
    doc["stats"]["hosts"] = result.hosts
    doc.pop("findings")
    doc["matrix"] = matrix(result)
    doc["endpoints"] = [
        {"url": e.url, "error": e.error, "requests": e.requests, "findings": [f.as_dict() for f in e.findings]}
        for e in result.endpoints
    ]
    return json.dumps(doc, indent=2)


def render_sarif(result: AuditResult) -> str:
    doc = json.loads(sarif.render(result))
    doc["runs"][0]["tool"]["driver"]["name"] = "bastion cors-audit"
    return json.dumps(doc, indent=2)


def render_markdown(result: AuditResult) -> str:
    lines = [
        f"# bastion cors-audit: {result.target}",
        "",
        _summary_line(result),
        "",
        "| endpoint | " + " | ".join(CHECKS[c][0] for c in CHECKS) + " |",
        "|---|" + "---|" * len(CHECKS),
    ]
    for e in result.endpoints:
        cells = [e.error or ""] + [""] * (len(CHECKS) - 1) if e.error else [cell(e, c)[0] for c in CHECKS]
        lines.append(f"| `{e.url}` | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    for e in result.endpoints:
        if not e.findings:
            continue
        section = markdown.render(replace(result, endpoints=[e], seconds=0.0, requests=e.requests))
        findings = section[section.index("\n## [") :].replace("\n## [", "\n### [")  # its headline and counts left out
        text += f"\n## `{e.url}`\n\n{len(e.findings)} finding(s), {e.requests} requests.\n" + findings
    return text


def render_html(result: AuditResult) -> str:
    head = "".join(f"<th>{escape(CHECKS[c][0])}</th>" for c in CHECKS)
    rows: list[str] = []
    for e in result.endpoints:
        if e.error:
            cells = f'<td colspan="{len(CHECKS)}" class="meta">{escape(e.error)}</td>'
        else:
            cells = ""
            for c in CHECKS:
                text, sev = cell(e, c)
                colour = scan_html.COLOURS.get(sev or "", "")
                cells += (
                    f'<td><span class="sev" style="background:{colour}">{escape(text)}</span></td>'
                    if sev
                    else '<td class="meta">·</td>'
                )
        rows.append(f'<tr><td><a href="#e{len(rows)}"><code>{escape(e.url)}</code></a></td>{cells}</tr>')
    sections = []
    for i, e in enumerate(result.endpoints):
        cards = "".join(
            f'<section class="card"><h3><span class="sev" style="background:{scan_html.COLOURS[f.severity]}">'
            f'{f.severity}</span> {escape(f.title)}</h3><p class="meta"><code>{escape(f.check)}</code> · '
            f"CWE-{f.cwe}</p><p><b>Evidence</b> {escape(f.evidence)}</p><p><b>Reproduce</b></p>"
            f"<pre>{escape(f.curl())}</pre><p><b>Fix</b> {escape(f.remediation)}</p>"
            f"<p><b>With bastion</b></p><pre>{escape(f.bastion)}</pre></section>"
            for f in e.findings
        )
        status = escape(e.error) if e.error else ("no findings" if not e.findings else f"{len(e.findings)} finding(s)")
        sections.append(f'<h2 id="e{i}"><code>{escape(e.url)}</code></h2><p class="meta">{status}</p>{cards}')
    css = (
        scan_html.CSS + "table{border-collapse:collapse;background:#fff;width:100%}th,td{border:1px solid #e3e6ea;"
        "padding:.3rem .5rem;font-size:.85rem;text-align:center}td:first-child{text-align:left}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>bastion cors-audit</title><style>{css}</style>'
        f"</head><body><header><h1>bastion cors-audit</h1><p>{escape(_summary_line(result))}</p></header><main>"
        f'<section class="card"><h2>Endpoints × findings</h2><table><tr><th>endpoint</th>{head}</tr>'
        f"{''.join(rows)}</table></section>{''.join(sections)}</main></body></html>"
    )


FORMATS: dict[str, Callable[..., Any]] = {
    "console": render_console,
    "json": render_json,
    "sarif": render_sarif,
    "html": render_html,
    "md": render_markdown,
}
