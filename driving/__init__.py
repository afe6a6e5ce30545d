"""Learning: datasets, models, training, evaluation. Imports sim/, never highway-env directly."""
__version__ = "0.1.0"
