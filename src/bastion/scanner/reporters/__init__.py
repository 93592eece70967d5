"""Report formats: console, json, sarif, html, md."""

from bastion.scanner.reporters import console, html, jsonreport, markdown, sarif

FORMATS = {"console": console.render, "json": jsonreport.render, "sarif": sarif.render, "html": html.render,
           "md": markdown.render}
EXTENSIONS = {"json": "json", "sarif": "sarif", "html": "html", "md": "md", "console": "txt"}
