import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    """Keep tests reproducible and light on the 2-core CI machine."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
