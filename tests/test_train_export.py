"""save_pretrained writes a sentence-transformers folder that sentence-transformers, transformers and gte_jax load."""

from __future__ import annotations

import json
import os
import shutil
import stat

import jax
import numpy as np
import pytest
from flax import nnx

from gte_jax import GTEEncoder
from gte_jax.checkpoints.export import ExportError, hf_tensors, save_pretrained
from gte_jax.checkpoints.params import map_key
from gte_jax.errors import CheckpointError

TEXTS = ["what is a tensor?", "A tensor is a multi-dimensional array of numbers.", "", "word " * 400]


@pytest.fixture(scope="module")
def exported(minilm: GTEEncoder, tmp_path_factory) -> str:
    return minilm.save_pretrained(str(tmp_path_factory.mktemp("export")))


@pytest.mark.slow
def test_sentence_transformers_loads_the_same_vectors(minilm, exported):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(exported, device="cpu")
    assert st.max_seq_length == minilm.max_length
    np.testing.assert_allclose(st.encode(TEXTS), minilm.encode(TEXTS), atol=1e-5)


def test_gte_jax_loads_the_same_vectors_exactly(minilm, exported):
    again = GTEEncoder.from_pretrained(exported)
    assert again.pooling == minilm.pooling and again.max_length == minilm.max_length
    np.testing.assert_array_equal(again.encode(TEXTS), minilm.encode(TEXTS))


def test_transformers_loads_every_weight(exported, minilm_dir):
    from safetensors.numpy import load_file
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(exported, output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]  # the pooler is carried over, not re-initialised
    original = load_file(f"{minilm_dir}/model.safetensors")
    written = load_file(f"{exported}/model.safetensors")
    assert set(written) == set(original) - {"embeddings.position_ids"}
    for key, value in written.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)


def test_sentence_transformers_files(exported):
    modules = json.load(open(f"{exported}/modules.json"))
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    pooling = json.load(open(f"{exported}/1_Pooling/config.json"))
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert json.load(open(f"{exported}/sentence_bert_config.json"))["max_seq_length"] == 256
    assert json.load(open(f"{exported}/config_sentence_transformers.json"))["similarity_fn_name"] == "cosine"
    config = json.load(open(f"{exported}/config.json"))
    assert config["model_type"] == "bert" and config["hidden_dropout_prob"] == 0.1


def test_export_table_inverts_the_load_table(minilm):
    """Every exported key maps back, through params.KEY_MAP, onto the parameter it came from."""
    tensors = hf_tensors(minilm.model, minilm.config)
    paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(minilm.model))}
    assert {map_key(k)[0] for k in tensors} == paths


def test_the_source_licence_travels_with_the_model(exported, minilm_dir):
    for name in ("LICENSE", "NOTICE"):
        with open(f"{minilm_dir}/{name}", "rb") as source, open(f"{exported}/{name}", "rb") as copy:
            assert copy.read() == source.read(), name


def test_files_get_the_usual_permissions(minilm, tmp_path):
    """Not mkstemp's 0600: files 0666 and folders 0777 less the umask, as transformers' save_pretrained."""
    old = os.umask(0o022)
    try:
        out = minilm.save_pretrained(str(tmp_path / "model"))
    finally:
        os.umask(old)
    paths = [os.path.join(root, name) for root, dirs, files in os.walk(out) for name in dirs + files]
    assert len(paths) > 10
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == (0o755 if os.path.isdir(path) else 0o644), path


def test_weights_are_never_saved_with_nan(minilm, tmp_path):
    state = jax.tree.map(lambda x: x.at[0].set(np.nan) if x.ndim else x, nnx.state(minilm.model))
    with pytest.raises(ValueError, match="hold NaN or infinite values .* so it is not saved"):
        save_pretrained(state, str(tmp_path / "model"), config=minilm.config, tokenizer=minilm.tokenizer)
    assert not os.path.exists(tmp_path / "model" / "model.safetensors")


@pytest.mark.parametrize("stale", ["gte_jax.safetensors", "model.safetensors.index.json", "pytorch_model.bin"])
def test_a_folder_with_other_weights_is_refused(minilm, tmp_path, stale):
    """gte_jax would load gte_jax.safetensors or the index instead of the new model.safetensors: the trained
    model would silently give the old vectors. The file is not this export's to delete, so it stays."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / stale).write_text("not mine to delete")
    with pytest.raises(ExportError, match=f"already holds {stale}"):
        minilm.save_pretrained(str(tmp_path / "model"))
    assert os.listdir(tmp_path / "model") == [stale]


def test_loading_takes_what_transformers_takes(exported, tmp_path):
    """model.safetensors before a (stale) sharded index, as transformers reads; gte_jax.safetensors beside
    Hugging Face weights is refused (which is current cannot be told)."""
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    index = {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(
        GTEEncoder.from_pretrained(str(folder)).encode(TEXTS[:2]),
        GTEEncoder.from_pretrained(exported).encode(TEXTS[:2]),
    )
    shutil.copyfile(folder / "model.safetensors", folder / "gte_jax.safetensors")
    with pytest.raises(CheckpointError, match="holds both gte_jax.safetensors .* and model.safetensors"):
        GTEEncoder.from_pretrained(str(folder))
