"""Sections of ``fastvision demo``, one module per model family."""
