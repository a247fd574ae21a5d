import os
import sys

import pytest
from hypothesis import HealthCheck, settings

from ._tuning import tuned

settings.register_profile(
    "default", max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci", max_examples=300, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_report_header(config):
    import fastmaps
    from fastmaps import _hashmap
    return [f"fastmaps {fastmaps.__version__} from {os.path.dirname(fastmaps.__file__)}",
            f"compiled HashMap module: {_hashmap.__file__}"]


@pytest.fixture
def tiny():
    """Migrations running all the time (tests/_tuning.py: ``tiny``), for both maps."""
    with tuned("tiny"):
        yield


@pytest.fixture
def prefault():
    """``tiny``, with HashMap's index prefaulting always on (tests/_tuning.py)."""
    with tuned("prefault"):
        yield


@pytest.fixture(params=["default", "tiny"])
def tuning(request):
    """Runs the test once under each tuning; the value is the tuning's name."""
    with tuned(request.param):
        yield request.param


@pytest.fixture
def fast_switching():
    """Switch threads often (every 10 µs) so that thread tests interleave more; the thread
    test modules use it for every test (pytestmark)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)
