import uuid

import pytest


@pytest.fixture()
def prefix():
    return f"test:{uuid.uuid4().hex[:12]}"
