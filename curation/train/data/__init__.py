"""From a shard manifest to training batches: streaming reader, multi-crop
augmentation, block masking and collation."""
