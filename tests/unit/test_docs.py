import re
from pathlib import Path

from pydantic import BaseModel

from bastion.config.docs import _models_in, render
from bastion.config.model import GatewayConfig
from bastion.policies import REGISTRY


def test_config_reference_is_up_to_date():
    doc = Path(__file__).parents[2] / "docs" / "config.md"
    assert doc.read_text() == render(), "run: python -m bastion.config.docs > docs/config.md"


def _tables(text: str) -> dict[str, list[str]]:
    """Section heading -> the keys of its table, in order."""
    out: dict[str, list[str]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            out[heading] = []
        elif heading is not None and line.startswith("| `"):
            out[heading].append(line.split("`")[1])
    return out


def _reachable() -> list[type[BaseModel]]:
    todo: list[type[BaseModel]] = [GatewayConfig, *(cls.Config for cls in REGISTRY.values())]
    seen: list[type[BaseModel]] = []
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += [m for m, _, _ in _models_in(field.annotation)]
            if field.discriminator is not None:
                todo += [m for m, _, _ in _models_in(field.annotation, "", field.discriminator)]
    return [m for m in seen if m.__name__ != "PoliciesConfig"]


def test_every_model_of_the_config_has_its_table():
    """Unions and discriminated unions included: each model, wherever it is nested, is documented
    with all its keys."""
    tables = list(_tables(render()).values())
    missing = [m.__name__ for m in _reachable() if list(m.model_fields) not in tables]
    assert not missing


def test_types_read_as_yaml_not_python():
    text = render()
    types = [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| `")]
    assert types
    for t in types:
        assert not re.search(r"Annotated|typing|<class|Literal\[|Optional|FieldInfo|bastion\.|\bstr\b|\bdict\[", t), t


def test_jwt_scheme_keys_are_documented():
    tables = _tables(render())
    jwt = tables["`policies.auth.schemes.<name>` with `type: jwt`"]
    assert "issuers" in jwt
    issuers = tables["`policies.auth.schemes.<name>.issuers[]`"]
    for key in ("issuer", "algorithms", "keys", "jwks_url", "jwks_file", "required_claims"):
        assert key in issuers
    keys = tables["`policies.auth.schemes.<name>.issuers[].keys[]`"]
    assert {"kid", "pem", "secret", "secret_base64"} <= set(keys)
    for kind in ("api_key", "introspection", "mtls"):
        assert f"`policies.auth.schemes.<name>` with `type: {kind}`" in tables
    assert "`exp`, `iat`, `sub`" in render()  # required_claims says its default
