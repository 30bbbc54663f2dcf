"""AudioSearchClient: blocking calls to the audio_search ensemble over gRPC or HTTP."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from client.audio import AudioLike, prepare_audio
from client.errors import translate
from client.retry import delay_s, should_retry
from client.transport import (
    Hit,
    ProtocolName,
    grpc_tls,
    health_report,
    load_protocol,
    parse_hits,
    repository_models,
    search_inputs,
    search_outputs,
)
from common.audio import SAMPLE_RATE

T = TypeVar("T")


class AudioSearchClient:
    """One query = one ensemble request; ``search_batch`` sends up to ``max_concurrency`` at once.

    Transient failures (connection refused, reset, timed out) are retried ``retries`` times with
    exponential backoff; invalid input and missing models are not. ``root_certificates``: a CA file; gRPC then
    uses TLS and checks the server's certificate against it (the deployment's gRPC proxy).
    """

    def __init__(
        self,
        url: str,
        protocol: ProtocolName = "grpc",
        model: str = "audio_search",
        timeout_s: float = 30.0,
        retries: int = 2,
        max_concurrency: int = 8,
        root_certificates: str | None = None,
    ) -> None:
        self.url = url
        self.protocol = load_protocol(protocol)
        self._tls = grpc_tls(protocol, root_certificates)
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_concurrency = max_concurrency
        # tritonclient's HTTP client is not thread-safe: every thread gets its own connection.
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        # Kept across batches so its threads (and their connections) are reused.
        self._pool: ThreadPoolExecutor | None = None

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            module = self.protocol.module
            if self.protocol.name == "http":
                client = module.InferenceServerClient(self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
            else:
                client = module.InferenceServerClient(self.url, **self._tls)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _timeout_kwargs(self) -> dict[str, float]:
        # The HTTP client's timeouts are set per connection, gRPC's per call.
        return {"client_timeout": self.timeout_s} if self.protocol.name == "grpc" else {}

    def _call(self, operation: Callable[[Any], T]) -> T:
        attempt = 0
        while True:
            try:
                return operation(self._client())
            except Exception as raw:  # noqa: BLE001 - translated below; bugs are re-raised untouched
                error = translate(raw, self.model)
                if error is None:
                    raise
                if not should_retry(error, attempt, self.retries):
                    raise error from raw
            time.sleep(delay_s(attempt))
            attempt += 1

    def search(self, audio: AudioLike, top_k: int = 10, sample_rate: int = SAMPLE_RATE) -> list[Hit]:
        """The ``top_k`` best (track_id, score) pairs, best first."""
        samples = prepare_audio(audio, sample_rate)
        inputs = search_inputs(self.protocol, samples, top_k)
        outputs = search_outputs(self.protocol)
        result = self._call(lambda c: c.infer(self.model, inputs, outputs=outputs, **self._timeout_kwargs()))
        return parse_hits(result)

    def search_batch(self, queries: Sequence[AudioLike], top_k: int = 10, sample_rate: int = SAMPLE_RATE) -> list[list[Hit]]:
        """``search`` for every query, concurrently; results in query order. The first failure is raised."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="audio-search")
            pool = self._pool
        futures = [pool.submit(self.search, query, top_k, sample_rate) for query in queries]
        return [future.result() for future in futures]

    def health(self) -> dict[str, Any]:
        """Server live/ready, this client's model ready, and every model's versions and states."""
        timeout = self._timeout_kwargs()
        json_kwargs = self.protocol.json_kwargs
        live = self._call(lambda c: c.is_server_live(**timeout))
        ready = self._call(lambda c: c.is_server_ready(**timeout))
        model_ready = self._call(lambda c: c.is_model_ready(self.model, **timeout))
        index = self._call(lambda c: c.get_model_repository_index(**json_kwargs, **timeout))
        return health_report(live, ready, self.model, model_ready, repository_models(index))

    def metadata(self) -> dict[str, Any]:
        """The model's metadata (KServe v2 JSON: name, versions, platform, inputs, outputs)."""
        return self._call(lambda c: c.get_model_metadata(self.model, **self.protocol.json_kwargs, **self._timeout_kwargs()))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            clients, self._clients = self._clients, []
        if pool is not None:
            pool.shutdown(wait=True)
        for client in clients:
            client.close()
        self._local = threading.local()

    def __enter__(self) -> AudioSearchClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
