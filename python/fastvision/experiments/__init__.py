"""The papers' experiments (``fastvision eval NAME``)."""
