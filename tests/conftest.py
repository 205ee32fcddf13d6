"""Suite-wide test settings.

The README's test command runs two pytest workers (`-n 2`) on a 2-core machine; torch's default of one
thread per core would put four busy threads on two cores, which slows small-tensor tests many times over.
Each worker therefore runs torch on one thread, and every test starts on one (`one_thread`), whatever an earlier
test left behind (the data engine sets its own thread count).
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for the test: these ops are tiny, and on a shared 2-core machine hand-offs dominate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
