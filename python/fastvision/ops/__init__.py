"""fastvision operators."""
