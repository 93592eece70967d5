"""The policy registry: adding a policy is one module and one line here."""

from bastion.pipeline import Policy
from bastion.policies.audit import Audit
from bastion.policies.auth import Auth
from bastion.policies.authorization import Authorization
from bastion.policies.body_limit import BodyLimit
from bastion.policies.cors import Cors
from bastion.policies.error_masking import ErrorMasking
from bastion.policies.field_encryption import FieldEncryption
from bastion.policies.graphql import GraphQLGuard
from bastion.policies.ip_rules import IpRules
from bastion.policies.login import Login
from bastion.policies.method_field import MethodField
from bastion.policies.metrics import Metrics
from bastion.policies.rate_limit import RateLimit
from bastion.policies.request_id import RequestId
from bastion.policies.response_body import ResponseBody
from bastion.policies.response_filter import ResponseFilter
from bastion.policies.security_headers import SecurityHeaders
from bastion.policies.ssrf import Ssrf
from bastion.policies.tracing import Tracing
from bastion.policies.validation import Validation
from bastion.policies.versioning import Versioning
from bastion.policies.waf import Waf

REGISTRY: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        RequestId,
        IpRules,
        BodyLimit,
        Cors,
        Versioning,
        Login,
        Auth,
        Authorization,
        GraphQLGuard,
        RateLimit,
        MethodField,
        Validation,
        Ssrf,
        Waf,
        FieldEncryption,
        ResponseFilter,
        ResponseBody,
        ErrorMasking,
        SecurityHeaders,
        Audit,
        Metrics,
        Tracing,
    )
}
