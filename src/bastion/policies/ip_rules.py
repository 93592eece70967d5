"""IP rules: allow and block lists of CIDRs (IPv4 and IPv6) on the client address."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from bastion.http import IPAddress, NetworkSet, Request, Response, check_networks, problem
from bastion.pipeline import Context, Policy, PolicyConfig


class IpRulesConfig(PolicyConfig):
    allow: list[str] = Field(
        default_factory=list,
        description="If not empty, only clients in these networks pass (CIDR or address).",
    )
    block: list[str] = Field(
        default_factory=list, description="Clients in these networks are refused (wins over allow)."
    )
    status: int = Field(403, description="Status for a refused client (403 or 404).")

    @field_validator("allow", "block")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return check_networks(values)

    @field_validator("status")
    @classmethod
    def _status(cls, v: int) -> int:
        if v not in (403, 404):
            raise ValueError("status must be 403 or 404")
        return v


_NO_ADDRESS = object()


class IpRules(Policy[IpRulesConfig]):
    name: ClassVar[str] = "ip_rules"
    priority: ClassVar[int] = 900
    Config = IpRulesConfig
    CACHE_SIZE = 65536

    def __new__(cls, config: IpRulesConfig | None = None, env: Any = None) -> IpRules:
        """No network listed: every address passes, and the policy is built without its request
        phase (the pipeline never calls it: a step costs ~1k instructions whatever it does)."""
        if cls is IpRules and config is not None and not config.allow and not config.block:
            cls = _NoRules
        return super().__new__(cls)

    def __init__(self, config: IpRulesConfig, env) -> None:
        super().__init__(config, env)
        self.allow = NetworkSet(config.allow)
        self.block = NetworkSet(config.block)
        self.status = config.status
        # client address -> why it is refused, "" when it passes: a function of this config and
        # the address alone (a reload builds a new policy); bounded, clients choose addresses
        self._verdicts: dict[IPAddress | None, str] = {}
        # the last address seen and its verdict, as one tuple (a thread never reads one without
        # the other); it starts with no address at all (None is one a request can have)
        self._last: tuple[object, str] = (_NO_ADDRESS, "")

    def verdict(self, ip: IPAddress | None) -> str:
        """Why `ip` is refused, or "" when it passes (not remembered: `on_request_sync` does)."""
        if ip in self.block:
            return "client address is blocked"
        if self.allow and ip not in self.allow:
            return "client address is not in the allowed networks"
        return ""

    def on_request_sync(self, req: Request, ctx: Context) -> Response | None:
        ip = req.client_ip
        last = self._last  # the same address object as the last request (parse_ip's cache): no hashing
        if last[0] is ip:
            reason = last[1]
        else:
            known = self._verdicts.get(ip)
            if known is None:
                known = self.verdict(ip)
                if len(self._verdicts) >= self.CACHE_SIZE:
                    self._verdicts.clear()
                self._verdicts[ip] = known
            reason = known
            self._last = (ip, reason)  # (held: its id cannot be another address's while it is here)
        if not reason:
            return None
        if self.status == 404:
            return problem(
                404, "not-found", "no route matches this request", request_id=req.request_id, stopped_by=self.name
            )
        resp = problem(403, "ip-forbidden", reason, request_id=req.request_id)
        resp.reason = reason
        return resp


class _NoRules(IpRules):
    """IP rules that list no network: in no phase."""

    on_request_sync = Policy.on_request_sync  # type: ignore[assignment]  # (declared wider: it returns None)
