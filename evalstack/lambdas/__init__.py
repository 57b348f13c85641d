"""Lambda handlers for continuous evaluation and model approval (standard library and boto3 only).

This package is deployed on its own as the Lambda code asset (top-level package ``lambdas``), so its
modules import each other relatively and never import the rest of evalstack.
"""
