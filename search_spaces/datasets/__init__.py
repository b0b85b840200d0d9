"""Built-in dataset loaders; see ``search_spaces.data.load_dataset``."""
