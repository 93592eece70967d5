"""Duplicate-field counting against a brute-force oracle that expands every fragment."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.graphql import analyze, parse
from bastion.graphql.document import Document, Field, Inline, Spread


def _oracle(doc: Document) -> int:
    """Expand spreads and inline fragments naively (exponential, fine on small documents),
    then count response keys in every selection set."""

    def flat(selections, seen: tuple[str, ...]) -> list[Field]:
        out: list[Field] = []
        for s in selections:
            if isinstance(s, Field):
                out.append(s)
            elif isinstance(s, Spread):
                assert s.name not in seen
                out += flat(doc.fragments[s.name].selections, (*seen, s.name))
            else:
                assert isinstance(s, Inline)
                out += flat(s.selections, seen)
        return out

    def most(selections) -> int:
        fields = flat(selections, ())
        best = max(Counter(f.alias or f.name for f in fields).values())
        for f in fields:
            if f.selections:
                best = max(best, most(f.selections))
        return best

    return most(doc.operations[0].selections)


_NAMES = ["a", "b", "title"]


@st.composite
def _selection(draw, depth: int, frags: int) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["field", "field", "alias", "spread", "inline", "nested"]))
        if kind == "spread" and frags:
            parts.append(f"...F{draw(st.integers(0, frags - 1))}")
        elif kind == "inline" and depth < 3:
            parts.append(f"... on T {{ {draw(_selection(depth + 1, frags))} }}")
        elif kind == "nested" and depth < 3:
            parts.append(f"{draw(st.sampled_from(_NAMES))} {{ {draw(_selection(depth + 1, frags))} }}")
        elif kind == "alias":
            parts.append(f"{draw(st.sampled_from(_NAMES))}: {draw(st.sampled_from(_NAMES))}")
        else:
            parts.append(draw(st.sampled_from(_NAMES)))
    return " ".join(parts)


@st.composite
def _documents(draw) -> str:
    n = draw(st.integers(0, 3))
    # fragment i may spread only fragments after it: no cycles, and every fragment exists
    fixed = []
    for i in range(n):
        body = draw(_selection(1, n))
        for j in range(i + 1):  # fragment i spreads only later ones: no cycle
            body = body.replace(f"...F{j}", "title")
        fixed.append(f"fragment F{i} on T {{ {body} }}")
    return "query { " + draw(_selection(0, n)) + " } " + " ".join(fixed)


@settings(max_examples=300, deadline=None)
@given(_documents())
def test_duplicate_count_matches_full_expansion(text):
    doc = parse(text)
    assert analyze(doc).duplicate_fields == _oracle(doc), text


def test_spread_three_times_counts_three_and_bombs_stay_linear():
    assert analyze(parse("{ a { ...F ...F ...F } } fragment F on T { title }")).duplicate_fields == 3
    assert analyze(parse("{ a { title t: title title: title x: a } }")).duplicate_fields == 2
    assert analyze(parse("{ " + "title " * 500 + "}")).duplicate_fields == 500
    frags = "".join(f"fragment F{i} on T {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40))
    r = analyze(parse("{ a { ...F0 } } " + frags + " fragment F40 on T { title }"))  # 2**40 if expanded
    assert r.duplicate_fields == 2**40
