"""What nbo's commands print to a terminal or a log: progress lines and tables."""
