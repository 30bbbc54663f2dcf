"""Typed tritonclient wrapper for the audio_search service."""
