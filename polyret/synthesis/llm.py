"""LLM backends behind one interface: OpenAI-compatible servers (openai SDK) and local HF transformers.

`backend.generate(prompts)` takes chat prompts (lists of {"role", "content"} messages) and returns one
`Completion` per prompt, in order. A prompt that fails for good (after retries) comes back as a
Completion with `error` set, so a pipeline can count it and go on; a server that cannot be reached at
all raises `LLMUnreachable`, so a run stops instead of dropping every item. Both backends count
requests, retries, failures and tokens in `backend.usage`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import threading
from typing import Any, Sequence

from polyret.errors import ServiceUnreachable
from polyret.io.secrets import redact, register_env_secrets, register_secret

Messages = list[dict[str, str]]
log = logging.getLogger(__name__)

class LLMUnreachable(ServiceUnreachable):
    """The LLM server cannot be reached (or refuses our credentials) even after retries."""


@dataclasses.dataclass
class Completion:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # why this prompt produced no text (after retries)
    status: int | None = None  # the server's last HTTP status when it answered with an error


@dataclasses.dataclass
class Usage:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "Usage") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def since(self, earlier: "Usage") -> "Usage":
        """What was counted after `earlier` (a copy of this counter taken before)."""
        return Usage(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in dataclasses.fields(self)})


@dataclasses.dataclass
class BackendConfig:
    """Everything needed to build a backend; picklable, so Beam workers build their own.

    kind: "openai" (any OpenAI-compatible server) or "transformers" (a local model folder in `model`).
    The API key is read from the environment variable `api_key_env` when the backend is built and is
    never stored in the config, logged or written to disk.
    """

    kind: str = "openai"
    model: str = ""
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 120.0
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = None
    batch_size: int = 8  # transformers backend: prompts per generate() call
    device: str = "cpu"

    def build(self) -> "OpenAIBackend | TransformersBackend":
        if not self.model:
            raise ValueError("BackendConfig.model is empty: name the served model or a local model folder")
        if self.kind == "openai":
            return OpenAIBackend(self)
        if self.kind == "transformers":
            return TransformersBackend(self)
        raise ValueError(f"unknown backend kind {self.kind!r}: use 'openai' or 'transformers'")


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, hosted APIs).

    Requests run concurrently (at most `max_concurrency` in flight). 429s, 5xx, timeouts, dropped
    connections and retried with exponential backoff and jitter (honouring Retry-After); the SDK's own
    retries are off so every attempt is counted here.
    """

    def __init__(self, config: BackendConfig):
        import openai

        self.config = config
        self.usage = Usage()
        self._openai = openai
        # Local servers need no key, but the SDK insists on one.
        self._api_key = os.environ.get(config.api_key_env) or "EMPTY"
        register_secret(self._api_key)
        register_env_secrets()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None

    def generate(self, prompts: Sequence[Messages]) -> list[Completion]:
        # One event loop and one client for the backend's life: connections are reused across calls.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._generate_all(prompts))

    def close(self) -> None:
        if self._loop is not None:
            if self._client is not None:
                self._loop.run_until_complete(self._client.close())
            self._loop.close()
            self._loop = self._client = None

    async def _generate_all(self, prompts: Sequence[Messages]) -> list[Completion]:
        if self._client is None:
            self._client = self._openai.AsyncOpenAI(base_url=self.config.base_url, api_key=self._api_key,
                                                    timeout=self.config.timeout_s, max_retries=0)
        limit = asyncio.Semaphore(self.config.max_concurrency)

        async def one(messages: Messages) -> Completion:
            async with limit:
                return await self._complete(self._client, messages)

        tasks = [asyncio.create_task(one(m)) for m in prompts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _backoff(self, attempt: int, error: Exception) -> float:
        headers = getattr(getattr(error, "response", None), "headers", None) or {}
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            try:
                return min(float(headers[name]) * scale, self.config.max_backoff_s)
            except (KeyError, ValueError):
                pass
        delay = min(self.config.initial_backoff_s * 2 ** attempt, self.config.max_backoff_s)
        return delay * (0.5 + random.random() / 2)

    async def _complete(self, client, messages: Messages) -> Completion:
        openai, cfg = self._openai, self.config
        kwargs: dict[str, Any] = dict(model=cfg.model, messages=messages, max_tokens=cfg.max_tokens,
                                      temperature=cfg.temperature)
        if cfg.seed is not None:
            kwargs["seed"] = cfg.seed
        for attempt in range(cfg.max_retries + 1):
            self.usage.requests += 1
            try:
                response = await client.chat.completions.create(**kwargs)
            except openai.AuthenticationError as e:
                raise LLMUnreachable(redact(f"{cfg.base_url or 'OpenAI'} refused the API key from "
                                            f"${cfg.api_key_env} (HTTP {e.status_code})")) from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError,
                    json.JSONDecodeError) as e:  # a truncated or garbled body may be transient too
                last = e
                if attempt == cfg.max_retries:
                    break
                self.usage.retries += 1
                await asyncio.sleep(self._backoff(attempt, e))
                continue
            except (openai.APIStatusError, openai.APIResponseValidationError) as e:
                return self._failed(f"{type(e).__name__}: {e}", getattr(e, "status_code", None))
            return self._parse_response(response)
        if isinstance(last, openai.APIConnectionError) and not isinstance(last, openai.APITimeoutError):
            raise LLMUnreachable(redact(f"cannot reach the LLM server at {cfg.base_url or 'api.openai.com'} "
                                        f"after {cfg.max_retries + 1} attempts: {last}")) from None
        return self._failed(f"gave up after {cfg.max_retries + 1} attempts: {type(last).__name__}: {last}",
                            getattr(last, "status_code", None))

    def _parse_response(self, response: Any) -> Completion:
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            return self._failed(f"malformed response: {str(response)[:200]!r}")
        if not isinstance(text, str):
            return self._failed("malformed response: no message content")
        usage = getattr(response, "usage", None)
        completion = Completion(text=text, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                                completion_tokens=getattr(usage, "completion_tokens", 0) or 0)
        self.usage.prompt_tokens += completion.prompt_tokens
        self.usage.completion_tokens += completion.completion_tokens
        return completion

    def _failed(self, error: str, status: int | None = None) -> Completion:
        self.usage.failures += 1
        error = redact(error)  # server error bodies may echo the request headers, API key included
        log.warning("LLM request failed: %s", error)
        return Completion(error=error, status=status)


class TransformersBackend:
    """A local Hugging Face model (causal or seq2seq) from a folder, generating in batches.

    Uses the tokenizer's chat template when it has one; otherwise the messages' contents are joined.
    Greedy decoding unless `temperature` > 0.
    """

    def __init__(self, config: BackendConfig):
        import torch
        import transformers

        self.config = config
        self.usage = Usage()
        self._torch = torch
        self._lock = threading.Lock()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(config.model)
        model_config = transformers.AutoConfig.from_pretrained(config.model)
        self.is_seq2seq = bool(getattr(model_config, "is_encoder_decoder", False))
        auto = transformers.AutoModelForSeq2SeqLM if self.is_seq2seq else transformers.AutoModelForCausalLM
        self.model = auto.from_pretrained(config.model).to(config.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.is_seq2seq:
            self.tokenizer.padding_side = "left"  # generation continues after the prompt

    def _render(self, messages: Messages) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages)

    def generate(self, prompts: Sequence[Messages]) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(prompts), self.config.batch_size):
            out.extend(self._generate_batch([self._render(m) for m in prompts[start:start + self.config.batch_size]]))
        return out

    def _generate_batch(self, texts: list[str]) -> list[Completion]:
        torch, cfg = self._torch, self.config
        batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(cfg.device)
        sample = cfg.temperature > 0
        with self._lock, torch.no_grad():
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)
            output = self.model.generate(**batch, max_new_tokens=cfg.max_tokens, do_sample=sample,
                                         temperature=cfg.temperature if sample else None,
                                         pad_token_id=self.tokenizer.pad_token_id)
        if not self.is_seq2seq:
            output = output[:, batch["input_ids"].shape[1]:]
        completions = []
        for row, mask in zip(output, batch["attention_mask"]):
            n_new = int((row != self.tokenizer.pad_token_id).sum())
            completion = Completion(text=self.tokenizer.decode(row, skip_special_tokens=True),
                                    prompt_tokens=int(mask.sum()), completion_tokens=n_new)
            completions.append(completion)
            self.usage.requests += 1
            self.usage.prompt_tokens += completion.prompt_tokens
            self.usage.completion_tokens += completion.completion_tokens
        return completions
