"""The CLI's commands, one module per group; `vaecli.cli` registers them on the app."""
