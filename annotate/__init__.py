"""Task queue, submissions, agreement, import and export. Pure Python on `db`."""
