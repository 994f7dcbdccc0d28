"""Shared fixtures: tiny local models (built once, cached), one vLLM engine per model per
session, and the environment every test runs under (offline, CPU vLLM settings)."""

from __future__ import annotations

import os

# Set before anything imports transformers or vLLM, so a user's run and CI's behave alike.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from harness.tiny_models import tiny_model  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    """``tiny("llama")`` -> path of that tiny model, built on first use and cached on disk."""
    return tiny_model


@pytest.fixture(scope="session")
def llama_path():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def opt_path():
    return tiny_model("opt")


@pytest.fixture(scope="session")
def bart_path():
    return tiny_model("bart")


@pytest.fixture(scope="session")
def nli_path():
    return tiny_model("nli")


@pytest.fixture(scope="session")
def vllm_engine():
    """``vllm_engine(path)`` -> a vLLM ``LLM`` for that model, started once per session
    (an engine start costs seconds; every vLLM test shares them)."""
    engines = {}

    def get(path, max_model_len: int = 1024):
        key = (str(path), max_model_len)
        if key not in engines:
            from harness.config import EngineOptions
            from harness.generation.backends import start_vllm

            options = EngineOptions(dtype="float32", enforce_eager=True, max_model_len=max_model_len)
            engines[key] = start_vllm(path, options, seed=0)
        return engines[key]

    yield get
    engines.clear()


@pytest.fixture(scope="session")
def trained():
    """``trained("summarizer-llama")`` -> path of a model trained on the facts task, trained
    on first use (once per cache) and cached on disk (``harness.trained_models``)."""
    from harness.trained_models import trained_model

    return trained_model
