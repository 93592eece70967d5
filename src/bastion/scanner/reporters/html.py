"""A self-contained HTML report: summary charts by severity and by OWASP category (inline SVG),
then each finding with redacted evidence, a curl reproducer, the fix and the bastion config."""

from __future__ import annotations

from html import escape

from bastion.scanner.model import CATEGORIES, SEVERITIES

COLOURS = {"critical": "#b42318", "high": "#e0452b", "medium": "#dc8a00", "low": "#2f7bbd", "info": "#7a7f87"}
CSS = """body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#101418;color:#fff;padding:1.2rem 2rem}header h1{margin:0;font-size:1.4rem}header p{margin:.3rem 0 0;color:#b8c0cc}
main{max-width:70rem;margin:0 auto;padding:1.5rem 2rem}.charts{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}
.card{background:#fff;border-radius:.5rem;padding:1rem 1.2rem;margin:0 0 1rem;box-shadow:0 1px 2px #0001}
.sev{display:inline-block;color:#fff;border-radius:.3rem;padding:0 .5rem;font-size:.8rem;text-transform:uppercase;font-weight:600}
code,pre{font:13px ui-monospace,monospace}pre{background:#f0f2f5;padding:.6rem;border-radius:.3rem;overflow:auto;white-space:pre-wrap;word-break:break-all}
.meta{color:#5b6470;font-size:.85rem}svg text{font:12px system-ui,sans-serif;fill:#333}h2{font-size:1.05rem}"""


def _bars(counts: list[tuple[str, int, str]], width: int = 460) -> str:
    top = max([c for _, c, _ in counts] + [1])
    rows = []
    for i, (label, n, colour) in enumerate(counts):
        y = 8 + i * 26
        w = 0 if n == 0 else max(3, int((width - 200) * n / top))
        rows.append(
            f'<text x="0" y="{y + 14}">{escape(label)}</text>'
            f'<rect x="190" y="{y}" width="{w}" height="18" rx="3" fill="{colour}"></rect>'
            f'<text x="{196 + w}" y="{y + 14}">{n}</text>'
        )
    height = 16 + 26 * len(counts)
    return f'<svg viewBox="0 0 {width} {height}" width="100%" role="img">{"".join(rows)}</svg>'


def render(result) -> str:
    sev_counts = [(s, sum(1 for f in result.findings if f.severity == s), COLOURS[s]) for s in SEVERITIES]
    cats = sorted({f.category for f in result.findings})
    cat_counts = [
        (
            CATEGORIES.get(c, c).split(" ", 1)[0] + " " + CATEGORIES.get(c, c).split(" ", 1)[-1][:22],
            sum(1 for f in result.findings if f.category == c),
            "#4a5a70",
        )
        for c in cats
    ]
    cards = []
    for f in result.findings:
        cards.append(
            f'<section class="card"><h2><span class="sev" style="background:{COLOURS[f.severity]}">{f.severity}</span> '
            f'{escape(f.title)}</h2><p class="meta"><code>{escape(f.check)}</code> · {escape(f.owasp)} · '
            f"CWE-{f.cwe} · confidence {escape(f.confidence)}</p>"
            f"<p><b>Where</b> <code>{escape(f.method)} {escape(f.url)}</code></p>"
            f"<p><b>Evidence</b> {escape(f.evidence)}</p>"
            f"<p><b>Reproduce</b></p><pre>{escape(f.curl())}</pre>"
            f"<p><b>Fix</b> {escape(f.remediation)}</p>"
            f"<p><b>With bastion</b></p><pre>{escape(f.bastion)}</pre></section>"
        )
    body = "".join(cards) or '<section class="card"><p>No findings.</p></section>'
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>bastion scan · {escape(result.target)}</title>'
        f"<style>{CSS}</style></head><body><header><h1>bastion scan</h1><p>{escape(result.target)} · "
        f"{len(result.findings)} findings · {result.requests} requests in {result.seconds:.1f} s</p></header><main>"
        f'<div class="charts"><section class="card"><h2>By severity</h2>{_bars(sev_counts)}</section>'
        f'<section class="card"><h2>By OWASP category</h2>{_bars(cat_counts)}</section></div>{body}</main></body></html>'
    )
