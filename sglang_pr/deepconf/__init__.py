"""DeepConf: confidence-filtered, early-stopped self-consistency inside SGLang (issue 4)."""
