"""Console report (rich), grouped by severity."""

from __future__ import annotations

from io import StringIO

from rich.console import Console
from rich.table import Table

from bastion.scanner.model import SEVERITIES

COLOURS = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def render(result, console: Console | None = None) -> str:
    buf = StringIO()
    out = console or Console(file=buf, width=140, force_terminal=False)
    for sev in SEVERITIES:
        group = [f for f in result.findings if f.severity == sev]
        if not group:
            continue
        table = Table(title=f"{sev.upper()} ({len(group)})", title_style=COLOURS[sev], show_lines=False)
        for col in ("check", "OWASP", "where", "evidence"):
            table.add_column(col, overflow="fold")
        for f in group:
            table.add_row(f.check, f.category, f"{f.method} {f.url}", f.evidence[:160])
        out.print(table)
    counts = " · ".join(f"{sum(1 for f in result.findings if f.severity == s)} {s}" for s in SEVERITIES)
    out.print(
        f"{counts}  —  {result.requests} requests in {result.seconds:.1f} s (at most {result.max_rate_seen:.0f}/s)"
    )
    return buf.getvalue()
