"""Scoring image files with a head, PromptIQA's released model or a DP-IQA student:
``iqa-score``.
"""
