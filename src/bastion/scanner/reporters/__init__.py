"""Report formats: console, json, sarif, html, md."""

from pathlib import Path

from bastion.scanner.reporters import console, html, jsonreport, markdown, sarif

FORMATS = {
    "console": console.render,
    "json": jsonreport.render,
    "sarif": sarif.render,
    "html": html.render,
    "md": markdown.render,
}
EXTENSIONS = {"json": "json", "sarif": "sarif", "html": "html", "md": "md", "console": "txt"}


def output_paths(output: Path, formats: list[str]) -> dict[str, Path]:
    """One naming rule for any number of formats: each format is written to the given name with
    that format's extension — the extension already there is replaced when it is a report
    extension (report.json + json → report.json; report + json → report.json; report.json +
    json + sarif → report.json and report.sarif), and kept otherwise (scan.v2 → scan.v2.json)."""
    known = {"." + e for e in EXTENSIONS.values()}
    stem = output.with_suffix("") if output.suffix in known else output
    return {f: stem.with_name(stem.name + "." + EXTENSIONS[f]) for f in formats}


def infer_format(output: Path | None) -> str | None:
    """The format an --output name asks for (report.sarif → sarif), when --format is not given."""
    if output is None:
        return None
    by_ext = {e: f for f, e in EXTENSIONS.items()}
    return by_ext.get(output.suffix.lstrip("."))
