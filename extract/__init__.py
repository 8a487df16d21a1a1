"""Stage 1: frozen backbones, image decoding and the extraction loop into a feature store."""
