"""Route targets: the terminal handler at the end of every chain."""
