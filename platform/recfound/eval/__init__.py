"""Evaluation: score generations and retrieval ranks as the RecFound authors do."""
