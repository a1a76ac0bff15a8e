"""The weekly loop: rounds that retrain the judges on the newest preferences, run a SLiC-HF round
on the policy, evaluate and gate its promotion, and send the promoted policy's outputs back to
annotators; recorded stage by stage in the database, run by `training.worker`."""
