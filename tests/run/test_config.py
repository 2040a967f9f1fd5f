"""The manifest's config record and RunConfig are one mapping in two directions."""

import dataclasses
from pathlib import Path

from harness.ladder.load import load_ladder
from harness.models.registry import DEFAULT_REGISTRY, load_registry
from harness.run.config import RunConfig, config_from_record, config_record
from harness.score.records import EmbedderInfo
from tests.conftest import ROOT

# The fields the record does not keep: they belong to one invocation, not to the run's results.
PER_INVOCATION = {"argv", "progress", "ray_address", "command", "loader", "variants",
                  "workers"}  # recorded as resolved (the default becomes a count): checked on its own below


def test_record_round_trips_every_recorded_field(tmp_path):
    reg = load_registry(DEFAULT_REGISTRY).by_name()
    ladder = load_ladder(ROOT / "ladders" / "default.yaml")
    embedder = EmbedderInfo(name="minilm", path="/opt/minilm", sha256="sha256:" + "1" * 64, max_seq_length=256)
    cfg = RunConfig(models=(reg["tiny-chat"], reg["tiny-think"]), ladder=ladder, out=tmp_path, lengths=(8, 24),
                    variants=("bf16",), batch_size=3, batching="padded", embedder=embedder.path,
                    cache_dir=tmp_path / "cache", shard=(1, 4), executor="ray", twin=True)
    back = config_from_record(config_record(cfg, embedder), ladder, tmp_path)
    for f in dataclasses.fields(RunConfig):
        if f.name in PER_INVOCATION or f.name == "models":
            continue
        assert getattr(back, f.name) == getattr(cfg, f.name), f.name
    # --variants is folded into each model's entry: the rebuilt config decodes the same cells.
    assert [m.name for m in back.models] == ["tiny-chat", "tiny-think"]
    assert all(tuple(m.variants) == ("bf16",) for m in back.models)
    a, b = config_record(back, embedder).to_json_dict(), config_record(cfg, embedder).to_json_dict()
    strip = lambda rec: [{k: v for k, v in m.items() if k != "variants"} for m in rec.pop("models")]  # noqa: E731
    assert strip(a) == strip(b) and a == b
    assert isinstance(back.cache_dir, Path)
    from harness.run.worker_memory import resolved_workers

    assert back.workers == resolved_workers(cfg) == 1  # Ray without --workers: one per cell task
