"""SSM parameter names the CDK stack writes and the runtime client reads to find the pipelines."""

PARAMETER_ROOT = "/evalstack"


def parameter_name(stage: str, *parts: str) -> str:
    """``/evalstack/<stage>/<parts...>``, e.g. ``/evalstack/prod/pipelines/benchmark``."""
    return "/".join([PARAMETER_ROOT, stage, *parts])
