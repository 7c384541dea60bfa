"""Model files in and out: every checkpoint format minillm reads and writes."""
