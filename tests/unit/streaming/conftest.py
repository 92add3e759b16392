"""Window implementations under test: the Python reference, and its compiled twin where it was built."""

from __future__ import annotations

import pytest

from streaming.windows import COMPILED_WINDOWS, PYTHON_WINDOWS


@pytest.fixture(scope="module", params=["python", "compiled"])
def windows(request):
    """Each window implementation in turn (module scope: hypothesis tests take it too)."""
    if request.param == "python":
        return PYTHON_WINDOWS
    if COMPILED_WINDOWS is None:
        pytest.skip("the compiled windows were not built (no C compiler at install time)")
    return COMPILED_WINDOWS
