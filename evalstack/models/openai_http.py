"""OpenAI-compatible HTTP backend (vLLM, TGI, Ollama, llama.cpp server), on httpx.

Transport: one pooled ``httpx.Client`` per backend (as many keep-alive connections as the
concurrency), with the reference's ``timeout`` (default 120 s) as the connect, write, pool and read
timeout, and as a whole-request deadline: the body is streamed and the deadline checked after the
headers and after every chunk, so a server trickling a byte every half second is cut at the
deadline, not after ``timeout`` per read. Before the body is read the per-read timeout is lowered
to what is left of the deadline (httpcore reads it from the request's ``timeout`` extension when the
body starts). A slow connect followed by a server silent until its headers can take up to twice
the timeout; every other case ends within the deadline plus one read.

Every 2xx answer is checked against the wire shape of its request before it is returned (and so
cached): empty ``choices``, a non-JSON or truncated body, missing fields raise
:class:`~evalstack.models.dispatch.MalformedResponseError`, which is retried.

Generation uses ``/chat/completions`` or ``/completions`` (``api=``). Log-likelihoods always use
``/completions``, in the reference's ``logprobs`` mode:

- ``auto`` (the default) and ``required`` probe the server on first need (``supports_loglikelihood``,
  ``loglikelihood`` or ``loglikelihood_details``), once for the backend's life, under a lock: one tiny
  completion of :data:`PROBE_PROMPT` asking for echo logprobs, then, if the answer has none, one asking
  for prompt_logprobs. Only a well-formed completion lacking the field counts as absence; a server
  that is down or answers an error status raises :class:`LogprobsProbeError` (after the dispatcher's
  retries), never a fallback. With neither mode found, ``auto`` reports no log-likelihoods, so
  multiple choice is scored generatively by answer letter, and ``required`` raises
  :class:`LogprobsUnavailableError` before anything is scored. ``loglikelihood_details()`` records
  the mode used, the one requested and what the probe found (results.json ``details.tokenization``).
- ``echo`` or ``prompt_logprobs`` means exactly that mode, unprobed; a well-formed completion without
  the requested field raises :class:`LogprobsUnavailableError` at once (not retried).
- ``none``: no log-likelihoods.

Requests that share a context (a question's choices; an MMLU question after its five shots) go in one
request with ``prompt`` as a list, cut by :class:`BatchLimits`; the answer has one choice per prompt,
``index`` naming the prompt (n=1), and each choice is checked and read as a single answer is. vLLM
schedules the list together and its prefix cache computes the shared context once. A lone prompt is
sent as a string, as before. The two modes:

- ``logprobs=echo``: ``{"prompt": context+continuation, "echo": true, "logprobs": 1, "max_tokens": 1,
  "temperature": 0}``; ``choices[0].logprobs`` holds ``tokens/token_logprobs/top_logprobs/text_offset``
  for the prompt followed by the one generated token (vLLM requires max_tokens >= 1; the generated
  token starts at ``len(prompt)`` and is dropped). Continuation tokens are those that reach past
  ``len(context)`` by ``text_offset``; ``is_greedy`` means every such token is the argmax of its
  ``top_logprobs``.
- ``logprobs=prompt_logprobs`` (vLLM extension): ``{"prompt_logprobs": 1, "return_token_ids": true,
  "max_tokens": 1}``. The wire shape, read from vLLM's source (``vllm/entrypoints/openai/completion/
  protocol.py`` ``CompletionResponseChoice``, ``vllm/logprobs.py`` ``Logprob`` and
  ``append_logprobs_for_next_position``, ``vllm/v1/engine/logprobs.py``): ``choices[0].prompt_logprobs``
  is one entry per prompt token, ``null`` for the first, else an object keyed by token id (a string in
  JSON) -> ``{"logprob", "rank", "decoded_token"}`` holding the actual prompt token (its true vocabulary
  rank, which may be > 1) plus the top-k tokens (ranks 1..k), so with k=1 one or two keys.
  ``choices[0].prompt_token_ids`` (sent back when ``return_token_ids`` is true, vLLM >= 0.10.2; older
  servers ignore the unknown field) names the actual token at each position, as vLLM's own echo path
  looks it up (``step_top_logprobs[token_id]`` in ``completion/serving.py``). Without it the first key
  is taken: vLLM inserts the prompt token first (V0 ``_get_prompt_logprob_if_needed``, V1
  ``append_logprobs_for_next_position``) and JSON keeps that order. The continuation is the shortest
  tail of actual tokens whose ``decoded_token`` texts cover ``len(continuation)`` characters (the same
  character accounting as the echo path's ``text_offset``, which vLLM also derives from
  ``decoded_token``). A token is greedy when no entry at its position has a higher logprob (rank-free,
  as lm-eval's vLLM backend decides ``is_greedy``).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from evalstack.masking import mask
from evalstack.models.base import GenerateRequest, Loglikelihood, LoglikelihoodRequest
from evalstack.models.cache import ResponseCache
from evalstack.models.dispatch import DeadlineExceededError, HTTPStatusError, MalformedResponseError, RetryPolicy
from evalstack.models.loglikelihood_tokens import echo_split_offset, move_trailing_whitespace, server_details
from evalstack.models.reference import ModelReference, require_api_key_env
from evalstack.models.remote import DEFAULT_TIMEOUT, RemoteBackend
from evalstack.models.request_timing import RequestTime, collecting, record_batch


def resolve_api_key(reference: ModelReference, secrets_client: Any | None = None) -> str | None:
    """The API key from the named environment variable or Secrets Manager secret (never inline).

    A secret's ``SecretString`` is used as is, or its ``api_key`` field when it is a JSON object.
    """
    if reference.api_key_env:
        require_api_key_env(reference)
        return os.environ[reference.api_key_env]
    if reference.api_key_secret:
        if secrets_client is None:
            import boto3

            secrets_client = boto3.client("secretsmanager")
        secret = secrets_client.get_secret_value(SecretId=reference.api_key_secret)["SecretString"]
        try:
            parsed = json.loads(secret)
        except json.JSONDecodeError:
            return secret
        if isinstance(parsed, dict):
            if "api_key" not in parsed:
                raise ValueError(
                    f"secret {mask(reference.api_key_secret)!r} is a JSON object without an 'api_key' field"
                )
            return str(parsed["api_key"])
        return secret
    return None


def chat_messages(request: GenerateRequest) -> list[dict[str, str]]:
    turns = request.messages or (("user", request.prompt),)
    return [{"role": role, "content": content} for role, content in turns]


def echo_loglikelihood(logprobs: Mapping[str, Any], context_chars: int, prompt_chars: int) -> Loglikelihood:
    """Sum the continuation's token logprobs from an ``echo`` completion's ``logprobs`` object."""
    tokens = logprobs["tokens"]
    values = logprobs["token_logprobs"]
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    offsets = logprobs["text_offset"]
    total, greedy, count = 0.0, True, 0
    for i, start in enumerate(offsets):
        following = offsets[i + 1] if i + 1 < len(offsets) else float("inf")
        # A token belongs to the continuation if it starts in it or straddles the boundary;
        # tokens at or past the end of the prompt were generated, not echoed.
        if start >= prompt_chars or (start < context_chars and following <= context_chars):
            continue
        if values[i] is None:
            raise ValueError("the server gave no logprob for a continuation token (empty context?)")
        total += float(values[i])
        count += 1
        top = tops[i]
        if not top or max(top, key=top.__getitem__) != tokens[i]:
            greedy = False
    if count == 0:
        raise ValueError("no continuation tokens found in the echoed logprobs (empty continuation?)")
    return Loglikelihood(logprob=total, is_greedy=greedy, num_tokens=count)


def prompt_logprobs_loglikelihood(
    entries: Sequence[Mapping[str, Any] | None], continuation: str, prompt_token_ids: Sequence[int] | None = None
) -> Loglikelihood:
    """Sum the continuation's logprobs from vLLM's ``prompt_logprobs`` list (shape: module docstring)."""
    if prompt_token_ids is not None and len(prompt_token_ids) != len(entries):
        raise ValueError(f"prompt_token_ids has {len(prompt_token_ids)} ids for {len(entries)} prompt_logprobs entries")
    total, greedy, count, covered = 0.0, True, 0, 0
    for position in range(len(entries) - 1, -1, -1):
        if covered >= len(continuation):
            break
        entry = entries[position]
        if not entry:
            raise ValueError("the continuation reaches the first prompt token, which has no logprob")
        actual = _actual_token(entry, position, prompt_token_ids)
        logprob = float(actual["logprob"])
        total += logprob
        greedy = greedy and all(float(other["logprob"]) <= logprob for other in entry.values())
        count += 1
        covered += len(actual.get("decoded_token") or "")
    if count == 0:
        raise ValueError("empty continuation")
    return Loglikelihood(logprob=total, is_greedy=greedy, num_tokens=count)


def _actual_token(entry: Mapping[str, Any], position: int, prompt_token_ids: Sequence[int] | None) -> Mapping[str, Any]:
    if prompt_token_ids is None:
        return next(iter(entry.values()))  # vLLM inserts the prompt token first
    key = str(prompt_token_ids[position])
    if key not in entry:
        raise ValueError(f"prompt_logprobs position {position} lacks the prompt token id {key} (keys {sorted(entry)})")
    return entry[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _echo_problem(logprobs: Any, where: str) -> str | None:
    if not isinstance(logprobs, dict):
        return f"{where}.logprobs is missing or not an object"
    tokens, values, offsets = (logprobs.get(key) for key in ("tokens", "token_logprobs", "text_offset"))
    if not (isinstance(tokens, list) and isinstance(values, list) and isinstance(offsets, list)):
        return f"{where}.logprobs needs the lists tokens, token_logprobs and text_offset"
    if not len(tokens) == len(values) == len(offsets):
        return f"{where}.logprobs lists tokens, token_logprobs and text_offset differ in length"
    if not all(isinstance(token, str) for token in tokens) or not all(isinstance(o, int) for o in offsets):
        return f"{where}.logprobs.tokens must be strings and text_offset integers"
    if not all(value is None or _is_number(value) for value in values):
        return f"{where}.logprobs.token_logprobs must be numbers"
    tops = logprobs.get("top_logprobs")
    if tops is not None and (
        not isinstance(tops, list)
        or len(tops) != len(tokens)
        or not all(top is None or (isinstance(top, dict) and all(map(_is_number, top.values()))) for top in tops)
    ):
        return f"{where}.logprobs.top_logprobs must be one {{token: logprob}} object per token"
    return None


def _prompt_logprobs_problem(choice: dict[str, Any], where: str) -> str | None:
    entries = choice.get("prompt_logprobs")
    if not isinstance(entries, list) or not entries:
        return f"{where}.prompt_logprobs is missing or empty"
    for position, entry in enumerate(entries):
        if entry is None:
            continue
        if not isinstance(entry, dict) or not all(
            isinstance(item, dict) and _is_number(item.get("logprob")) for item in entry.values()
        ):
            return f"{where}.prompt_logprobs[{position}] is not an object of {{token id: {{logprob, ...}}}}"
    ids = choice.get("prompt_token_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) for i in ids)):
        return f"{where}.prompt_token_ids must be a list of integers"
    return None


def _text_problem(choice: dict[str, Any], where: str) -> str | None:
    return None if isinstance(choice.get("text"), str) else f"{where}.text is missing or not a string"


def _choice_problem(request: Mapping[str, Any], choice: Any, where: str) -> str | None:
    if not isinstance(choice, dict):
        return f"{where} is not an object"
    body = request["body"]
    if request.get("probe"):
        # A probe only needs a well-formed completion: what it lacks is the finding, not a fault.
        return _text_problem(choice, where)
    if body.get("echo"):
        return _echo_problem(choice.get("logprobs"), where)
    if body.get("prompt_logprobs"):
        return _prompt_logprobs_problem(choice, where)
    if request["path"] == "/chat/completions":
        message = choice.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content", ""), str | None):
            return f"{where}.message.content is missing or not a string"
        return None
    return _text_problem(choice, where)


def _index_problem(choices: list[Any], count: int) -> str | None:
    """A list prompt gets one choice per prompt, ``index`` naming the prompt (n=1), each index once."""
    if len(choices) != count:
        return f"{count} prompts were sent but {len(choices)} choices came back"
    indexes = [choice.get("index") if isinstance(choice, dict) else None for choice in choices]
    if sorted(i for i in indexes if isinstance(i, int) and not isinstance(i, bool)) != list(range(count)):
        return f"the choices' index values {indexes} are not 0..{count - 1}, each once"
    return None


def answer_problem(request: Mapping[str, Any], answer: Any) -> str | None:
    """What is wrong with ``answer`` for wire ``request`` (chat, completion, echo or prompt_logprobs,
    one prompt or a list of them, or a probe), or None."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices:
        return "expected a non-empty 'choices' list"
    prompts = request["body"].get("prompt")
    if not isinstance(prompts, list):
        return _choice_problem(request, choices[0], "choices[0]")
    problem = _index_problem(choices, len(prompts))
    if problem is not None:
        return problem
    for choice in choices:
        problem = _choice_problem(request, choice, f"choices[index={choice['index']}]")
        if problem is not None:
            return problem
    return None


def choices_in_prompt_order(request: Mapping[str, Any], answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The answer's choices, one per prompt of ``request`` in its order (checked by answer_problem)."""
    choices = answer["choices"]
    if not isinstance(request["body"].get("prompt"), list):
        return [choices[0]]
    return sorted(choices, key=lambda choice: choice["index"])


def missing_logprobs_field(request: Mapping[str, Any], answer: Any) -> str | None:
    """The logprobs field a scoring request asked for, when a well-formed completion left it out.

    Absence (the key missing or null in every choice of an otherwise sound completion) is the server
    saying it does not offer that mode: an error at once, not a malformed answer worth retrying.
    """
    body = request["body"]
    if request.get("probe") or not (body.get("echo") or body.get("prompt_logprobs")):
        return None
    field = "logprobs" if body.get("echo") else "prompt_logprobs"
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices:
        return None
    if all(isinstance(c, dict) and isinstance(c.get("text"), str) and c.get(field) is None for c in choices):
        return field
    return None


def probe_finding(mode: str, answer: Mapping[str, Any]) -> str | None:
    """None when a probe's answer carries usable ``mode`` logprobs for its prompt, else why not."""
    choice = answer["choices"][0]
    if mode == "echo":
        logprobs = choice.get("logprobs")
        if logprobs is None:
            return "the answer has no logprobs"
        problem = _echo_problem(logprobs, "choices[0]")
        if problem is not None:
            return problem
        # Echoed, the list holds the prompt's tokens and the one generated; unechoed, only the latter.
        if len(logprobs["tokens"]) < 2 or all(value is None for value in logprobs["token_logprobs"][:-1]):
            return "the logprobs cover only the generated token: the prompt's are not echoed"
        return None
    if choice.get("prompt_logprobs") is None:
        return "the answer has no prompt_logprobs"
    problem = _prompt_logprobs_problem(choice, "choices[0]")
    if problem is not None:
        return problem
    if all(entry is None for entry in choice["prompt_logprobs"]):
        return "every prompt_logprobs entry is null"
    return None


class LogprobsUnavailableError(RuntimeError):
    """The server offers no logprobs of the mode a reference requires (never retried)."""


class LogprobsProbeError(RuntimeError):
    """Probing a server for logprobs failed: it is down or answered an error, which says nothing
    about logprobs, so no mode is chosen (the cause is chained)."""


@dataclass(frozen=True)
class BatchLimits:
    """How many prompts that share a context go in one completions request, by count and characters,
    so one request stays within a server's limits (vLLM's VLLM_MAX_COMPLETION_PROMPTS, body size) and
    its deadline. A context with more prompts than this is split over several requests."""

    max_prompts: int = 16
    max_chars: int = 200_000

    def __post_init__(self) -> None:
        if self.max_prompts < 1 or self.max_chars < 1:
            raise ValueError(f"BatchLimits: max_prompts and max_chars must be >= 1, got {self}")


def shared_context_batches(requests: Sequence[LoglikelihoodRequest], limits: BatchLimits) -> list[list[str]]:
    """The distinct prompts (context + continuation) grouped by context, in first-seen order, each
    group cut to ``limits``. Only requests with the same context share a request: their prompts
    differ in the continuation alone, so the server's prefix cache scores the context once."""
    groups: dict[str, dict[str, None]] = {}
    for request in requests:
        groups.setdefault(request.context, {})[request.context + request.continuation] = None
    batches: list[list[str]] = []
    for prompts in groups.values():
        batch: list[str] = []
        chars = 0
        for prompt in prompts:
            if batch and (len(batch) >= limits.max_prompts or chars + len(prompt) > limits.max_chars):
                batches.append(batch)
                batch, chars = [], 0
            batch.append(prompt)
            chars += len(prompt)
        batches.append(batch)
    return batches


PROBED = ("auto", "required")  # reference modes that ask the server what it offers
PROBE_PROMPT = "The capital of France is Paris."  # several tokens with any tokenizer, so echo shows
# What each log-likelihood mode adds to a /completions body.
SCORING_FIELDS: dict[str, dict[str, Any]] = {
    "echo": {"echo": True, "logprobs": 1},
    "prompt_logprobs": {"prompt_logprobs": 1, "return_token_ids": True},
}


class OpenAIBackend(RemoteBackend):
    def __init__(
        self,
        reference: ModelReference,
        *,
        cache: ResponseCache | None = None,
        max_concurrency: int = 8,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        secrets_client: Any | None = None,
        batch: BatchLimits | None = None,
    ) -> None:
        self._timeout = timeout or reference.timeout or DEFAULT_TIMEOUT
        # The Dispatcher's deadline is the backstop for what streaming cannot see: headers trickled in.
        super().__init__(reference, cache=cache, max_concurrency=max_concurrency, retry=retry, deadline=self._timeout)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        api_key = resolve_api_key(reference, secrets_client)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=reference.target,
            headers=headers,
            timeout=httpx.Timeout(self._timeout),
            # Twice the concurrency: a call abandoned at the deadline may hold its connection a while.
            limits=httpx.Limits(max_connections=2 * max_concurrency, max_keepalive_connections=max_concurrency),
            follow_redirects=False,
            trust_env=False,  # a model server is named explicitly; proxies from the environment do not apply
        )
        self.batch = batch or BatchLimits()
        self._requested = reference.logprobs or "auto"
        self._mode: str | None = None if self._requested in PROBED else self._requested
        self._probe: dict[str, str] = {}  # mode -> "found" or why not, once probed
        self._probe_lock = threading.Lock()

    @property
    def logprobs_mode(self) -> str:
        """``echo``, ``prompt_logprobs`` or ``none``: the reference's, or for auto/required what one probe
        of the server found (sent on first use, once for the backend's life, under a lock)."""
        if self._mode is None:
            with self._probe_lock:
                if self._mode is None:
                    self._mode = self._probe_server()
        if self._mode == "none" and self._requested == "required":
            found = "; ".join(f"{mode}: {why}" for mode, why in self._probe.items())
            raise LogprobsUnavailableError(
                f"{self.name}: the server offers neither echo logprobs nor vLLM prompt_logprobs ({found}), and "
                "logprobs=required forbids scoring multiple choice by answer letter instead; use logprobs=auto "
                "to allow that fallback"
            )
        return self._mode

    @property
    def supports_loglikelihood(self) -> bool:
        return self.logprobs_mode != "none"

    def _scoring_body(self, mode: str) -> dict[str, Any]:
        return {"model": self.reference.model, "max_tokens": 1, "temperature": 0.0, **SCORING_FIELDS[mode]}

    def _probe_server(self) -> str:
        """One tiny completion asking for echo logprobs, then (if absent) one asking for prompt_logprobs.

        Only a well-formed completion without the field counts as absence; an unreachable server or
        an error status raises, after the dispatcher's retries where they apply.
        """
        for mode in SCORING_FIELDS:
            wire = {"path": "/completions", "body": {**self._scoring_body(mode), "prompt": PROBE_PROMPT}, "probe": mode}
            try:
                [answer] = self.dispatcher.run([wire])
            except Exception as exc:
                raise LogprobsProbeError(
                    f"{self.name}: probing POST /completions for {mode} logprobs failed, which says nothing about "
                    f"logprobs: {exc}. Fix the server, or name the mode with logprobs=echo|prompt_logprobs|none "
                    "(none scores multiple choice by answer letter, also on servers without /completions)"
                ) from exc
            why = probe_finding(mode, answer)
            self._probe[mode] = "found" if why is None else why
            if why is None:
                return mode
        return "none"

    def generate_request(self, request: GenerateRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.reference.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if self.reference.api == "chat":
            return {"path": "/chat/completions", "body": {**body, "messages": chat_messages(request)}}
        return {"path": "/completions", "body": {**body, "prompt": request.prompt}}

    def generated_text(self, response: Any) -> str:
        choice = response["choices"][0]
        if "message" in choice:
            return choice["message"].get("content") or ""
        return choice.get("text") or ""

    def loglikelihood_details(self) -> dict[str, Any]:
        """How multiple choice was scored against this server, for results.json: the logprobs mode used,
        the one requested and, when probed, what the probe found for each mode."""
        mode = self.logprobs_mode
        if mode == "none":
            why = "the probe found no logprobs" if self._probe else "logprobs=none"
            details: dict[str, Any] = {
                "logprobs": "none",
                "multiple_choice": f"scored generatively by answer letter ({why})",
            }
        else:
            details = server_details(mode)
        details["logprobs_requested"] = self._requested
        if self._probe:
            details["probe"] = dict(self._probe)
        return details

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        mode = self.logprobs_mode
        if mode == "none":
            return super().loglikelihood(requests)
        body = self._scoring_body(mode)
        # Prompts sharing a context go in one request (a list prompt): one choice per prompt, by index.
        batches = shared_context_batches(requests, self.batch)
        wire = [
            {"path": "/completions", "body": {**body, "prompt": prompts[0] if len(prompts) == 1 else prompts}}
            for prompts in batches
        ]
        with collecting() as timings:
            answers = self.dispatcher.run(wire)
        choice_of: dict[str, dict[str, Any]] = {}
        time_of: dict[str, RequestTime] = {}
        for sent, prompts, answer, took in zip(wire, batches, answers, timings[0], strict=True):
            # send() checked the answer's shape (answer_problem), so the fields read here are there.
            choice_of.update(zip(prompts, choices_in_prompt_order(sent, answer), strict=True))
            time_of.update((prompt, RequestTime(took.seconds / len(prompts), took.cached)) for prompt in prompts)
        # Each request's share of its wire request's time, so per-sample model times add up.
        prompts_asked = [request.context + request.continuation for request in requests]
        record_batch([time_of[prompt] for prompt in prompts_asked])
        return [
            self._score(mode, request, choice_of[prompt])
            for request, prompt in zip(requests, prompts_asked, strict=True)
        ]

    @staticmethod
    def _score(mode: str, request: LoglikelihoodRequest, choice: Mapping[str, Any]) -> Loglikelihood:
        if mode == "echo":
            prompt_chars = len(request.context) + len(request.continuation)
            return echo_loglikelihood(choice["logprobs"], echo_split_offset(request.context), prompt_chars)
        return prompt_logprobs_loglikelihood(
            choice["prompt_logprobs"],
            move_trailing_whitespace(request.context, request.continuation)[1],
            choice.get("prompt_token_ids"),
        )

    def send(self, request: dict[str, Any]) -> Any:
        deadline = time.monotonic() + self._timeout
        # A relative path is appended to the base URL's path (httpx keeps the base's /v1).
        wire = self._client.build_request("POST", request["path"], json=request["body"])
        response = self._client.send(wire, stream=True)
        try:
            payload = self._read_body(wire, response, deadline)
        finally:
            response.close()
        request_id = response.headers.get("x-request-id")
        if not 200 <= response.status_code < 300:
            raise HTTPStatusError(response.status_code, dict(response.headers), payload)
        try:
            answer = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MalformedResponseError(self.name, f"not JSON ({err})", payload, request_id) from None
        missing = missing_logprobs_field(request, answer)
        if missing is not None:
            mode = "echo" if missing == "logprobs" else "prompt_logprobs"
            hint = (
                "yet the probe found them, so it gives them for some prompts only; set logprobs=none to score by letter"
                if self._requested in PROBED
                else "use logprobs=auto to probe what it offers (echo, then prompt_logprobs, else scoring by letter)"
            )
            raise LogprobsUnavailableError(
                f"{self.name}: the server answered without {missing}, so it offers no {mode} logprobs; {hint}"
            )
        problem = answer_problem(request, answer)
        if problem is not None:
            raise MalformedResponseError(self.name, problem, payload, request_id or _body_id(answer))
        return answer

    def _read_body(self, wire: httpx.Request, response: httpx.Response, deadline: float) -> bytes:
        """The whole body, or DeadlineExceededError when it is not complete by ``deadline``."""
        chunks: list[bytes] = []
        try:
            self._check_deadline(deadline, "the headers")
            # httpcore takes the body's per-read timeout from this extension when the body starts.
            wire.extensions["timeout"] = {**wire.extensions["timeout"], "read": deadline - time.monotonic()}
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                self._check_deadline(deadline, "the body")
        except httpx.ReadTimeout:
            raise DeadlineExceededError(f"{self.name}: no complete answer within {self._timeout:g} s") from None
        except httpx.RemoteProtocolError as err:
            # Connection closed before Content-Length bytes (or the last chunk) arrived: a truncated body.
            if 200 <= response.status_code < 300:
                body = b"".join(chunks)
                problem = f"truncated body ({err})"
                raise MalformedResponseError(self.name, problem, body, response.headers.get("x-request-id")) from err
            raise
        return b"".join(chunks)

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise DeadlineExceededError(
                f"{self.name}: {what} did not arrive within the {self._timeout:g} s deadline of the request"
            )

    def close(self) -> None:
        super().close()
        self._client.close()


def _body_id(answer: Any) -> str | None:
    value = answer.get("id") if isinstance(answer, dict) else None
    return value if isinstance(value, str) else None
