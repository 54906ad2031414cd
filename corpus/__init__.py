"""Top floor of Corpus: the `corpus` CLI, pipeline runs (the demo), scoring end to end."""
