"""The model: backbone loading, TMoLE layers and router, objectives."""
