"""Model references: one string format that names the backend explicitly, validated before anything runs.

Accepted forms (docs/models.md is the full reference)::

    openai:<base_url>?model=<name>[&api=chat|completions][&logprobs=auto|required|echo|prompt_logprobs|none]
           [&api_key_env=VAR | &api_key_secret=<Secrets Manager id>][&timeout=<seconds>]
    bedrock:<model id | inference profile id | ARN>[?region=<region>]
    sagemaker:<endpoint name>?format=tgi|lmi|jumpstart[&region=<region>][&component=<inference component>]
    hf:<local path>[?add_bos_token=true|false]
    jumpstart:<JumpStart model id>[@<version>][?region=<region>]
    arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>
    <Bedrock model id, inference profile id or ARN>   (no scheme, as the SageMaker SDK takes them)

Any other bare name parses as a label (``kind == "label"``). The evaluators resolve a label that must be
called to an endpoint, a model package group or a JumpStart model with AWS calls
(``evalstack.runtime.model_resolution``); this module stays pure, and
:func:`evalstack.models.load_backend` refuses a label.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from evalstack.masking import looks_like_token, mask

ReferenceKind = Literal["openai", "bedrock", "sagemaker", "hf", "jumpstart", "model-package", "label"]

ACCEPTED_FORMS = (
    "openai:<base_url>?model=<name>[&api=chat|completions][&logprobs=auto|required|echo|prompt_logprobs|none]"
    "[&api_key_env=VAR|&api_key_secret=<secret id>][&timeout=<seconds>]",
    "bedrock:<model id, inference profile id or ARN>[?region=<region>]",
    "sagemaker:<endpoint name>?format=tgi|lmi|jumpstart[&region=<region>][&component=<inference component>]",
    "hf:<local path>[?add_bos_token=true|false]",
    "jumpstart:<JumpStart model id>[@<version>][?region=<region>]",
    "arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>",
    "<Bedrock model id, inference profile id or ARN> without a scheme (anthropic.claude-3-haiku-20240307-v1:0)",
    "<name>: an endpoint, a model package group (its latest Approved version) or a JumpStart model id, "
    "looked up in that order when the model is called",
)

OPENAI_APIS = ("chat", "completions")
# auto: probe echo, then prompt_logprobs, else score multiple choice by letter; required: probe, never fall back.
LOGPROB_MODES = ("auto", "required", "echo", "prompt_logprobs", "none")
SAGEMAKER_FORMATS = ("tgi", "lmi", "jumpstart")

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# SageMaker endpoint names: 1-63 alphanumerics and hyphens, no leading hyphen.
_ENDPOINT = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_MODEL_PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"model-package/(?P<name>[A-Za-z0-9][A-Za-z0-9-]{0,62})(/(?P<version>\d+))?$"
)
# Bedrock model ids are <provider>.<model>[:<n>] and inference profile ids <geo>.<provider>.<model>[:<n>]
# (anthropic.claude-3-haiku-20240307-v1:0, us.meta.llama3-2-1b-instruct-v1:0), each part starting with
# a letter. Endpoint, package group and JumpStart names never hold a dot, so such a name without a
# scheme can only be Bedrock's; a version-like label ("llama3.1", "gpt-3.5") stays a label.
BEDROCK_MODEL_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[A-Za-z][A-Za-z0-9_-]*)+(:[A-Za-z0-9_.-]+)?$")
_BEDROCK_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:")
# JumpStart model ids: lowercase words joined by hyphens; versions are dotted numbers (or a * wildcard).
_JUMPSTART_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_JUMPSTART_VERSION = re.compile(r"^(\d+|\*)(\.(\d+|\*))*$")
_SECRET_KEYS = ("api_key", "apikey", "key", "token", "password", "secret")


def _forms() -> str:
    return "accepted forms:\n  " + "\n  ".join(ACCEPTED_FORMS)


# Options whose values are never secret; every other option's value is masked in messages, so a key
# pasted under any name (auth=, bearer=, api_key_env=<the key itself>) never reaches a log.
_SAFE_OPTIONS = frozenset(
    {"model", "api", "logprobs", "timeout", "format", "region", "component", "api_key_secret", "add_bos_token"}
)
_OPTION = re.compile(r"([?&])([^=&?]*)=([^&]*)")
_USERINFO = re.compile(r"//[^/@?]*@")


def _redact(text: str) -> str:
    """The reference with anything that may be a secret masked, so errors never leak one into logs."""
    masked = _USERINFO.sub("//***@", text)
    return mask(_OPTION.sub(lambda m: m[0] if m[2] in _SAFE_OPTIONS else f"{m[1]}{m[2]}=***", masked))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TIMEOUT = 86400.0  # a day: longer than any model call, short enough to be a mistake if exceeded


def _error(text: str, problem: str) -> ValueError:
    return ValueError(f"invalid model reference {_redact(text)!r}: {problem}; {_forms()}")


@dataclass(frozen=True)
class ModelReference:
    """A parsed, validated model reference. ``canonical`` is the normalised string (no secrets)."""

    kind: ReferenceKind
    target: str  # base URL, model id, endpoint name, local path, model package ARN or label
    model: str | None = None  # openai: served model name
    api: str | None = None  # openai: chat | completions
    logprobs: str | None = None  # openai: auto | required | echo | prompt_logprobs | none
    api_key_env: str | None = None
    api_key_secret: str | None = None
    timeout: float | None = None
    region: str | None = None
    format: str | None = None  # sagemaker: tgi | lmi | jumpstart
    component: str | None = None  # sagemaker inference component
    add_bos_token: bool | None = None  # hf: start-of-sequence token forced on/off (None: the tokenizer's default)
    version: str | None = None  # jumpstart: model version (None: the latest in the manifest)

    @property
    def canonical(self) -> str:
        """The reference as a string in a fixed option order; used as the name and in cache keys."""
        if self.kind == "label":
            return self.target
        if self.kind == "model-package":
            return self.target
        options: list[tuple[str, Any]] = [
            ("model", self.model),
            ("api", self.api),
            ("logprobs", self.logprobs),
            ("api_key_env", self.api_key_env),
            ("api_key_secret", self.api_key_secret),
            ("timeout", self.timeout),
            ("format", self.format),
            ("region", self.region),
            ("component", self.component),
            ("add_bos_token", None if self.add_bos_token is None else str(self.add_bos_token).lower()),
        ]
        query = "&".join(f"{key}={value}" for key, value in options if value is not None)
        version = f"@{self.version}" if self.version else ""
        return f"{self.kind}:{self.target}{version}" + (f"?{query}" if query else "")

    @property
    def identity(self) -> str:
        """What determines a response: the canonical form without transport-only options.

        Cache keys use this, so changing a timeout or the key's env var name keeps the cache valid.
        """
        return ModelReference(
            kind=self.kind,
            target=self.target,
            model=self.model,
            api=self.api,
            logprobs=self.logprobs,
            region=self.region,
            format=self.format,
            component=self.component,
            add_bos_token=self.add_bos_token,
            version=self.version,
        ).canonical

    @property
    def is_label(self) -> bool:
        return self.kind == "label"


def _split_options(text: str, rest: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    target, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        lowered = key.lower()
        if lowered in _SECRET_KEYS or (lowered.endswith(("_key", "_token")) and lowered not in allowed):
            raise _error(
                text,
                f"option {key!r} would put a secret in the reference; name an environment variable with "
                "api_key_env=VAR or a Secrets Manager secret with api_key_secret=<id> instead",
            )
        if key not in allowed:
            raise _error(text, f"unknown option {key!r} (allowed: {', '.join(allowed) or 'none'})")
        if key in options:
            raise _error(text, f"option {key!r} given twice")
        if not value:
            raise _error(text, f"option {key!r} is empty")
        options[key] = value
    if "?" in query:
        raise _error(text, "more than one '?'")
    return target, options


def _choice(text: str, options: dict[str, str], key: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = options.get(key, default)
    if value is not None and value not in choices:
        raise _error(text, f"{key}={value!r} is not one of {', '.join(choices)}")
    return value


def _region(text: str, options: dict[str, str]) -> str | None:
    region = options.get("region")
    if region is not None and not _REGION.match(region):
        raise _error(text, f"region={region!r} is not an AWS region name like us-east-1")
    return region


def _parse_openai(text: str, rest: str) -> ModelReference:
    allowed = ("model", "api", "logprobs", "api_key_env", "api_key_secret", "timeout")
    base_url, options = _split_options(text, rest, allowed)
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise _error(text, f"base URL {base_url!r} must be http(s)://host[:port][/path]")
    if url.username or url.password:
        raise _error(text, "the base URL must not carry credentials; use api_key_env or api_key_secret")
    if "model" not in options:
        raise _error(text, "openai references need ?model=<served model name>")
    if "api_key_env" in options and "api_key_secret" in options:
        raise _error(text, "give api_key_env or api_key_secret, not both")
    if "api_key_env" in options and (
        not _ENV_VAR.match(options["api_key_env"]) or looks_like_token(options["api_key_env"])
    ):
        raise _error(text, "api_key_env is not an environment variable name (give the variable's name, not the key)")
    try:
        port = url.port
    except ValueError:
        port = 0
    if port == 0:
        raise _error(text, "the base URL's port must be a number from 1 to 65535")
    timeout = None
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            timeout = math.nan
        if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
            problem = f"must be a finite number of seconds above 0, at most {MAX_TIMEOUT:g}"
            raise _error(text, f"timeout={options['timeout']!r} {problem}")
    return ModelReference(
        kind="openai",
        target=base_url.rstrip("/"),
        model=options["model"],
        api=_choice(text, options, "api", OPENAI_APIS, "completions"),
        logprobs=_choice(text, options, "logprobs", LOGPROB_MODES, "auto"),
        api_key_env=options.get("api_key_env"),
        api_key_secret=options.get("api_key_secret"),
        timeout=timeout,
    )


def _parse_bedrock(text: str, rest: str) -> ModelReference:
    model_id, options = _split_options(text, rest, ("region",))
    if not model_id or any(ch.isspace() for ch in model_id):
        raise _error(text, "bedrock references need a model id, inference profile id or ARN after 'bedrock:'")
    if model_id.startswith("arn:") and ":bedrock:" not in model_id:
        raise _error(text, f"{model_id!r} is not a Bedrock ARN (arn:aws:bedrock:...)")
    return ModelReference(kind="bedrock", target=model_id, region=_region(text, options))


def _parse_sagemaker(text: str, rest: str) -> ModelReference:
    endpoint, options = _split_options(text, rest, ("format", "region", "component"))
    if not _ENDPOINT.match(endpoint):
        raise _error(text, f"endpoint name {endpoint!r} must be 1-63 letters, digits and hyphens")
    if "format" not in options:
        raise _error(text, f"sagemaker references need ?format= one of {', '.join(SAGEMAKER_FORMATS)}")
    return ModelReference(
        kind="sagemaker",
        target=endpoint,
        format=_choice(text, options, "format", SAGEMAKER_FORMATS, None),
        region=_region(text, options),
        component=options.get("component"),
    )


def _parse_hf(text: str, rest: str) -> ModelReference:
    path, options = _split_options(text, rest, ("add_bos_token",))
    if not path.strip():
        raise _error(text, "hf references need a local model directory after 'hf:'")
    flag = _choice(text, options, "add_bos_token", ("true", "false"), None)
    return ModelReference(kind="hf", target=path, add_bos_token=None if flag is None else flag == "true")


def _parse_jumpstart(text: str, rest: str) -> ModelReference:
    target, options = _split_options(text, rest, ("region",))
    model_id, at, version = target.partition("@")
    if not _JUMPSTART_ID.match(model_id):
        raise _error(text, f"JumpStart model id {model_id!r} must be lowercase letters, digits and hyphens")
    if at and not _JUMPSTART_VERSION.match(version):
        raise _error(text, f"version {version!r} must be dotted numbers such as 1.2.0 (or a wildcard such as 1.*)")
    return ModelReference(kind="jumpstart", target=model_id, version=version or None, region=_region(text, options))


def is_bedrock_shaped(text: str) -> bool:
    """A Bedrock model id, inference profile id or ARN written without the ``bedrock:`` scheme."""
    return bool(_BEDROCK_ARN.match(text) or BEDROCK_MODEL_ID.match(text.partition("?")[0]))


def parse_model_reference(text: str) -> ModelReference:
    """Parse and validate ``text``; raises ValueError naming the problem and listing the accepted forms."""
    if not isinstance(text, str) or not text.strip():
        raise _error(str(text), "the reference is empty")
    if text != text.strip():
        raise _error(text, "leading or trailing whitespace")
    if _CONTROL.search(text):
        raise _error(text, "control characters (such as CR or LF) are not allowed")
    if is_bedrock_shaped(text):
        return _parse_bedrock(text, text)
    if text.startswith("arn:"):
        match = _MODEL_PACKAGE_ARN.match(text)
        if not match:
            raise _error(text, "the ARNs accepted here are SageMaker model package and Bedrock ARNs")
        if not _REGION.match(match["region"]):
            raise _error(text, f"region {match['region']!r} in the ARN is not an AWS region name")
        return ModelReference(kind="model-package", target=text, region=match["region"])
    scheme, sep, rest = text.partition(":")
    parsers = {
        "openai": _parse_openai,
        "bedrock": _parse_bedrock,
        "sagemaker": _parse_sagemaker,
        "hf": _parse_hf,
        "jumpstart": _parse_jumpstart,
    }
    if sep and scheme in parsers:
        return parsers[scheme](text, rest)
    if sep and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) and scheme not in ("http", "https"):
        raise _error(text, f"unknown scheme {scheme!r}")
    if "://" in text:
        raise _error(text, "a URL needs the 'openai:' scheme and ?model=<name>")
    return ModelReference(kind="label", target=text)


def label_error(reference: ModelReference) -> ValueError:
    """The error for trying to run a bare label (one the evaluators did not resolve to a backend)."""
    return ValueError(f"model reference {reference.target!r} is a label only and names no backend to call; {_forms()}")


def require_api_key_env(reference: ModelReference) -> None:
    """Raise when ``reference`` names an API key variable that is not set here (its value is never shown)."""
    name = reference.api_key_env
    if name and not os.environ.get(name):
        raise ValueError(
            f"model reference {mask(reference.canonical)!r}: api_key_env names the environment variable "
            f"{mask(name)!r}, which is not set (or empty); export the API key under that name"
        )
