"""Formatter: text, number and date/time conversions (being written)."""
