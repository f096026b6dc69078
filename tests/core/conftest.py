"""Collection of tests/core."""
from __future__ import annotations

from pathlib import Path

# Every test of this module is slow, and Schemathesis builds its cases as the module is imported:
# about 10 s of every collection, a tenth of `make test-fast`.
_ALL_SLOW = "test_schemathesis.py"


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """Leave the all-slow module unimported when slow tests are deselected (`-m "not slow"`)."""
    if collection_path.name == _ALL_SLOW and "not slow" in (config.getoption("markexpr") or ""):
        return True
    return None
