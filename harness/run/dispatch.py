"""Which decode worker runs which batch: dealt as the workers become free (harness.run.parallel).

Why not a split fixed before decoding: output lengths are not known then. On the demo model with the task
ladder at L = 512 a few outputs run to 512 tokens and the rest stop within a few; a static split gave one
worker 20.3 s of CPU and the other 8.2 s. Dealing whole batches, the costliest-looking first, to whichever
worker is free lets the short batches fill in around the long ones.

What is dealt: the batches of the originals (replicate 0), planned as one worker plans them
(:func:`~harness.decode.greedy.plan_batches`, so a batch is a batch one worker would run), longest prompts first;
and the identical rung's second copies, each only to a worker that decodes no other copy of its prompt (the
noise floor compares two decodes in different processes as well as different batches). A copy waits until
its original is dealt; a worker takes copies when a full batch of them is ready for it, or when no original is
left. The outputs do not depend on which worker ran them or with which batch mates (rows batching and
harness.decode.invariant), which tests/run/test_workers.py checks table by table against one worker.
"""

from __future__ import annotations

from typing import Sequence

from harness.decode.greedy import DecodeRequest, plan_batches


class Dealer:
    """Deals ``reqs`` in batches to ``n`` workers; :meth:`next_for` gives worker ``w`` its next batch (None: none
    for it now). Everything is dealt once every worker has asked and got None (:attr:`done`)."""

    def __init__(self, reqs: Sequence[DecodeRequest], n: int, batch_size: int, batching: str) -> None:
        self.n, self.batch_size, self.batching = n, batch_size, batching
        originals = [r for r in reqs if r.replicate == 0]
        # Largest expected cost first: the prefill grows with the prompt, and the long batches should not come last.
        self.queue = sorted(plan_batches(originals, batch_size, batching),
                            key=lambda b: -sum(len(r.token_ids) for r in b))
        self.copies = [r for r in reqs if r.replicate != 0]
        self.pending_originals = {r.prompt_key for r in originals}
        self.where: dict[str, set[int]] = {}
        """prompt_key -> the workers that got one of its requests."""

    @property
    def done(self) -> bool:
        return not self.queue and not self.copies

    def _copies_for(self, w: int) -> list[DecodeRequest]:
        return [r for r in self.copies
                if r.prompt_key not in self.pending_originals and w not in self.where.get(r.prompt_key, ())]

    def next_for(self, w: int, force: bool = False) -> list[DecodeRequest] | None:
        """Worker ``w``'s next batch. ``force``: every worker is idle and nothing could be dealt (a copy whose every
        other worker holds its prompt: only with more replicates than workers): deal the copies anyway."""
        ready = self.copies if force else self._copies_for(w)
        batch = None
        if ready and (len(ready) >= self.batch_size or not self.queue):
            batch = max(plan_batches(ready, self.batch_size, self.batching), key=len)
            taken = {(r.prompt_key, r.replicate) for r in batch}
            self.copies = [r for r in self.copies if (r.prompt_key, r.replicate) not in taken]
        elif self.queue:
            batch = self.queue.pop(0)
            self.pending_originals -= {r.prompt_key for r in batch}
        if batch:
            for r in batch:
                self.where.setdefault(r.prompt_key, set()).add(w)
        return batch or None
