"""Real music for training and evaluation: Debian's free game music as a deduplicated WAV corpus
(``python -m training corpus``) and compact split copies for a GPU machine (``corpus-pack``)."""
