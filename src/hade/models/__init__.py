"""Pure torch.nn.Module model code: encoders, heads, the retrieval model and its factory."""
