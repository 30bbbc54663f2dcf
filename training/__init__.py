"""Training side: generated audio, the MOSS encoder, tokens, splits, views, the TokenEmbedder and its evaluation."""
