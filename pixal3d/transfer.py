"""Host <-> device copies that do not stall a GPU (DESIGN section 7's data engine shares one GPU between processes).

A copy from pageable host memory to a GPU may wait for the work already queued on the stream, and a copy back
blocks until it is done: with several processes taking turns on one GPU, every such copy costs a wait for the
others' time slices. `to_device` stages host data in pinned memory and copies it without blocking; `to_host`
brings many results back with one host sync. On the CPU both are plain moves.
"""

from __future__ import annotations

import torch


def to_device(value: object, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`value` (a tensor, a numpy array or a nested list of numbers) as a tensor on `device`.

    From the host to a GPU the data is copied into pinned memory and sent with a non-blocking copy (the caching
    host allocator keeps the pinned block until the copy is done, so the value may be dropped at once).
    """
    tensor = torch.as_tensor(value, dtype=dtype)
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_host(groups: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Groups of tensors (within a group: same trailing shape and dtype) on the CPU, each with its own storage.

    From a GPU, each group is concatenated and copied into pinned host memory asynchronously, and all groups
    wait for one host sync (pageable copies would each block and run at a fraction of the bus speed); then the
    group is split into its tensors' own storage (shards refuse tensors that share memory).
    """
    if all(t.device.type == "cpu" for group in groups for t in group):
        return groups
    staged, devices = [], set()
    for group in groups:
        flat = torch.cat(group)
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=flat.device.type == "cuda")
        staged.append((host.copy_(flat, non_blocking=True), [t.shape[0] for t in group]))
        devices.add(flat.device)
    for device in devices:  # the devices the copies were queued on (not only the current one)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return [[t.clone() for t in host.split(sizes)] for host, sizes in staged]
