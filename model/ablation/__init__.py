"""The ablation study: its grid, one cell's training and scoring, statistics, reports, own-data runs."""
