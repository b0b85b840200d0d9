"""autoprune: service."""
