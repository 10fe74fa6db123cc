"""lithovae: lithology VAEs on IODP core measurements (LILY database)."""

__version__ = "0.1.0"
