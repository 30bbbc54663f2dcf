"""AsyncAudioSearchClient: the AudioSearchClient API for asyncio (tritonclient.grpc.aio / tritonclient.http.aio).

A long-running caller (the search API, api/) keeps one client for its lifetime: ``connections`` opens that
many channels used in turn, so one busy HTTP/2 connection does not carry every request, and gRPC can use TLS.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from client.audio import AudioLike, prepare_audio
from client.errors import translate
from client.retry import delay_s, should_retry
from client.transport import (
    Hit,
    ProtocolName,
    grpc_channel_args,
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


class AsyncAudioSearchClient:
    """Same behaviour as AudioSearchClient; ``connections`` connections serve all concurrent calls of the event loop.

    ``root_certificates``: a CA file; gRPC then uses TLS and checks the server's certificate against it.
    """

    def __init__(
        self,
        url: str,
        protocol: ProtocolName = "grpc",
        model: str = "audio_search",
        timeout_s: float = 30.0,
        retries: int = 2,
        max_concurrency: int = 8,
        connections: int = 1,
        root_certificates: str | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        self.url = url
        self.protocol = load_protocol(protocol, asynchronous=True)
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_concurrency = max_concurrency
        self.connections = connections
        self._tls = grpc_tls(protocol, root_certificates)
        # Created on first use: the aio clients bind to the running event loop.
        self._clients: list[Any] = []
        self._turn = 0

    def _open(self) -> Any:
        module = self.protocol.module
        if self.protocol.name == "http":
            return module.InferenceServerClient(self.url, conn_timeout=self.timeout_s)
        return module.InferenceServerClient(self.url, **self._tls, channel_args=grpc_channel_args(module, own_connection=self.connections > 1))

    def _connection(self) -> Any:
        if not self._clients:
            self._clients = [self._open() for _ in range(self.connections)]
        self._turn = (self._turn + 1) % len(self._clients)
        return self._clients[self._turn]

    async def _call(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                # One deadline for both protocols (the aio HTTP client has no per-call timeout).
                return await asyncio.wait_for(operation(self._connection()), self.timeout_s)
            except Exception as raw:  # noqa: BLE001 - translated below; bugs are re-raised untouched
                error = translate(raw, self.model)
                if error is None:
                    raise
                if not should_retry(error, attempt, self.retries):
                    raise error from raw
            await asyncio.sleep(delay_s(attempt))
            attempt += 1

    async def search(self, audio: AudioLike, top_k: int = 10, sample_rate: int = SAMPLE_RATE) -> list[Hit]:
        """The ``top_k`` best (track_id, score) pairs, best first."""
        samples = prepare_audio(audio, sample_rate)
        inputs = search_inputs(self.protocol, samples, top_k)
        outputs = search_outputs(self.protocol)
        result = await self._call(lambda c: c.infer(self.model, inputs, outputs=outputs))
        return parse_hits(result)

    async def search_batch(self, queries: Sequence[AudioLike], top_k: int = 10, sample_rate: int = SAMPLE_RATE) -> list[list[Hit]]:
        """``search`` for every query, at most ``max_concurrency`` in flight; results in query order."""
        slots = asyncio.Semaphore(self.max_concurrency)

        async def one(query: AudioLike) -> list[Hit]:
            async with slots:
                return await self.search(query, top_k, sample_rate)

        return list(await asyncio.gather(*(one(query) for query in queries)))

    async def health(self) -> dict[str, Any]:
        """Server live/ready, this client's model ready, and every model's versions and states."""
        live = await self._call(lambda c: c.is_server_live())
        ready = await self._call(lambda c: c.is_server_ready())
        model_ready = await self._call(lambda c: c.is_model_ready(self.model))
        index = await self._call(lambda c: c.get_model_repository_index(**self.protocol.json_kwargs))
        return health_report(live, ready, self.model, model_ready, repository_models(index))

    async def readiness(self) -> tuple[bool, bool]:
        """(server ready, this client's model ready): a health check without the repository index, which
        deployments restrict to admin callers."""
        server = await self._call(lambda c: c.is_server_ready())
        model = await self._call(lambda c: c.is_model_ready(self.model))
        return bool(server), bool(model)

    async def metadata(self) -> dict[str, Any]:
        """The model's metadata (KServe v2 JSON: name, versions, platform, inputs, outputs)."""
        return await self._call(lambda c: c.get_model_metadata(self.model, **self.protocol.json_kwargs))

    async def close(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.close()

    async def __aenter__(self) -> AsyncAudioSearchClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
