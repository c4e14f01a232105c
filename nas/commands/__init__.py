"""The bodies of the ``nas`` commands, one module per command or group; :mod:`nas.cli` registers them on its app.

Each command parses nothing itself (typer does, from its signature), calls one library function and prints.
Heavy modules are imported inside the command functions so ``nas --help`` stays instant.
"""
