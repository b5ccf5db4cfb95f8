"""The process around the pipeline: its environment before numpy loads (environment), usable CPUs and memory
(resources), the progress bar over cases (progress), and sharding a case list across jobs (shard)."""
