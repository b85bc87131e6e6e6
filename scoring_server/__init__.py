"""altscore scoring server: ``python -m scoring_server``."""
