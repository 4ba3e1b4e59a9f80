"""Samples to Kinesis: the batching producer, its crash-safe spool, and the streaming session that
pumps a source into both the producer and the live view."""
