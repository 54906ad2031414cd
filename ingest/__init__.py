"""Ingest stage: bring outside data (an editorial share, labelled passages) into the catalog."""
