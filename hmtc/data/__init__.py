"""Datasets: readers, the catalog of built-in and TOML datasets, taxonomy builders, statistics."""

from .catalog import (DATASETS, Dataset, DatasetSpec, data_dir, dev_split, encode_labels,
                      get_spec, load_dataset)
from .readers import (Examples, read_class_folders, read_goemotions, read_hiagm,
                      read_hiagm_taxonomy, read_jsonl, read_label_studio, read_label_text, read_table)

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "Examples", "data_dir", "dev_split",
           "encode_labels", "get_spec", "load_dataset", "read_class_folders", "read_goemotions",
           "read_hiagm", "read_hiagm_taxonomy", "read_jsonl", "read_label_studio", "read_label_text", "read_table"]
