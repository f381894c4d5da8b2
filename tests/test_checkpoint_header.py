"""A safetensors checkpoint whose header length happens to start with a pickle's magic byte loads;
real pickles are still refused."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save as st_save

from mnistlab.runs.checkpoint import CheckpointError, read_checkpoint


def _safetensors_starting_with(first: int) -> bytes:
    for pad in range(600):  # grow the header until its length's low byte is `first`
        data = st_save({"x": torch.zeros(2)}, metadata={"state": json.dumps({"pad": "x" * pad})})
        if data[0] == first:
            return data
    raise AssertionError("no padding gave that byte")


def test_header_length_byte_0x80_is_not_a_pickle(tmp_path):
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_safetensors_starting_with(0x80))
    tensors, state = read_checkpoint(path)
    assert torch.equal(tensors["x"], torch.zeros(2)) and "pad" in state


def test_a_pickle_is_still_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(pickle.dumps({"x": 1}, protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(path)
