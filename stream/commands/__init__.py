"""Command-line subcommands, one module each; `stream.cli` assembles them."""
