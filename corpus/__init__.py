"""Top floor of Corpus: the `corpus` CLI (cli.py and commands/<stage>.py), pipeline runs (the
demo), scoring end to end."""
