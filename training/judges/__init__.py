"""The reward model and the pairwise ranking model: settings, the scalar-judge model they share,
the input collator, training pairs and splits, metrics, candidate ranking, the database side,
and the use cases (`jobs`) that the CLI, the round worker and the admin page call."""
