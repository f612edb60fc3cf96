"""Shared fixtures. ``one_thread``: use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
from pathlib import Path

import pytest

from helpers import single_thread


@pytest.fixture(scope="module")
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    """One empty cache for the embedded default's ``smoke`` scale, shared by the tests of a session that need a
    trained default (the tutorials, the explorer's browser test): the first builds it, the rest reuse it."""
    return tmp_path_factory.mktemp("forensics-cache")
