"""Networks and their feature extractors."""
