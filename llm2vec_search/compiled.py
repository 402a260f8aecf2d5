"""An opt-in compiled model forward for small query batches (``l2v-search serve --compile``).

torch.compile specializes a graph to the shapes it traced, and every query has its own token
count, so compiling as queries come would compile while serving. Instead the shapes are fixed in
advance and all compiled at start (the warm-up):

* tokens: a batch is right-padded (pad ids, attention mask 0) up to the nearest of a few lengths,
  ``LENGTHS`` by default;
* rows: one row gets a graph of its own (torch specializes size 1); 2 to ``max_rows`` rows share
  one graph whose row count is marked dynamic.

So ``len(lengths) x 2`` graphs, 8 by default. Padding does not change the vectors: padded keys are
masked out of every token's attention, and the padded positions are cut off before pooling.
A batch wider than the largest length, one with more than ``max_rows`` rows, and any call outside
``torch.inference_mode`` (training) run the eager forward: nothing is compiled while serving.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Token lengths compiled by default (instruction included). A longer query runs eager rather than
# being padded to max_length (a 130-token query would pay for 512).
LENGTHS = (16, 32, 64, 128)


@dataclasses.dataclass
class CompiledForward:
    """The compiled forward of one model, for the shapes warmed up; see the module's docstring."""

    fn: Callable  # torch.compile(model)
    pad_id: int
    device: torch.device
    lengths: tuple[int, ...]  # ascending
    max_rows: int
    seconds: float = 0.0  # compile and warm-up

    def bucket(self, rows: int, width: int) -> int | None:
        """The length a batch of ``rows`` x ``width`` tokens is padded to; None: it runs eager."""
        if rows > self.max_rows:
            return None
        return next((n for n in self.lengths if n >= width), None)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Last hidden states (B, T, H) of a batch (B, T), or None where the eager forward must run."""
        import torch

        rows, width = input_ids.shape
        n = self.bucket(rows, width)
        if n is None or not torch.is_inference_mode_enabled():
            return None
        ids = torch.nn.functional.pad(input_ids, (0, n - width), value=self.pad_id)  # (B, n)
        mask = torch.nn.functional.pad(attention_mask, (0, n - width), value=0)
        return self._forward(ids, mask)[:, :width]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, dynamic_rows: bool = False) -> torch.Tensor:
        import torch

        ids, mask = ids.to(self.device), mask.to(self.device)
        if dynamic_rows:  # marked on the tensors the graph is traced with: one graph for 2+ rows
            torch._dynamo.mark_dynamic(ids, 0)
            torch._dynamo.mark_dynamic(mask, 0)
        out = self.fn(input_ids=ids, attention_mask=mask, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def shapes(self) -> list[tuple[int, int]]:
        """(rows, tokens) of each graph: the row count 2 stands for 2 to ``max_rows``."""
        rows = [1, 2] if self.max_rows > 1 else [1]
        return [(r, n) for n in self.lengths for r in rows]

    def warm_up(self) -> None:
        """Compile every graph now, one forward each."""
        import torch

        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        # Each shape is a cache entry of the model's forward, counted against dynamo's limit (8), and
        # other encoders of the same architecture count too: lift it while compiling these few.
        with torch._dynamo.config.patch(**{limit: max(getattr(torch._dynamo.config, limit), 64)}), \
                torch.inference_mode():
            for rows, n in self.shapes():
                ids = torch.full((rows, n), self.pad_id, dtype=torch.long)
                self._forward(ids, torch.ones_like(ids), dynamic_rows=rows > 1)

    @property
    def summary(self) -> str:
        rows = f"1 and 2-{self.max_rows} rows" if self.max_rows > 1 else "1 row"
        return (f"{len(self.shapes())} graphs (lengths {', '.join(map(str, self.lengths))} x {rows}) "
                f"in {self.seconds:.0f} s")


def compile_forward(model, pad_id: int, *, lengths: Sequence[int] = LENGTHS, max_rows: int = 32,
                    max_length: int | None = None, backend: str = "inductor") -> CompiledForward | None:
    """Compile ``model``'s forward for batches of up to ``max_rows`` rows padded to ``lengths``
    tokens (a length over ``max_length`` becomes ``max_length``) and warm it up; None when
    compilation fails (one warning logged: the caller keeps the eager forward)."""
    import torch

    keep = sorted({min(n, max_length or n) for n in lengths})
    if not keep or keep[0] < 1 or max_rows < 1:
        raise ValueError(f"nothing to compile: lengths {list(lengths)}, max_rows {max_rows}")
    t0 = time.perf_counter()
    try:
        fn = torch.compile(model, dynamic=False, backend=backend)
        compiled = CompiledForward(fn, pad_id, next(model.parameters()).device, tuple(keep), max_rows)
        was_training = model.training
        model.eval()  # the mode encode() runs in: graphs are specialized to it
        try:
            compiled.warm_up()
        finally:
            model.train(was_training)
    except Exception as e:  # no C compiler, an unsupported op, a backend bug: the eager forward serves
        why = (str(e).strip().splitlines() or [""])[0][:300]
        log.warning("torch.compile of the query forward failed (%s: %s); using the eager forward",
                    type(e).__name__, why)
        return None
    compiled.seconds = time.perf_counter() - t0
    return compiled
