"""SGLang frontend-language additions (installed as ``sglang_pr.frontends``)."""
