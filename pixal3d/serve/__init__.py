"""Serving the pipeline: a REST server (`rest.py`, extra `serve`) and a Gradio demo (`demo.py`, extra `demo`).

Both are thin callers of `Pixal3DPipeline`. Neither builds a pipeline at import: each takes a `pipeline_factory`
(a zero-argument callable, e.g. `functools.partial(build_pipeline, random_weights="micro")`) and calls it when the
app starts. `progress.py` follows a running pipeline call stage by stage (for progress reports, cancellation and
time limits) and `jobs.py` owns the REST server's queue, worker thread and results folder.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Literal

from pixal3d.errors import InputError
from pixal3d.pipeline import Pixal3DPipeline

logger = logging.getLogger(__name__)


def build_pipeline(
    model: str | os.PathLike | None = None,
    random_weights: Literal["micro", "tiny"] | None = None,
    allow_download: bool = False,
    device: str = "cpu",
    cuda_graphs: bool = True,
) -> Pixal3DPipeline:
    """The pipeline a server or demo runs: trained weights (`model`, default "default") or random ones.

    Args:
        model: "default", a folder from `save_pretrained`, or a hub name (with `allow_download`).
        random_weights: "micro" or "tiny": randomly initialised weights of that size instead (no trained weights
            ship yet); exclusive with `model`.
        allow_download: allow `model` to name a Hugging Face hub repo.
        device: "cpu", "cuda" or "cuda:N".
        cuda_graphs: on a GPU, replay the samplers' flow calls from CUDA graphs (`Pixal3DPipeline.cuda_graphs`).
    """
    if model is not None and random_weights is not None:
        raise InputError("give either a model or random_weights, not both")
    if random_weights is not None:
        logger.warning("using RANDOM %s weights: results show the data flow, not real shapes", random_weights)
        pipe = Pixal3DPipeline.from_config(random_weights)
    else:
        pipe = Pixal3DPipeline.from_pretrained(model or "default", allow_download=allow_download)
    pipe.set_progress_bar_config(disable=True)
    pipe.cuda_graphs = cuda_graphs
    return pipe.to(device)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (not yet listening), made before the pipeline loads.

    A busy port or a wrong address is a user mistake found in milliseconds, not after a model load of many
    seconds: the server hands this socket to uvicorn; the demo checks the port this way, then releases it.

    Raises:
        InputError: the address cannot be bound (in use, not this machine's, a privileged port).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise InputError(f"--host {host!r} is not an address of this machine ({err}); e.g. 127.0.0.1") from err
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart right after a stop
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = ("another program (or server) listens there; stop it or choose another --port"
                if err.errno == errno.EADDRINUSE else "choose another --host / --port")
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err}; {hint}") from err
    return sock
