"""One module per `halopaint` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
