"""WAF rules: the OWASP Core Rule Set run by ModSecurity v3 (libmodsecurity), on the normalised
path, the query, the headers and the body. Detect-only or block; a paranoia level; per route.

A real engine with a maintained rule set rather than hand-written regexes: CRS's anomaly
scoring and transformations catch encodings and evasions that a regex list would not, and its
false positives are known and tunable (`exclude_rules`). Measured cost: docs/waf.md.
"""

from __future__ import annotations

import glob
import os
from typing import Any, ClassVar, Literal

from pydantic import Field

from bastion.http import BodyTimeout, BodyTooLarge, Request, Response, body_problem, ip_text, problem
from bastion.pipeline import Context, Policy, PolicyConfig

CRS_RULES = "/usr/share/modsecurity-crs/rules"
# Files that need what this build lacks (GeoIP) or target one application's quirks.
_SKIP = ("REQUEST-910-IP-REPUTATION", "-EXCLUSION-RULES.conf")


class WafConfig(PolicyConfig):
    mode: Literal["detect", "block"] = Field("block", description="block: 403; detect: only the audit line.")
    paranoia_level: int = Field(1, ge=1, le=4, description="CRS paranoia level (higher: more rules, more false positives).")
    anomaly_threshold: int = Field(5, ge=1, description="CRS inbound anomaly score that blocks.")
    rules_dir: str = Field(CRS_RULES, description="Directory of the CRS rule files (Debian: modsecurity-crs).")
    exclude_rules: list[int] = Field(default_factory=list, description="Rule ids to turn off (false positives).")
    inspect_body: bool = Field(True, description="Inspect request bodies (they are then read before forwarding).")
    max_body: int = Field(128 * 1024, ge=0, description="Larger bodies are refused (413) in block mode and "
                          "pass uninspected in detect mode.")


def _engine(config: WafConfig) -> tuple[Any, Any]:
    try:
        import libmodsecurity
    except ImportError:
        raise ValueError("the waf policy needs the libmodsecurity package (pip install libmodsecurity)") from None
    files = sorted(f for f in glob.glob(os.path.join(config.rules_dir, "REQUEST-*.conf"))
                   if not any(s in f for s in _SKIP))
    if not files:
        raise ValueError(f"no OWASP CRS rules in {config.rules_dir} (Debian: apt-get install modsecurity-crs)")
    engine = libmodsecurity.ModSecurity()
    rules = libmodsecurity.RulesSet()
    base = f"""
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit {max(config.max_body, 1)}
SecRequestBodyLimitAction ProcessPartial
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/(?:[a-z0-9.+-]+\\+)?json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/x-www-form-urlencoded" "id:200002,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=URLENCODED"
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={config.paranoia_level}"
SecAction "id:900110,phase:1,nolog,pass,t:none,setvar:tx.inbound_anomaly_score_threshold={config.anomaly_threshold},setvar:tx.outbound_anomaly_score_threshold=4"
SecAction "id:900990,phase:1,nolog,pass,t:none,setvar:tx.crs_setup_version=334"
"""
    if rules.load(base) < 0:
        raise ValueError(f"ModSecurity setup failed: {rules.get_parser_error()}")
    for f in files:
        if rules.load_from_uri(f) < 0:
            raise ValueError(f"ModSecurity could not load {f}: {rules.get_parser_error()}")
    if config.exclude_rules:
        ids = " ".join(str(i) for i in config.exclude_rules)
        if rules.load(f"SecRuleRemoveById {ids}") < 0:
            raise ValueError(f"bad exclude_rules: {rules.get_parser_error()}")
    return engine, rules


class Waf(Policy):
    name: ClassVar[str] = "waf"
    priority: ClassVar[int] = 500  # last in the request phase: it sees what everything else let through
    Config = WafConfig

    def __init__(self, config: WafConfig, env) -> None:
        super().__init__(config, env)
        self.engine, self.rules = _engine(config)
        self.block = config.mode == "block"
        self.inspect_body = config.inspect_body
        self.max_body = config.max_body
        self.blocked = 0

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        body = b""
        if self.inspect_body and req.has_body():
            length = req.content_length() if req.header(b"content-length") else None
            if length is not None and length > self.max_body:
                if self.block:
                    return problem(413, "body-too-large", f"bodies over {self.max_body} bytes cannot be inspected",
                                   request_id=req.request_id)
            else:
                try:
                    body = await req.read_body()
                except (BodyTooLarge, BodyTimeout) as exc:
                    return body_problem(exc, req)
        matched: list[tuple[int, str]] = []
        self.engine.set_rule_message_callback(lambda m: matched.append((m.rule_id, m.message)))
        with self.engine.transaction(self.rules, req.request_id or None) as t:
            t.process_connection(ip_text(req.client_ip) if req.client_ip else "0.0.0.0", 0, "127.0.0.1", 0)
            uri = req.path + ("?" + req.query.decode("latin-1") if req.query else "")
            t.process_uri(uri, req.method, "1.1")
            for k, v in req.headers:
                t.add_request_header(k.decode("latin-1"), v.decode("latin-1"))
            t.process_request_headers()
            if body:
                t.append_request_body(body)
            t.process_request_body()
            it = t.intervention()
        # the attack rules that matched, not CRS's bookkeeping (anomaly evaluation 949xxx, setup 9000xx)
        rules = sorted({rid for rid, _ in matched if 910000 <= rid < 949000})
        disruptive = it is not None and it.disruptive
        if not matched:
            return None
        ctx.log_fields["waf"] = {"rules": rules, "blocked": disruptive and self.block,
                                 "messages": [msg for rid, msg in matched if rid in rules][:5]}
        if disruptive and self.block:
            self.blocked += 1
            resp = problem(403, "waf-blocked", "the request was refused by the web application firewall",
                           request_id=req.request_id, extra={"rules": rules})
            resp.reason = "waf rules " + ",".join(str(r) for r in rules)
            return resp
        return None
