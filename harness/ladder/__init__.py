"""Prompt ladders: base prompts, the rungs built from them, and the pairs they yield."""

from harness.ladder.records import RUNGS, Ladder, PromptPair, SkippedEdit

__all__ = ["RUNGS", "Ladder", "PromptPair", "SkippedEdit"]
