"""Train the lab's models: `vislab train seq2seq [options]` (placeholder, filled below)."""
