"""One module per stage of the `corpus` command line; corpus/cli.py registers them."""
