"""``TrainConfig.cuda_graph``: one whole InSPO iteration (batch sampling, critic step, sequential pass) captured as
a CUDA graph and replayed, so that an iteration costs one launch instead of hundreds.

The iteration reads nothing back (see :mod:`inspo.algos.finite`), so its kernels can be recorded once. The first
``WARMUP`` iterations run eagerly on a side stream (lazy initialisation, allocator warm-up; they are real
iterations, so the run stays step for step the eager one); the next is captured, then executed by replay, and so
is every later one. The batch is drawn inside the graph from the run's generator, registered with the graph so
that each replay advances its state as an eager draw would; the batch, the statistics and every parameter are
static buffers that each replay reads and updates in place.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inspo.algos.batch import Batch
from inspo.algos.learner import Learner

WARMUP = 3


class GraphedIteration:
    """Callable: one iteration of ``learner`` on ``batch_size`` rows drawn from ``data`` with ``gen``."""

    def __init__(self, learner: Learner, data: dict[str, Tensor], fields: tuple[str, ...], batch_size: int,
                 gen: torch.Generator) -> None:
        self.learner, self.data, self.fields, self.batch_size, self.gen = learner, data, fields, batch_size, gen
        self.done = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stats: dict[str, Tensor] = {}
        self.side = torch.cuda.Stream(device=gen.device)

    def _iteration(self) -> dict[str, Tensor]:
        n_rows = self.data["obs"].shape[0]
        idx = torch.randint(n_rows, (self.batch_size,), generator=self.gen, device=self.gen.device)
        batch = Batch(**{name: self.data[name][idx] for name in self.fields}, logp_mu=self.data["logp_mu"][:, idx])
        return self.learner.update(batch)

    def __call__(self) -> dict[str, Tensor]:
        if self.done < WARMUP:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                stats = self._iteration()
            torch.cuda.current_stream().wait_stream(self.side)
        else:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                self.graph.register_generator_state(self.gen)
                with torch.cuda.graph(self.graph):  # recorded, not run: the replay below runs it
                    self.stats = self._iteration()
            self.graph.replay()
            stats = self.stats
        self.done += 1
        return stats
