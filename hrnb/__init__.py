"""hrnb: a live heart-rate workbench (BLE watch -> Kinesis -> Lambda -> OpenSearch -> notebooks).

This module stays import-free on purpose: `hrnb.errors` and `hrnb.records` are packaged
into the Lambda zip, and importing the package must not pull in boto3, bleak or plotly.
"""

__version__ = "0.1.0"
