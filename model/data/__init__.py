"""Data: class tables, image reading, dataset checks, splits, dataset builders and the nuclei sample data."""
