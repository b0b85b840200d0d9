"""Built-in architectures of the zoo (CIFAR-style, small enough to search on a CPU)."""
