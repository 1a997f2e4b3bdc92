"""The `vaecli` command line: a thin Typer layer over the library (see app.py)."""
