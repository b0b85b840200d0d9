"""autoprune: agents."""
