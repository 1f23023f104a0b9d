"""The `mrcnn` command line: option parsing (cli.py) and the commands' own logic."""
