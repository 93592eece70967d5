"""The audit line's query: a secret parameter's value never appears in it, whatever separates the
parameters (`&`, or `;` as some servers read it), however the name is spelled (case, percent
escapes) and whatever the value looks like."""

from __future__ import annotations

from urllib.parse import quote, unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.pipeline import PolicyEnv
from bastion.policies.audit import DEFAULT_SECRET_PARAMS, Audit, AuditConfig

SECRET = "s3cr3tVALUE"
policy = Audit(AuditConfig(output="stderr"), PolicyEnv())


def spellings(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            name,
            name.upper(),
            name.capitalize(),
            quote(name[0], safe="").replace(name[0], "%%%02X" % ord(name[0])) + name[1:],
        ]
    )


pairs = st.one_of(
    st.sampled_from(DEFAULT_SECRET_PARAMS).flatmap(spellings).map(lambda n: (n, True)),
    st.sampled_from(["q", "page", "a", "x"]).map(lambda n: (n, False)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(pairs, st.sampled_from(["&", ";"]), st.sampled_from([SECRET, quote(SECRET), "%73" + SECRET[1:]])),
        min_size=1,
        max_size=6,
    )
)
def test_a_secret_parameter_never_reaches_the_audit_line(items):
    parts, secrets = [], False
    for (name, secret), sep, value in items:
        parts.append(sep if parts else "")
        parts.append(f"{name}={value if secret else '1'}")
        secrets = secrets or secret
    query = "".join(parts).encode()
    logged = policy.redact_query(query)
    assert SECRET not in unquote(unquote(logged)), (query, logged)
    if secrets:
        assert "[REDACTED]" in logged
