"""Augmentation: work done after capture, off the caller's path (embedding, for now)."""
