from pathlib import Path

from bastion.config.docs import render


def test_config_reference_is_up_to_date():
    doc = Path(__file__).parents[2] / "docs" / "config.md"
    assert doc.read_text() == render(), "run: python -m bastion.config.docs > docs/config.md"
