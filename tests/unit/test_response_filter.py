import pytest

from bastion.pipeline import PolicyEnv
from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig, _has_card, luhn


@pytest.mark.parametrize(
    "text,card",
    [
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("4111111111111111", True),
        ("amex 3782 822463 10005", True),
        ("x 4111 1111 1111 1111 2222 y", True),
        ("1234 5678 9012 3456", False),
        ("order 1234567890123456789012345", False),
        ("id 42, 7", False),
        ("tel +1 555 0100", False),
    ],
)
def test_card_detection(text, card):
    assert _has_card(text) is card


def test_luhn():
    assert luhn("79927398713") and not luhn("79927398710")


def test_deep_documents_do_not_hit_the_recursion_limit():
    p = ResponseFilter(ResponseFilterConfig(), PolicyEnv())
    doc = node = {}
    for _ in range(5000):
        node["child"] = {"password": "x"}
        node = node["child"]
    _, count = p.filter(doc)
    assert count == 5000  # one password at every one of the 5000 levels
    assert "password" not in doc["child"]
