"""The floor study's GGUF variants: llama.cpp decodes and reads the file, the bf16 HF model stays the reference.

A ``q4_k_m@llamacpp`` floor variant is the GGUF llama.cpp's own tools make
from the bf16 model (harness.models.gguf_build), opened once with
``logits_all=True``: its greedy tokens (argmax of each step's logits, as the
llamacpp engine decodes) and its log-probabilities on any token sequence
(teacher-forced, float64 log-softmax as harness.stretch_study.measure does for
HF) are what P, D and the KL both ways are computed from. Its bit width on the
figure's x axis is the type's nominal one; the effective bits per parameter of
the file (k-quants fall back to block-32 types for rows that are not a multiple
of 256) are recorded beside it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

GGUF_FLOOR = {"f16@llamacpp": 16, "q8_0@llamacpp": 8, "q6_k@llamacpp": 6, "q5_k_m@llamacpp": 5,
              "q4_k_m@llamacpp": 4, "q4_1@llamacpp": 4, "q3_k_m@llamacpp": 3, "q2_k@llamacpp": 2}
"""Floor variant -> nominal bits of its llama.cpp file type."""
LADDER_ALIAS = "llamacpp"
"""``--variants llamacpp``: every GGUF_FLOOR variant."""
N_CTX = 512
"""Context of the opened file: the study's prompts plus their greedy tokens (logits_all keeps N_CTX x V floats)."""


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


@dataclasses.dataclass
class GgufFloorVariant:
    """A GGUF opened by llama.cpp for the floor study (not frozen: holds the llama.cpp context)."""

    info: Any
    """The variant's ModelInfo (the HF description; the file is in ``gguf``)."""
    gguf: dict[str, Any]
    """The file's record (harness.models.gguf_build): sha256, file type, effective bits, tensor types."""
    llm: Any
    """llama_cpp.Llama with logits_all=True."""

    def _eval(self, ids: Sequence[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(ids))
        return self.llm.scores

    def greedy(self, ids: Sequence[int], max_new_tokens: int, eos: Sequence[int]) -> list[int]:
        """Greedy continuation (stops after an EOS id, which is kept), as measure.greedy for HF."""
        from harness.decode.engine_llamacpp import greedy_ids

        return list(greedy_ids(self.llm, ids, max_new_tokens, set(eos))[0])

    def teacher_forced(self, prompt: Sequence[int], continuation: Sequence[int]) -> np.ndarray:
        """Log-probabilities [n + 1, V]: row t predicts continuation token t (row n the one after the last)."""
        scores = self._eval(list(prompt) + list(continuation))
        start = len(prompt) - 1
        return _log_softmax(np.array(scores[start:start + len(continuation) + 1], dtype=np.float32))

    def close(self) -> None:
        self.llm.close()


def load_gguf_variant(entry, variant: str, loader) -> GgufFloorVariant:
    import torch

    from harness.decode.engine_llamacpp import gguf_for, open_gguf
    from harness.decode.engines import get_engine

    get_engine("llamacpp").check_installed()
    loaded = loader(entry, variant, lazy=True)
    path, rec = gguf_for(loaded, torch.get_num_threads())
    llm = open_gguf(path, min(N_CTX, loaded.info.context_length or N_CTX), torch.get_num_threads(), logits_all=True)
    info = dataclasses.replace(loaded.info, quantization=f"GGUF {rec['file_type']} ({rec['bits_per_parameter']} bits "
                                                         f"per parameter), llama.cpp")
    return GgufFloorVariant(info, rec, llm)
