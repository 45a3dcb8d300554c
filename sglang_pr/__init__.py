"""sglang_pr: parallel reasoning for SGLang (shared-prefix attention, DeepConf, Medusa)."""

__version__ = "0.1.0"
