"""autoprune: workers."""
