import os
import sys

from hypothesis import HealthCheck, settings

# The tests import the registry module next to them; the package itself must come from
# the installed distribution, never from the source tree.
sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "default", deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: spawns 2 processes (torch.distributed, gloo, 127.0.0.1)")
    config.addinivalue_line(
        "markers", "huge: sizes past 2**31 and 2**32 elements, about 11 GB of memory; runs only with DEEPOPTIM_HUGE=1")


def pytest_collection_modifyitems(config, items):
    import pytest

    if os.environ.get("DEEPOPTIM_HUGE") == "1":
        return
    skip = pytest.mark.skip(reason="opt-in: DEEPOPTIM_HUGE=1 python -m pytest -m huge (about 11 GB of memory)")
    for item in items:
        if "huge" in item.keywords:
            item.add_marker(skip)
