"""Readers and writers for the datasets' own file formats."""
