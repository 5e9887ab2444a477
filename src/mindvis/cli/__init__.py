"""Command-line interface: `python -m mindvis <command>`; one command per pipeline step."""
