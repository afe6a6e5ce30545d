"""Datasets of demonstrations: format (writer, reader), collection, statistics, contact sheets."""
from driving.data.format import Dataset, DatasetError

__all__ = ["Dataset", "DatasetError"]
