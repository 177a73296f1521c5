"""The warm-up requests of a rehearsal: the user's, or a short and a long OpenAI-style completion.

vLLM, SGLang and TGI all serve ``/v1/models`` and ``/v1/completions``. The default asks the first
for the served model's name and its maximum length, then sends a short completion and one with a
prompt near that length (halved until the server takes it: the rehearsal does not tokenize), so
that prefill graphs for both ends of the range are compiled, with decoding after each.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from modelwarmup import errors
from modelwarmup.rehearsal.server import ServerProcess, WarmupRequest

SHORT_PROMPT = "The capital of France is"
MAX_TOKENS = 16
LONG_PROMPT_WORDS_LIMIT = 8192


def _served_model(server: ServerProcess, base_url: str, timeout_s: float) -> tuple[str | None, int | None]:
    status, answer = server.send(base_url, WarmupRequest("GET", "/v1/models"), timeout_s)
    if status != 200 or not isinstance(answer, dict) or not answer.get("data"):
        return None, None
    model = answer["data"][0]
    max_len = model.get("max_model_len")
    return model.get("id"), int(max_len) if isinstance(max_len, int) else None


def _completion(model: str | None, prompt: str) -> WarmupRequest:
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    if model:
        body["model"] = model
    return WarmupRequest("POST", "/v1/completions", body)


def _check(request: WarmupRequest, status: int, answer: Any) -> None:
    if status != 200:
        raise errors.WarmupRequestFailed(
            f"{request.method} {request.path} answered {status}: {str(answer)[:300]}"
        )


def send_warmup(
    server: ServerProcess, base_url: str, requests: Sequence[WarmupRequest], timeout_s: float
) -> dict[str, float]:
    """Send the given requests, or the default ones; returns seconds per request."""
    timings: dict[str, float] = {}
    if requests:
        for number, request in enumerate(requests, start=1):
            begun = time.monotonic()
            status, answer = server.send(base_url, request, timeout_s)
            _check(request, status, answer)
            timings[f"request_{number}"] = round(time.monotonic() - begun, 3)
        return timings
    model, max_len = _served_model(server, base_url, timeout_s)
    begun = time.monotonic()
    short = _completion(model, SHORT_PROMPT)
    _check(short, *server.send(base_url, short, timeout_s))
    timings["short_completion"] = round(time.monotonic() - begun, 3)
    words = min(((max_len or 512) - MAX_TOKENS) * 3 // 4, LONG_PROMPT_WORDS_LIMIT)
    begun = time.monotonic()
    while True:
        long = _completion(model, " ".join(["hello"] * words))
        status, answer = server.send(base_url, long, timeout_s)
        if status == 200:
            break
        if status != 400 or words < 16:  # 400: too long for the model, try half as long
            _check(long, status, answer)
        words //= 2
    timings["long_completion"] = round(time.monotonic() - begun, 3)
    return timings
