"""Noise stage: align raw and edited texts, mine OCR artifacts, write and judge noisy variants."""
