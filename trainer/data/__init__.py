"""Data: synthetic scene generator, OpenCOOD -> WebDataset converter, shard loader, collate."""
