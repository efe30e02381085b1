"""The data stage, one module per idea, in the order a row passes through them:

- `loading`: read local files (jsonl, json, csv, parquet), the Hub or a built-in set into raw train/eval rows,
  streamed into Arrow files on disk, skipping or refusing bad rows (data.on_bad_example).
- `formats`: detect a dataset's format from its columns and turn one row into chat messages.
- `tokenization`: render messages through the model's chat template, label assistant tokens only, truncate;
  in batches, in worker processes (data.num_proc).
- `cache`: the stage itself, `prepare_data`: tokenize both splits once and reuse the on-disk cache.
- `report`: length statistics, padding/packing waste, the printed summary, histogram and TensorBoard view.
- `collator`: how packed rows become training batches.

Callers import from the module that owns a name; this package re-exports nothing."""
