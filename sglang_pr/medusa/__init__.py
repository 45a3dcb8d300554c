"""Medusa-head speculative decoding registered with SGLang (issue 5)."""
