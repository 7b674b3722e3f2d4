"""Inference over the state protocol: generation and sampling."""

from seqlab.infer.generate import SamplingConfig, generate, next_token

__all__ = ["SamplingConfig", "generate", "next_token"]
