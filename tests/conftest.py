"""Suite-wide test settings.

The README's test command runs two pytest workers (`-n 2`) on a 2-core machine; torch's default of one
thread per core would put four busy threads on two cores, which slows small-tensor tests many times over.
Each worker therefore runs torch on one thread.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
