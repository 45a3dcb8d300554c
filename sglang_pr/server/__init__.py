"""HTTP routes sglang_pr adds to SGLang's server, and a launcher for SGLang server processes."""
