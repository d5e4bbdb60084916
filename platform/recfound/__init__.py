"""recfound: one recommendation foundation model for embedding and generative tasks."""
