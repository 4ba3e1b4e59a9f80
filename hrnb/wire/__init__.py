"""What crosses a process boundary: the wire record, the index mapping and Lambda's Kinesis event.

Standard library only, and the only hrnb code packaged into the Lambda zip (with
:mod:`hrnb.errors`): the producer, the handler and the queries agree on these shapes because they
import the same files.
"""
