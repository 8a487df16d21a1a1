"""Reports: run folders, the paper's tables, published figures, baselines, plots and
``iqa-eval``.
"""
