"""Model loading, sampling, reward and ranking models, SLiC-HF, evaluation and rounds."""
