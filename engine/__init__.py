"""halopaint runtime: simulator, model, distributed painting, training and the CLI."""

__version__ = "0.2.0"
