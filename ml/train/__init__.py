"""`python -m ml.train` (its `__main__.py`): the training library is `ml.training`."""
