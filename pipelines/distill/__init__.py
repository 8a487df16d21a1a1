"""DP-IQA distillation: teacher maps into a store, then the student from images and
maps: ``iqa-distill``.
"""
