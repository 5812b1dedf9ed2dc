"""Model fine-tuning (guide chapter 6): datasets, jobs, the training worker, checkpoints, resume."""
