"""autoprune: search_spaces."""
