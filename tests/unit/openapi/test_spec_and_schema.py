"""Loading specs (errors name the place), converting schemas, deserialising parameters."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bastion.openapi.operations import Limits, compile_operations, prune
from bastion.openapi.params import Shape, deserialise_query, deserialise_simple
from bastion.openapi.spec import SpecError, load_spec

MINIMAL = """
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /things/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, schema: %s}
      responses: {"200": {description: ok}}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_invalid_document_names_the_problem(tmp_path):
    p = write(tmp_path, "openapi: 3.0.3\npaths: {}\n")
    with pytest.raises(SpecError, match="not a valid OpenAPI document.*info"):
        load_spec(p)


def test_swagger_2_is_refused_clearly(tmp_path):
    p = write(tmp_path, "swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}\n")
    with pytest.raises(SpecError, match="only 3.0 and 3.1"):
        load_spec(p)


def test_duplicate_keys_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="duplicate key 'paths'"):
        load_spec(write(tmp_path, "openapi: 3.0.3\npaths: {}\npaths: {}\n"))
    with pytest.raises(SpecError, match="neither valid JSON nor YAML"):
        load_spec(write(tmp_path, "openapi: [3.0\n", "bad.yaml"))


def test_missing_file_and_missing_ref_target(tmp_path):
    with pytest.raises(SpecError, match="cannot be read"):
        load_spec(tmp_path / "nope.yaml")
    p = write(tmp_path, MINIMAL % '{$ref: "other.yaml#/Id"}')
    (tmp_path / "other.yaml").write_text("Nope: {type: string}\n")
    with pytest.raises(SpecError):
        compile_operations(load_spec(p, validate=False))


def test_remote_refs_are_not_fetched(tmp_path):
    p = write(tmp_path, MINIMAL % '{$ref: "https://example.com/id.yaml"}')
    with pytest.raises(SpecError, match="remote references"):
        compile_operations(load_spec(p, validate=False))


def test_matrix_path_parameters_are_refused(tmp_path):
    text = MINIMAL.replace("in: path,", "in: path, style: matrix,") % "{type: string}"
    with pytest.raises(SpecError, match="matrix style"):
        compile_operations(load_spec(write(tmp_path, text)))


def test_partial_segment_templates_are_refused(tmp_path):
    text = MINIMAL.replace("/things/{id}", "/things/{id}.json") % "{type: string}"
    with pytest.raises(SpecError, match="whole-segment"):
        compile_operations(load_spec(write(tmp_path, text), validate=False))


def test_bad_pattern_fails_at_load(tmp_path):
    p = write(tmp_path, MINIMAL % '{type: string, pattern: "(unclosed"}')
    with pytest.raises(SpecError, match=r"spec.yaml#/paths//things/\{id\}/get/parameters/0"):
        load_spec(p)  # the spec validator already says where
    with pytest.raises(SpecError, match="cannot be compiled"):
        compile_operations(load_spec(p, validate=False))


def test_int32_bounds(tmp_path):
    op = compile_operations(load_spec(write(tmp_path, MINIMAL % "{type: integer, format: int32}")))["GET /things/{id}"]
    ok = dict(query=b"", headers={}, cookies={}, content_type=None, body=None)
    assert op.check_request(path_params={"id": "2147483647"}, **ok)[0] == 0
    assert op.check_request(path_params={"id": "2147483648"}, **ok)[0] == 422


@pytest.mark.parametrize(
    "text,shape,explode,expected",
    [
        ("1,2,3", Shape(frozenset({"array"}), Shape(frozenset({"integer"}))), False, [1, 2, 3]),
        (
            "a,1,b,2",
            Shape(frozenset({"object"}), None, {"a": Shape(frozenset({"integer"}))}),
            False,
            {"a": 1, "b": "2"},
        ),
        ("a=1,b=x", Shape(frozenset({"object"}), None, {"a": Shape(frozenset({"integer"}))}), True, {"a": 1, "b": "x"}),
        ("true", Shape(frozenset({"boolean"})), False, True),
        ("yes", Shape(frozenset({"boolean"})), False, "yes"),
        ("", Shape(frozenset({"array"})), False, []),
    ],
)
def test_simple_style(text, shape, explode, expected):
    assert deserialise_simple(text, shape, explode) == expected


def test_query_styles():
    ints = Shape(frozenset({"array"}), Shape(frozenset({"integer"})))
    pairs = [("ids", "1"), ("ids", "2"), ("p", "3|4"), ("s", "5 6")]
    assert deserialise_query("ids", pairs, ints, "form", True) == (True, [1, 2])
    assert deserialise_query("p", pairs, ints, "pipeDelimited", False) == (True, [3, 4])
    assert deserialise_query("s", pairs, ints, "spaceDelimited", False) == (True, [5, 6])
    assert deserialise_query("missing", pairs, ints, "form", True) == (False, None)
    obj = Shape(frozenset({"object"}), None, {"lat": Shape(frozenset({"number"}))})
    assert deserialise_query("pos", [("pos[lat]", "1.5"), ("pos[lng]", "x")], obj, "deepObject", True) == (
        True,
        {"lat": 1.5, "lng": "x"},
    )
    assert deserialise_query("pos", [("lat", "2")], obj, "form", True) == (True, {"lat": 2})


def test_limits_walk_is_iterative():
    from bastion.openapi.operations import _limits

    deep: list = []
    cur = deep
    for _ in range(100_000):  # far deeper than Python's recursion limit
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    errs = _limits(deep, Limits(max_depth=10))
    assert errs[0].rule == "max_depth"


def test_prune_keeps_declared_and_open_maps():
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "pw": {"type": "string", "writeOnly": True},
            "m": {"type": "object", "additionalProperties": {"type": "integer"}},
            "items": {"type": "array", "items": {"$ref": "#/$defs/I"}},
        },
        "$defs": {"I": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    value = {"a": "1", "pw": "secret", "zz": 1, "m": {"k": 1}, "items": [{"x": 1, "y": 2}]}
    out, removed = prune(value, schema)
    assert out == {"a": "1", "m": {"k": 1}, "items": [{"x": 1}]}
    assert removed == 3
