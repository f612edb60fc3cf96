"""Shared fixtures. ``one_thread``: use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
import pytest

from helpers import single_thread


@pytest.fixture(scope="module")
def one_thread():
    with single_thread():
        yield
