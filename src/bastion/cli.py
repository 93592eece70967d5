"""The `bastion` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bastion.config.lint import lint
from bastion.config.loader import ConfigError, load_config
from bastion.config.model import GatewayConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="bastion: an API security gateway.")
console = Console(stderr=True)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def _check(path: str, workers: int | None = None) -> GatewayConfig:
    """Load and lint (for `workers` processes: None is the config's choice); print findings;
    exit 2 on errors."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        console.print(f"[bold red]config error[/] in {exc.source}:")
        for issue in exc.issues:
            console.print("  " + issue.render(exc.source), highlight=False, markup=False)
        raise typer.Exit(2)
    try:  # build every route and policy (OpenAPI specs, key files) as `serve` would
        from bastion.gateway.state import compile_state

        state = compile_state(cfg, config_dir=str(Path(path).resolve().parent), source=path)
        asyncio.run(state.close())
    except ConfigError as exc:
        console.print(f"[bold red]config error[/] in {exc.source}:")
        for issue in exc.issues:
            console.print("  " + issue.render(exc.source), highlight=False, markup=False)
        raise typer.Exit(2)
    findings = lint(cfg, str(Path(path).resolve().parent), workers=workers)
    errors = [f for f in findings if f.severity == "error"]
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        console.print(f"[{colour}]{f.severity}[/] {f.key}: ", end="")
        console.print(f.message, markup=False, highlight=False)
    if errors:
        console.print(f"[bold red]refused[/]: {len(errors)} insecure setting(s) in {path}")
        raise typer.Exit(2)
    return cfg


@app.command()
def check(
    config: Path = typer.Argument(..., help="The YAML config to validate."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Check for this many worker processes."),
) -> None:
    """Validate a config and list insecure settings (exit 2 if it would be refused)."""
    cfg = _check(str(config), workers)
    console.print(f"[green]ok[/]: {config} — {len(cfg.routes)} route(s), {len(cfg.upstreams)} upstream(s)")


@app.command()
def serve(
    config: Path = typer.Option("bastion.yaml", "--config", "-c", help="The YAML config."),
    watch: bool = typer.Option(True, help="Reload when the config file changes."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        min=1,
        help="Worker processes sharing the listeners (default: `workers` in the config, else one per "
        "usable core, or 1 when a store is per process). 1 runs a single process.",
    ),
) -> None:
    """Run the gateway (SIGHUP or a file change reloads the config; SIGTERM stops it)."""
    _setup_logging(log_level)
    cfg = _check(str(config), workers)
    from bastion.config.lint import worker_count
    from bastion.gateway.server import GatewayServer

    count, why = worker_count(cfg, workers)
    logging.getLogger("bastion.server").info("%d worker process(es): %s", count, why)
    try:
        if count > 1:
            from bastion.gateway.workers import Supervisor

            server: Any = Supervisor(str(config), count, watch=watch)
        else:
            server = GatewayServer(str(config), watch=watch)
    except ConfigError as exc:
        console.print(str(exc), markup=False)
        raise typer.Exit(2)
    try:
        import uvloop

        uvloop.run(server.serve())
    except (OSError, RuntimeError) as exc:  # a port in use; a worker that could not start
        console.print(f"[red]cannot start[/]: {exc}", markup=False)
        raise typer.Exit(1)


keys_app = typer.Typer(help="API keys: make one, or hash one for the config.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(env: str = typer.Option("live", help="live or test: the key's prefix (bk_live_ / bk_test_).")) -> None:
    """Print a new random API key (once) and the hash to put in the config."""
    from bastion.auth.apikeys import hash_key, new_key

    key = new_key(env)
    typer.echo(f"key:  {key}\nhash: {hash_key(key)}")
    console.print("[yellow]The key is shown once; only the hash belongs in the config.[/]")


@keys_app.command("hash")
def keys_hash(key: str = typer.Argument(None, help="The key (read from stdin when omitted).")) -> None:
    """Print the config hash of an existing key."""
    import sys as _sys

    from bastion.auth.apikeys import hash_key

    value = key if key is not None else _sys.stdin.readline().strip()
    typer.echo(hash_key(value))


graphql_app = typer.Typer(help="GraphQL: persisted-query allowlists.", no_args_is_help=True)
app.add_typer(graphql_app, name="graphql")


@graphql_app.command("register")
def graphql_register(
    files: list[Path] = typer.Argument(..., help="Query files (*.graphql)."),
    output: Path = typer.Option(Path("allowlist.json"), "--output", "-o"),
) -> None:
    """Write an allowlist (sha256 → query) for `policies.graphql.allowlist`."""
    from bastion.graphql import GraphQLSyntaxError, parse
    from bastion.graphql.persisted import build_allowlist

    for f in files:
        try:
            parse(f.read_text())
        except (OSError, GraphQLSyntaxError) as exc:
            console.print(f"[red]{f}[/]: {exc}", markup=True, highlight=False)
            raise typer.Exit(2)
    entries = build_allowlist(files)
    existing = json.loads(output.read_text()) if output.exists() else {}
    existing.update(entries)
    output.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    console.print(f"[green]{len(entries)}[/] quer{'y' if len(entries) == 1 else 'ies'} registered in {output}")


def _token_app(config: Path):
    """The token service of a config (database, keys), without starting a gateway."""
    cfg = _check(str(config))
    if cfg.token_service is None:
        console.print(f"[red]{config}[/] has no token_service section")
        raise typer.Exit(2)
    from bastion.tokens.app import TokenApp

    return TokenApp(cfg.token_service)


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        console.print(f"[red]{text!r}[/]: a duration like 90d, 12h, 30m")
        raise typer.Exit(2)
    return int(text[:-1]) * units[text[-1]]


CONFIG_OPT = typer.Option(Path("bastion.yaml"), "--config", "-c", help="The gateway config (its token_service).")


@keys_app.command("create")
def keys_create(
    owner: str = typer.Option(..., help="Who the key belongs to (becomes the principal)."),
    scopes: str = typer.Option("", help="Comma-separated scopes."),
    tier: str | None = typer.Option(None, help="Rate-limit tier."),
    expires: str | None = typer.Option(None, help="Lifetime: 90d, 12h, 30m."),
    name: str = typer.Option("", help="A label."),
    env: str | None = typer.Option(None, help="live or test (default: token_service.api_key_env)."),
    config: Path = CONFIG_OPT,
) -> None:
    """Create a key in the token service's database and print it once."""
    svc = _token_app(config).service
    key, row = svc.create_key(owner, [x for x in scopes.split(",") if x], tier, _duration(expires), name, env)
    typer.echo(f"id:  {row.id}\nkey: {key}")
    console.print("[yellow]The key is shown once; only its hash is stored.[/]")


@keys_app.command("list")
def keys_list(owner: str | None = typer.Option(None), config: Path = CONFIG_OPT) -> None:
    """List keys (never the keys themselves: id, owner, last 4 characters, state)."""
    import datetime as dt

    from rich.table import Table

    rows = _token_app(config).service.list_keys(owner)
    table = Table()
    for col in ("id", "owner", "key", "scopes", "tier", "state", "expires", "last used"):
        table.add_column(col)

    def when(t: float | None) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M") if t else "—"

    now = time.time()
    for r in rows:
        state = "revoked" if r.revoked_at else ("expired" if r.expires_at and r.expires_at <= now else "active")
        table.add_row(
            r.id,
            r.owner,
            f"bk_{r.env}_…{r.last4}",
            r.scopes,
            r.tier or "",
            state,
            when(r.expires_at),
            when(r.last_used_at),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(...), config: Path = CONFIG_OPT) -> None:
    """Revoke a key now (gateways stop accepting it within their cache time)."""
    from bastion.tokens.service import ServiceError

    try:
        _token_app(config).service.revoke_key(key_id)
    except ServiceError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: str = typer.Argument(...),
    overlap: str | None = typer.Option(
        None, help="How long the old key keeps working (default: token_service.api_key_overlap_seconds)."
    ),
    config: Path = CONFIG_OPT,
) -> None:
    """Make a replacement key with the same grants; the old one works for the overlap, then expires."""
    from bastion.tokens.service import ServiceError

    ta = _token_app(config)
    seconds = _duration(overlap) if overlap else ta.config.api_key_overlap_seconds
    try:
        key, old, new = ta.service.rotate_key(key_id, float(seconds or 0))
    except ServiceError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(1)
    typer.echo(f"id:  {new.id}\nkey: {key}")
    console.print(f"[yellow]{old.id} keeps working until it expires in {seconds:.0f}s.[/]")


tokens_app = typer.Typer(help="The token service: secrets, signing keys, OAuth clients.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("secret")
def tokens_secret() -> None:
    """Print a new key_encryption_key (a Fernet key) for token_service."""
    from cryptography.fernet import Fernet

    typer.echo(Fernet.generate_key().decode())


@tokens_app.command("rotate-keys")
def tokens_rotate_keys(config: Path = CONFIG_OPT) -> None:
    """Start signing with a new key now; the old public key stays in the JWKS until its tokens expire."""
    kid = _token_app(config).keyring.rotate()
    console.print(f"new signing key {kid}")


@tokens_app.command("add-client")
def tokens_add_client(
    name: str = typer.Option(...),
    redirect_uri: list[str] = typer.Option([], "--redirect-uri", help="Exact redirect URI (repeat)."),
    grant: list[str] = typer.Option(
        ["authorization_code", "refresh_token"],
        "--grant",
        help="authorization_code, client_credentials, refresh_token (repeat).",
    ),
    scopes: str = typer.Option("", help="Comma-separated scopes the client may ask for."),
    public: bool = typer.Option(False, help="A public client (PKCE, no secret)."),
    config: Path = CONFIG_OPT,
) -> None:
    """Register an OAuth 2.0 client; prints its id and secret (once)."""
    from bastion.tokens.oauth import new_client

    try:
        client_id, secret = new_client(
            _token_app(config).sessions,
            name,
            list(redirect_uri),
            list(grant),
            [x for x in scopes.split(",") if x],
            public,
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2)
    typer.echo(f"client_id:     {client_id}")
    if secret:
        typer.echo(f"client_secret: {secret}")
        console.print("[yellow]The secret is shown once; only its hash is stored.[/]")


@app.command()
def scan(
    base_url: str = typer.Argument(..., help="The API's base URL (the scan stays on this host)."),
    openapi: str | None = typer.Option(None, "--openapi", help="Spec file or URL (default: looked for)."),
    graphql: str | None = typer.Option(None, "--graphql", help="GraphQL endpoint path, e.g. /graphql."),
    identity: list[str] = typer.Option(
        [], "--identity", help='NAME="Header: value" (two or more for BOLA/BFLA; the last one is the least privileged).'
    ),
    config: Path | None = typer.Option(None, "--config", help="scan.yaml: identities with login recipes, options."),
    checks: str | None = typer.Option(None, "--checks", help="Comma-separated check ids or prefixes (api2,api8-cors)."),
    skip: str | None = typer.Option(None, "--skip", help="Checks to leave out."),
    rate: float = typer.Option(10.0, "--rate", help="Requests per second, at most."),
    concurrency: int = typer.Option(4, "--concurrency"),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds per request."),
    allow_destructive: bool = typer.Option(
        False, "--allow-destructive", help="Also try PUT/DELETE and collection writes on shared data."
    ),
    fmt: list[str] = typer.Option(
        [],
        "--format",
        help="console, json, sarif, html, md (repeat; default: from the --output extension, else console).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        help="Report file: NAME.<format extension> for each "
        "format (report.json; report.json + report.sarif for two formats).",
    ),
    fail_on: str = typer.Option(
        "high",
        "--fail-on",
        help="Exit 1 when a finding is at least this severe (critical, high, medium, low; 'never').",
    ),
) -> None:
    """Scan an API for the OWASP API Security Top 10 (2023)."""
    import yaml as _yaml
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from bastion.scanner.model import SEVERITIES, Identity
    from bastion.scanner.reporters import FORMATS, infer_format, output_paths
    from bastion.scanner.runner import ScanOptions, run_sync

    fmt = list(fmt) or [infer_format(output) or "console"]
    bad = [f for f in fmt if f not in FORMATS]
    if bad or fail_on not in (*SEVERITIES, "never"):
        console.print(f"[red]unknown format {bad} or --fail-on {fail_on!r}[/]")
        raise typer.Exit(2)
    opts = ScanOptions(
        base_url,
        openapi,
        graphql,
        rate=rate,
        concurrency=concurrency,
        timeout=timeout,
        allow_destructive=allow_destructive,
        checks=[c for c in (checks or "").split(",") if c],
        skip=[c for c in (skip or "").split(",") if c],
    )
    if config is not None:
        doc = _yaml.safe_load(config.read_text()) or {}
        for ident in doc.get("identities") or []:
            if "login" in ident:
                opts.logins.append(
                    {
                        "name": ident["name"],
                        "subject": ident.get("subject"),
                        "username": ident.get("username"),
                        **ident["login"],
                    }
                )
            else:
                opts.identities.append(
                    Identity(
                        ident["name"], dict(ident.get("headers") or {}), ident.get("subject"), ident.get("username")
                    )
                )
        for key in ("openapi", "graphql", "rate", "concurrency", "timeout", "allow_destructive", "burst"):
            if key in doc:
                setattr(opts, key, doc[key])
        origins = doc.get("origins", [])
        if not isinstance(origins, list) or not all(isinstance(o, str) and "://" in o for o in origins):
            console.print("[red]scan.yaml[/]: origins is a list of origins such as https://app.example.com")
            raise typer.Exit(2)
        opts.origins = list(origins)
    for item in identity:
        name, _, header = item.partition("=")
        k, _, v = header.partition(":")
        if not name or not k or not v:
            console.print(f'[red]--identity {item!r}[/]: NAME="Header: value"')
            raise typer.Exit(2)
        opts.identities.append(Identity(name.strip(), {k.strip(): v.strip()}))
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        try:
            result = run_sync(opts, progress)
        except Exception as exc:  # an unreachable target, a failed login: say so, no traceback
            console.print(f"[red]scan failed[/]: {type(exc).__name__}: {exc}", markup=True, highlight=False)
            raise typer.Exit(2)
    paths = output_paths(output, fmt) if output is not None else {}
    for f in fmt:
        text = FORMATS[f](result)
        if output is None:
            if f == "console":
                console.print(text, markup=False, highlight=False, end="")
            else:
                sys.stdout.write(text)
        else:
            path = paths[f]
            path.write_text(text)
            console.print(f"{f} report: {path}")
    worst = [s for s in SEVERITIES if any(x.severity == s for x in result.findings)]
    if fail_on != "never" and worst and SEVERITIES.index(worst[0]) <= SEVERITIES.index(fail_on):
        raise typer.Exit(1)


@app.command("cors-audit")
def cors_audit(
    urls: list[str] = typer.Argument(None, help="Endpoint URLs (each is its own target)."),
    url_file: Path | None = typer.Option(None, "--urls", help="A file of URLs, one a line (# comments)."),
    openapi: str | None = typer.Option(None, "--openapi", help="Audit every path of this spec (file or URL) ..."),
    base_url: str | None = typer.Option(None, "--base-url", help="... against this base URL."),
    allowed_origin: list[str] = typer.Option(
        [],
        "--allowed-origin",
        help="An origin that must keep working (exact, or bastion's `https://*.example.com` pattern; repeat).",
    ),
    rate: float = typer.Option(10.0, "--rate", help="Requests per second, at most, per host."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight, at most, per host."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds per request."),
    fmt: list[str] = typer.Option(["console"], "--format", help="console, json, sarif, html, md (repeat)."),
    output: Path | None = typer.Option(None, "--output", help="File (one format) or base name (several)."),
    fail_on: str = typer.Option(
        "high",
        "--fail-on",
        help="Exit 1 when a finding is at least this severe (critical, high, medium, low; 'never').",
    ),
    header: list[str] = typer.Option(
        [],
        "--header",
        "-H",
        help="'Name: value' sent with every probe, e.g. credentials for endpoints behind auth "
        "(repeat; never written to a report). Origin and Access-Control-* are the audit's own.",
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Accept any TLS certificate (self-signed staging)."),
) -> None:
    """Audit the CORS behaviour of many endpoints at once (docs/scanner.md)."""
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from bastion.cors_audit.inputs import InputError, collect, probe_headers
    from bastion.cors_audit.origins import AllowList
    from bastion.cors_audit.reporters import FORMATS as AUDIT_FORMATS
    from bastion.cors_audit.runner import AuditOptions
    from bastion.cors_audit.runner import run_sync as audit_sync
    from bastion.scanner.model import SEVERITIES
    from bastion.scanner.reporters import output_paths

    bad = [f for f in fmt if f not in AUDIT_FORMATS]
    if bad or fail_on not in (*SEVERITIES, "never"):
        console.print(f"[red]unknown format {bad} or --fail-on {fail_on!r}[/]")
        raise typer.Exit(2)
    try:
        targets = collect(list(urls or []), url_file, openapi, base_url)
        AllowList(allowed_origin)
        extra = probe_headers(header)
    except (InputError, OSError) as exc:
        console.print(f"[red]cors-audit[/]: {exc}", markup=True, highlight=False)
        raise typer.Exit(2)
    except ValidationError as exc:
        console.print(f"[red]--allowed-origin[/]: {exc.errors()[0]['msg']}", markup=True, highlight=False)
        raise typer.Exit(2)
    opts = AuditOptions(
        targets,
        list(allowed_origin),
        rate=rate,
        concurrency=concurrency,
        timeout=timeout,
        headers=extra,
        verify=not insecure,
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        result = audit_sync(opts, progress)
    for f in fmt:
        if output is None:
            if f == "console":
                AUDIT_FORMATS[f](result, Console(width=None if sys.stdout.isatty() else 160))  # stdout; colour on a tty
            else:
                sys.stdout.write(AUDIT_FORMATS[f](result))
        else:
            text = AUDIT_FORMATS[f](result)
            path = output_paths(output, fmt)[f]  # the scanner's one naming rule
            path.write_text(text)
            console.print(f"{f} report: {path}")
    worst = result.worst()
    if fail_on != "never" and worst and SEVERITIES.index(worst) <= SEVERITIES.index(fail_on):
        raise typer.Exit(1)
    if any(e.error for e in result.endpoints):
        raise typer.Exit(2)


openapi_app = typer.Typer(help="OpenAPI specs: security findings.", no_args_is_help=True)
app.add_typer(openapi_app, name="openapi")


@openapi_app.command("lint")
def openapi_lint(
    spec: Path = typer.Argument(..., help="OpenAPI 3.0/3.1 document (YAML or JSON)."),
    fmt: str = typer.Option("console", "--format", help="console or json."),
    fail_on: str = typer.Option(
        "high",
        "--fail-on",
        help="Exit 1 when a finding is at least this severe (high, medium, low, info; 'never' to always exit 0).",
    ),
) -> None:
    """Security findings in a spec: missing security, keys in query strings, open objects, unbounded
    strings and arrays, plain-http servers."""
    from bastion.openapi.lint import SEVERITIES, at_or_above, lint_spec
    from bastion.openapi.spec import SpecError, load_spec

    if fail_on not in (*SEVERITIES, "never"):
        console.print(f"[red]--fail-on[/] is one of {', '.join(SEVERITIES)}, never")
        raise typer.Exit(2)
    try:
        findings = lint_spec(load_spec(spec))
    except SpecError as exc:
        console.print(f"[bold red]spec error[/]: {exc}", markup=True, highlight=False)
        raise typer.Exit(2)
    if fmt == "json":
        sys.stdout.write(json.dumps([f.as_dict() for f in findings], indent=2) + "\n")
    else:
        from rich.table import Table

        colours = {"high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}
        table = Table(title=f"{spec}: {len(findings)} finding(s)")
        for col in ("severity", "rule", "where", "message"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(f"[{colours[f.severity]}]{f.severity}[/]", f.rule, f.where, f.message)
        console.print(table)
        counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
        console.print(" · ".join(f"{n} {s}" for s, n in counts.items()))
    if fail_on != "never" and at_or_above(findings, fail_on):
        raise typer.Exit(1)


certs_app = typer.Typer(help="Certificates for development.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")


@certs_app.command("dev")
def certs_dev(
    out: Path = typer.Option(Path("certs"), "--out", "-o", help="Directory to write into."),
    host: list[str] = typer.Option(["localhost", "127.0.0.1", "::1"], "--host", help="Names the certificate covers."),
    days: int = typer.Option(30, help="Validity."),
    client: bool = typer.Option(False, help="Also a client certificate (for mTLS)."),
) -> None:
    """A development CA and a certificate it signed (never for production)."""
    from bastion.certs import make_dev_certs

    files = make_dev_certs(out, host, days, client)
    for name, path in files.items():
        console.print(f"{name:10} {path}", highlight=False)
    console.print(
        f"[yellow]Development only.[/] Trust ca.pem in your client: curl --cacert {files['ca']} https://localhost:8443/"
    )


@app.command("config-schema")
def config_schema(output: Path | None = typer.Option(None, "--output", "-o")) -> None:
    """Print the JSON Schema of the config file (for editor autocompletion)."""
    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bastion gateway configuration"
    text = json.dumps(schema, indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        typer.echo(text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOUR = """\
[bold]bastion demo[/] — gateway on [cyan]{gw}[/], demo API on {up} (direct, unprotected)
audit log: {audit}

Try these (each shows one protection):
  [green]allowed[/]  curl -i {gw}/users/1
           → the user, with X-Request-Id, X-Response-Time and security headers; no Server header
  [green]echo[/]     curl -s {gw}/echo -H 'X-Forwarded-For: 6.6.6.6' | python3 -m json.tool
           → the upstream sees X-Forwarded-For 127.0.0.1: a client cannot choose its address
  [red]blocked[/]  curl -i {gw}/admin/settings
           → 403 problem+json: the admin area is only reachable from 10.0.0.0/8
  [red]blocked[/]  curl -i --path-as-is '{gw}/users/../admin/settings'   and   '{gw}/%61dmin/settings'
           → the path is normalised first, so tricks land on the admin route and are refused
  [red]blocked[/]  curl -i '{gw}/users/%2e%2e%2fadmin'
           → 400: an encoded '/' is never accepted
  [red]blocked[/]  curl -i -X POST {gw}/echo --data-binary @/dev/zero -H 'Content-Length: 100000'
           → 413: the body limit is 16 KiB (also counted while a chunked body streams)
  [green]CORS[/]     curl -i -X OPTIONS {gw}/users -H 'Origin: https://app.example.com' -H 'Access-Control-Request-Method: GET'
           → 204 preflight answered by the gateway
  [red]CORS[/]     curl -i {gw}/users -H 'Origin: https://app.example.com.evil.com'
           → no Access-Control-Allow-Origin (the upstream's own reflection is dropped)
  [red]405[/]      curl -i -X DELETE {gw}/users
           → Allow: GET, HEAD
  [red]401[/]      curl -i {gw}/users/1/orders
           → 401 with WWW-Authenticate; with the demo API key it passes:
           curl -i {gw}/users/1/orders -H 'X-API-Key: bk_test_demo_key_for_the_bastion_tour_only_0000'
           (the upstream sees X-Bastion-Subject; a client sending that header itself is ignored)
  [red]429[/]      for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' {gw}/users; done
           → 200 ×5 then 429 with Retry-After and RateLimit headers (5/minute on /users)
"""


@app.command()
def demo(
    port: int = typer.Option(8000, help="Gateway port (0 = any free port)."),
    upstream_port: int = typer.Option(0, help="Demo API port (0 = any free port)."),
    admin_port: int = typer.Option(0, help="Admin listener port: dashboard, metrics (0 = any free port)."),
    run_scan: bool = typer.Option(
        True,
        "--scan/--no-scan",
        help="Scan the demo API directly and through the gateway once it is up, and print both summaries side by side.",
    ),
) -> None:
    """Start the demo API and a gateway in front of it (REST, OpenAPI, token service, GraphQL,
    dashboard), print a tour, and scan the API with and without the gateway."""
    _setup_logging("warning")
    import secrets

    import uvicorn
    from cryptography.fernet import Fernet

    from bastion.demo import tour
    from bastion.demo.upstream import app as demo_app
    from bastion.gateway.server import GatewayServer

    gw_port = port or _free_port()
    up_port = upstream_port or _free_port()
    adm_port = admin_port or _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bastion-demo-"))
    cfg_path = workdir / "bastion.yaml"
    cfg_path.write_text(resources.files("bastion.demo").joinpath("bastion.yaml").read_text())
    (workdir / "openapi.json").write_text(resources.files("bastion.demo").joinpath("openapi.json").read_text())
    admin_token = secrets.token_urlsafe(24)
    os.environ["DEMO_GATEWAY_PORT"] = str(gw_port)
    os.environ["DEMO_UPSTREAM_PORT"] = str(up_port)
    os.environ["DEMO_ADMIN_PORT"] = str(adm_port)
    os.environ["DEMO_ADMIN_TOKEN"] = admin_token
    os.environ["DEMO_KEK"] = Fernet.generate_key().decode()
    os.environ["DEMO_DATABASE"] = f"sqlite:///{workdir / 'identity.db'}"
    audit = workdir / "audit.log"
    os.environ["DEMO_AUDIT_LOG"] = str(audit)

    async def main() -> None:
        upstream = uvicorn.Server(
            uvicorn.Config(demo_app, host="127.0.0.1", port=up_port, log_config=None, access_log=False, lifespan="off")
        )
        upstream.capture_signals = lambda: _null()  # type: ignore[method-assign]
        up_task = asyncio.create_task(upstream.serve())
        while not upstream.started:
            await asyncio.sleep(0.02)

        gw, up = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{up_port}"

        def ready(bound) -> None:
            console.print(TOUR.format(gw=gw, up=up, audit=audit), soft_wrap=True, highlight=False)
            console.print(
                tour.faces(gw, up, f"http://127.0.0.1:{adm_port}", admin_token),
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
            console.print("Ctrl-C stops the gateway and the demo API.", highlight=False)
            if run_scan:
                console.print(
                    "Scanning the demo API for the OWASP API Top 10, directly and through the gateway "
                    "(a minute or two; the comparison follows)...",
                    highlight=False,
                )
                import threading

                threading.Thread(target=scan, daemon=True).start()  # Ctrl-C does not wait for it

        def scan() -> None:
            try:
                direct, through, reports = tour.run_scans(gw, up, workdir)
            except Exception as exc:  # the demo goes on without the comparison
                console.print(f"[red]scan failed[/]: {type(exc).__name__}: {exc}", highlight=False)
                return
            console.print(tour.side_by_side(direct, through), width=max(console.width, 120))
            console.print(f"HTML reports: {reports['direct']}  {reports['gateway']}", highlight=False)

        gateway = GatewayServer(str(cfg_path), watch=False, on_ready=ready)
        try:
            await gateway.serve()
        finally:
            upstream.should_exit = True
            await up_task
            console.print("stopped.")

    import uvloop

    uvloop.run(main())


def _null():
    import contextlib

    return contextlib.nullcontext()


@app.command("init")
def init_config(
    openapi: Path | None = typer.Option(None, "--openapi", help="An OpenAPI 3.0/3.1 spec (YAML or JSON)."),
    graphql: str | None = typer.Option(None, "--graphql", help="A GraphQL endpoint URL (introspected once)."),
    upstream: str | None = typer.Option(
        None, "--upstream", help="The API's base URL (for --graphql: default the endpoint's origin)."
    ),
    output: Path = typer.Option(Path("bastion.yaml"), "--output", "-o", help="Where to write the config."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write a commented starter bastion.yaml from an OpenAPI spec or a GraphQL endpoint."""
    from bastion.init import InitError, graphql_starter, openapi_starter

    if (openapi is None) == (graphql is None):
        console.print("[red]give one of --openapi SPEC (with --upstream URL) or --graphql URL[/]")
        raise typer.Exit(2)
    try:
        if openapi is not None:
            if not upstream:
                console.print("[red]--openapi needs --upstream URL[/] (where the API behind the spec listens)")
                raise typer.Exit(2)
            starter = openapi_starter(openapi, upstream, output)
        else:
            starter = graphql_starter(graphql, upstream, output)  # type: ignore[arg-type]
    except InitError as exc:
        console.print(f"[red]cannot write a starter[/]: {exc}", markup=False, highlight=False)
        raise typer.Exit(2)
    files = {output: starter.text, **starter.extra_files}
    existing = [p for p in files if p.exists()]
    if existing and not force:
        console.print(f"[red]not overwriting[/] {', '.join(map(str, existing))} (--force to replace)")
        raise typer.Exit(2)
    for p, text in files.items():
        p.write_text(text)
        console.print(f"[green]wrote[/] {p}")
    for line, marker, what in starter.todos:
        console.print(f"  {output}:{line}: {marker}: {what}", markup=False, highlight=False, soft_wrap=True)
    for note in starter.notes:
        console.print("[yellow]note[/]: ", end="")
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(starter.todos)} TODO(s) to fill, then: bastion check {output}", highlight=False)


if __name__ == "__main__":
    app()
