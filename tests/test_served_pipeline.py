"""The served audio_search with the real tiny models equals the offline PyTorch pipeline it was exported from."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from common.windowing import WindowParams, make_windows
from serving.catalog_index import load_catalog
from training.augment import degrade
from training.retrieval import embed_queries, torch_embed_fn

TOP_K = 5


def offline_search(pipeline, audio: np.ndarray, window_params: WindowParams, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Windows -> PyTorch MOSS codes -> PyTorch embeddings -> exact search over the catalog's vectors."""
    waveform, lengths = make_windows(audio, window_params)
    with torch.inference_mode():
        codes, counts = pipeline.encoder(torch.from_numpy(waveform), torch.from_numpy(lengths), n_quantizers=pipeline.n_quantizers)
        mask = torch.arange(codes.shape[2])[None, :] < counts[:, None]
        embeddings = pipeline.embedder(codes, mask).numpy()
    result = load_catalog(pipeline.catalog_dir).search(embeddings, k)
    return codes.numpy(), counts.numpy(), embeddings, result.track_ids, result.scores


def infer(client_module, client, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    tensors = []
    for name, array in inputs.items():
        tensor = client_module.InferInput(name, list(array.shape), {np.float32: "FP32", np.int32: "INT32", np.int64: "INT64"}[array.dtype.type])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors, outputs=[client_module.InferRequestedOutput(n) for n in outputs])
    return {n: result.as_numpy(n) for n in outputs}


@pytest.fixture(params=["grpc", "http"])
def client(request, real_pipeline):
    module = grpcclient if request.param == "grpc" else httpclient
    url = real_pipeline.server.grpc_url if request.param == "grpc" else real_pipeline.server.http_url
    connection = module.InferenceServerClient(url)
    yield module, connection
    connection.close()


@pytest.mark.parametrize("seconds,condition", [(5.0, "snr10"), (2.0, "clean"), (23.0, "reverb")])
def test_audio_search_equals_offline_pipeline(real_pipeline, serving_config, client, seconds: float, condition: str) -> None:
    module, connection = client
    params = WindowParams.from_parameters(serving_config.model("audio_windows").parameters)
    rng = np.random.default_rng(int(seconds * 10))
    track_id = sorted(real_pipeline.track_audio)[2]
    audio = real_pipeline.track_audio[track_id]
    if seconds > len(audio) / 24000:
        audio = np.concatenate([audio, real_pipeline.track_audio[sorted(real_pipeline.track_audio)[3]]])
    start = int(rng.integers(0, len(audio) - int(seconds * 24000)))
    query = degrade(audio[start : start + int(seconds * 24000)], condition, rng).astype(np.float32)
    codes, counts, embeddings, track_ids, scores = offline_search(real_pipeline, query, params, TOP_K)

    waveform, lengths = make_windows(query, params)
    served_codes = infer(module, connection, "moss_encoder", {"WAVEFORM": waveform, "LENGTHS": lengths[:, None]}, ["CODES", "FRAME_COUNTS"])
    assert np.array_equal(served_codes["FRAME_COUNTS"].reshape(-1), counts)
    for row, count in enumerate(counts):  # codes beyond a row's frame count are junk by contract
        assert np.array_equal(served_codes["CODES"][row, :, :count], codes[row, :, :count])
    served_embedding = infer(module, connection, "token_embedder", {"CODES": served_codes["CODES"], "FRAME_COUNTS": served_codes["FRAME_COUNTS"]}, ["EMBEDDING"])["EMBEDDING"]
    np.testing.assert_allclose(served_embedding, embeddings, atol=1e-4)
    # The evaluation (training evaluate, layout-sweep) embeds its queries through the same windows.
    rows, owner = embed_queries(real_pipeline.encoder, torch_embed_fn(real_pipeline.embedder), [query], real_pipeline.n_quantizers, params)
    assert owner.tolist() == [0] * len(counts)
    np.testing.assert_allclose(rows, served_embedding, atol=1e-4)

    result = infer(module, connection, "audio_search", {"AUDIO": query, "TOP_K": np.array([TOP_K], dtype=np.int32)}, ["TRACK_IDS", "SCORES"])
    assert [t.decode() for t in result["TRACK_IDS"]] == track_ids
    np.testing.assert_allclose(result["SCORES"], scores, atol=1e-4)
