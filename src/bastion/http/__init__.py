"""HTTP building blocks, one concept a module: `paths` (normalisation), `headers` (hygiene,
cookies, media types), `networks` (addresses, CIDR sets), `messages` (Request, Response),
`problems` (problem+json). Everything is importable from `bastion.http` as before."""

from bastion.http.headers import Headers, identity_header_value, is_json, media_type, parse_cookies, unsafe_header
from bastion.http.messages import BodyTimeout, BodyTooLarge, ClientDisconnected, ClientGone, Request, Response
from bastion.http.networks import IPAddress, Network, NetworkSet, check_networks, ip_text, parse_ip
from bastion.http.paths import BadPath, alternative_readings, ascii_skeleton, normalise_path
from bastion.http.problems import PROBLEM_BASE, TITLES, body_problem, problem

__all__ = [
    "PROBLEM_BASE",
    "TITLES",
    "BadPath",
    "BodyTimeout",
    "BodyTooLarge",
    "ClientDisconnected",
    "ClientGone",
    "Headers",
    "IPAddress",
    "Network",
    "NetworkSet",
    "Request",
    "Response",
    "alternative_readings",
    "ascii_skeleton",
    "body_problem",
    "check_networks",
    "identity_header_value",
    "ip_text",
    "is_json",
    "media_type",
    "normalise_path",
    "parse_cookies",
    "parse_ip",
    "problem",
    "unsafe_header",
]
