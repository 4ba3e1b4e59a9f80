"""The embedded local stack: the only code that knows it is not AWS.

The launcher starts the AWS emulator (moto's server with fidelity fixes), a real OpenSearch node
and the poller that plays Lambda's Kinesis event source mapping by running the deployed zips in a
worker process. Nothing outside this package imports it except the command line, the demo and
the tests.
"""
