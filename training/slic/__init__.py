"""SLiC-HF on the policy with a LoRA adapter: settings, loss, collator, round data, trainer,
the three stages of a round, evaluation, the database side, and the use cases (`jobs`) that the
CLI, the round worker and the admin page call."""
