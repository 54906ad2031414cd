"""Ingest stage: bring outside data (an editorial share, labelled passages, scans through OCR)
into the catalog, and the editors' desk over the scans."""
