"""The pipelines above the heads: ``report`` (iqa-eval), ``score`` (iqa-score) and
``distill`` (iqa-distill)."""
