import os

import pytest
from hypothesis import HealthCheck, settings

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
    """Tuning that keeps migrations running all the time: 2 log positions per write,
    no synchronous small-map migrations, 4-entry log segments."""
    from fastmaps import _hashmap
    prev = _hashmap._set_tuning(step=2, sync_below=0, seg_shift=2)
    yield
    _hashmap._set_tuning(**prev)
