"""Prompt ladders: base prompts, the rungs built from them, and the pairs they yield."""

from harness.ladder.records import RUNGS, BasePrompt, Ladder, PromptPair, PromptSet, SkippedEdit, Variant

__all__ = ["RUNGS", "BasePrompt", "Ladder", "PromptPair", "PromptSet", "SkippedEdit", "Variant"]
