import os

import matplotlib
import pytest
import torch

# Agg for this process only: an MPLBACKEND variable would leak into the nbval kernels that the
# same pytest run starts, and their inline figures would vanish.
matplotlib.use("Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module", params=["cpu", pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the lent GPU machine)"))])
def device(request) -> torch.device:
    """Each test taking ``device`` runs on the CPU, and again on a CUDA GPU where there is one."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach the internet: any download attempt through torch.hub fails at once."""
    from urllib.error import URLError

    def refuse(*args, **kwargs):
        raise URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
