"""The data path: records -> validation -> Ray Data streams (tokenized) -> token pools -> per-step mixer -> collation."""
