#!/usr/bin/env python3
"""CDK entry point: `npx cdk synth` (cdk.json runs this) or `python app.py`. Settings: docs/deploy.md."""

import aws_cdk as cdk

from evalstack.constructs.app import build_app

app = cdk.App()
build_app(app)
app.synth()
