"""Datasets: the manifest and split formats, importers, splits, the demo set, presets,
random images, the content audit and ``iqa-data``.

Stands just above ``cache`` (it imports only ``cache``'s output and console
conventions); ``extract``, ``heads`` and ``pipelines`` read datasets through it. Not
named ``datasets``: that would shadow Hugging Face's ``datasets``, which
``transformers`` and ``diffusers`` probe for.
"""
