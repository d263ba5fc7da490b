"""halopaint runtime: simulator, model, distributed painting, training and the CLI."""

__version__ = "0.1.0"
