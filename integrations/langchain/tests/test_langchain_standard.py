"""LangChain's own standard suites for Embeddings, run on the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_gte_jax import GTEEmbeddings


class _MiniLMParams:
    """Points the suites at the local checkpoint from the root conftest's ``minilm_dir`` fixture."""

    @pytest.fixture(autouse=True)
    def _model_dir(self, minilm_dir: str) -> None:
        # Autouse fixtures run before the suites' ``model`` fixture, which reads embedding_model_params.
        self._dir = minilm_dir

    @property
    def embeddings_class(self) -> type[GTEEmbeddings]:
        return GTEEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name": self._dir}


class TestGTEEmbeddingsUnit(_MiniLMParams, EmbeddingsUnitTests):
    pass


# The suite's async tests carry no marker and the repository runs pytest-asyncio in strict mode; anyio's
# plugin runs the marked coroutines and leaves the sync tests alone (the asyncio mark would warn on them).
@pytest.mark.anyio
class TestGTEEmbeddingsIntegration(_MiniLMParams, EmbeddingsIntegrationTests):
    @pytest.fixture
    def anyio_backend(self) -> str:
        # LangChain's async API is asyncio's (as is asyncio.to_thread in aembed_*), not trio's.
        return "asyncio"
