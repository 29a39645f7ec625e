"""Format readers behind `pipelines.sources`: one module per input format.

- `common`: the read-stage row builders, file listing, `InputError` / `Malformed`, `image_root`.
- `json_reader`: AdaMLLM/ShareGPT JSON and JSONL records (read on the driver).
- `arrow_reader`: Parquet row groups and saved `datasets` Arrow files (streamed by Ray tasks).
- `webdataset_reader`: `.tar` shards of image + caption members (streamed by Ray tasks).

`pipelines.sources` checks an input, plans its work items and builds the Ray Dataset from these.
"""
